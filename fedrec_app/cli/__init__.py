"""`fedrec …` (also `python -m fedrec_app`): parses arguments and calls the modules; no logic here.

Each command group lives in its own module under `fedrec_app.cli` and exposes
`register(subparsers)`, which adds its parsers and sets `func` (called with the parsed args,
returning an exit code). Heavy imports (TensorFlow, Flower) happen inside `func`, never here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fedrec_app.core.errors import FedrecError

log = logging.getLogger("fedrec")

# What `fedrec --help` says (the module docstring above is for developers).
DESCRIPTION = (
    "fedrec: a federated movie recommender. Flower trains a Keras model on MovieLens ratings "
    "where they lie; a gateway serves the recommendations."
)
EPILOG = (
    "Start with `fedrec up` (the whole system on this machine). `fedrec COMMAND --help` "
    "describes each command; the README has the rest."
)

# Command-group modules, in the order `fedrec --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "data",
    "ops",
    "app",
    "gateway",
    "checkpoint",
    "train",
    "trainer",
    "up",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedrec", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"fedrec_app.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except FedrecError as exc:
        print(f"fedrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # A command whose pip extra this host did not install (installs per role).
        from fedrec_app.cli.extras import missing_extra_message

        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"fedrec {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedrec {args.command}: interrupted", file=sys.stderr)
        return 130
