"""The federation manifest (`deploy/federation.yaml`): which host runs which role, with what files.

`load_manifest(path)` checks structure and types (unknown or missing fields are errors naming
the field); `Manifest.check(role, name)` then checks what that role needs on this host
(readable certificates and keys, SANs that cover the dialled addresses) before anything starts.
Relative paths resolve against `root`, itself relative to the manifest's folder.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedrec_app.core.errors import FedrecError

ROLES = ("superlink", "proxy", "supernode", "register", "gateway")


class ManifestError(FedrecError):
    """A bad manifest: the message names the file and the field."""


@dataclass(frozen=True)
class SuperLinkSpec:
    """`address`/`port`/`bind`: the Fleet proxy on the lab network (what SuperNodes dial);
    `control_port`: the SuperLink itself, on the host's loopback only (the operator's)."""

    address: str
    port: int
    bind: str
    control_port: int
    ca_cert: Path
    server_cert: Path
    server_key: Path
    database: Path
    home: Path
    log_file: Path | None
    proxy_dir: Path

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"


@dataclass(frozen=True)
class SuperNodeSpec:
    name: str
    superlink: str
    ca_cert: Path
    private_key: Path
    public_key: Path
    data_path: Path
    state_dir: Path
    home: Path
    gpu: int
    runtime_port: int
    max_wait_time: float
    approved_apps: Path

    @property
    def node_config(self) -> dict[str, str | int]:
        """What the ClientApp reads from `context.node_config` (`site-name`: the node's name,
        sent with its replies so the ServerApp's log names sites, not node ids)."""
        return {
            "data-path": str(self.data_path),
            "state-dir": str(self.state_dir),
            "gpu-index": self.gpu,
            "site-name": self.name,
        }


@dataclass(frozen=True)
class GatewaySpec:
    host: str
    port: int
    checkpoint: Path
    tls: bool
    cert: Path | None
    key: Path | None
    api_key_file: Path | None
    verify_key: Path  # federation-signing.pub: only checkpoints the federation signed are served


@dataclass(frozen=True)
class Manifest:
    path: Path
    superlink: SuperLinkSpec
    supernodes: tuple[SuperNodeSpec, ...]
    cli_home: Path
    gateway: GatewaySpec | None

    def node(self, name: str) -> SuperNodeSpec:
        for node in self.supernodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.supernodes)
        raise ManifestError(f"{self.path}: supernodes: no node named {name!r} (known: {known})")

    def check(self, role: str, name: str | None = None) -> None:
        """Check the files and addresses `role` needs on this host; raise naming the field."""
        link = self.superlink
        if role in ("superlink", "proxy"):
            if link.control_port == link.port:
                raise ManifestError(
                    f"{self.path}: superlink.control-port: {link.control_port} "
                    "is also superlink.port (the proxy's); choose another"
                )
            for field_name, path in (
                ("ca-cert", link.ca_cert),
                ("server-cert", link.server_cert),
                ("server-key", link.server_key),
            ):
                self._readable(f"superlink.{field_name}", path)
            self._covers("superlink.address", link.address, link.server_cert)
            # the SuperLink listens on loopback: its SuperExec and the operator dial 127.0.0.1,
            # and the proxy checks the certificate by the name localhost
            self._covers("superlink.control-port", "127.0.0.1", link.server_cert)
            self._covers("superlink.control-port", "localhost", link.server_cert)
            if link.bind not in ("0.0.0.0", "::", link.address):
                self._covers("superlink.bind", link.bind, link.server_cert)
            for i, node in enumerate(self.supernodes):
                self._covers(f"supernodes[{i}].superlink", _host(node.superlink), link.server_cert)
        elif role in ("supernode", "trainer"):
            if name is None:
                raise ManifestError(f"fedrec deploy {role} needs a node NAME")
            node = self.node(name)
            i = self.supernodes.index(node)
            self._readable(f"supernodes[{i}].ca-cert", node.ca_cert)
            self._readable(f"supernodes[{i}].private-key", node.private_key, private=True)
            if not node.data_path.is_dir():
                raise ManifestError(
                    f"{self.path}: supernodes[{i}].data-path: {node.data_path} "
                    "is not a folder on this host"
                )
            from fedrec_app.data.layout import verify_partition_folder

            try:  # the node's own folder: its manifest, its files' hashes, the catalogue copy
                verify_partition_folder(node.data_path)
            except FedrecError as exc:
                raise ManifestError(
                    f"{self.path}: supernodes[{i}].data-path: {exc} (make it with "
                    "`fedrec partition site`: deploy/README.md, 'Each site's "
                    "data')"
                ) from None
            if role == "supernode":
                from fedrec_app.ops.app_approval import ApprovalError, read_allowlist

                try:
                    read_allowlist(node.approved_apps)
                except ApprovalError as exc:
                    raise ManifestError(
                        f"{self.path}: supernodes[{i}].approved-apps: {exc} "
                        "(see deploy/README.md, Approve the app)"
                    ) from None
        elif role == "register":
            self._readable("superlink.ca-cert", link.ca_cert)
            for i, node in enumerate(self.supernodes):
                self._readable(f"supernodes[{i}].public-key", node.public_key)
        elif role == "gateway":
            gw = self.gateway
            if gw is None:
                raise ManifestError(f"{self.path}: gateway: missing (needed for this role)")
            if gw.tls:
                assert gw.cert is not None and gw.key is not None
                self._readable("gateway.cert", gw.cert)
                self._readable("gateway.key", gw.key, private=True)
                self._covers("gateway.host", gw.host, gw.cert)
            if gw.api_key_file is not None:
                self._readable("gateway.api-key-file", gw.api_key_file, private=True)
            from fedrec_app.core.signing import load_verify_key

            self._readable("gateway.verify-key", gw.verify_key)
            try:
                verify_key = load_verify_key(gw.verify_key)
            except FedrecError as exc:
                raise ManifestError(f"{self.path}: gateway.verify-key: {exc}") from None
            from fedrec_app.gateway.store import load_source

            try:  # what the gateway would serve, verified as at its start
                load_source(gw.checkpoint, verify_key)
            except FedrecError as exc:
                raise ManifestError(
                    f"{self.path}: gateway.checkpoint: {exc} (publish one: "
                    "deploy/README.md, 'Get the checkpoint to the gateway')"
                ) from None
        else:
            raise ManifestError(f"unknown role {role!r} (one of {', '.join(ROLES)})")

    def _readable(self, field_name: str, path: Path, private: bool = False) -> None:
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ManifestError(
                f"{self.path}: {field_name}: cannot read {path} ({exc.strerror or exc})"
            ) from None
        if private and path.stat().st_mode & 0o077:
            raise ManifestError(
                f"{self.path}: {field_name}: {path} is readable by group/others "
                f"(mode {path.stat().st_mode & 0o777:o}); chmod 600 it"
            )

    def _covers(self, field_name: str, address: str, cert: Path) -> None:
        from fedrec_app.ops.certs import certificate_sans

        try:
            sans = certificate_sans(cert)
        except ValueError as exc:
            raise ManifestError(
                f"{self.path}: {field_name}: {cert} is not a PEM certificate ({exc})"
            ) from None
        if not _covered(address, sans):
            raise ManifestError(
                f"{self.path}: {field_name}: {address} is not covered by the SANs of {cert} "
                f"({', '.join(sans)}); {_renew_advice(cert, sans, address)}"
            )


