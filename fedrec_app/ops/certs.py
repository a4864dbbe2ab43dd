"""A private CA + SuperLink server certificate, the federation's checkpoint-signing key pair
(Ed25519), and OpenSSH ECDSA P-384 SuperNode key pairs.

Everything is made with the `cryptography` package (no openssl/ssh-keygen); private keys are
written 0600, atomically, and nothing existing is overwritten unless asked.

Over 400 lines for one reason: it is the federation's one credentials module (`fedrec certs`,
`fedrec keys`), whose parts share the folder layout, the SAN rules and the refusal to overwrite.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write
from fedrec_app.core.signing import (
    key_id,
    load_signing_key,
    load_verify_key,
    new_signing_key,
    private_pem,
    public_pem,
)

log = logging.getLogger(__name__)

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
# The ServerApp signs checkpoints with the .key (SuperLink host only); gateways check the .pub.
SIGNING_KEY, SIGNING_PUB = "federation-signing.key", "federation-signing.pub"
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
CA_DAYS, SERVER_DAYS = 3650, 825
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PRIVATE, PUBLIC = 0o600, 0o644


@dataclass(frozen=True)
class CertPaths:
    """Where `make_certs` put the CA and the SuperLink server certificate (under `out`)."""

    out: Path

    @property
    def ca_cert(self) -> Path:
        return self.out / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.out / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.out / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.out / SERVER_KEY

    @property
    def signing_key(self) -> Path:
        """The federation's Ed25519 checkpoint-signing key (PKCS#8 PEM, 0600): run-config
        ``signing-key`` on the SuperLink host."""
        return self.out / SIGNING_KEY

    @property
    def signing_pub(self) -> Path:
        """Its public half (PEM): the gateway's ``--verify-key``."""
        return self.out / SIGNING_PUB


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair: `private` (OpenSSH, 0600) and `public` (`<private>.pub`)."""

    name: str
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")


def parse_san(value: str) -> x509.GeneralName:
    """An IP address or DNS name (an optional `IP:`/`DNS:` prefix is accepted) as a SAN entry."""
    text = value.strip()
    kind, _, rest = text.partition(":")
    if kind.upper() in ("IP", "DNS") and rest:
        text = rest
        if kind.upper() == "IP":
            try:
                return x509.IPAddress(ipaddress.ip_address(text))
            except ValueError:
                raise FedrecError(f"--san {value!r}: not an IP address") from None
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise FedrecError(f"--san {value!r}: neither an IP address nor a valid DNS name")
    return x509.DNSName(name.lower())


def san_entries(extra: list[str] | tuple[str, ...] = ()) -> list[x509.GeneralName]:
    """The given SANs plus localhost, 127.0.0.1 and ::1, without duplicates, in order."""
    entries: list[x509.GeneralName] = []
    for value in (*extra, *DEFAULT_SANS):
        entry = parse_san(value)
        if entry not in entries:
            entries.append(entry)
    return entries


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _refuse_existing(paths: list[Path], hint: str) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FedrecError(f"refusing to overwrite {', '.join(existing)} ({hint})")


def writable_folder(out: Path, flag: str = "--out") -> Path:
    """Create ``out`` when missing and check that files can be made in it: a bad ``flag`` is a
    clear error before any key is generated, never a traceback or half a CA."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FedrecError(f"{flag} {out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise FedrecError(f"{flag} {out}: {parent} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise FedrecError(
            f"{flag} {out}: cannot write certificates or keys there ({exc.strerror or exc})"
        ) from None
    return out


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name("fedrec federation CA")
    start, end = _validity(CA_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def _issue_server(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    entries: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    start, end = _validity(SERVER_DAYS)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(str(entries[0].value)))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def _write_server(
    cert_path: Path, key_path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    atomic_write(key_path, _pem_key(key), PRIVATE)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)


def make_certs(out: Path, sans: list[str] | tuple[str, ...] = (), force: bool = False) -> CertPaths:
    """Write a new CA and a SuperLink server certificate signed by it into `out`.

    The server certificate's SANs are `sans` + localhost, 127.0.0.1, ::1. An existing CA (or
    server certificate) is never overwritten unless `force`. The federation signing key pair is
    made when missing and kept when present, also with `force` (see `make_signing_key`).
    """
    paths = CertPaths(Path(out))
    entries = san_entries(sans)  # validate before touching anything
    if not force:
        _refuse_existing(
            [paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key],
            "to re-issue only the server certificate with the existing CA, run `fedrec certs "
            f"--out {paths.out} --renew-server --san ...`; --force replaces the CA, and every "
            "node must then be given the new ca.crt",
        )
    _existing_signing_pair(paths)  # a broken pair stops us before anything is written
    writable_folder(paths.out)
    ca_key, ca_cert = _new_ca()
    server_key, server_cert = _issue_server(ca_key, ca_cert, entries)
    atomic_write(paths.ca_key, _pem_key(ca_key), PRIVATE)
    _write_server(paths.server_cert, paths.server_key, server_key, server_cert)
    atomic_write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    log.info(
        "wrote CA %s and server certificate %s (SANs: %s)",
        paths.ca_cert,
        paths.server_cert,
        ", ".join(str(e.value) for e in entries),
    )
    ensure_signing_key(paths.out)
    return paths


def _existing_signing_pair(paths: CertPaths) -> str | None:
    """The key id of the signing pair in ``paths`` (None when neither half is there); an error
    when only one half is there or the halves do not match."""
    present = [p.exists() for p in (paths.signing_key, paths.signing_pub)]
    if not any(present):
        return None
    if not all(present):
        have, lack = (
            (paths.signing_key, paths.signing_pub)
            if present[0]
            else (paths.signing_pub, paths.signing_key)
        )
        raise FedrecError(
            f"{have} exists but {lack} does not: restore the missing half, or replace the pair "
            "with `fedrec certs --signing-key --force` (gateways then need the new .pub)"
        )
    private = load_signing_key(paths.signing_key)
    public = load_verify_key(paths.signing_pub)
    if key_id(private.public_key()) != key_id(public):
        raise FedrecError(f"{paths.signing_pub} is not the public half of {paths.signing_key}")
    return key_id(public)


def make_signing_key(out: Path, force: bool = False) -> CertPaths:
    """Write a new federation signing key pair into `out`: `federation-signing.key` (Ed25519,
    PKCS#8 PEM, 0600) and `federation-signing.pub` (PEM). An existing half is never overwritten
    unless `force` (then checkpoints signed before verify only with the old .pub)."""
    paths = CertPaths(Path(out))
    if not force:
        _refuse_existing(
            [paths.signing_key, paths.signing_pub],
            "pass --force to replace the signing key; every gateway then needs the new .pub",
        )
    writable_folder(paths.out)
    key = new_signing_key()
    atomic_write(paths.signing_key, private_pem(key), PRIVATE)
    atomic_write(paths.signing_pub, public_pem(key.public_key()), PUBLIC)
    log.info(
        "wrote the federation signing key %s (+ .pub, key id %s)",
        paths.signing_key,
        key_id(key.public_key()),
    )
    return paths


def ensure_signing_key(out: Path) -> bool:
    """The signing key pair in `out`: made when neither half is there (True), kept when both are
    and match (False). Half a pair, or halves that differ, is an error: nothing is overwritten."""
    paths = CertPaths(Path(out))
    existing = _existing_signing_pair(paths)
    if existing is not None:
        log.info("keeping the federation signing key %s (key id %s)", paths.signing_key, existing)
        return False
    make_signing_key(paths.out)
    return True


def issue_server_cert(
    out: Path, name: str, sans: list[str] | tuple[str, ...] = (), force: bool = False
) -> tuple[Path, Path]:
    """Sign another server certificate (e.g. the gateway's) with the CA in `out`.

    Writes `out/NAME.pem` and `out/NAME.key` (0600); returns (cert, key).
    """
    paths = CertPaths(Path(out))
    if not _NODE_NAME.match(name) or name == "ca":
        raise FedrecError(f"--name {name!r}: use letters, digits, '-', '_' or '.' (not 'ca')")
    entries = san_entries(sans)
    cert_path, key_path = paths.out / f"{name}.pem", paths.out / f"{name}.key"
    if not force:
        _refuse_existing([cert_path, key_path], "pass --force to replace it")
    try:
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise FedrecError(
            f"cannot load the CA from {paths.ca_cert} / {paths.ca_key} ({exc}); "
            "run `fedrec certs` first"
        ) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise FedrecError(f"{paths.ca_key}: not an EC private key made by `fedrec certs`")
    writable_folder(paths.out)
    key, cert = _issue_server(ca_key, ca_cert, entries)
    _write_server(cert_path, key_path, key, cert)
    log.info(
        "wrote server certificate %s signed by %s (SANs: %s)",
        cert_path,
        paths.ca_cert,
        ", ".join(str(e.value) for e in entries),
    )
    return cert_path, key_path


def renew_server_cert(out: Path, sans: list[str] | tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Re-issue the SuperLink's `server.pem`/`server.key` in `out` for `sans` (+ localhost,
    127.0.0.1, ::1), signed by the EXISTING CA there: `ca.crt` stays as it is, so every node
    keeps trusting the SuperLink. Needs `ca.key` (the admin machine); refuses without it.
    Without `sans`, the current server.pem's SANs are kept (a renewal before it expires)."""
    paths = CertPaths(Path(out))
    if not sans and paths.server_cert.is_file():
        sans = [san for san in certificate_sans(paths.server_cert) if san not in DEFAULT_SANS]
    san_entries(sans)  # validate before touching anything
    missing = [str(p) for p in (paths.ca_cert, paths.ca_key) if not p.is_file()]
    if missing:
        raise FedrecError(
            f"cannot renew the server certificate without the CA: {', '.join(missing)} missing "
            "(renew on the admin machine that holds ca.key; `fedrec certs --force` would make a "
            "NEW CA that no node trusts yet)"
        )
    return issue_server_cert(paths.out, SERVER_CERT.removesuffix(".pem"), sans, force=True)


def certificate_sans(cert_path: Path) -> list[str]:
    """The DNS names and IP addresses in a PEM certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


def make_node_keys(out: Path, names: list[str] | tuple[str, ...]) -> list[NodeKey]:
    """Write one OpenSSH ECDSA P-384 key pair per name: `out/NAME` (0600) and `out/NAME.pub`."""
    out = Path(out)
    if not names:
        raise FedrecError("no node names given")
    keys: list[NodeKey] = []
    for name in names:
        if not _NODE_NAME.match(name):
            raise FedrecError(
                f"node name {name!r}: use letters, digits, '-', '_' or '.' (at most 63)"
            )
        key = NodeKey(name, out / name)
        if key in keys:
            raise FedrecError(f"node name {name!r} given twice")
        keys.append(key)
    _refuse_existing(
        [p for k in keys for p in (k.private, k.public)],
        "a registered key cannot be reused; pick new names or delete the old pair",
    )
    writable_folder(out)
    for key in keys:
        private = ec.generate_private_key(ec.SECP384R1())
        private_bytes = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public_bytes = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        atomic_write(key.private, private_bytes, PRIVATE)
        atomic_write(key.public, public_bytes + f" fedrec-{key.name}\n".encode(), PUBLIC)
        log.info("wrote SuperNode key pair %s (+ .pub)", key.private)
    return keys
