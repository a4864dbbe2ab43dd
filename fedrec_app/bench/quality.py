"""`fedrec bench quality`: central vs federated training of the same model on one split.

Central: ``fedrec_app.core.central`` (epochs chosen on validation). Federated: the Flower app on
Flower's simulation engine (a SuperLink in simulation mode that this module starts on a free
loopback port and stops afterwards), ``K`` virtual SuperNodes over a fresh partition set
(``random`` by default; ``activity``, ``genre``). The federated figures are computed from the run's
checkpoint folder (``final`` by default), with the same evaluation code as the central ones, over
the whole test split. ``run_quality_many`` runs several K and schemes against one central run
(central training does not depend on K) and checks the quality floors (``FLOORS``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedrec_app.core.config import APP_DIR, app_defaults
from fedrec_app.core.errors import FedrecError

log = logging.getLogger(__name__)

METRIC_KEYS = ("rmse", "mae", "hr@10", "p@10", "r@10", "ndcg@10")


@dataclass(frozen=True)
class Floors:
    """Issue 13's quality floors (u1, app defaults, full ranking, relevant = rating >= 4)."""

    rmse_max: float = 0.915  # random partitions, every K
    ndcg_min: float = 0.45  # random partitions, every K
    rmse_gap: float = 0.003  # random: federated RMSE <= central + this
    ndcg_gap: float = 0.01  # random: federated NDCG@10 >= central - this
    rmse_gap_skewed: float = 0.01  # activity and genre: federated RMSE <= central + this


