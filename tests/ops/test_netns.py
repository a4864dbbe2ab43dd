"""A multi-host federation on one machine (deploy/netns.sh): the SuperLink, 2 SuperNodes, the
`flwr` CLI, the gateway and its client each in their own network namespace.

All traffic stays inside the namespaces: every client runs with `ip netns exec`. The fixtures
stop every process before the namespaces are deleted, also when the test fails. Needs root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from launch_helpers import processes_mentioning, wait_gone

from fedrec_app.data.catalogue import read_catalogue_csv
from fedrec_app.data.layout import partition_dir_name
from fedrec_app.data.partition import make_partitions
from fedrec_app.ops.certs import certificate_sans, make_certs, make_node_keys
from fedrec_app.ops.federation import NODE_READY
from fedrec_app.ops.flower import (
    COMPLETED,
    FlowerCliError,
    FlwrCli,
    SuperLinkCommand,
    SuperNodeCommand,
    flower_env,
)
from fedrec_app.ops.process import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NETNS = REPO / "deploy" / "netns.sh"
LINK_PORT, GATEWAY_PORT = 18443, 18080  # inside the namespaces: nothing else listens there
CLIENT = """
import json, sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            print(json.dumps(json.load(response)))
            break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {sys.argv[1]}: {exc}")
        time.sleep(0.5)
"""


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
        out = subprocess.run([str(NETNS), "addr", role], env=self.env, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()

    def exec(self, role: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the role's namespace (`ip netns exec` execs: the pid is argv's)."""
        return ["ip", "netns", "exec", self.name(role), *map(str, argv)]


class NetnsCli(FlwrCli):
    """The `flwr` CLI run inside a namespace."""

    def __init__(self, home: Path, namespaces: Namespaces, role: str = "cli") -> None:
        super().__init__(home)
        self.prefix = ["ip", "netns", "exec", namespaces.name(role)]

    def _exec(self, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        return super()._exec([*self.prefix, *argv], timeout)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Namespaces for link, cli, gw, sn1, sn2 on a private bridge; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    rnd = random.Random(os.getpid())
    prefix = f"fq{os.getpid() % 100000:05d}"  # <= 8 characters, unique per test process
    env = {**os.environ, "FEDREC_NETNS_PREFIX": prefix,
           "FEDREC_NETNS_SUBNET": f"10.{rnd.randint(160, 250)}.{rnd.randint(0, 255)}"}
    probe = subprocess.run(["ip", "netns", "add", f"{prefix}probe"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", f"{prefix}probe"], check=True)
    try:
        subprocess.run([str(NETNS), "up", "2"], env=env, check=True, capture_output=True,
                       text=True)
        yield Namespaces(prefix, env)
    finally:
        subprocess.run([str(NETNS), "down"], env=env, check=False)
        left = [ns for ns in _namespaces() if ns.startswith(prefix)]
        assert not left, f"namespaces left behind: {left}"


@dataclass
class Stack:
    """Processes started by the test; stopped in reverse order by the fixture."""

    work: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], home: Path) -> ManagedProcess:
        home.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(name, argv, flower_env(home), self.work / "logs" / f"{name}.log",
                                 cwd=home)
        self.processes.append(process)
        return process.start()


@pytest.fixture
def stack(namespaces: Namespaces, tmp_path: Path) -> Iterator[Stack]:
    """Depends on `namespaces`, so its teardown (stop processes) runs before theirs."""
    started = Stack(tmp_path)
    try:
        yield started
    finally:
        for process in reversed(started.processes):
            process.stop()
        left = wait_gone(str(tmp_path), timeout=10)
        assert not left, f"processes left behind: {left}"


def test_federation_and_gateway_across_namespaces(
    namespaces: Namespaces, stack: Stack, tmp_path: Path, synthetic_ml: Path
) -> None:
    ns = namespaces
    link_ip, gw_ip = ns.addr("link"), ns.addr("gw")
    certs = make_certs(tmp_path / "certs", [link_ip])
    assert link_ip in certificate_sans(certs.server_cert)
    names = ["sn1", "sn2"]
    keys = make_node_keys(tmp_path / "certs" / "nodes", names)
    set_dir = make_partitions(synthetic_ml, tmp_path / "partitions", len(names)).out

    link_home = tmp_path / "superlink"
    link = SuperLinkCommand(host=link_ip, port=LINK_PORT, database=link_home / "state.db",
                            ca_cert=certs.ca_cert, server_cert=certs.server_cert,
                            server_key=certs.server_key)
    superlink = stack.start("superlink", ns.exec("link", link.argv()), link_home)
    cli = NetnsCli(tmp_path / "cli", ns)
    cli.configure(f"{link_ip}:{LINK_PORT}", certs.ca_cert)
    _wait_superlink(cli, superlink)
    node_ids = {key.name: cli.register(key.public) for key in keys}

    for k, key in enumerate(keys):
        node = SuperNodeCommand(
            superlink=f"{link_ip}:{LINK_PORT}", runtime_port=9094, ca_cert=certs.ca_cert,
            private_key=key.private, max_wait_time=60,
            node_config={"data-path": set_dir / partition_dir_name(k),
                         "state-dir": tmp_path / "nodes" / key.name / "state"},
        )  # own namespace, own loopback: both may use Runtime API port 9094
        stack.start(key.name, ns.exec(key.name, node.argv()), tmp_path / "nodes" / key.name)
    for process in stack.processes[1:]:
        assert process.wait_for_log(NODE_READY, 120).group(1) == node_ids[process.name]

    run_id = cli.run(REPO, {
        "num-server-rounds": 1, "local-epochs": 1, "min-nodes": len(names),
        "checkpoint-dir": tmp_path / "checkpoints", "partition-set": set_dir,
        "share-user-factors": True,
    })  # fmt: skip
    record = cli.wait(run_id, timeout=600)
    assert record["status"] == COMPLETED, (record, cli.log(run_id)[-3000:])
    final = tmp_path / "checkpoints" / run_id / "final"
    assert (final / "manifest.json").is_file()

    gateway = [sys.executable, "-m", "fedrec_app", "gateway", "--checkpoint", final,
               "--host", gw_ip, "--port", GATEWAY_PORT]
    stack.start("gateway", ns.exec("gw", gateway), tmp_path / "gateway")
    url = f"http://{gw_ip}:{GATEWAY_PORT}/recommend?user_id=4&n=5"
    answer = subprocess.run(ns.exec("cli", [sys.executable, "-c", CLIENT, url, "60"]),
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr + stack.processes[-1].log_tail()
    recs = json.loads(answer.stdout)["recommendations"]
    catalogue = read_catalogue_csv(set_dir / "items.csv")
    assert len(recs) == 5
    for rec in recs:
        assert rec["movie_title"] == catalogue.titles[catalogue.index_of(rec["movie_id"])]
    assert processes_mentioning(str(tmp_path))  # still running here; the fixture stops them


def _wait_superlink(cli: NetnsCli, superlink: ManagedProcess, timeout: float = 90.0) -> None:
    """Wait until the CLI (in its namespace) gets an answer from the SuperLink over TLS."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cli.nodes()
            return
        except FlowerCliError:
            if not superlink.alive() or time.monotonic() > deadline:
                raise
        time.sleep(1.0)
