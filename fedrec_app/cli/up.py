"""`fedrec up`: data, partitions, certs, keys, SuperLink, SuperNodes, training, gateway."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedrec_app.cli.data import md5_hex
from fedrec_app.ops.up import (  # stdlib only at import time
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_NODES,
    DEFAULT_ROUNDS,
    UpSession,
)

# What fedrec_app.data.partition accepts (tests/cli check they agree): refused here, before step 1,
# without importing pandas.
SCHEMES: tuple[str, ...] = ("random", "activity", "genre")
SPLITS: tuple[str, ...] = ("u1", "u2", "u3", "u4", "u5", "ua", "ub", "holdout")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole system on this machine (federation, training, gateway)",
        description="One machine, one command: get MovieLens 100k, partition it, make certs and "
        "keys, start a TLS SuperLink with SuperNode auth and N authenticated SuperNodes, train "
        "the Flower app, then serve the final checkpoint until Ctrl+C.",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=DEFAULT_NODES,
        help="SuperNodes, one partition each (default %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="federated rounds (default %(default)s)"
    )
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=DEFAULT_LOCAL_EPOCHS,
        help="local epochs per round (default %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        dest="scheme",
        default="random",
        choices=SCHEMES,
        help="partition scheme: %(choices)s (default %(default)s)",
    )
    parser.add_argument(
        "--split",
        default="u1",
        choices=SPLITS,
        metavar="SPLIT",
        help="MovieLens split: u1..u5 | ua | ub | holdout (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="partition seed (default %(default)s)")
    parser.add_argument(
        "--work",
        type=Path,
        metavar="DIR",
        default=Path("runs/up"),
        help="partitions, certs, logs, checkpoints (default %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        default=Path("data"),
        help="where ml-100k/ is or will be downloaded (default %(default)s)",
    )
    parser.add_argument(
        "--zip",
        dest="zip_path",
        type=Path,
        metavar="FILE",
        help="use this local ml-100k.zip instead of downloading (offline)",
    )
    parser.add_argument(
        "--md5", type=md5_hex, help="expected md5 of the archive (default: the official one)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the Fleet proxy (what SuperNodes dial) and the gateway; "
        "the SuperLink itself stays on 127.0.0.1 (default %(default)s)",
    )
    parser.add_argument("--port", type=int, default=8000, help="gateway port (default %(default)s)")
    parser.add_argument(
        "--superlink-port",
        type=int,
        help="port SuperNodes dial: the Fleet proxy's, or the SuperLink's "
        "without nginx (default: a free one, never the gateway's)",
    )
    parser.add_argument(
        "--timeout",
        dest="run_timeout",
        type=float,
        default=1800.0,
        help="seconds the run may take before it is stopped (default %(default)s)",
    )
    parser.add_argument(
        "--no-warm-trainers",
        dest="warm_trainers",
        action="store_false",
        help="train inside each ClientApp process (imports TensorFlow for every "
        "message) instead of in a long-lived trainer per SuperNode",
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other Flower run-config key, as `flwr run --run-config` takes it: "
        "numbers, true/false, quoted strings (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedrec_app.core.config import config_args
    from fedrec_app.ops.up import UpOptions, up

    options = UpOptions(
        nodes=args.nodes,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        scheme=args.scheme,
        split=args.split,
        seed=args.seed,
        work=args.work,
        data=args.data,
        zip_path=args.zip_path,
        md5=args.md5,
        host=args.host,
        port=args.port,
        superlink_port=args.superlink_port,
        run_timeout=args.run_timeout,
        warm_trainers=args.warm_trainers,
        run_config=config_args(args.run_config),
    )
    up(options, say=lambda text: print(text, flush=True), on_ready=_show_ready)
    return 0


def _show_ready(launch: UpSession) -> None:
    """The URL, a sample curl and its answer."""
    url, answer = launch.sample()
    print(f"\nThe gateway is up: {launch.url}/  (API docs {launch.url}/docs)")
    print(f'Try:  curl "{url}"')
    if isinstance(answer, dict):
        for item in answer.get("recommendations", []):
            print(
                f"  {item.get('movie_id'):>5}  {item.get('predicted_rating')}  "
                f"{item.get('movie_title')}"
            )
    else:
        print(f"  {answer}")
    print("Press Ctrl+C to stop everything.", flush=True)