def _renew_advice(cert: Path, sans: list[str], address: str) -> str:
    """The command that re-issues `cert` for its SANs plus `address` with the SAME CA (a new CA,
    `fedrec certs --force`, would break every node's trust)."""
    from fedrec_app.ops.certs import DEFAULT_SANS, SERVER_CERT

    keep = [san for san in sans if san not in DEFAULT_SANS]
    flags = " ".join(f"--san {san}" for san in (*keep, address))
    if cert.name == SERVER_CERT:
        return (
            f"re-issue it with the same CA (on the machine holding ca.key): `fedrec certs "
            f"--out {cert.parent} --renew-server {flags}`"
        )
    return (
        f"re-issue it with the same CA: `fedrec certs --out {cert.parent} --name "
        f"{cert.stem} {flags} --force`"
    )


def _host(address: str) -> str:
    """The host of `host:port` / `[v6]:port`."""
    if address.startswith("["):
        return address[1 : address.index("]")]
    return address.rsplit(":", 1)[0]


def _covered(address: str, sans: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        name = address.lower().rstrip(".")
        for san in sans:
            if san.startswith("*.") and "." in name:
                if name.split(".", 1)[1] == san[2:]:
                    return True
            elif san == name:
                return True
        return False
    return any(_same_ip(ip, san) for san in sans)


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, san: str) -> bool:
    try:
        return ipaddress.ip_address(san) == ip
    except ValueError:
        return False


