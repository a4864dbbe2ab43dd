"""The Fleet proxy: the only part of a SuperLink host that the lab network reaches.

Flower 1.42 serves its Fleet API (SuperNodes), Control API (`flwr run/ls/stop`, node
registration) and runtime API (SuperExec, ServerApp) on ONE port, and the open-source build has
no Control API login: whoever reaches that port can start runs, i.e. run code on every node.
So the SuperLink listens on its host's loopback only, and nginx (a maintained proxy from the
distribution: `apt-get install nginx-light`) terminates TLS on the lab address and forwards
exactly the Fleet API calls a SuperNode makes (`FLEET_PATHS`, POST only). Every other path,
Control and runtime included, is answered 404 by nginx itself and never reaches the SuperLink.
SuperNode authentication still works through it: nginx passes the signed `flwr-*` headers on
unchanged, and re-encrypts to the SuperLink, verifying its certificate against the CA.

Operators reach the Control API through SSH to the SuperLink host (an `ssh -L` tunnel to the
loopback port, or `flwr` run there): see deploy/README.md for why.

`ProxyCommand` writes the config under one folder (config, pid file, access log, temp paths) and
gives the command line that runs nginx in the foreground, errors on stderr, so `ManagedProcess`
or systemd manage it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write
from fedrec_app.ops.flower import host_port

log = logging.getLogger(__name__)

# The Fleet API calls of a Flower 1.42 SuperNode (flwr/supernode/fleet_http_client.py). Each is
# authenticated by the SuperLink (a signature by a registered node key); `register-node` is
# refused by a SuperLink with SuperNode auth on. tests/ops/test_proxy.py holds this list equal
# to Flower's own route table.
FLEET_PATHS = (
    "/v1/fleet/register-node",
    "/v1/fleet/activate-node",
    "/v1/fleet/deactivate-node",
    "/v1/fleet/unregister-node",
    "/v1/fleet/send-node-heartbeat",
    "/v1/fleet/pull-messages",
    "/v1/fleet/push-messages",
    "/v1/fleet/get-run",
    "/v1/fleet/get-fab",
    "/v1/fleet/push-object",
    "/v1/fleet/pull-object",
    "/v1/fleet/confirm-message-received",
)
CONFIG_FILE = "nginx.conf"
MAX_BODY = "1g"  # a pushed model update; Flower itself bounds what it accepts
INSTALL_HINT = "install nginx (Debian: apt-get install nginx-light)"


def nginx_bin() -> str | None:
    """The nginx executable on PATH or in /usr/sbin, or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class ProxyCommand:
    """nginx in front of a SuperLink on loopback: TLS on `host:port`, Fleet API only."""

    host: str
    port: int
    upstream_port: int
    server_cert: Path
    server_key: Path
    ca_cert: Path
    folder: Path
    upstream_host: str = "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return Path(self.folder).resolve() / CONFIG_FILE

    @property
    def address(self) -> str:
        """What SuperNodes dial (0.0.0.0 is reached locally on 127.0.0.1)."""
        return host_port("127.0.0.1" if self.host == "0.0.0.0" else self.host, self.port)

    def config(self) -> str:
        """The nginx configuration (every path absolute; nothing outside `folder` written)."""
        folder = Path(self.folder).resolve()
        upstream = host_port(self.upstream_host, self.upstream_port)
        fleet = "\n".join(
            f"        location = {path} {{\n"
            f"            limit_except POST {{ deny all; }}\n"
            f"            proxy_pass https://superlink;\n"
            f"        }}"
            for path in FLEET_PATHS
        )
        return f"""\
# Written by fedrec (fedrec_app/ops/proxy.py): the Fleet API only. Not edited by hand.
worker_processes 1;
pid {folder}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}

http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    server_tokens off;

    upstream superlink {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen {host_port(self.host, self.port)} ssl;
        ssl_certificate {Path(self.server_cert).resolve()};
        ssl_certificate_key {Path(self.server_key).resolve()};
        ssl_protocols TLSv1.2 TLSv1.3;

        client_max_body_size {MAX_BODY};
        client_header_timeout 10s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate {Path(self.ca_cert).resolve()};
        proxy_ssl_name localhost;  # nginx checks DNS names only; the cert's SANs hold it
        proxy_ssl_session_reuse on;

{fleet}

        # Control API, runtime API, /health and anything else: never forwarded.
        location / {{
            return 404;
        }}
    }}
}}
"""

    def write(self) -> Path:
        """Write the config (and its temp folders); the config's path."""
        folder = Path(self.folder).resolve()
        (folder / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        return atomic_write(self.config_path, self.config(), 0o644)

    def _nginx(self) -> list[str]:
        """nginx on the written config, errors to stderr."""
        binary = nginx_bin()
        if binary is None:
            raise FedrecError(f"the Fleet proxy needs nginx: {INSTALL_HINT}")
        return [
            binary,
            "-c",
            str(self.config_path),
            "-p",
            str(Path(self.folder).resolve()),
            "-e",
            "stderr",
        ]

    def argv(self) -> list[str]:
        """nginx in the foreground on the written config."""
        return [*self._nginx(), "-g", "daemon off;"]

    def check(self, prefix: Sequence[str] = ()) -> None:
        """`nginx -t` on the written config (run under `prefix`, e.g. `ip netns exec NS`: it
        binds the address); raise with nginx's own words if it is refused."""
        argv = [*prefix, *self._nginx(), "-t", "-q"]
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise FedrecError(
                f"nginx refused {self.config_path}: {(result.stderr or result.stdout).strip()}"
            )
