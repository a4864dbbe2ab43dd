"""`LocalFederation`: a TLS SuperLink with SuperNode auth + N authenticated SuperNodes on one host.

Used by integration tests, `fedrec up` and benchmarks. Layout under `work_dir`:
`certs/` (CA, server cert), `certs/nodes/NAME` (keys), `superlink/` (its FLWR_HOME, cwd and
`state.db`), `proxy/` (the Fleet proxy's config and access log), `cli/` (the `flwr` CLI's
FLWR_HOME), `nodes/NAME/` (each SuperNode's FLWR_HOME and cwd), `logs/*.log`,
`approved-apps.txt` (the FAB hashes of `approved_apps`, the only apps the SuperNodes run). With
`warm_trainers`, each node also gets its warm trainer (same state-dir and data-path as its
node-config), all forked from one TensorFlow import (`fedrec trainers`, `logs/trainers.log`).
Everything it started is stopped on exit, also on exceptions and Ctrl+C. `start` reports each
step to `hooks` (`fedrec_app.ops.progress`; `fedrec up` prints them, the default logs them).

Topology (the same as a lab's, `fedrec_app.ops.proxy`): the SuperLink listens on 127.0.0.1 only;
nginx listens on `host:port` and forwards the Fleet API alone, so SuperNodes dial the proxy and
the `flwr` CLI (the operator, on this host) dials the SuperLink's loopback port. Where nginx is
not installed and `fleet_proxy` was left to choose, the SuperLink itself listens on `host:port`
and a warning says that its Control API is then open to whoever reaches that port.

Over 400 lines for one reason: it is one class, the harness every launch path shares, whose parts
(credentials, SuperLink and proxy, SuperNodes, trainers, runs) all act on the same state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrec_app.core.config import APP_DIR
from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.app_approval import (
    app_hash,
    app_label,
    append_to_allowlist,
    create_allowlist,
)
from fedrec_app.ops.certs import (
    CertPaths,
    NodeKey,
    ensure_signing_key,
    make_certs,
    make_node_keys,
)
from fedrec_app.ops.flower import (
    COMPLETED,
    ConfigValue,
    FlwrCli,
    SuperLinkCommand,
    SuperNodeCommand,
    flower_env,
)
from fedrec_app.ops.process import ManagedProcess, ProcessError
from fedrec_app.ops.progress import LoggedSteps, StartHooks, reported_step
from fedrec_app.ops.proxy import INSTALL_HINT, ProxyCommand, nginx_bin
from fedrec_app.ops.trainer_command import (
    TRAINER_LISTENING,
    TRAINER_READY,
    TrainerGroupCommand,
    trainer_log_line,
)

log = logging.getLogger(__name__)

NOOP_APP_DIR = Path(__file__).resolve().parents[1] / "bench" / "noop_app"
NODE_READY = r"SuperNode ID: (\d+)"
REFUSED_ACTIVATION = "[code: 2004]"
RECONNECTED = r"Connection successful after"
CONNECTION_FAILED = r"Connection attempt failed"
# Trainers here share the host with the SuperLink, the SuperNodes and the ServerApp: until they
# are warmed up they run at a lower CPU priority, so that those start first (`fedrec trainers
# --nice`).
CO_LOCATED_TRAINER_NICE = 10


def _choose_fleet_proxy(wanted: bool | None, host: str) -> bool:
    """Whether to put the Fleet proxy in front: as asked, else where nginx is installed."""
    found = nginx_bin() is not None
    if wanted and not found:
        raise FedrecError(f"the Fleet proxy needs nginx: {INSTALL_HINT}")
    if wanted is None and not found:
        log.warning(
            "nginx is not installed: the SuperLink listens on %s itself, so whoever reaches that "
            "port can use its Control API (start runs, register nodes); %s to lock it",
            host,
            INSTALL_HINT,
        )
    return found if wanted is None else wanted


def _wait_listening(process: ManagedProcess, address: str, timeout: float) -> None:
    """Until a TCP connection to `address` (host:port) succeeds; fail if `process` exits."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            if not process.alive():
                raise ProcessError(
                    f"{process.name} exited (code {process.returncode}):\n{process.log_tail()}"
                ) from exc
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{process.name}: nothing listens on {address} after "
                    f"{timeout:.0f} s:\n{process.log_tail()}"
                ) from exc
        time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a server can listen on `host:port` right now. Binds with SO_REUSEADDR, as
    uvicorn (the gateway) and nginx do: a connection left in TIME_WAIT by a stopped server
    (for a minute after a client held one open) does not count, a listening socket does."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    """One SuperNode of the federation."""

    name: str
    key: NodeKey
    home: Path
    runtime_port: int
    node_config: dict[str, ConfigValue] = field(default_factory=dict)
    node_id: str | None = None
    process: ManagedProcess | None = None
    trainer: ManagedProcess | None = None


class LocalFederation:
    """Start/stop a secure local federation; see the module docstring for the layout."""

    def __init__(
        self,
        work_dir: Path,
        nodes: Sequence[str] | Mapping[str, Mapping[str, ConfigValue]],
        port: int | None = None,
        host: str = "127.0.0.1",
        sans: Sequence[str] = (),
        max_wait_time: float = 120.0,
        ready_timeout: float = 90.0,
        warm_trainers: bool = False,
        fleet_proxy: bool | None = None,
        approved_apps: Sequence[Path] | None = None,
        hooks: StartHooks | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.host = host
        self.port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.fleet_proxy = _choose_fleet_proxy(fleet_proxy, host)
        self.link_port = free_port() if self.fleet_proxy else self.port
        self.sans = tuple(sans) + ((host,) if host not in ("0.0.0.0", "::") else ())
        self.max_wait_time = max_wait_time
        self.ready_timeout = ready_timeout
        self.warm_trainers = warm_trainers
        self.certs = CertPaths(self.work_dir / "certs")
        self.logs = self.work_dir / "logs"
        self.link_home = self.work_dir / "superlink"
        configs = nodes if isinstance(nodes, Mapping) else {name: {} for name in nodes}
        if not configs:
            raise FedrecError("a federation needs at least one node name")
        # The nodes share this host's cores: each trains with its share (TensorFlow's default
        # thread pools, one per node, oversubscribe the CPU).
        threads = max(1, (os.cpu_count() or 1) // len(configs))
        self.nodes: dict[str, Node] = {
            name: Node(
                name=name,
                key=NodeKey(name, self.certs.out / "nodes" / name),
                home=self.work_dir / "nodes" / name,
                runtime_port=free_port(),
                node_config={"threads": threads, "site-name": name, **config},
            )
            for name, config in configs.items()
        }
        self.cli = FlwrCli(self.work_dir / "cli")
        self.superlink: ManagedProcess | None = None
        self.proxy: ManagedProcess | None = None
        self.hooks: StartHooks = hooks or LoggedSteps()
        self.timings: dict[str, float] = {}  # seconds per step of `start`
        # The apps every node runs (default: this checkout's fedrec app and the no-op app),
        # approved once when the first node starts: edit the checkout while the federation
        # runs and the nodes refuse its new hash, as a lab's would (hashing it takes seconds).
        if approved_apps is None:
            approved_apps = [d for d in (APP_DIR, NOOP_APP_DIR) if (d / "pyproject.toml").is_file()]
        self.approved_apps = tuple(Path(d).resolve() for d in approved_apps)
        self.allowlist = self.work_dir / "approved-apps.txt"
        self._allowlist_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _step(self, name: str, what: str) -> AbstractContextManager[None]:
        return reported_step(self.hooks, name, what, self.timings)

    def start(
        self, app: Path | None = None, run_config: Mapping[str, ConfigValue] | None = None
    ) -> str | None:
        """Certs and keys (if missing), warm trainers, SuperLink, registrations, SuperNodes (all
        activated), each step reported to ``hooks``. With ``app``, a run of it is submitted
        while the SuperNodes start (the ServerApp waits for them) and its id returned; without,
        warm trainers are waited for until they have traced the model."""
        self._make_certs()
        self._make_keys()
        self._start_trainers_step()
        what = (
            f"on 127.0.0.1:{self.link_port} behind the Fleet proxy https://{self.address}"
            if self.fleet_proxy
            else f"https://{self.address} (no Fleet proxy: nginx missing)"
        )
        with self._step("superlink", f"{what} (TLS, SuperNode auth)"):
            self.start_superlink()
        with self._step("register", "the SuperNodes' public keys"):
            self.register()
            for node in self.nodes.values():
                self.hooks.note(f"{node.name}: node id {node.node_id}")
        with ThreadPoolExecutor(max_workers=1) as background:
            with self._step("supernodes", f"{len(self.nodes)} SuperNodes, one partition each"):
                for name in self.nodes:
                    self.start_node(name, wait=False)
                if self.warm_trainers:  # their sockets are there: no round trains in-process
                    self.wait_trainers(TRAINER_LISTENING)
                submitted = background.submit(self.submit, app, run_config) if app else None
                for name in self.nodes:  # "SuperNode ID: <registered id>" = activated, online
                    self._wait_node(name)
                trainers = ", trainers listening" if self.warm_trainers else ""
                self.hooks.note(f"all {len(self.nodes)} connected{trainers} (logs in {self.logs})")
            if submitted is not None:
                with self._step(
                    "submit", f"flwr run {app} over TLS, sent while the SuperNodes started"
                ):
                    run_id = submitted.result()
                    self.hooks.note(f"run {run_id}")
                return run_id
        if self.warm_trainers:
            with self._step("trainers ready", "until every warm trainer has traced the model"):
                self.wait_trainers(TRAINER_READY)
        return None

    def close(self) -> None:
        """Stop the SuperNodes and trainers (in parallel), then the SuperLink; nothing is left
        running."""
        running = list(
            {  # the nodes share one trainer group
                id(p): p
                for n in self.nodes.values()
                for p in (n.process, n.trainer)
                if p is not None
            }.values()
        )
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
                list(pool.map(lambda p: p.stop(), running))
        finally:  # even if interrupted again: the SuperLink never outlives the harness
            try:
                if self.superlink is not None:
                    self.superlink.stop()
            finally:
                if self.proxy is not None:
                    self.proxy.stop()

    # ------------------------------------------------------------------ credentials
    def _make_certs(self) -> None:
        with self._step("certs", f"CA + SuperLink certificate in {self.certs.out}"):
            if self.certs.ca_cert.exists():
                self.hooks.note("reusing the existing CA and server certificate")
            else:
                make_certs(self.certs.out, list(self.sans))
            new_key = ensure_signing_key(self.certs.out)  # runs sign checkpoints with it
            self.hooks.note(
                f"checkpoint-signing key {self.certs.signing_key} "
                f"({'new' if new_key else 'reused'}); the gateway verifies with its .pub"
            )

    def _make_keys(self) -> None:
        with self._step("keys", f"{len(self.nodes)} SuperNode key pairs (ECDSA P-384)"):
            missing = [n.name for n in self.nodes.values() if not n.key.private.exists()]
            if missing:
                make_node_keys(self.certs.out / "nodes", missing)
            self.hooks.note(f"{len(missing)} new, {len(self.nodes) - len(missing)} reused")

    def _start_trainers_step(self) -> None:
        if not self.warm_trainers:
            with self._step("trainers", "none: every ClientApp process imports TensorFlow itself"):
                pass
            return
        with self._step("trainers", f"{len(self.nodes)} warm trainers, one per SuperNode"):
            self.start_trainers(wait=False)  # they listen at once, then load TensorFlow
            self.hooks.note(
                "one TensorFlow import, forked per node; tracing the model in the background, "
                "at a lower CPU priority until ready"
            )

    def register(self) -> None:
        """Register every node key not registered yet (registrations live in state.db).

        In parallel: each `flwr` call is mostly Python start-up (2-7 s on a busy machine).
        """
        todo = [node for node in self.nodes.values() if node.node_id is None]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            ids = list(pool.map(lambda node: self.cli.register(node.key.public), todo))
        for node, node_id in zip(todo, ids, strict=True):
            node.node_id = node_id

    # ------------------------------------------------------------------ SuperLink
    @property
    def superlink_command(self) -> SuperLinkCommand:
        return SuperLinkCommand(
            host="127.0.0.1" if self.fleet_proxy else self.host,
            port=self.link_port,
            database=self.link_home / "state.db",
            ca_cert=self.certs.ca_cert,
            server_cert=self.certs.server_cert,
            server_key=self.certs.server_key,
        )

    @property
    def proxy_command(self) -> ProxyCommand:
        return ProxyCommand(
            host=self.host,
            port=self.port,
            upstream_port=self.link_port,
            server_cert=self.certs.server_cert,
            server_key=self.certs.server_key,
            ca_cert=self.certs.ca_cert,
            folder=self.work_dir / "proxy",
        )

    @property
    def address(self) -> str:
        """What SuperNodes dial: the Fleet proxy (or the SuperLink itself, without one)."""
        return self.proxy_command.address if self.fleet_proxy else self.control_address

    @property
    def control_address(self) -> str:
        """What the operator's `flwr` CLI dials: the SuperLink's own port."""
        return self.superlink_command.address

    def start_superlink(self) -> None:
        """The SuperLink (waits for /health) and its Fleet proxy, unless that is running."""
        cmd = self.superlink_command
        self.link_home.mkdir(parents=True, exist_ok=True)
        if self.superlink is None:
            self.superlink = ManagedProcess(
                "superlink",
                cmd.argv(),
                flower_env(self.link_home),
                self.logs / "superlink.log",
                cwd=self.link_home,
            )
        self.superlink.start()
        if self.fleet_proxy and not (self.proxy and self.proxy.alive()):
            proxy = self.proxy_command
            proxy.write()
            if self.proxy is None:
                self.proxy = ManagedProcess(
                    "proxy", proxy.argv(), flower_env(proxy.folder), self.logs / "proxy.log"
                )
            self.proxy.start()
        self.superlink.wait_https_ready(cmd.health_url, self.certs.ca_cert, self.ready_timeout)
        if self.proxy is not None:
            _wait_listening(self.proxy, self.proxy_command.address, self.ready_timeout)
        self.cli.configure(cmd.address, self.certs.ca_cert)

    def stop_superlink(self) -> None:
        """Stop the Fleet proxy and the SuperLink (a SuperLink host going down: with the proxy
        left up, a node might never notice that the SuperLink behind it restarted)."""
        if self.proxy is not None:
            self.proxy.stop()
        if self.superlink is not None:
            self.superlink.stop()

    def restart_superlink(self, wait_nodes: bool = True) -> None:
        """Stop and start the SuperLink (and its proxy) on the same database; optionally wait
        until every running SuperNode has reconnected (its log says so: the database still lists
        nodes `online` for up to a minute after the SuperLink went down)."""
        running = [n for n in self.nodes.values() if n.process and n.process.alive()]
        marks = {n.name: n.process.log_mark() for n in running if n.process}
        self.stop_superlink()
        # Down until each node has noticed (an idle node asks every 3 s): one that never saw
        # the outage would never log its reconnection either.
        noticed = []
        for node in running:
            assert node.process is not None
            try:
                node.process.wait_for_log(CONNECTION_FAILED, 15, since=marks[node.name])
                noticed.append(node)
            except ProcessError:
                if not node.process.alive():
                    raise
        self.start_superlink()
        if wait_nodes:
            for node in noticed:
                assert node.process is not None
                node.process.wait_for_log(RECONNECTED, self.max_wait_time, since=marks[node.name])
            self.wait_online([n.name for n in running])

    # ------------------------------------------------------------------ SuperNodes
    def node_command(self, name: str, **overrides: object) -> SuperNodeCommand:
        """The SuperNode command for `name`; tests may override fields (e.g. private_key)."""
        node = self.nodes[name]
        fields: dict[str, object] = {
            "superlink": self.address,
            "runtime_port": node.runtime_port,
            "ca_cert": self.certs.ca_cert,
            "private_key": node.key.private,
            "node_config": node.node_config,
            "max_wait_time": self.max_wait_time,
        }
        if not overrides.get("allow_any_app"):
            fields["approved_apps"] = self.allowlist
        fields.update(overrides)
        return SuperNodeCommand(**fields)  # type: ignore[arg-type]

    def redial_nodes(self, superlink: str) -> None:
        """Stop every SuperNode and start it again dialling `superlink` (the bench dials the
        SuperLink's own port, `control_address`, to measure what the Fleet proxy costs)."""
        for name, node in self.nodes.items():
            if node.process is not None:
                node.process.stop()  # a SIGTERM-ed node deactivates: it may return at once
            node.process = self.node_process(
                name, self.node_command(name, superlink=superlink), name
            )
            node.process.start()
        for name in self.nodes:
            self._wait_node(name)

    def node_process(self, name: str, command: SuperNodeCommand, log_name: str) -> ManagedProcess:
        home = self.work_dir / "nodes" / log_name
        home.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(
            log_name, command.argv(), flower_env(home), self.logs / f"{log_name}.log", cwd=home
        )

    def start_node(self, name: str, wait: bool = True, retry_for: float = 0.0) -> None:
        """Start SuperNode `name`; with `retry_for`, retry while the SuperLink refuses (2004)
        because it still counts a crashed node as online (up to ~60 s after a crash)."""
        node = self.nodes[name]
        if not self.allowlist.exists():
            self.approve(*self.approved_apps)
        if node.process is None:
            node.process = self.node_process(name, self.node_command(name), name)
        deadline = time.monotonic() + retry_for
        while True:
            node.process.start()
            if not wait:
                return
            try:
                self._wait_node(name)
                return
            except ProcessError:
                refused = REFUSED_ACTIVATION in node.process.log_text()
                if not (refused and not node.process.alive() and time.monotonic() < deadline):
                    raise
            log.info("%s refused (still online after a crash?); retrying in 5 s", name)
            time.sleep(5)

    def start_trainers(self, wait: bool = True) -> None:
        """Start the nodes' warm trainers: one process imports TensorFlow, then forks one trainer
        per node (each node's node-config must name a state-dir)."""
        command = TrainerGroupCommand.for_nodes(
            [node.node_config for node in self.nodes.values()], nice=CO_LOCATED_TRAINER_NICE
        )
        group = ManagedProcess(
            "trainers",
            command.argv(),
            flower_env(self.work_dir / "nodes"),
            self.logs / "trainers.log",
        )
        for node in self.nodes.values():
            node.trainer = group
        group.start()
        if wait:
            self.wait_trainers(TRAINER_READY)

    def wait_trainers(self, state: str) -> None:
        """Until every node's trainer has logged ``state`` (TRAINER_LISTENING or TRAINER_READY)."""
        for node in self.nodes.values():
            assert node.trainer is not None, f"{node.name} has no trainer"
            line = trainer_log_line(state, Path(str(node.node_config["state-dir"])))
            node.trainer.wait_for_log(line, self.ready_timeout)

    def _wait_node(self, name: str) -> None:
        node = self.nodes[name]
        assert node.process is not None
        match = node.process.wait_for_log(NODE_READY, self.ready_timeout)
        if node.node_id is not None and match.group(1) != node.node_id:
            raise FedrecError(
                f"{name} came up as node {match.group(1)}, registered as {node.node_id}"
            )

    def kill_node(self, name: str) -> None:
        """SIGKILL a SuperNode and its children (a crash: it stays 'online' for up to 60 s)."""
        process = self.nodes[name].process
        if process is not None:
            process.kill()

    def wait_online(self, names: Sequence[str] | None = None, timeout: float | None = None) -> None:
        """Wait until `flwr supernode list` shows these nodes (default: all) online."""
        ids = {n: self.nodes[n].node_id for n in (names if names is not None else self.nodes)}
        wanted = {node_id for node_id in ids.values() if node_id is not None}
        if len(wanted) < len(ids):
            unregistered = sorted(n for n, node_id in ids.items() if node_id is None)
            raise ProcessError(f"nodes {unregistered} have no node id: register them first")
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            online = {n["node-id"] for n in self.cli.nodes() if n.get("status") == "online"}
            if wanted <= online:
                return
            for node in self.nodes.values():
                if node.node_id in wanted and node.process and not node.process.alive():
                    raise ProcessError(
                        f"{node.name} exited (code {node.process.returncode}):\n"
                        f"{node.process.log_tail()}"
                    )
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"nodes {sorted(wanted - online)} not online after "
                    f"{timeout or self.ready_timeout:.0f} s"
                )
            time.sleep(1.0)

    # ------------------------------------------------------------------ runs
    def approve(self, *app_dirs: Path) -> list[str]:
        """Add the FAB hashes of these app folders to the nodes' allowlist (read by each node
        for every new run); the hashes."""
        digests = [app_hash(Path(d)) for d in app_dirs]
        with self._allowlist_lock:
            create_allowlist(self.allowlist)
            for app_dir, digest in zip(app_dirs, digests, strict=True):
                label = app_label(Path(app_dir))
                if append_to_allowlist(self.allowlist, digest, f"{label} {app_dir}".strip()):
                    log.info("approved %s (%s) on every node", app_dir, digest)
        return digests

    def submit(self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None) -> str:
        return self.cli.run(app_dir, run_config)

    def run(
        self,
        app_dir: Path = NOOP_APP_DIR,
        run_config: Mapping[str, ConfigValue] | None = None,
        timeout: float = 600.0,
        check: bool = True,
    ) -> dict[str, Any]:
        """Submit a run and wait for it to finish; its `flwr ls` record (+ `seconds`).

        With `check`, anything but `finished:completed` raises with the run's own details.
        """
        started = time.monotonic()
        run_id = self.submit(app_dir, run_config)
        record = self.cli.wait(run_id, timeout)
        record["seconds"] = round(time.monotonic() - started, 2)
        if check and record.get("status") != COMPLETED:
            raise FedrecError(
                f"run {run_id} ended {record.get('status')}: {record.get('status-details')}\n"
                f"{self.cli.log(run_id)[-3000:]}"
            )
        return record
