"""The fedrec app on a real TLS SuperLink (SuperNode auth) with 2 authenticated SuperNodes.

Tiny synthetic data, loopback, 1-4 rounds. One federation serves the module; the SuperLink
restart and the node kill come last. Each Flower phase costs ~10 s here, a killed node up to
60 s (heartbeat window).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from fedrec_app.core.checkpoint import read_checkpoint, verify_checkpoint
from fedrec_app.core.signing import load_verify_key
from fedrec_app.data.partition import make_partitions
from fedrec_app.ops.federation import LocalFederation
from fedrec_app.ops.flower import COMPLETED

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts(synthetic_ml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parts") / "synthetic-2"
    make_partitions(synthetic_ml, out, 2, split="u1", seed=5)
    return out


@pytest.fixture(scope="module")
def fed(parts: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("fed")
    nodes = {
        name: {"data-path": parts / f"partition-{k}", "state-dir": work / "state" / name}
        for k, name in enumerate(("a", "b"))
    }
    with LocalFederation(work, nodes, max_wait_time=60) as federation:
        yield federation


def _config(fed: LocalFederation, parts: Path, ckpt: Path, **overrides: object) -> dict:
    config: dict = {
        "num-server-rounds": 2,
        "local-epochs": 1,
        "embedding-dim": 8,
        "rank-dim": 4,
        "min-nodes": 2,
        "node-wait-timeout": 30.0,
        "round-timeout": 120.0,
        "checkpoint-dir": ckpt,
        "signing-key": fed.certs.signing_key,  # written by LocalFederation with the CA
        "catalogue": parts / "items.csv",
    }
    config.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return config


def test_run_completes_and_checkpoint_matches_its_manifest(
    fed: LocalFederation, parts: Path, tmp_path: Path
) -> None:
    record = fed.run(APP_DIR, _config(fed, parts, tmp_path), timeout=400)
    assert record["status"] == COMPLETED
    run_dir = tmp_path / record["run-id"]
    public = load_verify_key(fed.certs.signing_pub)
    for folder in ("round-0001", "round-0002", "latest", "best", "final"):
        # raises unless signed by the federation's key and every file matches the manifest
        verify_checkpoint(run_dir / folder, public)
    final = read_checkpoint(run_dir / "final")
    assert set(final.manifest["files"]) == {"weights.npz", "items.csv", "model.keras"}
    assert not final.has_user_factors  # the default: user rows stay on the nodes
    assert [e["nodes"] for e in final.manifest["history"]] == [2, 2]
    assert final.manifest["metrics"]["test.rmse"] > 0
    # Each node kept its users' rows in its own state dir, under this run's id.
    for node in fed.nodes.values():
        assert (Path(str(node.node_config["state-dir"])) / f"{record['run-id']}.npz").is_file()
    # `flwr log`: one readable line per round, the nodes by their site names (node-config
    # site-name, sent with each reply); each SuperNode's log says it trained the round
    run_log = fed.cli.log(record["run-id"])
    metric = r"RMSE \d+\.\d{4}, NDCG@10 \d\.\d{3}"
    for line in (
        r"round 1/2: 2/2 nodes replied: a, b \| \d+\.\d s",
        rf"round 2/2: model of round 1 on the held-out ratings: {metric} \| 2/2 nodes "
        r"replied: a, b \| \d+\.\d s",
        rf"final evaluation: model of round 2 on the held-out ratings: {metric} \| "
        r"2/2 nodes replied: a, b \| \d+\.\d s",
        rf"run {record['run-id']} completed: final checkpoint \S+/final",
    ):
        assert re.search(line, run_log), (line, run_log[-3000:])
    for name in fed.nodes:
        node_log = (fed.logs / f"{name}.log").read_text()
        assert f"run {record['run-id']}, round 2: train message done" in node_log


def test_too_few_nodes_fails_within_the_wait(
    fed: LocalFederation, parts: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    config = _config(fed, parts, tmp_path, min_nodes=3, node_wait_timeout=5.0)
    record = fed.run(APP_DIR, config, timeout=120, check=False)
    assert record["status"] == "finished:failed"
    assert "fewer than min-nodes=3" in json.dumps(record) + fed.cli.log(record["run-id"])
    assert time.monotonic() - started < 90


def test_a_run_resumed_after_a_superlink_restart_completes(
    fed: LocalFederation, parts: Path, tmp_path: Path
) -> None:
    config = _config(fed, parts, tmp_path, num_server_rounds=4)
    run_id = fed.submit(APP_DIR, config)
    latest = tmp_path / run_id / "latest"
    deadline = time.monotonic() + 300
    while not latest.exists():  # round 1's checkpoint: the run is in round 2 now
        assert time.monotonic() < deadline, f"no checkpoint:\n{fed.cli.log(run_id)[-3000:]}"
        time.sleep(1)
    fed.restart_superlink()  # kills the ServerApp: the run in flight fails
    assert fed.cli.wait(run_id, timeout=120)["status"] == "finished:failed"

    source = latest.resolve()
    record = fed.run(APP_DIR, {**config, "resume-from": str(source)}, timeout=400)
    assert record["status"] == COMPLETED, fed.cli.log(record["run-id"])[-3000:]
    final = read_checkpoint(tmp_path / record["run-id"] / "final")
    assert final.manifest["resumed_from"] == str(source)
    rounds = [e["round"] for e in final.manifest["history"]]
    assert rounds[0] == 1 and rounds[-1] == 4 and rounds == sorted(set(rounds))


def test_killing_a_node_mid_run_still_finishes_with_the_other(
    fed: LocalFederation, parts: Path, tmp_path: Path
) -> None:
    config = _config(fed, parts, tmp_path, num_server_rounds=3, min_nodes=1)
    run_id = fed.submit(APP_DIR, config)
    deadline = time.monotonic() + 300
    while "round 1/3: 2/2 nodes replied: a, b |" not in fed.cli.log(run_id):
        assert time.monotonic() < deadline, f"round 1 did not finish:\n{fed.cli.log(run_id)}"
        time.sleep(2)
    fed.kill_node("b")
    record = fed.cli.wait(run_id, timeout=400)
    assert record["status"] == COMPLETED, fed.cli.log(run_id)[-3000:]
    final = read_checkpoint(tmp_path / run_id / "final")
    nodes = [e["nodes"] for e in final.manifest["history"]]
    assert nodes[0] == 2 and nodes[-1] == 1
