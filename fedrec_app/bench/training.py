"""`fedrec bench training`: seconds per round of the fedrec app next to a no-op Flower app.

Both run, one after the other, on the same real federation: a TLS SuperLink with SuperNode
auth and N authenticated SuperNodes on loopback (``fedrec_app.ops.federation``), each node
holding one partition of the split. The no-op app's rounds are Flower's own cost (polls, one
``flwr-clientapp`` process per message, TLS); the rest of a fedrec round is the node's work
(reported by the nodes) and the ClientApp's imports (TensorFlow), measured separately here.
"""

from __future__ import annotations

import logging
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedrec_app.checkpoint import read_checkpoint
from fedrec_app.config import APP_DIR

log = logging.getLogger(__name__)

_NOOP_ROUND = re.compile(r"\[noopapp\] round (\d+) seconds=([0-9.]+)")
_IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
)


def import_seconds(module: str) -> float:
    """Seconds a fresh Python process takes to import ``module`` (what each ClientApp pays)."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run_training_bench(
    data_dir: Path,
    split: str,
    num_nodes: int,
    rounds: int,
    seed: int,
    work_dir: Path,
    warm_trainers: bool = False,
) -> dict[str, Any]:
    """Run the no-op app, then the fedrec app, ``rounds`` rounds each; the figures as a dict.

    With ``warm_trainers`` each node trains in its long-lived trainer process
    (``fedrec_app.trainer``) instead of in the per-message ClientApp process."""
    from fedrec_app.data.partition import make_partitions
    from fedrec_app.ops.federation import NOOP_APP_DIR, LocalFederation

    work_dir = Path(work_dir).resolve()
    parts = work_dir / "partitions" / f"{split}-random-{num_nodes}-seed{seed}"
    make_partitions(Path(data_dir), parts, num_nodes, split=split, seed=seed)
    nodes = {
        f"node{k}": {
            "data-path": parts / f"partition-{k}",
            "state-dir": work_dir / "state" / str(k),
        }
        for k in range(num_nodes)
    }
    with LocalFederation(work_dir / "federation", nodes, warm_trainers=warm_trainers) as fed:
        noop = fed.run(
            NOOP_APP_DIR,
            {"num-server-rounds": rounds, "min-nodes": num_nodes, "fraction-evaluate": 0.0},
            timeout=60.0 * rounds + 300,
        )
        noop_rounds = [float(s) for _, s in _NOOP_ROUND.findall(fed.cli.log(noop["run-id"]))]
        ckpt = work_dir / "checkpoints"
        fedrec = fed.run(
            APP_DIR,
            {
                "num-server-rounds": rounds,
                "min-nodes": num_nodes,
                "checkpoint-dir": ckpt,
                "catalogue": parts / "items.csv",
                "seed": seed,
            },
            timeout=300.0 * rounds + 600,
        )
        startup = dict(fed.timings)
    history = read_checkpoint(ckpt / fedrec["run-id"] / "final").manifest["history"]
    fedrec_rounds = [float(e["seconds"]) for e in history]
    node = {
        key: _mean([float(e.get(key, 0.0)) for e in history])
        for key in ("node_seconds", "node_eval_seconds", "node_train_seconds")
    }
    return {
        "nodes": num_nodes,
        "rounds": rounds,
        "warm_trainers": warm_trainers,
        "split": split,
        "federation_start_seconds": startup,
        "noop": {
            "run_seconds": noop["seconds"],
            "round_seconds": noop_rounds,
            "mean_round_seconds": _mean(noop_rounds),
        },
        "fedrec": {
            "run_seconds": fedrec["seconds"],
            "round_seconds": fedrec_rounds,
            "mean_round_seconds": _mean(fedrec_rounds),
            "mean_node_seconds": node,
            "first_round_seconds": fedrec_rounds[0] if fedrec_rounds else None,
        },
        "clientapp_import_seconds": {
            "numpy+flwr": import_seconds("numpy, flwr.clientapp"),
            "fedrec_app.node (pandas, flwr)": import_seconds("fedrec_app.node"),
            "fedrec_app.model (tensorflow, keras)": import_seconds("fedrec_app.model"),
        },
    }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def table(result: dict[str, Any]) -> str:
    """A Markdown table: seconds per round of both apps and where the difference goes."""
    noop, fedrec = result["noop"], result["fedrec"]
    node = fedrec["mean_node_seconds"]
    imports = result["clientapp_import_seconds"]
    rows = [
        f"{result['nodes']} SuperNodes (TLS + auth, loopback), {result['rounds']} rounds each"
        + (", warm trainers" if result.get("warm_trainers") else ""),
        "",
        "| app | run seconds | mean seconds per round |",
        "|---|---|---|",
        f"| no-op (FedAvg, numpy) | {noop['run_seconds']:.1f} | {noop['mean_round_seconds']:.1f} |",
        f"| fedrec | {fedrec['run_seconds']:.1f} | {fedrec['mean_round_seconds']:.1f} |",
        "",
        "fedrec, slowest node per round (mean): whole handler "
        f"{node['node_seconds']:.1f} s (of which evaluation {node['node_eval_seconds']:.1f} s, "
        f"training {node['node_train_seconds']:.1f} s; the rest is imports and data loading)",
    ]
    rows += [f"import in a fresh process: {name} {sec:.1f} s" for name, sec in imports.items()]
    return "\n".join(rows)
