"""`fedrec bench launch`: the whole default `fedrec up`, from empty work dirs to a serving
gateway, with warm trainers and then without them (``--no-warm-trainers``).

A pair is both launches one after the other; ``--pairs N`` repeats it and reports the median
speedup. Each launch runs in its own folder (data extraction, partitions, certificates, SuperLink,
SuperNodes, training, gateway) and is stopped before the next starts. The warm launch goes first,
so that any file-cache advantage of going second falls to the launch without trainers.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrec_app.ops.up import SHOWN_METRICS, UpOptions, UpSession

log = logging.getLogger(__name__)

MODES = {"warm": True, "cold": False}  # mode -> warm_trainers


def run_launch_bench(
    work_dir: Path,
    zip_path: Path | None = None,
    md5: str | None = None,
    pairs: int = 1,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """``pairs`` times both launches, one after the other (in ``pair-K/warm``, ``pair-K/cold``):
    each pair's speedup and the medians (a shared machine's load changes between pairs)."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: need at least one pair of launches")
    work_dir = Path(work_dir).resolve()
    runs = []
    for k in range(1, pairs + 1):
        launches = {}
        for mode, warm_trainers in MODES.items():
            say(f"--- pair {k}/{pairs}: fedrec up ({mode}: warm_trainers={warm_trainers})")
            launches[mode] = _launch(
                work_dir / f"pair-{k}" / mode, warm_trainers, zip_path, md5, say
            )
        runs.append(launches)
    return summarize(runs)


def _launch(
    folder: Path,
    warm_trainers: bool,
    zip_path: Path | None,
    md5: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One default `fedrec up` in ``folder`` until its gateway answers, then stopped."""
    from fedrec_app.ops.federation import free_port

    options = UpOptions(
        work=folder,
        data=folder / "data",
        zip_path=zip_path,
        md5=md5,
        port=free_port(),
        warm_trainers=warm_trainers,
    )
    options.check()
    launch = UpSession(options, say)
    started = time.monotonic()
    try:
        launch.start()
        seconds = time.monotonic() - started
        url, answer = launch.sample()
    finally:
        launch.close()
    return {
        "seconds": round(seconds, 2),
        "steps": {name: round(s, 2) for name, s in launch.report.timings.items()},
        "metrics": {k: launch.metrics[k] for k in SHOWN_METRICS if k in launch.metrics},
        "sample": {"url": url, "answer": answer},
    }


def summarize(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per pair the speedup (cold seconds / warm seconds); medians over the pairs."""
    pairs = [
        {**run, "speedup": round(run["cold"]["seconds"] / run["warm"]["seconds"], 3)}
        for run in runs
    ]
    return {
        "warm": statistics.median(p["warm"]["seconds"] for p in pairs),
        "cold": statistics.median(p["cold"]["seconds"] for p in pairs),
        "speedup": round(statistics.median(p["speedup"] for p in pairs), 3),
        "speedups": [p["speedup"] for p in pairs],
        "same_final_metrics": all(_same(p["warm"]["metrics"], p["cold"]["metrics"]) for p in pairs),
        "pairs": pairs,
    }


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal up to float rounding: the server adds the nodes' sums in the order replies came."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)


def table(result: dict[str, Any]) -> str:
    """A Markdown table: seconds per step of every launch; the speedups."""
    pairs = result["pairs"]
    steps = list(pairs[0]["warm"]["steps"])
    rows = [
        "| pair | launch | to the gateway (s) | " + " | ".join(steps) + " | final RMSE | NDCG@10 |",
        "|---:|---|---:|" + "---:|" * len(steps) + "---:|---:|",
    ]
    for k, pair in enumerate(pairs, 1):
        for mode in MODES:
            figures = pair[mode]
            cells = " | ".join(f"{figures['steps'].get(step, 0.0):.1f}" for step in steps)
            rmse, ndcg = (
                figures["metrics"].get(m, float("nan")) for m in ("test.rmse", "test.ndcg@10")
            )
            rows.append(
                f"| {k} | {mode} | {figures['seconds']:.1f} | {cells} | {rmse:.4f} | {ndcg:.4f} |"
            )
    each = ", ".join(f"{x:.2f}x" for x in result["speedups"])
    rows += [
        "",
        f"speedup with warm trainers: {result['speedup']:.2f}x (median; each pair: {each}); "
        f"final metrics identical: {result['same_final_metrics']}",
    ]
    return "\n".join(rows)
