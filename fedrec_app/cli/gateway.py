"""`fedrec gateway`: serve recommendations from a checkpoint over HTTP(S)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedrec_app.core.errors import FedrecError

DEFAULT_CERT, DEFAULT_KEY = Path("certs/server.pem"), Path("certs/server.key")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="serve recommendations from a checkpoint (FastAPI, numpy; no TensorFlow)",
        description="Serve GET/POST /recommend, /predict, /movies, /healthz, /readyz, /metrics "
        "and a web page at / from one checkpoint folder.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="a checkpoint folder (final/, latest, round-NNNN) or a run folder (serves its "
        "final/, else latest/)",
    )
    parser.add_argument(
        "--verify-key",
        type=Path,
        metavar="PUBFILE",
        help="the federation's public key (federation-signing.pub from `fedrec "
        "certs`): serve only checkpoints whose signature it verifies, at start "
        "and at every reload (required unless --allow-unsigned)",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="INSECURE: serve checkpoints without checking any signature "
        "(logged as a warning; for local experiments only)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with --cert/--key")
    parser.add_argument(
        "--cert",
        type=Path,
        default=DEFAULT_CERT,
        help="certificate (PEM) from `fedrec certs` (default %(default)s)",
    )
    parser.add_argument(
        "--key", type=Path, default=DEFAULT_KEY, help="its private key (default %(default)s)"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        help="file with one API key per line; requests then need "
        "'Authorization: Bearer <key>' (/healthz and the page stay open)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="reload when the served folder changes (e.g. latest/ or final/)",
    )
    parser.add_argument("--watch-interval", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument(
        "--min-rating",
        type=float,
        default=2.0,
        help="recommend only items predicted at least this (default %(default)s)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow this origin by CORS (repeatable; default: CORS off)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="largest request body accepted (default %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-client",
        type=int,
        default=64,
        metavar="N",
        help="open connections one client address may hold; more are refused "
        "at once (default %(default)s; 0: no cap, e.g. behind a proxy that "
        "applies its own)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        metavar="N",
        help="open connections in all; more are refused at once (default %(default)s; 0: no cap)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request header is not complete this "
        "long after it opened or after a request's first byte "
        "(default %(default)s; 0: never)",
    )
    parser.add_argument(
        "--open-docs",
        action="store_true",
        help="with --api-key-file, still serve /docs, /redoc and /openapi.json "
        "without a key (default: 404 when keys are on; always open without keys)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the flags' files and verify the checkpoint (signature, "
        "sha256 of every file) as at start, then exit without serving",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedrec_app.gateway.connections import ConnectionGuard
    from fedrec_app.gateway.main import serve
    from fedrec_app.gateway.security import load_api_keys
    from fedrec_app.gateway.settings import GatewaySettings

    if args.tls:
        for flag, path in (("--cert", args.cert), ("--key", args.key)):
            if not path.is_file():
                raise FedrecError(f"{flag} {path}: no such file (make one with `fedrec certs`)")
    if not 1 <= args.min_rating <= 5:
        raise FedrecError(f"--min-rating {args.min_rating}: must be within 1-5")
    if args.watch_interval <= 0:
        raise FedrecError(f"--watch-interval {args.watch_interval}: must be positive")
    if args.verify_key is None and not args.allow_unsigned:
        raise FedrecError(
            "--verify-key PUBFILE is required: the federation's federation-signing.pub (from "
            "`fedrec certs`); only checkpoints it verifies are served. --allow-unsigned serves "
            "unsigned checkpoints (insecure)"
        )
    if args.verify_key is not None and args.allow_unsigned:
        raise FedrecError("--verify-key and --allow-unsigned exclude each other")
    for flag, value in (
        ("--max-connections-per-client", args.max_connections_per_client),
        ("--max-connections", args.max_connections),
        ("--header-timeout", args.header_timeout),
    ):
        if value < 0:
            raise FedrecError(f"{flag} {value}: must be >= 0 (0 turns the limit off)")
    settings = GatewaySettings(
        checkpoint=args.checkpoint,
        verify_key=args.verify_key,
        allow_unsigned=args.allow_unsigned,
        min_rating=args.min_rating,
        api_keys=load_api_keys(args.api_key_file) if args.api_key_file else frozenset(),
        cors_origins=tuple(args.cors_origin),
        max_body_bytes=args.max_body_bytes,
        watch=args.watch,
        watch_interval=args.watch_interval,
        open_docs=args.open_docs,
    )
    if args.dry_run:
        return _dry_run(args)
    serve(
        settings,
        host=args.host,
        port=args.port,
        certfile=args.cert if args.tls else None,
        keyfile=args.key if args.tls else None,
        limits=ConnectionGuard(
            max_per_client=args.max_connections_per_client,
            max_total=args.max_connections,
            header_timeout=args.header_timeout,
        ),
    )
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    """Verify and load the checkpoint exactly as a start would; serve nothing."""
    from fedrec_app.core.signing import load_verify_key
    from fedrec_app.gateway.store import describe, load_source

    verify_key = load_verify_key(args.verify_key) if args.verify_key is not None else None
    recommender = load_source(args.checkpoint, verify_key)
    signed = "signature verified" if verify_key is not None else "UNSIGNED, not checked"
    scheme = "https" if args.tls else "http"
    print(f"checkpoint ok ({signed}): {describe(recommender)}")
    print(f"would serve {scheme}://{args.host}:{args.port}" + (" (--watch)" if args.watch else ""))
    return 0
