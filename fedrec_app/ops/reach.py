"""Does an address answer TLS with the lab CA? The check behind `fedrec deploy ... --dry-run`.

A TLS handshake, verified against the manifest's `ca-cert` and the dialled host name or IP, is
the whole check: the Fleet proxy answers 404 to every HTTP path a probe could ask, so an HTTP
status says nothing, while a completed handshake says the address is right, something listens
there, and its certificate is the lab's and valid for that address.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.manifest import Manifest, ManifestError

DEFAULT_TIMEOUT = 5.0
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class Unreachable(FedrecError):
    """The address did not complete a verified TLS handshake; the message says why."""


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Unreachable(f"{address!r} is not host:port")
    return host, int(port)


def tls_handshake(address: str, ca_cert: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Complete a TLS handshake with `address`, verifying its certificate against `ca_cert` and
    the host in `address`; raise `Unreachable` saying why not (refused, no answer, not the lab's
    certificate, not valid for that address)."""
    host, port = split_address(address)
    try:
        context = ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise Unreachable(f"cannot load the CA certificate {ca_cert} ({exc})") from None
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            raise Unreachable(
                f"the certificate it presents is not valid for {host} ({exc.verify_message}): "
                "the SuperLink's server.pem lacks that SAN, or this is not the SuperLink"
            ) from None
        raise Unreachable(
            f"the certificate it presents does not verify against {ca_cert} "
            f"({exc.verify_message}): another CA (was the CA remade?) or not the SuperLink"
        ) from None
    except ssl.SSLError as exc:
        raise Unreachable(
            f"the TLS handshake failed ({exc.reason or exc}): is that port "
            "the SuperLink's TLS port?"
        ) from None
    except ConnectionRefusedError:
        raise Unreachable(
            "connection refused: nothing listens there (is the SuperLink and "
            "its proxy up, is the port right?)"
        ) from None
    except TimeoutError:
        raise Unreachable(
            f"no answer within {timeout:g} s (a wrong address, a host that is "
            "down, or a firewall dropping the connection)"
        ) from None
    except socket.gaierror as exc:
        raise Unreachable(f"cannot resolve {host} ({exc.strerror})") from None
    except OSError as exc:
        raise Unreachable(exc.strerror or str(exc)) from None


def check_reachable(
    manifest: Manifest, role: str, name: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """For `deploy supernode NAME` and `deploy register`: the SuperLink address that role dials
    answers TLS with its CA. Returns one line per address checked; raises `ManifestError` naming
    the field, the address and the reason. Other roles dial nothing: an empty list."""
    if role == "supernode":
        if name is None:
            raise ManifestError("fedrec deploy supernode needs a node NAME")
        node = manifest.node(name)
        checks = [
            (
                f"supernodes[{manifest.supernodes.index(node)}].superlink",
                node.superlink,
                node.ca_cert,
            )
        ]
    elif role == "register":
        link = manifest.superlink
        checks = [("superlink.control-port", link.control_address, link.ca_cert)]
    else:
        return []
    done = []
    for field_name, address, ca_cert in checks:
        try:
            tls_handshake(address, ca_cert, timeout)
        except Unreachable as exc:
            raise ManifestError(
                f"{manifest.path}: {field_name}: {address} does not answer TLS "
                f"with {ca_cert}: {exc}"
            ) from None
        done.append(f"{field_name} {address}: TLS handshake verified against {ca_cert}")
    return done