FLOORS = Floors()


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
    # SHARED_ARRAYS leaves out item_implicit: a checkpoint's user rows already hold that term
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
    scheme: str = "random",
    central: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Central and federated figures (see the module docstring) as one JSON-ready dict; with
    ``central`` (a previous result's ``"central"``, same split, seed and run-config), central
    training is not run again."""
    from fedrec_app.core.central import load_central_data, train_central
    from fedrec_app.core.config import parse_run_config
    from fedrec_app.core.model import configure_device
    from fedrec_app.data.partition import make_partitions
    from fedrec_app.ops.certs import CertPaths, ensure_signing_key

    work_dir = Path(work_dir).resolve()
    partition_set = work_dir / "partitions" / f"{split}-{scheme}-{num_partitions}-seed{seed}"
    make_partitions(
        Path(data_dir), partition_set, num_partitions, scheme=scheme, split=split, seed=seed
    )
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
    sim = run_simulation(
        work_dir / f"simulation-{scheme}-{num_partitions}",
        num_partitions,
        overrides,
        timeout=timeout,
    )
    if sim.status != "finished:completed":
        raise FedrecError(f"federated run {sim.run_id} ended {sim.status}:\n{sim.log[-3000:]}")
    folder = Path(cfg.checkpoint_dir) / sim.run_id / checkpoint
    federated = {**evaluate_checkpoint(folder, partition_set), "seconds": sim.seconds}

    if central is None:
        log.info("central: same model and split")
        configure_device(threads=2)
        data = load_central_data(Path(data_dir), split, seed)
        trained = train_central(data, cfg.train_config())
        central = {**{k: trained.metrics[k] for k in METRIC_KEYS}, "seconds": trained.seconds}
    return {
        "split": split,
        "scheme": scheme,
        "num_partitions": num_partitions,
        "seed": seed,
        "rounds": cfg.num_server_rounds,
        "central": dict(central),
        "federated": {
            **{k: federated[k] for k in METRIC_KEYS},
            "seconds": federated["seconds"],
            "checkpoint": str(folder.resolve()),
            "run_id": sim.run_id,
        },
        "train_config": cfg.train_config().to_dict(),
        "run_config": dict(run_config or {}),
    }


def run_quality_many(
    data_dir: Path,
    split: str,
    runs: list[tuple[str, int]],
    seed: int,
    work_dir: Path,
    progress: Callable[[dict[str, Any]], object] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``run_quality`` for each ``(scheme, K)`` of ``runs`` with one central run (the first's);
    the results, and the floors check when ``split`` is u1. ``progress`` gets the results so far
    after each run (e.g. to write them before the last run ends)."""
    results: list[dict[str, Any]] = []
    many: dict[str, Any] = {"runs": results, "floors": []}
    central = None
    for scheme, num_partitions in runs:
        log.info("quality: %s partitions, K=%d", scheme, num_partitions)
        result = run_quality(
            data_dir,
            split,
            num_partitions,
            seed,
            work_dir,
            scheme=scheme,
            central=central,
            **kwargs,
        )
        central = result["central"]
        results.append(result)
        many = {"runs": results, "floors": check_floors(results) if split == "u1" else []}
        if progress is not None:
            progress(many)
    return many


def check_floors(
    results: Sequence[Mapping[str, Any]], floors: Floors = FLOORS
) -> list[dict[str, Any]]:
    """One row per floor and run: ``{"run", "floor", "value", "ok"}`` (see ``Floors``)."""
    rows: list[dict[str, Any]] = []

    def add(result: Mapping[str, Any], floor: str, value: float, ok: bool) -> None:
        run = f"{result.get('scheme', 'random')} K={result['num_partitions']}"
        rows.append({"run": run, "floor": floor, "value": value, "ok": bool(ok)})

    for result in results:
        fed, cen = result["federated"], result["central"]
        rmse_gap, ndcg_gap = fed["rmse"] - cen["rmse"], fed["ndcg@10"] - cen["ndcg@10"]
        if result.get("scheme", "random") == "random":
            add(result, f"RMSE <= {floors.rmse_max}", fed["rmse"], fed["rmse"] <= floors.rmse_max)
            add(
                result,
                f"NDCG@10 >= {floors.ndcg_min}",
                fed["ndcg@10"],
                fed["ndcg@10"] >= floors.ndcg_min,
            )
            add(
                result,
                f"RMSE - central <= {floors.rmse_gap}",
                rmse_gap,
                rmse_gap <= floors.rmse_gap,
            )
            add(
                result,
                f"NDCG@10 - central >= -{floors.ndcg_gap}",
                ndcg_gap,
                ndcg_gap >= -floors.ndcg_gap,
            )
        else:
            limit = floors.rmse_gap_skewed
            add(result, f"RMSE - central <= {limit}", rmse_gap, rmse_gap <= limit)
    return rows


def floors_text(rows: list[Mapping[str, Any]]) -> str:
    """The floors check as lines ``ok|FAIL  run  floor  value``, then a summary line."""
    lines = [
        f"{'ok  ' if r['ok'] else 'FAIL'}  {r['run']:<14} {r['floor']:<28} {r['value']:.4f}"
        for r in rows
    ]
    held = sum(r["ok"] for r in rows)
    lines.append(f"floors: {held} of {len(rows)} hold")
    return "\n".join(lines)


def many_table(many: Mapping[str, Any]) -> str:
    """One Markdown row per run (central first), then the floors check."""
    runs = many["runs"]
    head = "| run | " + " | ".join(k.upper() for k in METRIC_KEYS) + " | seconds |"
    rows = [head, "|---" * (len(METRIC_KEYS) + 2) + "|"]
    if runs:
        cen = runs[0]["central"]
        cells = " | ".join(f"{cen[k]:.4f}" for k in METRIC_KEYS)
        rows.append(f"| central | {cells} | {cen['seconds']:.0f} |")
    for result in runs:
        fed = result["federated"]
        cells = " | ".join(f"{fed[k]:.4f}" for k in METRIC_KEYS)
        name = f"{result.get('scheme', 'random')} K={result['num_partitions']}"
        rows.append(f"| {name} | {cells} | {fed['seconds']:.0f} |")
    text = "\n".join(rows)
    if many.get("floors"):
        text += "\n\n" + floors_text(many["floors"])
    return text


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
