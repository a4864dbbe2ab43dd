"""Exact command lines and environments for Flower 1.42 processes, and a `flwr` CLI wrapper.

Secure by default: the SuperLink always gets TLS, SuperNode auth, a database and no runtime
`uv sync`; SuperNodes always verify the SuperLink against the CA and sign with their key.
Plaintext variants exist only behind an explicit `insecure=True`, which logs a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write

log = logging.getLogger(__name__)

FLOWER_ENV = {"FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0"}
ConfigValue = bool | int | float | str | Path
_CONFIG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CONNECTION = re.compile(r"^[A-Za-z0-9_-]+$")


def flower_env(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's env) + no update check, no telemetry, own FLWR_HOME,
    and this Python's bin dir first on PATH (Flower spawns `flower-superexec` etc. by name)."""
    env = dict(os.environ if base is None else base)
    env.update(FLOWER_ENV)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir)]
    )
    env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    return env


def flower_bin(name: str) -> str:
    """The path of a Flower executable: next to this Python first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FedrecError(f"{name} not found next to {sys.executable} or on PATH (install flwr)")
    return found


def toml_value(key: str, value: ConfigValue) -> str:
    """One value as Flower's `key=value` config parser reads it (TOML literal for strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FedrecError(f"config {key}: {value} is not a finite number")
        return repr(value)
    text = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    if "'" in text or "\n" in text or "\r" in text:
        raise FedrecError(f"config {key}: {text!r} must not contain a single quote or newline")
    return f"'{text}'"


def format_config(config: Mapping[str, ConfigValue]) -> str:
    """`{"data-path": Path("x"), "k": 1}` -> `data-path='/abs/x' k=1` (Paths made absolute)."""
    parts = []
    for key, value in config.items():
        if not _CONFIG_KEY.match(key):
            raise FedrecError(f"config key {key!r}: use letters, digits, '-', '_' or '.'")
        parts.append(f"{key}={toml_value(key, value)}")
    return " ".join(parts)


