"""`fedrec gateway`: serve recommendations from a checkpoint over HTTP(S)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fedrec_app.core.errors import FedrecError

if TYPE_CHECKING:
    from fedrec_app.gateway.settings import GatewaySettings

# The help of a flag that is a GatewaySettings field: its description, default and variable.
FROM_SETTINGS = "(from GatewaySettings)"


class _SettingsHelp(argparse.HelpFormatter):
    """Writes each settings flag's help from GatewaySettings (imported only for --help: it needs
    the gateway extra), so that the flags, the environment and the docs share one description."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help != FROM_SETTINGS:
            return action.help
        from fedrec_app.gateway.settings import GatewaySettings, env_var

        field = GatewaySettings.model_fields[action.dest]
        text = " ".join((field.description or "").split()).rstrip(".")
        default = "required" if field.is_required() else f"default: {_shown(field.default)}"
        return f"{text} ({default}; env {env_var(action.dest)})".replace("%", "%%")


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    return "none" if default in (None, ()) else str(default)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="serve recommendations from a checkpoint (FastAPI, numpy; no TensorFlow)",
        description="Serve GET/POST /recommend, /predict, /movies, /healthz, /readyz, /metrics "
        "and a web page at / from one checkpoint folder. Every setting is a flag or an "
        "environment variable FEDREC_GATEWAY_<NAME> (e.g. from a systemd unit's Environment=); "
        "a flag overrides its variable (docs/gateway.md).",
        formatter_class=_SettingsHelp,
        argument_default=argparse.SUPPRESS,  # absent flags: the environment, else the defaults
    )
    on_off = argparse.BooleanOptionalAction
    parser.add_argument("--checkpoint", type=Path, help=FROM_SETTINGS)
    parser.add_argument("--verify-key", type=Path, metavar="PUBFILE", help=FROM_SETTINGS)
    parser.add_argument("--allow-unsigned", action=on_off, help=FROM_SETTINGS)
    parser.add_argument("--host", help=FROM_SETTINGS)
    parser.add_argument("--port", type=int, help=FROM_SETTINGS)
    parser.add_argument("--tls", action=on_off, help=FROM_SETTINGS)
    parser.add_argument("--cert", type=Path, help=FROM_SETTINGS)
    parser.add_argument("--key", type=Path, help=FROM_SETTINGS)
    parser.add_argument("--api-key-file", type=Path, help=FROM_SETTINGS)
    parser.add_argument("--watch", action=on_off, help=FROM_SETTINGS)
    parser.add_argument("--watch-interval", type=float, metavar="SECONDS", help=FROM_SETTINGS)
    parser.add_argument("--min-rating", type=float, help=FROM_SETTINGS)
    parser.add_argument(
        "--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN", help=FROM_SETTINGS
    )
    parser.add_argument("--max-body-bytes", type=int, help=FROM_SETTINGS)
    parser.add_argument("--max-connections-per-client", type=int, metavar="N", help=FROM_SETTINGS)
    parser.add_argument("--max-connections", type=int, metavar="N", help=FROM_SETTINGS)
    parser.add_argument("--header-timeout", type=float, metavar="SECONDS", help=FROM_SETTINGS)
    parser.add_argument("--open-docs", action=on_off, help=FROM_SETTINGS)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=False,
        help="check the settings' files and verify the checkpoint (signature, "
        "sha256 of every file) as at start, then exit without serving",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedrec_app.gateway.connections import ConnectionGuard
    from fedrec_app.gateway.main import serve
    from fedrec_app.gateway.settings import GatewaySettings, flag_and_env, load_settings

    given = {
        name: value for name, value in vars(args).items() if name in GatewaySettings.model_fields
    }
    settings = load_settings(given)
    if settings.tls:
        for name, path in (("cert", settings.cert), ("key", settings.key)):
            if not path.is_file():
                raise FedrecError(
                    f"{flag_and_env(name)} {path}: no such file (make one with `fedrec certs`)"
                )
    if args.dry_run:
        return _dry_run(settings)
    serve(
        settings,
        host=settings.host,
        port=settings.port,
        certfile=settings.cert if settings.tls else None,
        keyfile=settings.key if settings.tls else None,
        limits=ConnectionGuard(
            max_per_client=settings.max_connections_per_client,
            max_total=settings.max_connections,
            header_timeout=settings.header_timeout,
        ),
    )
    return 0


def _dry_run(settings: GatewaySettings) -> int:
    """Verify and load the checkpoint exactly as a start would; serve nothing."""
    from fedrec_app.core.signing import load_verify_key
    from fedrec_app.gateway.store import describe, load_source

    verify_key = load_verify_key(settings.verify_key) if settings.verify_key is not None else None
    recommender = load_source(settings.checkpoint, verify_key)
    signed = "signature verified" if verify_key is not None else "UNSIGNED, not checked"
    scheme = "https" if settings.tls else "http"
    print(f"checkpoint ok ({signed}): {describe(recommender)}")
    where = f"{scheme}://{settings.host}:{settings.port}"
    print(f"would serve {where}" + (" (--watch)" if settings.watch else ""))
    return 0
