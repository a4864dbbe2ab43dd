"""`fedrec bench quality`: central vs federated training of the same model on one split.

Central: ``fedrec_app.core.central`` (epochs chosen on validation). Federated: the Flower app on
Flower's simulation engine (a SuperLink in simulation mode that this module starts on a free
loopback port and stops afterwards), ``K`` virtual SuperNodes over a fresh ``random`` partition
set. The federated figures are computed from the run's checkpoint folder (``final`` by default),
with the same evaluation code as the central ones, over the whole test split.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedrec_app.core.config import APP_DIR, app_defaults
from fedrec_app.core.errors import FedrecError

log = logging.getLogger(__name__)

METRIC_KEYS = ("rmse", "mae", "hr@10", "p@10", "r@10", "ndcg@10")


@dataclass(frozen=True)
class SimulationRun:
    run_id: str
    status: str
    seconds: float
    log: str


def run_simulation(
    work_dir: Path,
    num_supernodes: int,
    run_config: Mapping[str, Any],
    app_dir: Path = APP_DIR,
    timeout: float = 3600.0,
) -> SimulationRun:
    """Run the app on the simulation engine with ``num_supernodes`` virtual nodes; wait for it."""
    from fedrec_app.ops.federation import free_port
    from fedrec_app.ops.flower import FlwrCli, SuperLinkCommand, flower_bin, format_config
    from fedrec_app.ops.process import ManagedProcess

    work_dir = Path(work_dir).resolve()
    link_home, cli_home = work_dir / "superlink", work_dir / "cli"
    for folder in (link_home, cli_home):
        folder.mkdir(parents=True, exist_ok=True)
    # Loopback only, no node traffic: the simulated nodes live inside the SuperLink's process.
    command = SuperLinkCommand(
        host="127.0.0.1", port=free_port(), database=link_home / "state.db", insecure=True
    )
    cli = FlwrCli(cli_home, connection="sim")
    superlink = ManagedProcess(
        "simulation-superlink",
        [*command.argv(), "--simulation"],
        cli.env() | {"FLWR_HOME": str(link_home)},
        work_dir / "superlink.log",
        cwd=link_home,
    )
    superlink.start()
    try:
        superlink.wait_https_ready(command.health_url, None, timeout=90)
        cli.configure(command.address, None, insecure=True)
        started = time.monotonic()
        argv = [
            flower_bin("flwr"),
            "run",
            str(Path(app_dir).resolve()),
            "sim",
            "--format",
            "json",
            "--federation-config",
            f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
            "--run-config",
            format_config(run_config),
        ]
        done = subprocess.run(
            argv, env=cli.env(), capture_output=True, text=True, timeout=300, check=False
        )
        try:
            payload, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
            run_id = str(payload["run-id"])
        except (ValueError, KeyError) as exc:
            raise FedrecError(
                f"flwr run failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            ) from exc
        record = cli.wait(run_id, timeout=timeout, poll=5.0)
        return SimulationRun(
            run_id=run_id,
            status=str(record.get("status")),
            seconds=time.monotonic() - started,
            log=cli.log(run_id),
        )
    finally:
        superlink.stop()


def evaluate_checkpoint(folder: Path, partition_set: Path) -> dict[str, float]:
    """Test metrics of a checkpoint with user factors, over all partitions of ``partition_set``."""
    from fedrec_app.core.checkpoint import read_checkpoint
    from fedrec_app.core.scoring import USER_ARRAYS
    from fedrec_app.core.training import SHARED_ARRAYS, evaluate
    from fedrec_app.data.partition import load_partition_set_member, read_manifest

    ckpt = read_checkpoint(folder)
    if not ckpt.has_user_factors:
        raise FedrecError(f"{folder}: no user factors (run with share-user-factors=true)")
    count = len(read_manifest(partition_set)["partitions"])
    parts = [load_partition_set_member(partition_set, k) for k in range(count)]
    seen = pd.concat([f for p in parts for f in (p.train, p.val)], ignore_index=True)
    test = pd.concat([p.test for p in parts], ignore_index=True)
    shared = {name: ckpt.arrays[name] for name in SHARED_ARRAYS}
    users = {name: ckpt.arrays[name] for name in ("user_ids", *USER_ARRAYS)}
    return evaluate(shared, users, seen, test, ckpt.catalogue).finalize()


def run_quality(
    data_dir: Path,
    split: str,
    num_partitions: int,
    seed: int,
    work_dir: Path,
    rounds: int | None = None,
    checkpoint: str = "final",
    timeout: float = 3600.0,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Central and federated figures (see the module docstring) as one JSON-ready dict."""
    from fedrec_app.core.central import load_central_data, train_central
    from fedrec_app.core.config import parse_run_config
    from fedrec_app.core.model import configure_device
    from fedrec_app.data.partition import make_partitions
    from fedrec_app.ops.certs import CertPaths, ensure_signing_key

    work_dir = Path(work_dir).resolve()
    partition_set = work_dir / "partitions" / f"{split}-random-{num_partitions}-seed{seed}"
    make_partitions(Path(data_dir), partition_set, num_partitions, split=split, seed=seed)
    keys = CertPaths(work_dir / "certs")
    ensure_signing_key(keys.out)  # the ServerApp signs every checkpoint
    overrides: dict[str, Any] = {
        **(run_config or {}),
        "partition-set": str(partition_set),
        "checkpoint-dir": str(work_dir / "checkpoints"),
        "signing-key": str(keys.signing_key),
        "share-user-factors": True,
        "min-nodes": num_partitions,
        "seed": seed,
    }
    if rounds is not None:
        overrides["num-server-rounds"] = rounds
    cfg = parse_run_config({**app_defaults(), **overrides})

    log.info("federated: %d simulated nodes, %d rounds", num_partitions, cfg.num_server_rounds)
    sim = run_simulation(work_dir / "simulation", num_partitions, overrides, timeout=timeout)
    if sim.status != "finished:completed":
        raise FedrecError(f"federated run {sim.run_id} ended {sim.status}:\n{sim.log[-3000:]}")
    folder = Path(cfg.checkpoint_dir) / sim.run_id / checkpoint
    federated = {**evaluate_checkpoint(folder, partition_set), "seconds": sim.seconds}

    log.info("central: same model and split")
    configure_device(threads=2)
    data = load_central_data(Path(data_dir), split, seed)
    central = train_central(data, cfg.train_config())
    return {
        "split": split,
        "num_partitions": num_partitions,
        "seed": seed,
        "rounds": cfg.num_server_rounds,
        "central": {**{k: central.metrics[k] for k in METRIC_KEYS}, "seconds": central.seconds},
        "federated": {
            **{k: federated[k] for k in METRIC_KEYS},
            "seconds": federated["seconds"],
            "checkpoint": str(folder.resolve()),
            "run_id": sim.run_id,
        },
        "train_config": cfg.train_config().to_dict(),
        "run_config": dict(run_config or {}),
    }


def table(result: Mapping[str, Any]) -> str:
    """A Markdown table of the central and federated figures."""
    head = "| | " + " | ".join(k.upper() for k in METRIC_KEYS) + " | seconds |"
    rule = "|---" * (len(METRIC_KEYS) + 2) + "|"
    rows = [head, rule]
    for name in ("central", "federated"):
        row = result[name]
        cells = " | ".join(f"{row[k]:.4f}" for k in METRIC_KEYS)
        rows.append(f"| {name} | {cells} | {row['seconds']:.0f} |")
    gap = result["federated"]["rmse"] - result["central"]["rmse"]
    rows.append(f"\nfederation gap (RMSE federated - central): {gap:+.4f}")
    return "\n".join(rows)