def host_port(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _warn_insecure(what: str) -> None:
    log.warning("%s runs WITHOUT TLS (insecure=True): traffic and the Control API are open", what)


@dataclass(frozen=True)
class SuperLinkCommand:
    """`flower-superlink`: one HTTPS port for Fleet, Control and Runtime APIs."""

    host: str
    port: int
    database: Path
    ca_cert: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    log_file: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.insecure:
            _warn_insecure("the SuperLink")
        elif not (self.ca_cert and self.server_cert and self.server_key):
            raise FedrecError("the SuperLink needs ca_cert, server_cert and server_key (TLS)")

    @property
    def address(self) -> str:
        """The address clients dial (0.0.0.0 is reached locally on 127.0.0.1)."""
        return host_port("127.0.0.1" if self.host == "0.0.0.0" else self.host, self.port)

    @property
    def health_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.address}/health"

    def argv(self) -> list[str]:
        argv = [flower_bin("flower-superlink")]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.ca_cert and self.server_cert and self.server_key
            argv += [
                "--ssl-ca-certfile",
                str(Path(self.ca_cert).resolve()),
                "--ssl-certfile",
                str(Path(self.server_cert).resolve()),
                "--ssl-keyfile",
                str(Path(self.server_key).resolve()),
                "--enable-supernode-auth",
            ]
        argv += [
            "--database",
            str(Path(self.database).resolve()),
            "--disable-runtime-dependency-installation",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.log_file:
            argv += ["--log-file", str(Path(self.log_file).resolve())]
        return argv


@dataclass(frozen=True)
class SuperNodeCommand:
    """`flower-supernode`: dials the SuperLink, opens its own Runtime API on `runtime_port`.

    With `quick_poll` (the default) it runs through `fedrec_app.ops.supernode_main`: Flower's
    SuperNode with a short poll after each reply instead of its fixed 3 s, which runs only the
    apps whose FAB hash is in the `approved_apps` allowlist (`fedrec_app.ops.app_approval`).
    One of `approved_apps` or an explicit `allow_any_app=True` (logs a warning) is required;
    plain `flower-supernode` (`quick_poll=False`) cannot check apps, so it needs `allow_any_app`.
    """

    superlink: str
    runtime_port: int
    ca_cert: Path | None = None
    private_key: Path | None = None
    node_config: Mapping[str, ConfigValue] = field(default_factory=dict)
    max_wait_time: float = 600.0
    runtime_host: str = "127.0.0.1"
    insecure: bool = False
    quick_poll: bool = True
    approved_apps: Path | None = None
    allow_any_app: bool = False

    def __post_init__(self) -> None:
        if self.insecure:
            _warn_insecure(f"the SuperNode dialling {self.superlink}")
        elif self.ca_cert is None:
            raise FedrecError("a SuperNode needs ca_cert to verify the SuperLink (TLS)")
        if (self.approved_apps is None) == (not self.allow_any_app):
            raise FedrecError(
                "a SuperNode needs exactly one of approved_apps (the allowlist of "
                "app hashes its admin approved) or allow_any_app=True"
            )
        if self.approved_apps is not None and not self.quick_poll:
            raise FedrecError(
                "plain flower-supernode (quick_poll=False) cannot check app "
                "hashes: use quick_poll=True or allow_any_app=True"
            )
        if self.allow_any_app:
            log.warning(
                "the SuperNode dialling %s runs ANY app (allow_any_app=True)", self.superlink
            )

    def argv(self) -> list[str]:
        if self.quick_poll:
            argv = [sys.executable, "-m", "fedrec_app.ops.supernode_main"]
            if self.approved_apps is not None:
                argv += ["--approved-apps", str(Path(self.approved_apps).resolve())]
            else:
                argv.append("--allow-any-app")
        else:
            argv = [flower_bin("flower-supernode")]
        argv += ["--superlink", self.superlink]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.ca_cert is not None
            argv += ["--root-certificates", str(Path(self.ca_cert).resolve())]
        if self.private_key is not None:
            argv += ["--auth-supernode-private-key", str(Path(self.private_key).resolve())]
        argv += [
            "--host",
            self.runtime_host,
            "--port",
            str(self.runtime_port),
            "--max-wait-time",
            f"{self.max_wait_time:g}",
        ]
        if self.node_config:
            argv += ["--node-config", format_config(self.node_config)]
        return argv


class FlowerCliError(FedrecError):
    """A `flwr` command failed; the message holds Flower's own error text."""


FINISHED = "finished:"
COMPLETED = "finished:completed"


class FlwrCli:
    """The `flwr` CLI against one SuperLink connection, in its own FLWR_HOME.

    Every call uses `--format json` and checks `success`: `flwr`'s exit codes lie.
    """

    def __init__(self, home: Path, connection: str = "fedrec", timeout: float = 120.0) -> None:
        if not _CONNECTION.match(connection):
            raise FedrecError(f"connection name {connection!r}: letters, digits, '-', '_' only")
        self.home = Path(home).resolve()
        self.connection = connection
        self.timeout = timeout

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    def env(self) -> dict[str, str]:
        env = flower_env(self.home)
        env["NO_COLOR"] = "1"
        return env

    def configure(self, address: str, ca_cert: Path | None, insecure: bool = False) -> Path:
        """Write `$FLWR_HOME/config.toml` with this connection as the default."""
        lines = [
            "[superlink]",
            f"default = {json.dumps(self.connection)}",
            "",
            f"[superlink.{self.connection}]",
            f"address = {json.dumps(address)}",
        ]
        if insecure:
            _warn_insecure(f"the flwr CLI connection to {address}")
            lines.append("insecure = true")
        elif ca_cert is None:
            raise FedrecError("a flwr connection needs the CA certificate (or insecure=True)")
        else:
            lines.append(f"root-certificates = {json.dumps(str(Path(ca_cert).resolve()))}")
        return atomic_write(self.config_path, "\n".join(lines) + "\n", 0o600)

    def _call(self, *args: str, timeout: float | None = None) -> dict[str, Any]:
        argv = [flower_bin("flwr"), *args, "--format", "json"]
        result = self._exec(argv, timeout)
        payload = _parse_json(result.stdout)
        if payload is None or not payload.get("success", False):
            message = (payload or {}).get("error-message") or (result.stdout + result.stderr)
            raise FlowerCliError(f"flwr {' '.join(args[:2])} failed: {message.strip()}")
        return payload

    def _exec(self, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                env=self.env(),
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout or self.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise FlowerCliError(
                f"{' '.join(argv[1:3])} timed out after {timeout or self.timeout:.0f} s"
            ) from None

    def register(self, public_key: Path) -> str:
        """Register a SuperNode's OpenSSH public key; its node id."""
        payload = self._call(
            "supernode", "register", str(Path(public_key).resolve()), self.connection
        )
        return str(payload["node-id"])

    def nodes(self) -> list[dict[str, Any]]:
        """`flwr supernode list`: dicts with `node-id` and `status` (online/offline/registered)."""
        return list(self._call("supernode", "list", self.connection)["nodes"])

    def run(self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None) -> str:
        """Submit a run of the Flower app in `app_dir`; its run id."""
        args = ["run", str(Path(app_dir).resolve()), self.connection]
        if run_config:
            args += ["--run-config", format_config(run_config)]
        return str(self._call(*args)["run-id"])

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's `flwr ls --run-id` record: `status`, `status-details`, timings, traffic."""
        runs = self._call("ls", self.connection, "--run-id", str(run_id))["runs"]
        if not runs:
            raise FlowerCliError(f"run {run_id} not found on {self.connection}")
        return dict(runs[0])

    def wait(self, run_id: str, timeout: float, poll: float = 2.0) -> dict[str, Any]:
        """Poll until the run's status starts with `finished:`; stop it if `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.status(run_id)
            if str(record.get("status", "")).startswith(FINISHED):
                return record
            if time.monotonic() > deadline:
                self.stop(run_id)
                raise FlowerCliError(
                    f"run {run_id} did not finish within {timeout:.0f} s "
                    f"(last status {record.get('status')!r}); stopped it"
                )
            time.sleep(poll)

    def stop(self, run_id: str) -> None:
        self._call("stop", str(run_id), self.connection)

    def log(self, run_id: str) -> str:
        """The ServerApp log of a run so far (`flwr log --show`)."""
        argv = [flower_bin("flwr"), "log", str(run_id), self.connection, "--show"]
        return self._exec(argv, None).stdout


def _parse_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (Flower may print other lines before it)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\s*\{", text, flags=re.MULTILINE):
        try:
            value, _ = decoder.raw_decode(text[match.start() :].lstrip())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None
