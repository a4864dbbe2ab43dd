"""`fedrec bench training`: seconds per round of a no-op Flower app, fedrec training in-process
and fedrec with warm trainers, all on one real federation in one run.

The federation is a TLS SuperLink with SuperNode auth and N authenticated SuperNodes on loopback
(``fedrec_app.ops.federation``), each holding one partition of the split. In order:

1. ``noop``: the no-op app (FedAvg over one tiny array), i.e. Flower's own cost per round (polls,
   one ``flwr-clientapp`` process per message, TLS);
2. ``in_process``: fedrec with no trainer running, so every ClientApp imports TensorFlow and
   loads its partition;
3. ``warm``: fedrec again after each node's warm trainer (``fedrec trainers``) has started;
4. the Fleet proxy's cost, in the order warm_direct, noop_direct (the SuperNodes dial the
   SuperLink's own port), then noop_again, warm_again (through the Fleet proxy, nginx, again):
   each pair is measured around the same moment, so drift in the machine's speed cancels out.
   ``proxy_ratio`` is mean(warm, warm_again) / warm_direct, ``proxy_ratio_noop`` is
   noop_again / noop_direct (the first no-op run also pays the federation's first round).
   Runs where nginx is not installed skip them.

Seconds per round are the server's: from sending a round's messages to having aggregated the
replies (the no-op app: between FedAvg's round-end callbacks), averaged over all rounds, the
first included.
"""

from __future__ import annotations

import logging
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.config import APP_DIR
from fedrec_app.ops.flower import ConfigValue

log = logging.getLogger(__name__)

APPS = ("noop", "in_process", "warm")
DIRECT = ("warm_direct", "noop_direct")  # the SuperNodes bypass the Fleet proxy
AGAIN = ("noop_again", "warm_again")  # through the proxy again, after the direct runs
_NOOP_ROUND = re.compile(r"\[noopapp\] round (\d+) seconds=([0-9.]+)")
_IMPORT_PROBE = (
    "import time; import flwr.clientapp; t = time.perf_counter(); import {modules}; "
    "print(time.perf_counter() - t)"
)
# What a fedrec ClientApp process imports on top of Flower, with and without a warm trainer.
CLIENTAPP_IMPORTS = {
    "warm": "fedrec_app.client_app, fedrec_app.node.trainer_client",
    "in_process": "fedrec_app.client_app, fedrec_app.node.task, fedrec_app.core.model",
}


