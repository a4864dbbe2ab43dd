"""`fedrec bench launch`: the whole default `fedrec up`, from empty work dirs to a serving
gateway, with warm trainers and then without them (``--no-warm-trainers``).

Each launch runs in its own folder (data extraction, partitions, certificates, SuperLink,
SuperNodes, training, gateway) and is stopped before the next starts. The warm launch goes first,
so that any file-cache advantage of going second falls to the launch without trainers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrec_app.ops.up import SHOWN_METRICS, Launch, UpOptions

log = logging.getLogger(__name__)

MODES = {"warm": True, "cold": False}  # mode -> warm_trainers


def run_launch_bench(
    work_dir: Path,
    zip_path: Path | None = None,
    md5: str | None = None,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Seconds to the gateway of both launches, their steps, final metrics and sample answer."""
    from fedrec_app.ops.federation import free_port

    work_dir = Path(work_dir).resolve()
    launches: dict[str, dict[str, Any]] = {}
    for mode, warm_trainers in MODES.items():
        folder = work_dir / mode
        options = UpOptions(
            work=folder, data=folder / "data", zip_path=zip_path, md5=md5,
            port=free_port(), warm_trainers=warm_trainers,
        )  # fmt: skip
        options.check()
        say(f"--- fedrec up ({mode}: warm_trainers={warm_trainers}) in {folder}")
        launch = Launch(options, say)
        started = time.monotonic()
        try:
            launch.start()
            seconds = time.monotonic() - started
            url, answer = launch.sample()
        finally:
            launch.close()
        launches[mode] = {
            "seconds": round(seconds, 2),
            "steps": {name: round(s, 2) for name, s in launch.progress.timings.items()},
            "metrics": {k: launch.metrics[k] for k in SHOWN_METRICS if k in launch.metrics},
            "sample": {"url": url, "answer": answer},
        }
    warm, cold = launches["warm"], launches["cold"]
    return {
        "warm": warm["seconds"],
        "cold": cold["seconds"],
        "speedup": round(cold["seconds"] / warm["seconds"], 3),
        "same_final_metrics": _same(warm["metrics"], cold["metrics"]),
        "launches": launches,
    }


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal up to float rounding: the server adds the nodes' sums in the order replies came."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)


def table(result: dict[str, Any]) -> str:
    """A Markdown table: seconds per step of both launches."""
    launches = result["launches"]
    steps = list(launches["warm"]["steps"])
    rows = [
        "| launch | to the gateway (s) | " + " | ".join(steps) + " | final RMSE | NDCG@10 |",
        "|---|---:|" + "---:|" * len(steps) + "---:|---:|",
    ]
    for mode, figures in launches.items():
        cells = " | ".join(f"{figures['steps'].get(step, 0.0):.1f}" for step in steps)
        rmse, ndcg = (figures["metrics"].get(k, float("nan")) for k in ("rmse", "ndcg@10"))
        rows.append(f"| {mode} | {figures['seconds']:.1f} | {cells} | {rmse:.4f} | {ndcg:.4f} |")
    rows += [
        "",
        f"speedup with warm trainers: {result['speedup']:.2f}x "
        f"(final metrics identical: {result['same_final_metrics']})",
    ]
    return "\n".join(rows)
