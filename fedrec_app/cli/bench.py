"""`fedrec bench …`: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (quality, …)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = kinds.add_parser(
        "quality", help="central vs federated (Flower simulation) training on one split"
    )
    p.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    p.add_argument("--split", default="u1", help="u1..u5 | ua | ub | holdout (default u1)")
    p.add_argument("--num-partitions", type=int, required=True, help="simulated nodes (K)")
    p.add_argument("--seed", type=int, default=0, help="partition and model seed (default 0)")
    p.add_argument("--rounds", type=int, help="federated rounds (default: the app's)")
    p.add_argument(
        "--checkpoint", default="final", choices=("final", "best"),
        help="federated checkpoint to evaluate (default final)",
    )  # fmt: skip
    p.add_argument("--work-dir", type=Path, help="keep partitions, checkpoints, logs here")
    p.add_argument("--timeout", type=float, default=3600.0, help="federated run limit, seconds")
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.set_defaults(func=_quality)


def _quality(args: argparse.Namespace) -> int:
    from fedrec_app.bench.quality import run_quality, table
    from fedrec_app.errors import FedrecError

    if args.num_partitions < 1:
        raise FedrecError("--num-partitions must be >= 1")
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-quality-") as tmp:
        work = args.work_dir or Path(tmp)
        result = run_quality(
            args.data, args.split, args.num_partitions, args.seed, work,
            rounds=args.rounds, checkpoint=args.checkpoint, timeout=args.timeout,
        )  # fmt: skip
    print(table(result))
    tmp_json = args.json.with_name(args.json.name + ".tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    tmp_json.replace(args.json)
    return 0
