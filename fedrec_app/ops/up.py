"""`fedrec up`: the whole system on one machine, step by step, until Ctrl+C.

data → partitions → certs → keys → warm trainers (one per SuperNode; TensorFlow loads at a lower
CPU priority while the next steps run) → SuperLink (TLS, SuperNode auth, database; on loopback
behind the Fleet proxy where nginx is installed, `lock_summary` says what is locked) → register
keys → N SuperNodes (each on its own partition, with its own state dir) → `flwr run` over TLS
(sent while the SuperNodes start: the ServerApp waits for them) →
training (per-round metrics from the ServerApp log; `finished:completed` from `flwr ls`) →
gateway on the final checkpoint. Ctrl+C (or SIGTERM) at any point stops what was started:
gateway, log follower, SuperNodes and trainers, then the SuperLink.

Layout under `work`: `partitions/`, `checkpoints/<run-id>/`, and the `LocalFederation` layout
(`certs/`, `superlink/`, `cli/`, `nodes/snK/` with `state/`, `logs/`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec_app.core.config import APP_DIR
from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.flower import COMPLETED, FINISHED, ConfigValue, flower_bin

if TYPE_CHECKING:
    from fedrec_app.ops.federation import LocalFederation
    from fedrec_app.ops.process import ManagedProcess

log = logging.getLogger(__name__)

STEPS = (
    "data",
    "partitions",
    "certs",
    "keys",
    "trainers",
    "superlink",
    "register",
    "supernodes",
    "submit",
    "train",
    "gateway",
)
# Defaults for this launch (2 cores, 3 SuperNodes: under 5 minutes to the gateway).
DEFAULT_NODES = 3
DEFAULT_ROUNDS = 5
DEFAULT_LOCAL_EPOCHS = 5
STATUS_EVERY = 60.0  # seconds between `flwr ls` checks while the log stream runs
SHOWN_METRICS = ("rmse", "mae", "ndcg@10", "hr@10")
_SERVER_LINE = re.compile(r"\bfedrec_app\.[\w.]+: (.*)$|\b(ERROR|WARNING)\s*:\s*(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class UpOptions:
    """What `fedrec up` launches; see `fedrec up --help`."""

    nodes: int = DEFAULT_NODES
    rounds: int = DEFAULT_ROUNDS
    local_epochs: int = DEFAULT_LOCAL_EPOCHS
    scheme: str = "random"
    split: str = "u1"
    seed: int = 0
    work: Path = Path("runs/up")
    data: Path = Path("data")
    zip_path: Path | None = None
    md5: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    superlink_port: int | None = None
    run_timeout: float = 1800.0
    warm_trainers: bool = True
    run_config: dict[str, ConfigValue] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse bad options before anything starts."""
        if self.nodes < 1:
            raise FedrecError(f"--nodes {self.nodes}: need at least 1 SuperNode")
        if self.rounds < 1:
            raise FedrecError(f"--rounds {self.rounds}: need at least 1 round")
        if self.local_epochs < 1:
            raise FedrecError(f"--local-epochs {self.local_epochs}: must be >= 1")
        for flag, port in (("--port", self.port), ("--superlink-port", self.superlink_port)):
            if port is not None and not 1 <= port <= 65535:
                raise FedrecError(f"{flag} {port}: not a TCP port")
        if self.superlink_port == self.port:
            raise FedrecError(
                f"--superlink-port {self.superlink_port}: the gateway serves on that port"
            )
        if self.zip_path is not None and not Path(self.zip_path).is_file():
            raise FedrecError(f"--zip {self.zip_path}: no such file")
        if not (APP_DIR / "pyproject.toml").is_file():
            raise FedrecError(
                f"{APP_DIR}/pyproject.toml not found: `fedrec up` needs the "
                "project's source tree (pip install -e .)"
            )


