"""Nodes run only app code their admin approved (issue "Lock the federation"), on a real federation.

One module-scoped federation of 2 SuperNodes, each started with the allowlist
``<work_dir>/approved-apps.txt`` that approves the no-op app only. The marker app's ClientApp
leaves a file when its module is imported and when it trains: submitted unapproved, it is
refused on every node (no marker anywhere, the nodes stay up, the run fails naming each node and
the app's hash), and so is the fedrec app (its ServerApp fails the run the same way); the
approved no-op app then completes; approving the marker app's hash in the file (read again for
each run, no restart) lets it run and leave its markers, which shows the first test would have
seen them. Tests run in file order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from launch_helpers import wait_gone

from fedrec_app.core.config import APP_DIR
from fedrec_app.data.partition import make_partitions
from fedrec_app.ops.app_approval import app_hash, append_to_allowlist, read_allowlist
from fedrec_app.ops.federation import NOOP_APP_DIR, LocalFederation
from fedrec_app.ops.flower import COMPLETED, flower_bin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKER_APP = Path(__file__).resolve().parent / "apps" / "marker_app"
FAILED = "finished:failed"
CLIENTAPP_STARTED = "Start `flwr-clientapp` process"  # what a SuperNode logs for each message


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("approval")
    with LocalFederation(work, ["sn1", "sn2"], max_wait_time=60, approved_apps=[NOOP_APP_DIR]) as f:
        yield f
    for proc in [f.superlink, *(n.process for n in f.nodes.values())]:
        assert proc is not None and not proc.alive()
    assert wait_gone(str(f.work_dir), timeout=0) == []


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


def _marker_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("MARKER-*"))


def _marker_run(fed: LocalFederation, markers: Path) -> dict:
    return fed.run(
        MARKER_APP,
        {"marker-dir": markers, "min-nodes": len(fed.nodes), "round-timeout": 90.0},
        timeout=240,
        check=False,
    )


def test_the_run_submits_the_fab_whose_hash_the_nodes_see(fed: LocalFederation) -> None:
    assert read_allowlist(fed.allowlist) == {app_hash(NOOP_APP_DIR)}
    result = subprocess.run(
        [
            flower_bin("flwr"),
            "run",
            str(NOOP_APP_DIR),
            fed.cli.connection,
            "--format",
            "json",
            "--run-config",
            "num-server-rounds=1",
        ],
        env=fed.cli.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["success"], result.stdout + result.stderr
    assert app_hash(NOOP_APP_DIR).startswith(payload["fab-hash"])  # flwr prints 8 hex digits
    record = fed.cli.wait(payload["run-id"], timeout=180)
    assert record["status"] == COMPLETED, record
    for node in fed.nodes.values():  # each node hashed what it fetched: the full hash
        assert f"app {app_hash(NOOP_APP_DIR)} is approved here" in node.process.log_text()


def test_an_unapproved_app_is_refused_on_every_node(fed: LocalFederation, markers: Path) -> None:
    digest = app_hash(MARKER_APP)
    assert digest not in read_allowlist(fed.allowlist)
    marks = {name: node.process.log_mark() for name, node in fed.nodes.items()}
    record = _marker_run(fed, markers)
    run_log = fed.cli.log(record["run-id"])
    assert record["status"] == FAILED, (record, run_log[-3000:])
    assert _marker_files(markers, fed.work_dir) == []  # none of its code ran anywhere
    for name, node in fed.nodes.items():
        refusal = f"node {node.node_id}: app {digest} is not approved on this node"
        assert refusal in record["status-details"], record
        assert refusal in run_log
        node_log = node.process.log_text(since=marks[name])
        assert "ERROR" in node_log and f"fedrec:app-not-approved: {refusal}" in node_log
        assert CLIENTAPP_STARTED not in node_log and node.process.alive(), node_log[-2000:]


def test_the_fedrec_app_unapproved_fails_its_run_naming_the_nodes(
    fed: LocalFederation, synthetic_ml: Path, tmp_path: Path
) -> None:
    parts = tmp_path / "parts"
    make_partitions(synthetic_ml, parts, 2, split="u1", seed=5)
    digest = app_hash(APP_DIR)
    record = fed.run(
        APP_DIR,
        {
            "num-server-rounds": 1,
            "local-epochs": 1,
            "embedding-dim": 8,
            "rank-dim": 4,
            "min-nodes": 2,
            "node-wait-timeout": 30.0,
            "round-timeout": 90.0,
            "checkpoint-dir": tmp_path / "ckpt",
            "signing-key": fed.certs.signing_key,
            "catalogue": parts / "items.csv",
        },
        timeout=300,
        check=False,
    )
    details = str(record.get("status-details"))
    assert record["status"] == FAILED, (record, fed.cli.log(record["run-id"])[-3000:])
    assert "round 1: all 2 sampled node(s) refused to run this app" in details
    for node in fed.nodes.values():
        assert f"node {node.node_id}: app {digest} is not approved on this node" in details, details
    assert not (tmp_path / "ckpt" / record["run-id"] / "round-0001").exists()


def test_the_next_approved_run_completes(fed: LocalFederation) -> None:
    record = fed.run(NOOP_APP_DIR, {"num-server-rounds": 1, "fraction-evaluate": 0.0}, timeout=180)
    assert record["status"] == COMPLETED


def test_an_app_approved_without_a_restart_runs(fed: LocalFederation, markers: Path) -> None:
    pids = {name: node.process.pid for name, node in fed.nodes.items()}
    marks = {name: node.process.log_mark() for name, node in fed.nodes.items()}
    assert append_to_allowlist(fed.allowlist, app_hash(MARKER_APP), "approved by the test")
    record = _marker_run(fed, markers)
    assert record["status"] == COMPLETED, (record, fed.cli.log(record["run-id"])[-3000:])
    assert {p.name for p in _marker_files(markers)} == {
        f"MARKER-node-{node.node_id}" for node in fed.nodes.values()
    }
    assert len(_marker_files(fed.work_dir / "nodes")) >= len(fed.nodes)  # imported on each node
    assert pids == {name: node.process.pid for name, node in fed.nodes.items()}  # no restart
    for name, node in fed.nodes.items():  # so the refused run's log would have shown it
        assert CLIENTAPP_STARTED in node.process.log_text(since=marks[name])
