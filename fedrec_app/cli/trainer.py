"""`fedrec trainer`: the node's warm trainer (TensorFlow stays imported between rounds);
`fedrec trainers`: the warm trainers of several SuperNodes on one host, from one import."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "trainer",
        help="run a SuperNode's warm trainer: serves its ClientApps over a Unix socket",
        description="Run next to a SuperNode with the same state-dir (and data-path) as its "
        "node-config. Its ClientApps hand their messages to this process over "
        "<state-dir>/trainer.sock (0600, key-authenticated) instead of importing TensorFlow "
        "every round; without it they train in-process.",
    )
    p.add_argument("--state-dir", type=Path, required=True, help="the node's state-dir")
    p.add_argument(
        "--data-path", type=Path, help="the node's partition folder (loaded and verified at start)"
    )
    p.add_argument(
        "--gpu-index",
        type=int,
        default=None,
        help="GPU to train on; -1 for the CPU (default: the first GPU if any)",
    )
    _common(p)
    p.set_defaults(func=_trainer)

    group = subparsers.add_parser(
        "trainers",
        help="run the warm trainers of several SuperNodes on this host, forked from one "
        "TensorFlow import",
        description="One process imports TensorFlow once, then forks a warm trainer (as "
        "`fedrec trainer`) for each --state-dir, paired in order with --data-path. A trainer "
        "that exits after it was ready is forked again.",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        action="append",
        required=True,
        help="a node's state-dir (repeat per node)",
    )
    group.add_argument(
        "--data-path",
        type=Path,
        action="append",
        default=[],
        help="that node's partition folder (repeat per node, same order)",
    )
    _common(group)
    group.set_defaults(func=_trainers)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="cap TensorFlow's CPU threads")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="0-19",
        help="lower the CPU priority by this much until warmed up (for a host that also runs "
        "the SuperLink or other SuperNodes; default 0)",
    )


def _trainer(args: argparse.Namespace) -> int:
    from fedrec_app.node.priority import lower_priority

    set_back = lower_priority(args.nice)  # before the imports: they are part of the start-up
    from fedrec_app.node.trainer import run_trainer

    run_trainer(args.state_dir, args.data_path, args.gpu_index, args.threads, on_ready=set_back)
    return 0


def _trainers(args: argparse.Namespace) -> int:
    from fedrec_app.core.errors import FedrecError
    from fedrec_app.node.priority import lower_priority

    if args.data_path and len(args.data_path) != len(args.state_dir):
        raise FedrecError(
            f"{len(args.state_dir)} --state-dir but {len(args.data_path)} "
            "--data-path: give one per node, in the same order, or none"
        )
    set_back = lower_priority(args.nice)
    from fedrec_app.node.trainer_group import GroupMember, serve_group

    data = args.data_path or [None] * len(args.state_dir)
    members = [GroupMember(s, d) for s, d in zip(args.state_dir, data, strict=True)]
    return serve_group(members, args.threads, on_ready=set_back)
