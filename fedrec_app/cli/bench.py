"""`fedrec bench …`: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedrec_app.core.files import write_json_atomic


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure quality, round times, launch, gateway and fold-in (docs/benchmarks.md)",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = kinds.add_parser(
        "quality", help="central vs federated (Flower simulation) training on one split"
    )
    p.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    p.add_argument("--split", default="u1", help="u1..u5 | ua | ub | holdout (default u1)")
    p.add_argument(
        "--num-partitions",
        type=_int_list,
        help="simulated nodes K, or several: 3,5,10,20 (one central run for all)",
    )
    p.add_argument(
        "--scheme",
        type=_scheme_list,
        default=["random"],
        help="partition scheme(s): random (default), activity, genre; several: random,genre "
        "(every scheme at every K)",
    )
    p.add_argument(
        "--floors",
        action="store_true",
        help="issue 13's floor runs: random at K=3,5,10,20, activity and genre at K=5; print "
        "which floors hold (instead of --num-partitions/--scheme)",
    )
    p.add_argument("--seed", type=int, default=0, help="partition and model seed (default 0)")
    p.add_argument("--rounds", type=int, help="federated rounds (default: the app's)")
    p.add_argument(
        "--checkpoint",
        default="final",
        choices=("final", "best"),
        help="federated checkpoint to evaluate (default final)",
    )
    p.add_argument("--work-dir", type=Path, help="keep partitions, checkpoints, logs here")
    p.add_argument("--timeout", type=float, default=3600.0, help="federated run limit, seconds")
    p.add_argument(
        "--run-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override app run-config keys for the federated run, as `flwr run "
        "--run-config` takes them (repeatable)",
    )
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.set_defaults(func=_quality)

    t = kinds.add_parser(
        "training",
        help="seconds per round: no-op app, fedrec in-process, fedrec with warm trainers",
        description="One real TLS federation (N authenticated SuperNodes on loopback, one "
        "partition each) runs the no-op Flower app, then fedrec with no trainer, then fedrec "
        "with each node's warm trainer; prints seconds per round and the ratios to the no-op.",
    )
    t.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    t.add_argument("--split", default="u1", help="u1..u5 | ua | ub | holdout (default u1)")
    t.add_argument("--nodes", type=int, default=3, help="SuperNodes (default 3)")
    t.add_argument("--rounds", type=int, default=5, help="rounds of each run (default 5)")
    t.add_argument("--seed", type=int, default=0, help="partition and model seed (default 0)")
    t.add_argument("--work-dir", type=Path, help="keep the federation's files here")
    t.add_argument(
        "--json",
        type=Path,
        required=True,
        help='write {"noop": s, "in_process": s, "warm": s} (seconds per round) here',
    )
    t.add_argument("--details", type=Path, help="also write every figure (JSON) here")
    t.set_defaults(func=_training)
    _register_launch(kinds)
    _register_gateway(kinds)
    _register_foldin(kinds)


def _int_list(text: str) -> list[int]:
    """``"3,5,10"`` -> ``[3, 5, 10]`` (each >= 1)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K or K,K,...: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every K must be >= 1: {text!r}")
    return values