class _Reader:
    """Typed access to one mapping of the YAML, with errors naming `prefix.key`."""

    def __init__(self, manifest: Path, root: Path, data: Any, prefix: str) -> None:
        self.manifest, self.root, self.prefix = manifest, root, prefix
        if not isinstance(data, Mapping):
            raise self.error(prefix, f"must be a mapping, got {type(data).__name__}")
        self.data = data
        self.used: set[str] = set()

    def error(self, field_name: str, message: str) -> ManifestError:
        return ManifestError(f"{self.manifest}: {field_name}: {message}")

    def _field(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise self.error(self._field(key), "missing (required)")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(self._field(key), f"must be {names}, got {value!r}")
        problem = check(value) if check else None
        if problem:
            raise self.error(self._field(key), problem)
        return value

    def path(self, key: str, default: Any = ...) -> Path:
        value = self.get(key, str, default)
        if value is None or isinstance(value, Path):
            return value
        if not value.strip():
            raise self.error(self._field(key), "must not be empty")
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (self.root / path).resolve()

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(
                self._field(unknown[0]), f"unknown field (known: {', '.join(sorted(self.used))})"
            )


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number 1-65535"


def _address(value: str) -> str | None:
    return None if value.strip() and " " not in value else "must be an IP address or DNS name"


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest's structure (file checks per role: `Manifest.check`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    top = _Reader(path, path.parent, data, "")
    root_value = top.get("root", str, ".")
    root = (path.parent.resolve() / os.path.expanduser(root_value)).resolve()
    top.root = root

    sl = _Reader(path, root, top.get("superlink", dict), "superlink")
    address = sl.get("address", str, check=_address)
    port = sl.get("port", int, check=_port)
    database = sl.path("database")
    superlink = SuperLinkSpec(
        address=address,
        port=port,
        bind=sl.get("bind", str, address, check=_address),
        control_port=sl.get("control-port", int, 9092, check=_port),
        ca_cert=sl.path("ca-cert"),
        server_cert=sl.path("server-cert"),
        server_key=sl.path("server-key"),
        database=database,
        home=sl.path("flwr-home", database.parent),
        log_file=sl.path("log-file", None),
        proxy_dir=sl.path("proxy-dir", database.parent / "proxy"),
    )
    sl.done()
    dial = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

    raw_nodes = top.get("supernodes", list, check=lambda v: None if v else "must not be empty")
    nodes: list[SuperNodeSpec] = []
    for i, raw in enumerate(raw_nodes):
        nd = _Reader(path, root, raw, f"supernodes[{i}]")
        name = nd.get(
            "name",
            str,
            check=lambda v: (
                None if v.strip() and "/" not in v else "must be a non-empty name without '/'"
            ),
        )
        if any(n.name == name for n in nodes):
            raise nd.error(f"supernodes[{i}].name", f"{name!r} appears twice")
        state_dir = nd.path("state-dir")
        private_key = nd.path("private-key")
        nodes.append(
            SuperNodeSpec(
                name=name,
                superlink=nd.get("superlink", str, dial, check=_address),
                ca_cert=nd.path("ca-cert", superlink.ca_cert),
                private_key=private_key,
                public_key=nd.path("public-key", private_key.with_name(private_key.name + ".pub")),
                data_path=nd.path("data-path"),
                state_dir=state_dir,
                home=nd.path("flwr-home", state_dir / "flwr-home"),
                gpu=nd.get("gpu", int, -1),
                runtime_port=nd.get("runtime-port", int, 9094, check=_port),
                max_wait_time=float(
                    nd.get(
                        "max-wait-time",
                        (int, float),
                        600,
                        check=lambda v: None if v > 0 else "must be > 0",
                    )
                ),
                approved_apps=nd.path("approved-apps", state_dir / "approved-apps.txt"),
            )
        )
        nd.done()

    cli_home = top.path("cli-home", superlink.home.parent / "cli")
    gateway = None
    if "gateway" in top.data:
        gw = _Reader(path, root, top.get("gateway", dict), "gateway")
        tls = gw.get("tls", bool, True)
        gateway = GatewaySpec(
            host=gw.get("host", str, check=_address),
            port=gw.get("port", int, check=_port),
            checkpoint=gw.path("checkpoint"),
            tls=tls,
            cert=gw.path("cert") if tls else gw.path("cert", None),
            key=gw.path("key") if tls else gw.path("key", None),
            api_key_file=gw.path("api-key-file", None),
            verify_key=gw.path("verify-key"),
        )
        gw.done()
    top.done()
    return Manifest(
        path=path, superlink=superlink, supernodes=tuple(nodes), cli_home=cli_home, gateway=gateway
    )