def import_seconds(modules: str) -> float:
    """Seconds a fresh Python process with Flower loaded takes to import ``modules``."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(modules=modules)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def noop_round_seconds(server_log: str) -> list[float]:
    """The no-op app's seconds per round, from its ServerApp's log."""
    return [float(seconds) for _, seconds in _NOOP_ROUND.findall(server_log)]


def run_training_bench(
    data_dir: Path, split: str, num_nodes: int, rounds: int, seed: int, work_dir: Path
) -> dict[str, Any]:
    """The three runs (see the module docstring) on one federation; figures as a dict."""
    from fedrec_app.data.layout import partition_dir_name
    from fedrec_app.data.partition import make_partitions
    from fedrec_app.ops.federation import NOOP_APP_DIR, LocalFederation

    work_dir = Path(work_dir).resolve()
    parts = work_dir / "partitions" / f"{split}-random-{num_nodes}-seed{seed}"
    make_partitions(Path(data_dir), parts, num_nodes, split=split, seed=seed)
    nodes = {
        f"node{k}": {
            "data-path": parts / partition_dir_name(k),
            "state-dir": work_dir / "state" / str(k),
        }
        for k in range(num_nodes)
    }
    fedrec_config: dict[str, ConfigValue] = {
        "num-server-rounds": rounds,
        "min-nodes": num_nodes,
        "checkpoint-dir": work_dir / "checkpoints",
        "catalogue": parts / "items.csv",
        "final-evaluate": False,  # not part of any round; the no-op run has none either
        "seed": seed,
    }
    timeout = 300.0 * rounds + 600
    runs: dict[str, dict[str, Any]] = {}
    with LocalFederation(work_dir / "federation", nodes) as fed:
        log.info("noop: %d rounds of the no-op app", rounds)
        record = fed.run(
            NOOP_APP_DIR,
            {"num-server-rounds": rounds, "min-nodes": num_nodes, "fraction-evaluate": 0.0},
            timeout=timeout,
        )
        runs["noop"] = _run_figures(record, noop_round_seconds(fed.cli.log(record["run-id"])))
        signed = {**fedrec_config, "signing-key": fed.certs.signing_key}
        for app in ("in_process", "warm"):
            if app == "warm":
                log.info("starting %d warm trainers", num_nodes)
                fed.start_trainers()
            log.info("%s: %d rounds of fedrec", app, rounds)
            runs[app] = _fedrec_figures(fed.run(APP_DIR, signed, timeout=timeout), work_dir)
        if fed.fleet_proxy:
            noop_config = {
                "num-server-rounds": rounds,
                "min-nodes": num_nodes,
                "fraction-evaluate": 0.0,
            }
            for names, superlink in ((DIRECT, fed.control_address), (AGAIN, fed.address)):
                log.info("the SuperNodes now dial %s", superlink)
                fed.redial_nodes(superlink)
                for name in names:
                    if name.startswith("warm"):
                        record = fed.run(APP_DIR, signed, timeout=timeout)
                        runs[name] = _fedrec_figures(record, work_dir)
                    else:
                        record = fed.run(NOOP_APP_DIR, noop_config, timeout=timeout)
                        seconds = noop_round_seconds(fed.cli.log(record["run-id"]))
                        runs[name] = _run_figures(record, seconds)
        startup = dict(fed.timings)
    return {
        "nodes": num_nodes,
        "rounds": rounds,
        "split": split,
        "seed": seed,
        "federation_start_seconds": startup,
        "runs": runs,
        "clientapp_import_seconds": {
            app: import_seconds(modules) for app, modules in CLIENTAPP_IMPORTS.items()
        },
    }


def _fedrec_figures(record: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """A fedrec run's figures, from its final checkpoint's round history."""
    final = work_dir / "checkpoints" / record["run-id"] / "final"
    history = read_checkpoint(final).manifest["history"]
    figures = _run_figures(record, [float(e["seconds"]) for e in history])
    figures["node_seconds"] = _mean([float(e["node.seconds"]) for e in history])
    scored = [entry for entry in history if "test.rmse" in entry]  # the last round is not
    if scored:
        figures["last_scored"] = {k: scored[-1][k] for k in ("round", "test.rmse", "test.ndcg@10")}
    return figures


def _run_figures(record: dict[str, Any], round_seconds: list[float]) -> dict[str, Any]:
    if not round_seconds:
        raise ValueError(f"run {record.get('run-id')} reported no round times")
    return {
        "run_id": record["run-id"],
        "run_seconds": record["seconds"],
        "round_seconds": round_seconds,
        "mean_round_seconds": _mean(round_seconds),
    }


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def headline(result: dict[str, Any]) -> dict[str, float]:
    """``{"noop": s, "in_process": s, "warm": s, …}``: mean seconds per round of each run, and
    the Fleet proxy's cost as ``proxy_ratio`` (warm / warm_direct) where it was measured."""
    runs = result["runs"]
    figures = {
        app: round(runs[app]["mean_round_seconds"], 3)
        for app in (*APPS, *DIRECT, *AGAIN)
        if app in runs
    }
    if "warm_again" in runs:
        proxied = statistics.fmean(runs[a]["mean_round_seconds"] for a in ("warm", "warm_again"))
        figures["proxy_ratio"] = round(proxied / runs["warm_direct"]["mean_round_seconds"], 3)
        figures["proxy_ratio_noop"] = round(
            runs["noop_again"]["mean_round_seconds"] / runs["noop_direct"]["mean_round_seconds"], 3
        )
    return figures


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the three runs, each against the no-op app."""
    runs, noop = result["runs"], result["runs"]["noop"]["mean_round_seconds"]
    rows = [
        f"{result['nodes']} SuperNodes (TLS + node auth, loopback), {result['split']} partitions, "
        f"{result['rounds']} rounds per run",
        "",
        "| run | mean s/round | x no-op | rounds (s) | slowest node's handler (s, mean) |",
        "|---|---|---|---|---|",
    ]
    for app in (a for a in (*APPS, *DIRECT, *AGAIN) if a in runs):
        run = runs[app]
        node = f"{run['node_seconds']:.2f}" if "node_seconds" in run else "-"
        rounds = " ".join(f"{s:.1f}" for s in run["round_seconds"])
        rows.append(
            f"| {app} | {run['mean_round_seconds']:.2f} | "
            f"{run['mean_round_seconds'] / noop:.2f} | {rounds} | {node} |"
        )
    if "warm_again" in runs:
        ratios = headline(result)
        rows += [
            "",
            f"Fleet proxy's cost per round: mean(warm, warm_again) / warm_direct = "
            f"{ratios['proxy_ratio']:.3f}, noop_again / noop_direct = "
            f"{ratios['proxy_ratio_noop']:.3f} (`_direct`: the SuperNodes dial the "
            "SuperLink's own port; run in the order direct, direct, again, again)",
        ]
    rows.append("")
    rows += [
        f"ClientApp imports on top of Flower ({app}): {seconds:.2f} s"
        for app, seconds in result["clientapp_import_seconds"].items()
    ]
    return "\n".join(rows)
