"""`fedrec app hash [APP_DIR] [--append FILE]`: the FAB hash a SuperNode's admin approves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    app = subparsers.add_parser(
        "app",
        help="the Flower app's FAB hash, for a SuperNode's allowlist of approved apps",
        description="A SuperNode started with --approved-apps FILE runs only apps whose FAB "
        "sha256 is in FILE (deploy/README.md, 'Approve the app').",
    )
    commands = app.add_subparsers(dest="app_command", required=True, metavar="COMMAND")
    hash_ = commands.add_parser(
        "hash",
        help="print the sha256 of the FAB `flwr run APP_DIR` would submit",
        description="Print the sha256 of the FAB that `flwr run APP_DIR` builds and submits "
        "(Flower builds it deterministically from the files it carries). Run it on the "
        "checkout you reviewed; with --append, add the hash to a node's allowlist.",
    )
    hash_.add_argument(
        "app_dir",
        nargs="?",
        type=Path,
        default=Path("."),
        metavar="APP_DIR",
        help="the Flower app's folder, with its pyproject.toml (default: .)",
    )
    hash_.add_argument(
        "--append",
        type=Path,
        metavar="FILE",
        help="also add the hash to this allowlist (created 0644 if missing)",
    )
    hash_.set_defaults(func=_hash)


def _hash(args: argparse.Namespace) -> int:
    from fedrec_app.ops.app_approval import app_hash, app_label, append_to_allowlist

    digest = app_hash(args.app_dir)
    print(digest)
    if args.append is not None:
        label = app_label(args.app_dir)
        comment = f"{label} {args.app_dir.resolve()}".strip()
        added = append_to_allowlist(args.append, digest, comment)
        state = "added to" if added else "already in"
        print(f"{state} {args.append}", file=sys.stderr)
    return 0
