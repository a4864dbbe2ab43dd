"""`fedrec checkpoint publish SRC --to SERVE_DIR --verify-key PUB`: hand a checkpoint to the
gateway (staged, verified, then switched in atomically; see fedrec_app.ops.publish)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    checkpoint = subparsers.add_parser(
        "checkpoint",
        help="publish a checkpoint to a gateway's serving folder",
        description="Checkpoints on the gateway host (deploy/README.md, 'Get the checkpoint to "
        "the gateway').",
    )
    commands = checkpoint.add_subparsers(
        dest="checkpoint_command", required=True, metavar="COMMAND"
    )
    publish = commands.add_parser(
        "publish",
        help="copy SRC into SERVE_DIR/releases/, verify it there, then repoint SERVE_DIR/current",
        description="Copy the checkpoint folder SRC (e.g. fetched into an incoming folder) into "
        "SERVE_DIR/releases/<run-id>-round-NNNN-<sha>/ under a temporary name, verify the copy "
        "(signature by --verify-key, sha256 of every file), set modes 0750/0640, then switch "
        "the symlink SERVE_DIR/current to it atomically. A gateway serving SERVE_DIR/current "
        "with --watch reloads. A checkpoint that does not verify is refused (exit 2) and "
        "current is left as it was. Also rolls back: publish an older release folder again.",
    )
    publish.add_argument(
        "source",
        type=Path,
        metavar="SRC",
        help="a checkpoint folder (with manifest.json and manifest.sig)",
    )
    publish.add_argument(
        "--to",
        type=Path,
        required=True,
        dest="serve_dir",
        metavar="SERVE_DIR",
        help="the serving folder; the gateway's --checkpoint is SERVE_DIR/current",
    )
    publish.add_argument(
        "--verify-key",
        type=Path,
        required=True,
        metavar="PUBFILE",
        help="the federation's public key (federation-signing.pub)",
    )
    publish.add_argument(
        "--keep",
        type=int,
        default=3,
        metavar="N",
        help="keep the N most recently published releases (the current one "
        "always; default %(default)s)",
    )
    publish.set_defaults(func=_publish)


def _publish(args: argparse.Namespace) -> int:
    from fedrec_app.ops.publish import publish

    result = publish(args.source, args.serve_dir, args.verify_key, keep=args.keep)
    print(f"published {result.release}")
    print(
        f"{result.current} -> {result.release.relative_to(result.current.parent)}"
        f" (was {result.previous or 'nothing'})"
    )
    for folder in result.removed:
        print(f"removed old release {folder}")
    return 0