class Progress:
    """The numbered step list with wall times, written through `say` (the CLI passes print)."""

    def __init__(self, say: Callable[[str], None], steps: tuple[str, ...] = STEPS) -> None:
        self.say = say
        self.steps = steps
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        number = self.steps.index(name) + 1
        self.say(f"[{number}/{len(self.steps)}] {name}: {what}")
        t = time.monotonic()
        yield
        self.timings[name] = time.monotonic() - t
        self.say(f"      {name} done in {self.timings[name]:.1f} s")

    def summary(self) -> str:
        rows = [f"  {name:<11} {seconds:7.1f} s" for name, seconds in self.timings.items()]
        total = time.monotonic() - self.started
        return "\n".join(["wall time per step:", *rows, f"  {'total':<11} {total:7.1f} s"])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def server_line(line: str) -> str | None:
    """What to show of one ServerApp log line: the app's own messages, Flower's errors."""
    match = _SERVER_LINE.search(_ANSI.sub("", line).rstrip())
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else f"{match.group(2)}: {match.group(3)}"


@dataclass
class Launch:
    """One `fedrec up`: holds what it started so that `close` can stop it in order."""

    options: UpOptions
    say: Callable[[str], None] = log.info
    progress: Progress = field(init=False)
    federation: LocalFederation | None = None
    follower: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    run_id: str | None = None
    final: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.progress = Progress(self.say)
        self.work = Path(self.options.work).resolve()

    # ------------------------------------------------------------------ the steps
    def start(self) -> None:
        """Every step of ``STEPS``; returns once the gateway answers."""
        from fedrec_app.data.layout import partition_dir_name
        from fedrec_app.data.movielens import download
        from fedrec_app.data.partition import make_partitions
        from fedrec_app.ops.certs import ensure_signing_key, make_certs, make_node_keys
        from fedrec_app.ops.federation import NODE_READY, LocalFederation, free_port
        from fedrec_app.ops.trainer_command import TRAINER_LISTENING

        opt = self.options
        opt.check()
        if not _port_free(opt.host, opt.port):
            raise FedrecError(
                f"--port {opt.port}: {opt.host}:{opt.port} is already in use "
                "(another gateway? choose --port)"
            )
        self.say(
            f"fedrec up: {opt.nodes} SuperNodes, {opt.rounds} rounds x {opt.local_epochs} "
            f"local epochs, partitions {opt.scheme}/{opt.split}, work dir {self.work}"
        )
        self.say("steps: " + " → ".join(f"{i}.{s}" for i, s in enumerate(STEPS, 1)))

        with self.progress.step("data", f"MovieLens 100k in {opt.data}"):
            extra = {"md5": opt.md5} if opt.md5 else {}
            got = download(opt.data, zip_path=opt.zip_path, **extra)
            source = opt.zip_path or "the download"
            state = "already there" if got.already_present else f"extracted from {source}"
            self.say(
                f"      {got.folder}: {state} ({got.counts.ratings} ratings, "
                f"{got.counts.users} users, {got.counts.items} movies)"
            )

        set_dir = self.work / "partitions" / f"{opt.split}-{opt.scheme}-{opt.nodes}-s{opt.seed}"
        with self.progress.step("partitions", f"{opt.nodes} user-disjoint partitions"):
            made = make_partitions(
                got.folder, set_dir, opt.nodes, scheme=opt.scheme, split=opt.split, seed=opt.seed
            )
            for entry in made.manifest["partitions"]:
                rows = {name: f["rows"] for name, f in entry["files"].items()}
                self.say(
                    f"      {entry['path']}: {entry['users']} users, "
                    f"{rows['train.csv']} train / {rows['test.csv']} test ratings"
                )

        names = [f"sn{k + 1}" for k in range(opt.nodes)]
        node_configs = {
            name: {
                "data-path": set_dir / partition_dir_name(k),
                "state-dir": self.work / "nodes" / name / "state",
            }
            for k, name in enumerate(names)
        }
        port = opt.superlink_port or free_port(opt.host)
        while port == opt.port:
            port = free_port(opt.host)
        # the SuperNodes run only this checkout's app (its FAB hash, in approved-apps.txt)
        fed = LocalFederation(
            self.work, node_configs, port=port, host=opt.host, approved_apps=[APP_DIR]
        )
        self.federation = fed
        warning = exposure_warning(opt.host, opt.port, fed.port, fed.fleet_proxy)
        if warning:
            self.say(warning)
        with self.progress.step("certs", f"CA + SuperLink certificate in {fed.certs.out}"):
            if fed.certs.ca_cert.exists():
                self.say("      reusing the existing CA and server certificate")
            else:
                make_certs(fed.certs.out, [opt.host])
            new_key = ensure_signing_key(fed.certs.out)  # the ServerApp signs every checkpoint
            self.say(
                f"      checkpoint-signing key {fed.certs.signing_key} "
                f"({'new' if new_key else 'reused'}); the gateway verifies with its .pub"
            )
        with self.progress.step("keys", f"{opt.nodes} SuperNode key pairs (ECDSA P-384)"):
            missing = [n for n, node in fed.nodes.items() if not node.key.private.exists()]
            if missing:
                make_node_keys(fed.certs.out / "nodes", missing)
            self.say(f"      {len(missing)} new, {opt.nodes - len(missing)} reused")
        if opt.warm_trainers:
            with self.progress.step("trainers", f"{opt.nodes} warm trainers, one per SuperNode"):
                fed.start_trainers(wait=False)  # they listen at once, then load TensorFlow
                self.say(
                    "      one TensorFlow import, forked per node; tracing the model in the "
                    "background, at a lower CPU priority until ready"
                )
        else:
            with self.progress.step("trainers", "none (--no-warm-trainers)"):
                self.say("      every ClientApp process imports TensorFlow itself")
        what = (
            f"on 127.0.0.1:{fed.link_port} behind the Fleet proxy https://{fed.address}"
            if fed.fleet_proxy
            else f"https://{fed.address} (no Fleet proxy: nginx missing)"
        )
        with self.progress.step("superlink", f"{what} (TLS, SuperNode auth)"):
            for stale in fed.link_home.glob("state.db*"):  # a fresh registry for this launch
                stale.unlink()
            fed.start_superlink()
            for line in lock_summary(fed):
                self.say(f"      {line}")
        with self.progress.step("register", "the SuperNodes' public keys"):
            fed.register()
            for node in fed.nodes.values():
                self.say(f"      {node.name}: node id {node.node_id}")
        checkpoints = self.work / "checkpoints"
        run_config: dict[str, ConfigValue] = {
            "num-server-rounds": opt.rounds,
            "local-epochs": opt.local_epochs,
            "min-nodes": opt.nodes,
            "checkpoint-dir": checkpoints,
            "signing-key": fed.certs.signing_key,
            "partition-set": set_dir,
            "share-user-factors": True,  # so that the gateway answers by user_id
            **opt.run_config,
        }
        with ThreadPoolExecutor(max_workers=1) as background:
            with self.progress.step("supernodes", f"{opt.nodes} SuperNodes, one partition each"):
                for name in fed.nodes:
                    fed.start_node(name, wait=False)
                if opt.warm_trainers:  # their sockets are there: no round trains in-process
                    fed.wait_trainers(TRAINER_LISTENING)
                # The ServerApp waits for min-nodes itself: the run is submitted while they start.
                submitted = background.submit(fed.submit, APP_DIR, run_config)
                for node in fed.nodes.values():  # activated: the node logs the id it registered as
                    match = node.process.wait_for_log(NODE_READY, fed.ready_timeout)
                    if match.group(1) != node.node_id:
                        raise FedrecError(
                            f"{node.name} came up as node {match.group(1)}, "
                            f"registered as {node.node_id}"
                        )
                trainers = ", trainers listening" if opt.warm_trainers else ""
                self.say(f"      all {opt.nodes} connected{trainers} (logs in {fed.logs})")
            what = f"flwr run {APP_DIR} over TLS, sent while the SuperNodes started"
            with self.progress.step("submit", what):
                self.run_id = submitted.result()
                self.say(f"      run {self.run_id}; checkpoints in {checkpoints / self.run_id}")
        with self.progress.step("train", f"{opt.rounds} rounds on {opt.nodes} SuperNodes"):
            record = self._follow(fed, self.run_id)
            if record.get("status") != COMPLETED:
                raise FedrecError(
                    f"run {self.run_id} ended {record.get('status')}: "
                    f"{record.get('status-details') or '(no details)'}\n"
                    f"--- ServerApp log (tail) ---\n{self._server_log_tail(fed)}"
                )
            self.final = checkpoints / self.run_id / "final"
            self.metrics = _final_metrics(self.final)
            shown = ", ".join(
                f"{k.upper()} {self.metrics[k]:.4f}" for k in SHOWN_METRICS if k in self.metrics
            )
            self.say(f"      finished:completed; final model on the held-out ratings: {shown}")
        with self.progress.step("gateway", f"serving {self.final}"):
            self._start_gateway(self.final)

    def _follow(self, fed: LocalFederation, run_id: str) -> dict[str, Any]:
        """Show the ServerApp's lines while the run trains; its final `flwr ls` record."""
        from fedrec_app.ops.process import ManagedProcess

        argv = [flower_bin("flwr"), "log", run_id, fed.cli.connection, "--stream"]
        self.follower = ManagedProcess(
            "flwr-log", argv, fed.cli.env(), fed.logs / f"run-{run_id}.log"
        ).start()
        deadline = time.monotonic() + self.options.run_timeout
        shown = 0
        next_check = time.monotonic() + STATUS_EVERY
        while True:
            lines = self.follower.log_text().splitlines()
            for line in lines[shown:]:
                text = server_line(line)
                if text:
                    self.say(f"      | {text}")
            shown = len(lines)
            now = time.monotonic()
            if not self.follower.alive() or now >= next_check:
                record = fed.cli.status(run_id)
                if str(record.get("status", "")).startswith(FINISHED):
                    break
                if not self.follower.alive():  # stream ended early: start it again
                    self.follower.start()
                    shown = 0
                next_check = now + STATUS_EVERY
            _check_alive(fed, run_id)
            if now > deadline:
                fed.cli.stop(run_id)
                raise FedrecError(
                    f"run {run_id} did not finish within "
                    f"{self.options.run_timeout:.0f} s; stopped it"
                )
            time.sleep(0.5)
        self.follower.stop()
        return record

    def _server_log_tail(self, fed: LocalFederation, lines: int = 40) -> str:
        assert self.run_id is not None
        with contextlib.suppress(FedrecError):
            return "\n".join(_ANSI.sub("", fed.cli.log(self.run_id)).splitlines()[-lines:])
        return "(flwr log failed)"

    def _start_gateway(self, checkpoint: Path) -> None:
        import os

        from fedrec_app.ops.process import ManagedProcess

        opt = self.options
        assert self.federation is not None
        argv = [
            sys.executable,
            "-m",
            "fedrec_app",
            "gateway",
            "--checkpoint",
            str(checkpoint),
            "--host",
            opt.host,
            "--port",
            str(opt.port),
            "--verify-key",
            str(self.federation.certs.signing_pub),
        ]
        self.gateway = ManagedProcess(
            "gateway", argv, os.environ, self.work / "logs" / "gateway.log"
        ).start()
        self.gateway.wait_https_ready(f"{self.url}/readyz", None, 60.0)

    @property
    def url(self) -> str:
        from fedrec_app.ops.flower import host_port

        return f"http://{host_port(self.options.host, self.options.port)}"

    def sample(self, user_id: int = 4, n: int = 5) -> tuple[str, dict[str, Any] | str]:
        """The sample request and what the gateway answered to it."""
        url = f"{self.url}/recommend?user_id={user_id}&n={n}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return url, json.load(response)
        except urllib.error.HTTPError as exc:
            return url, f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"

    def serve_forever(self) -> None:
        """Block until the gateway exits (an error) or Ctrl+C (KeyboardInterrupt)."""
        assert self.gateway is not None
        while self.gateway.alive():
            time.sleep(0.5)
        raise FedrecError(
            f"the gateway exited (code {self.gateway.returncode}):\n{self.gateway.log_tail()}"
        )

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop the gateway, the log follower, the SuperNodes and then the SuperLink."""
        stopped = []
        for name in ("gateway", "follower"):
            process = getattr(self, name)
            if process is not None and process.pid is not None:
                process.stop()
                stopped.append(name)
        if self.federation is not None:
            self.federation.close()
            stopped.append("supernodes, superlink")
        if stopped:
            self.say(f"stopped: {', '.join(stopped)}")


def lock_summary(fed: LocalFederation) -> list[str]:
    """What this one-machine launch locks, and what it does not, in plain words."""
    if fed.fleet_proxy:
        lines = [
            f"locked: the network reaches only the Fleet proxy (nginx) on {fed.address}, which "
            "forwards the Fleet API alone (SuperNodes, each signing with its registered key)",
            f"the SuperLink's Control and runtime APIs listen on 127.0.0.1:{fed.link_port}: "
            "runs are started from this host only",
        ]
    else:
        lines = [
            f"NOT locked: nginx is not installed, so the SuperLink itself listens on "
            f"{fed.address} and whoever reaches that port can start runs and register nodes "
            "(apt-get install nginx-light, then run fedrec up again)",
        ]
    return [
        *lines,
        "SuperNodes run only this checkout's app (its FAB hash is their allowlist); every "
        "checkpoint is signed and the gateway verifies it",
        "not locked on one machine: every account on this host can reach 127.0.0.1 and so the "
        "Control API; a lab deployment keeps the SuperLink host to its operators "
        "(deploy/README.md)",
    ]


LOOPBACK_HOSTS = ("localhost", "::1")


def exposure_warning(
    host: str, gateway_port: int, fleet_port: int, fleet_proxy: bool, gateway_keys: bool = False
) -> str | None:
    """None on a loopback ``host``; else a WARNING naming each service the network now reaches
    (port and what protects it) and what stays on this host."""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    where = (
        "every network interface of this machine" if host in ("0.0.0.0", "::", "") else f"{host}"
    )
    gateway = (
        "HTTP, API key needed (except /healthz and the page)"
        if gateway_keys
        else "plain HTTP, NO API key: anyone who reaches it reads recommendations for every "
        "user id, the model summary, /metrics and /docs"
    )
    if fleet_proxy:
        fleet = (
            f"  - Fleet proxy (nginx) on port {fleet_port}: TLS; forwards only the Fleet "
            "API, every call signed by a registered SuperNode key"
        )
        local = "the SuperLink's Control and runtime APIs (127.0.0.1), "
    else:
        fleet = (
            f"  - SuperLink on port {fleet_port}: TLS and SuperNode auth on the Fleet API, "
            "but its Control API has NO login: whoever reaches the port can start runs "
            "(code on every node) (apt-get install nginx-light puts the Fleet proxy in "
            "front)"
        )
        local = ""
    return "\n".join(
        [
            f"WARNING: --host {host} listens on {where}; reachable from the network:",
            f"  - gateway on port {gateway_port}: {gateway}",
            fleet,
            f"  stays on this host: {local}the SuperNodes' runtime ports (127.0.0.1), the warm "
            "trainers (Unix sockets)",
            "  bind 127.0.0.1 (the default) unless other machines must reach these; a lab "
            "deployment puts API keys on the gateway (deploy/README.md)",
        ]
    )


def _check_alive(fed: LocalFederation, run_id: str) -> None:
    """Fail at once (stopping the run) when the SuperLink, its proxy or a SuperNode has died."""
    processes = [fed.superlink, fed.proxy, *(n.process for n in fed.nodes.values())]
    dead = [p for p in processes if p is not None and not p.alive()]
    if not dead:
        return
    if fed.superlink is not None and fed.superlink.alive():
        with contextlib.suppress(FedrecError):
            fed.cli.stop(run_id)
    raise FedrecError(
        f"{dead[0].name} exited (code {dead[0].returncode}) during run {run_id}. "
        f"Its log {dead[0].log_path}:\n{dead[0].log_tail(25)}"
    )


def _final_metrics(final: Path) -> dict[str, float]:
    try:
        manifest = json.loads((final / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise FedrecError(
            f"{final}/manifest.json: cannot read the final checkpoint ({exc})"
        ) from exc
    return {
        k: float(v) for k, v in manifest.get("metrics", {}).items() if isinstance(v, int | float)
    }


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (main thread only), so they stop things in
    order; also when SIGINT was ignored at start (a background job of a script)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while stopping, so a second Ctrl+C cannot leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    options: UpOptions,
    say: Callable[[str], None] = log.info,
    on_ready: Callable[[Launch], None] | None = None,
) -> Launch:
    """Launch everything, call `on_ready`, serve until Ctrl+C; always stop what was started."""
    launch = Launch(options, say)
    with interrupt_on_signals():
        try:
            launch.start()
            say(launch.progress.summary())
            if on_ready is not None:
                on_ready(launch)
            try:
                launch.serve_forever()
            except KeyboardInterrupt:
                say("Ctrl+C: stopping")
        except KeyboardInterrupt:
            say("interrupted: stopping what was started")
            raise
        finally:
            with no_interrupts():
                launch.close()
    return launch
