"""`fedrec up`: the whole system on one machine, step by step, until Ctrl+C.

data → partitions → then `LocalFederation.start` (certs → keys → warm trainers → SuperLink →
register → SuperNodes → `flwr run`, sent while the SuperNodes start), its steps reported through
the same numbered list (`fedrec_app.ops.up_report`) → training (per-round metrics from the
ServerApp log; `finished:completed` from `flwr ls`) → gateway on the final checkpoint. Ctrl+C
(or SIGTERM) at any point stops what was started: gateway, log follower, SuperNodes and trainers,
then the SuperLink. Layout under `work`: `partitions/`, `checkpoints/<run-id>/`, and the
`LocalFederation` layout (`certs/`, `superlink/`, `cli/`, `nodes/snK/` with `state/`, `logs/`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec_app.core.config import APP_DIR
from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.flower import COMPLETED, FINISHED, ConfigValue, flower_bin
from fedrec_app.ops.interrupts import interrupt_on_signals, no_interrupts
from fedrec_app.ops.up_report import (
    ANSI,
    STEPS,
    StepReport,
    exposure_warning,
    lock_summary,
    server_line,
)

if TYPE_CHECKING:
    from fedrec_app.ops.federation import LocalFederation
    from fedrec_app.ops.process import ManagedProcess

log = logging.getLogger(__name__)

# Defaults for this launch (2 cores, 3 SuperNodes: under 5 minutes to the gateway).
DEFAULT_NODES = 3
DEFAULT_ROUNDS = 5
DEFAULT_LOCAL_EPOCHS = 5
STATUS_EVERY = 60.0  # seconds between `flwr ls` checks while the log stream runs
SHOWN_METRICS = ("test.rmse", "test.mae", "test.ndcg@10", "test.hr@10")


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


@dataclass
class UpSession:
    """One `fedrec up`: holds what it started so that `close` can stop it in order."""

    options: UpOptions
    say: Callable[[str], None] = log.info
    report: StepReport = field(init=False)
    federation: LocalFederation | None = None
    follower: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    run_id: str | None = None
    final: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.report = StepReport(self.say)
        self.work = Path(self.options.work).resolve()

    # ------------------------------------------------------------------ the steps
    def start(self) -> None:
        """Every step of ``STEPS`` (certs to submit are `LocalFederation.start`'s, reported
        through ``report``); returns once the gateway answers."""
        from fedrec_app.ops.federation import LocalFederation, port_free

        opt = self.options
        opt.check()
        if not port_free(opt.host, opt.port):
            raise FedrecError(
                f"--port {opt.port}: {opt.host}:{opt.port} is already in use "
                "(another gateway? choose --port)"
            )
        self.say(
            f"fedrec up: {opt.nodes} SuperNodes, {opt.rounds} rounds x {opt.local_epochs} "
            f"local epochs, partitions {opt.scheme}/{opt.split}, work dir {self.work}"
        )
        self.say("steps: " + " → ".join(f"{i}.{s}" for i, s in enumerate(STEPS, 1)))
        set_dir = self._data_and_partitions()
        # the SuperNodes run only this checkout's app (its FAB hash, in approved-apps.txt)
        fed = LocalFederation(
            self.work,
            self._node_configs(set_dir),
            port=self._superlink_port(),
            host=opt.host,
            warm_trainers=opt.warm_trainers,
            approved_apps=[APP_DIR],
            hooks=self.report,
        )
        self.federation = fed
        warning = exposure_warning(opt.host, opt.port, fed.port, fed.fleet_proxy)
        if warning:
            self.say(warning)
        self.report.closing_notes["superlink"] = lock_summary(fed)
        for stale in fed.link_home.glob("state.db*"):  # a fresh registry for this launch
            stale.unlink()
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
        self.run_id = fed.start(APP_DIR, run_config)
        assert self.run_id is not None
        what = f"{opt.rounds} rounds on {opt.nodes} SuperNodes, checkpoints in {checkpoints}"
        with self.report.step("train", f"{what}/{self.run_id}"):
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
                f"{k.removeprefix('test.').upper()} {self.metrics[k]:.4f}"
                for k in SHOWN_METRICS
                if k in self.metrics
            )
            self.report.note(f"finished:completed; final model on the held-out ratings: {shown}")
        with self.report.step("gateway", f"serving {self.final}"):
            self._start_gateway(self.final)

    def _data_and_partitions(self) -> Path:
        """Steps data and partitions; the partition set's folder."""
        from fedrec_app.data.download import download
        from fedrec_app.data.partition import make_partitions

        opt = self.options
        with self.report.step("data", f"MovieLens 100k in {opt.data}"):
            extra = {"md5": opt.md5} if opt.md5 else {}
            got = download(opt.data, zip_path=opt.zip_path, **extra)
            source = opt.zip_path or "the download"
            state = "already there" if got.already_present else f"extracted from {source}"
            self.report.note(
                f"{got.folder}: {state} ({got.counts.ratings} ratings, "
                f"{got.counts.users} users, {got.counts.items} movies)"
            )
        set_dir = self.work / "partitions" / f"{opt.split}-{opt.scheme}-{opt.nodes}-s{opt.seed}"
        with self.report.step("partitions", f"{opt.nodes} user-disjoint partitions"):
            made = make_partitions(
                got.folder, set_dir, opt.nodes, scheme=opt.scheme, split=opt.split, seed=opt.seed
            )
            for entry in made.manifest["partitions"]:
                rows = {name: f["rows"] for name, f in entry["files"].items()}
                self.report.note(
                    f"{entry['path']}: {entry['users']} users, "
                    f"{rows['train.csv']} train / {rows['test.csv']} test ratings"
                )
        return set_dir

    def _node_configs(self, set_dir: Path) -> dict[str, dict[str, ConfigValue]]:
        """SuperNode ``snK`` trains on partition K, its state under ``nodes/snK/state``."""
        from fedrec_app.data.layout import partition_dir_name

        return {
            f"sn{k + 1}": {
                "data-path": set_dir / partition_dir_name(k),
                "state-dir": self.work / "nodes" / f"sn{k + 1}" / "state",
            }
            for k in range(self.options.nodes)
        }

    def _superlink_port(self) -> int:
        """--superlink-port, else a free port that is not the gateway's."""
        from fedrec_app.ops.federation import free_port

        opt = self.options
        port = opt.superlink_port or free_port(opt.host)
        while port == opt.port:
            port = free_port(opt.host)
        return port

    def _follow(self, fed: LocalFederation, run_id: str) -> dict[str, Any]:
        """Show the ServerApp's lines while the run trains; its final `flwr ls` record."""
        from fedrec_app.ops.process import ManagedProcess

        argv = [flower_bin("flwr"), "log", run_id, fed.cli.connection, "--stream"]
        env = {**fed.cli.env(), "PYTHONUNBUFFERED": "1"}  # each line as it comes, not per 8 KB
        self.follower = ManagedProcess(
            "flwr-log", argv, env, fed.logs / f"run-{run_id}.log"
        ).start()
        deadline = time.monotonic() + self.options.run_timeout
        shown = 0
        next_check = time.monotonic() + STATUS_EVERY
        while True:
            lines = self.follower.log_text().splitlines()
            for line in lines[shown:]:
                text = server_line(line)
                if text:
                    self.report.note(f"| {text}")
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
            return "\n".join(ANSI.sub("", fed.cli.log(self.run_id)).splitlines()[-lines:])
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


def up(
    options: UpOptions,
    say: Callable[[str], None] = log.info,
    on_ready: Callable[[UpSession], None] | None = None,
) -> UpSession:
    """Launch everything, call `on_ready`, serve until Ctrl+C; always stop what was started."""
    launch = UpSession(options, say)
    with interrupt_on_signals():
        try:
            launch.start()
            say(launch.report.summary())
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
