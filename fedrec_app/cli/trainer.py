"""`fedrec trainer`: the node's warm trainer (TensorFlow stays imported between rounds)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
        "--gpu-index", type=int, default=None, help="GPU to train on; -1 for the CPU "
        "(default: the first GPU if any)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="cap TensorFlow's CPU threads")
    p.add_argument(
        "--nice", type=int, default=0, choices=range(20), metavar="0-19",
        help="lower the trainer's CPU priority by this much until it is warmed up (for a host "
        "that also runs the SuperLink or other SuperNodes; default 0)",
    )  # fmt: skip
    p.set_defaults(func=_trainer)


def _trainer(args: argparse.Namespace) -> int:
    from fedrec_app.priority import lower_priority

    set_back = lower_priority(args.nice)  # before the imports: they are part of the start-up
    from fedrec_app.trainer import serve

    serve(args.state_dir, args.data_path, args.gpu_index, args.threads, on_ready=set_back)
    return 0
