"""Hosts on one machine for tests: network namespaces made by deploy/netns.sh, processes started
inside them, and the `flwr` CLI and an SSH tunnel run from one of them.

Every client runs with `ip netns exec`, so all traffic stays inside the namespaces. Whoever
uses `hosts()` stops every process before the namespaces are deleted, also when a test fails.
Needs root; skips where namespaces cannot be made.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from launch_helpers import wait_gone

from fedrec_app.ops.flower import FlowerCliError, FlwrCli, flower_env
from fedrec_app.ops.process import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
NETNS = REPO / "deploy" / "netns.sh"


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Namespaces:
    prefix: str
    env: dict[str, str]

    def name(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def addr(self, role: str) -> str:
        out = subprocess.run(
            [str(NETNS), "addr", role], env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def exec(self, role: str, argv: Sequence[str | Path]) -> list[str]:
        """`argv` run inside the role's namespace (`ip netns exec` execs: the pid is argv's)."""
        return ["ip", "netns", "exec", self.name(role), *map(str, argv)]

    def run(
        self,
        role: str,
        argv: Sequence[str | Path],
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.exec(role, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


class NetnsCli(FlwrCli):
    """The `flwr` CLI run inside a namespace."""

    def __init__(self, home: Path, namespaces: Namespaces, role: str = "cli") -> None:
        super().__init__(home)
        self.prefix = ["ip", "netns", "exec", namespaces.name(role)]

    def _exec(self, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        return super()._exec([*self.prefix, *argv], timeout)


@contextmanager
def namespaces_up(nodes: int = 2, subnet: str | None = None) -> Iterator[Namespaces]:
    """Namespaces link, cli, gw, sn1..snN on a private bridge; deleted afterwards.

    `subnet`: the bridge's first three octets (default: a random 10.x.y). The namespaces of
    one topology see only their own bridge, so a fixed subnet (e.g. the runbook's 10.77.0)
    does not clash with another topology's."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    rnd = random.Random(os.getpid() + time.monotonic_ns())
    prefix = f"fq{rnd.randint(0, 99999):05d}"  # <= 8 characters, unique per use
    env = {
        **os.environ,
        "FEDREC_NETNS_PREFIX": prefix,
        "FEDREC_NETNS_SUBNET": subnet or f"10.{rnd.randint(160, 250)}.{rnd.randint(0, 255)}",
    }
    probe = subprocess.run(["ip", "netns", "add", f"{prefix}probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", f"{prefix}probe"], check=True)
    try:
        subprocess.run(
            [str(NETNS), "up", str(nodes)], env=env, check=True, capture_output=True, text=True
        )
        yield Namespaces(prefix, env)
    finally:
        subprocess.run([str(NETNS), "down"], env=env, check=False)
        left = [ns for ns in _namespaces() if ns.startswith(prefix)]
        assert not left, f"namespaces left behind: {left}"


@dataclass
class Stack:
    """Processes started by a test; `stop_all` stops them in reverse order."""

    work: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str | Path], home: Path) -> ManagedProcess:
        home.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(
            name, argv, flower_env(home), self.work / "logs" / f"{name}.log", cwd=home
        )
        self.processes.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        left = wait_gone(str(self.work), timeout=10)
        assert not left, f"processes left behind: {left}"


@contextmanager
def stack_in(work: Path) -> Iterator[Stack]:
    """A Stack whose processes are all stopped on exit (enter it after the namespaces)."""
    started = Stack(work)
    try:
        yield started
    finally:
        started.stop_all()


def wait_superlink(cli: FlwrCli, process: ManagedProcess, timeout: float = 90.0) -> None:
    """Wait until the CLI (in its namespace) gets an answer from the SuperLink over TLS."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cli.nodes()
            return
        except FlowerCliError:
            if not process.alive() or time.monotonic() > deadline:
                raise
        time.sleep(1.0)
