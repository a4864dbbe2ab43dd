"""A real TLS federation (SuperLink with SuperNode auth + 2 SuperNodes) on loopback.

One federation is shared by the module (starting one costs ~10 s); the tests run in file order
and the SuperLink restart comes last.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from launch_helpers import wait_gone

from fedrec_app.ops.certs import make_certs, make_node_keys
from fedrec_app.ops.federation import LocalFederation
from fedrec_app.ops.flower import COMPLETED, FlowerCliError, FlwrCli
from fedrec_app.ops.process import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONE_ROUND = {"num-server-rounds": 1, "fraction-evaluate": 0.0, "min-nodes": 2}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory):
    with LocalFederation(tmp_path_factory.mktemp("fed"), ["sn1", "sn2"], max_wait_time=60) as f:
        yield f
    for proc in [f.superlink, *(n.process for n in f.nodes.values())]:
        assert proc is not None and not proc.alive()
    # nothing left behind: no process carries the work dir (FLWR_HOME, arguments)
    assert wait_gone(str(f.work_dir), timeout=0) == []


def _online(fed: LocalFederation) -> set[str]:
    return {n["node-id"] for n in fed.cli.nodes() if n["status"] == "online"}


def test_two_registered_nodes_complete_a_noop_round(fed: LocalFederation) -> None:
    ids = {n.node_id for n in fed.nodes.values()}
    assert len(ids) == 2 and ids <= _online(fed)
    record = fed.run(run_config=ONE_ROUND, timeout=180)
    assert record["status"] == COMPLETED
    assert "[noopapp] 1 rounds in" in fed.cli.log(record["run-id"])
    for name in fed.nodes:  # the SuperLink really talks TLS with auth on
        assert "--enable-supernode-auth" in fed.superlink.argv
        assert re.search(r"SuperNode ID: \d+", fed.nodes[name].process.log_text())


def test_refused_clients(fed: LocalFederation, tmp_path: Path) -> None:
    (rogue,) = make_node_keys(tmp_path / "keys", ["rogue"])
    other_ca = make_certs(tmp_path / "other-ca")
    cases = {  # name -> (command overrides, what its log must say)
        "unregistered": ({"private_key": rogue.private}, r"\[code: 2004\]"),
        "keyless": ({"private_key": None}, r"\[code: 2001\]"),
        "other-ca": (
            {"private_key": rogue.private, "ca_cert": other_ca.ca_cert},
            r"CERTIFICATE_VERIFY_FAILED",
        ),
        "plaintext": (
            {
                "private_key": None,
                "ca_cert": None,
                "insecure": True,
                "max_wait_time": 3,
            },  # the TLS port drops it: how depends on the timing
            r"Server disconnected without sending a response|Connection reset by peer"
            r"|400 Bad Request",
        ),  # the Fleet proxy answers plaintext with a 400
    }
    procs: dict[str, ManagedProcess] = {}
    for name, (overrides, _) in cases.items():
        command = fed.node_command("sn1", runtime_port=_free_port(), **overrides)
        procs[name] = fed.node_process(name, command, f"refused-{name}").start()
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            codes = dict(
                zip(procs, pool.map(lambda p: p.wait_exit(60), procs.values()), strict=True)
            )
    finally:
        for proc in procs.values():
            proc.stop()
    for name, (_, expected) in cases.items():
        text = procs[name].log_text()
        assert codes[name] != 0, f"{name} exited 0:\n{text[-2000:]}"
        assert "SuperNode ID:" not in text, name
        assert re.search(expected, text), f"{name}:\n{text[-2000:]}"
    assert _online(fed) == {n.node_id for n in fed.nodes.values()}


def _free_port() -> int:
    from fedrec_app.ops.federation import free_port

    return free_port()


def test_plaintext_and_foreign_ca_clients_cannot_talk_to_the_superlink(
    fed: LocalFederation, tmp_path: Path
) -> None:
    host_port = fed.address
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{host_port}/health", timeout=5)
    other = make_certs(tmp_path / "other")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(
            f"https://{host_port}/health",
            timeout=5,
            context=ssl.create_default_context(cafile=other.ca_cert),
        )
    cli = FlwrCli(tmp_path / "cli-plain")
    cli.configure(host_port, None, insecure=True)
    with pytest.raises(FlowerCliError):
        cli.nodes()
    cli.configure(host_port, other.ca_cert)
    with pytest.raises(FlowerCliError):
        cli.nodes()


def test_superlink_restart_keeps_registrations_and_nodes_reconnect(fed: LocalFederation) -> None:
    ids = {name: node.node_id for name, node in fed.nodes.items()}
    marks = {name: node.process.log_mark() for name, node in fed.nodes.items()}
    fed.restart_superlink()  # waits for each node's "Connection successful after …"
    for name, node in fed.nodes.items():
        assert "Connection successful after" in node.process.log_text(since=marks[name])
        assert node.process.alive()
    assert {name: node.node_id for name, node in fed.nodes.items()} == ids
    assert _online(fed) == set(ids.values())
    assert fed.run(run_config=ONE_ROUND, timeout=180)["status"] == COMPLETED
