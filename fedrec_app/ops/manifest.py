"""The federation manifest (`deploy/federation.yaml`): which host runs which role, with what files.

`load_manifest(path)` checks structure and types against the pydantic schema in
`manifest_schema` (unknown or missing fields are errors naming the field path, e.g.
`supernodes[1].data-path`); `Manifest.check(role, name)` then checks what that role needs on
this host (readable certificates and keys, SANs that cover the dialled addresses) before
anything starts. Relative paths resolve against `root`, itself relative to the manifest's folder.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.flower import host_port
from fedrec_app.ops.manifest_schema import (
    FederationDoc,
    GatewayDoc,
    SuperLinkDoc,
    SuperNodeDoc,
    problems,
)

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


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest's structure (file checks per role: `Manifest.check`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    try:
        doc = FederationDoc.model_validate(data)
    except ValidationError as exc:
        raise ManifestError("\n".join(f"{path}: {line}" for line in problems(exc))) from None
    root = (path.parent.resolve() / os.path.expanduser(doc.root)).resolve()

    def resolve(text: str) -> Path:
        written = Path(os.path.expanduser(text))
        return written if written.is_absolute() else (root / written).resolve()

    superlink = _superlink_spec(doc.superlink, resolve)
    dial = host_port(superlink.address, superlink.port)
    nodes: list[SuperNodeSpec] = []
    for i, node in enumerate(doc.supernodes):
        if any(n.name == node.name for n in nodes):
            raise ManifestError(f"{path}: supernodes[{i}].name: {node.name!r} appears twice")
        nodes.append(_supernode_spec(node, resolve, superlink.ca_cert, dial))
    gateway = None
    if doc.gateway is not None:
        for field_name in ("cert", "key"):
            if doc.gateway.tls and getattr(doc.gateway, field_name) is None:
                raise ManifestError(
                    f"{path}: gateway.{field_name}: missing (required with tls: true)"
                )
        gateway = _gateway_spec(doc.gateway, resolve)
    return Manifest(
        path=path,
        superlink=superlink,
        supernodes=tuple(nodes),
        cli_home=resolve(doc.cli_home) if doc.cli_home else superlink.home.parent / "cli",
        gateway=gateway,
    )


def _superlink_spec(doc: SuperLinkDoc, resolve: Callable[[str], Path]) -> SuperLinkSpec:
    database = resolve(doc.database)
    return SuperLinkSpec(
        address=doc.address,
        port=doc.port,
        bind=doc.bind or doc.address,
        control_port=doc.control_port,
        ca_cert=resolve(doc.ca_cert),
        server_cert=resolve(doc.server_cert),
        server_key=resolve(doc.server_key),
        database=database,
        home=resolve(doc.flwr_home) if doc.flwr_home else database.parent,
        log_file=resolve(doc.log_file) if doc.log_file else None,
        proxy_dir=resolve(doc.proxy_dir) if doc.proxy_dir else database.parent / "proxy",
    )


def _supernode_spec(
    doc: SuperNodeDoc, resolve: Callable[[str], Path], ca_cert: Path, dial: str
) -> SuperNodeSpec:
    """One node's spec: its CA defaults to the SuperLink's, its address to the Fleet proxy's."""
    state_dir = resolve(doc.state_dir)
    private_key = resolve(doc.private_key)
    return SuperNodeSpec(
        name=doc.name,
        superlink=doc.superlink or dial,
        ca_cert=resolve(doc.ca_cert) if doc.ca_cert else ca_cert,
        private_key=private_key,
        public_key=(
            resolve(doc.public_key)
            if doc.public_key
            else private_key.with_name(private_key.name + ".pub")
        ),
        data_path=resolve(doc.data_path),
        state_dir=state_dir,
        home=resolve(doc.flwr_home) if doc.flwr_home else state_dir / "flwr-home",
        gpu=doc.gpu,
        runtime_port=doc.runtime_port,
        max_wait_time=doc.max_wait_time,
        approved_apps=(
            resolve(doc.approved_apps) if doc.approved_apps else state_dir / "approved-apps.txt"
        ),
    )


def _gateway_spec(doc: GatewayDoc, resolve: Callable[[str], Path]) -> GatewaySpec:
    return GatewaySpec(
        host=doc.host,
        port=doc.port,
        checkpoint=resolve(doc.checkpoint),
        tls=doc.tls,
        cert=resolve(doc.cert) if doc.cert else None,
        key=resolve(doc.key) if doc.key else None,
        api_key_file=resolve(doc.api_key_file) if doc.api_key_file else None,
        verify_key=resolve(doc.verify_key),
    )