def _scheme_list(text: str) -> list[str]:
    """``"random,genre"`` -> ``["random", "genre"]``."""
    schemes = [part.strip() for part in text.split(",")]
    bad = [s for s in schemes if s not in ("random", "activity", "genre")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown scheme(s) {bad}: random, activity, genre")
    return schemes


FLOOR_RUNS = [("random", 3), ("random", 5), ("random", 10), ("random", 20)]
FLOOR_RUNS += [("activity", 5), ("genre", 5)]


def _quality(args: argparse.Namespace) -> int:
    from fedrec_app.bench.quality import many_table, run_quality_many, table
    from fedrec_app.core.config import config_args
    from fedrec_app.core.errors import FedrecError

    if args.floors:
        if args.num_partitions or args.scheme != ["random"] or args.split != "u1":
            raise FedrecError("--floors runs u1 at its own K and schemes: drop those flags")
        runs = FLOOR_RUNS
    elif args.num_partitions:
        runs = [(scheme, k) for scheme in args.scheme for k in args.num_partitions]
    else:
        raise FedrecError("give --num-partitions K[,K...] or --floors")
    overrides = config_args(args.run_config)  # checked before anything starts
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-quality-") as tmp:
        work = args.work_dir or Path(tmp)
        many = run_quality_many(
            args.data,
            args.split,
            runs,
            args.seed,
            work,
            rounds=args.rounds,
            checkpoint=args.checkpoint,
            timeout=args.timeout,
            run_config=overrides,
            progress=lambda many: write_json_atomic(args.json, many),
        )
    if len(runs) == 1:  # one run: its table and JSON as before
        print(table(many["runs"][0]))
        write_json_atomic(args.json, many["runs"][0])
    else:
        print(many_table(many))
        write_json_atomic(args.json, many)
    return 0


def _training(args: argparse.Namespace) -> int:
    from fedrec_app.bench.training import headline, run_training_bench, table
    from fedrec_app.core.errors import FedrecError

    if args.nodes < 1 or args.rounds < 1:
        raise FedrecError("--nodes and --rounds must be >= 1")
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-training-") as tmp:
        work = args.work_dir or Path(tmp)
        result = run_training_bench(args.data, args.split, args.nodes, args.rounds, args.seed, work)
    print(table(result))
    write_json_atomic(args.json, headline(result))
    if args.details:
        write_json_atomic(args.details, result)
    return 0


def _register_launch(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = kinds.add_parser(
        "launch",
        help="the default `fedrec up` to a serving gateway, with and without warm trainers",
        description="Runs the default `fedrec up` twice from empty folders (warm trainers, then "
        "--no-warm-trainers), each until its gateway answers, then stops it; prints seconds per "
        "step, the speedup and whether both final models scored the same.",
    )
    p.add_argument("--zip", type=Path, help="a local ml-100k.zip instead of downloading it")
    p.add_argument("--md5", help="the md5 the --zip must have")
    p.add_argument("--work-dir", type=Path, help="keep the launches' folders here")
    p.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="run both launches this many times and report the median speedup (default 1)",
    )
    p.add_argument(
        "--json",
        type=Path,
        required=True,
        help='write {"warm": s, "cold": s, "speedup": x, ...} (medians over the pairs) here',
    )
    p.set_defaults(func=_launch)


def _launch(args: argparse.Namespace) -> int:
    from fedrec_app.bench.launch import run_launch_bench, table
    from fedrec_app.core.errors import FedrecError

    if args.pairs < 1:
        raise FedrecError(f"--pairs {args.pairs}: must be >= 1")
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-launch-") as tmp:
        result = run_launch_bench(
            args.work_dir or Path(tmp), args.zip, args.md5, args.pairs, say=print
        )
    print(table(result))
    write_json_atomic(args.json, result)
    return 0


def _register_gateway(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = kinds.add_parser(
        "gateway",
        help="GET /recommend req/s and p50/p99 at several concurrencies: gateway vs seed-style",
        description="Serve one checkpoint with `fedrec gateway` (one worker) and with the seed's "
        "approach (Keras predict per request), load both from a separate process on loopback, "
        "print the table and write JSON + Markdown (same name, .md).",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint with user factors and model.keras (default: a synthetic "
        "one of MovieLens-100k size)",
    )
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated (default %(default)s)")
    p.add_argument("--requests", type=int, default=20_000, help="gateway cap per level")
    p.add_argument("--duration", type=float, default=10.0, help="gateway seconds cap per level")
    p.add_argument("--reference-requests", type=int, default=400, help="reference cap per level")
    p.add_argument(
        "--reference-duration", type=float, default=20.0, help="reference seconds cap per level"
    )
    p.add_argument("--work-dir", type=Path, help="keep the synthetic checkpoint and server logs")
    p.add_argument(
        "--json",
        type=Path,
        help="write the results here (default bench-results/gateway.json, with "
        "--flood bench-results/gateway-flood.json)",
    )
    f = p.add_argument_group(
        "flood",
        "--flood N measures instead how other clients fare while one client holds N "
        "connections: requests from 127.0.0.2 without, then during, a flood from 127.0.0.1, "
        "against the default limits and the limits before them (--duration, --requests per phase)",
    )
    f.add_argument("--flood", type=int, metavar="N", help="connections the flooder holds open")
    f.add_argument(
        "--flood-mode",
        choices=("idle", "slow", "mixed"),
        default="mixed",
        help="idle: send nothing; slow: a header that never ends; mixed: half each "
        "(default %(default)s)",
    )
    f.add_argument(
        "--flood-clients",
        type=int,
        default=16,
        help="concurrent connections of the other clients (default %(default)s)",
    )
    f.add_argument(
        "--defaults-only",
        action="store_true",
        help="flood only the gateway with the default limits",
    )
    p.set_defaults(func=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    from fedrec_app.bench.gateway import GatewayBenchConfig, run_and_write
    from fedrec_app.core.errors import FedrecError

    if args.flood is not None:
        return _gateway_flood(args)
    args.json = args.json or Path("bench-results/gateway.json")
    try:
        levels = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError as exc:
        raise FedrecError(f"--concurrency {args.concurrency!r}: not comma-separated ints") from exc
    if not levels or min(levels) < 1 or min(args.requests, args.reference_requests) < 1:
        raise FedrecError("--concurrency, --requests and --reference-requests must be >= 1")
    cfg = GatewayBenchConfig(
        checkpoint=args.checkpoint,
        concurrency=levels,
        requests=args.requests,
        duration=args.duration,
        reference_requests=args.reference_requests,
        reference_duration=args.reference_duration,
    )
    print(run_and_write(cfg, args.json, args.work_dir), end="")
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


def _gateway_flood(args: argparse.Namespace) -> int:
    from fedrec_app.bench.gateway_flood import FloodBenchConfig, run_and_write_flood
    from fedrec_app.core.errors import FedrecError

    if args.flood < 1 or args.flood_clients < 1 or args.requests < 1 or args.duration <= 0:
        raise FedrecError("--flood, --flood-clients and --requests must be >= 1, --duration > 0")
    json_path = args.json or Path("bench-results/gateway-flood.json")
    cfg = FloodBenchConfig(
        checkpoint=args.checkpoint,
        connections=args.flood,
        mode=args.flood_mode,
        clients=args.flood_clients,
        requests=args.requests,
        duration=args.duration,
        unguarded=not args.defaults_only,
    )
    print(run_and_write_flood(cfg, json_path, args.work_dir), end="")
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0


def _register_foldin(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = kinds.add_parser(
        "fold-in",
        help="POST /recommend's fold-in against the learned user vectors on a split's test set",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder")
    p.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    p.add_argument("--split", default="u1", help="the split it was trained on (default u1)")
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.set_defaults(func=_foldin)


def _foldin(args: argparse.Namespace) -> int:
    from fedrec_app.bench.foldin import run_foldin_bench, table

    result = run_foldin_bench(args.checkpoint, args.data, args.split)
    print(table(result), end="")
    write_json_atomic(args.json, result)
    return 0
