"""`fedrec certs` (CA + server certificate), `fedrec keys` (SuperNode key pairs) and
`fedrec deploy ROLE` (start one role of a federation manifest on this host)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedrec_app.ops.manifest import Manifest


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = subparsers.add_parser(
        "certs",
        help="make a CA, a SuperLink server certificate and the checkpoint-signing key",
        description="Write ca.crt/ca.key and server.pem/server.key (ECDSA P-384). The server "
        "certificate covers every --san plus localhost, 127.0.0.1 and ::1. Also writes the "
        "federation's checkpoint-signing key pair federation-signing.key (Ed25519, 0600: "
        "run-config signing-key, SuperLink host only) and federation-signing.pub (the "
        "gateway's --verify-key) when missing; an existing pair is kept.",
    )
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output folder")
    certs.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="IP_OR_DNS",
        help="an address SuperNodes and the CLI dial (repeatable)",
    )
    certs.add_argument(
        "--renew-server",
        action="store_true",
        help="re-issue only server.pem/server.key in --out for the given --san "
        "(none: the current certificate's), signed by the existing CA (needs "
        "ca.key): ca.crt is kept, so nodes keep trusting the SuperLink",
    )
    certs.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (or, with --name, that certificate; with "
        "--signing-key, the signing key pair)",
    )
    certs.add_argument(
        "--signing-key",
        action="store_true",
        help="write only the checkpoint-signing key pair into --out (e.g. next to an existing CA)",
    )
    certs.add_argument(
        "--name",
        metavar="NAME",
        help="sign another server certificate NAME.pem/NAME.key (e.g. the gateway's) with the "
        "existing CA in --out, instead of making a new CA",
    )
    certs.set_defaults(func=_certs)

    keys = subparsers.add_parser(
        "keys",
        help="make one OpenSSH ECDSA P-384 key pair per SuperNode",
        description="Write NAME (private, 0600) and NAME.pub per SuperNode; never overwrites.",
    )
    keys.add_argument("--out", type=Path, default=Path("certs/nodes"), help="output folder")
    keys.add_argument("names", nargs="+", metavar="NAME", help="SuperNode names")
    keys.set_defaults(func=_keys)

    deploy = subparsers.add_parser(
        "deploy",
        help="start one role of deploy/federation.yaml on this host",
        description="superlink | proxy | supernode NAME | trainer NAME | gateway: check the "
        "manifest and the files this role needs, then replace this process with the role's (TLS, "
        "SuperNode auth, state database always; the SuperLink on loopback behind its Fleet "
        "proxy). register: register every SuperNode's public key (on the SuperLink host).",
    )
    deploy.add_argument(
        "role", choices=("superlink", "proxy", "supernode", "trainer", "register", "gateway")
    )
    deploy.add_argument("name", nargs="?", help="the SuperNode's name (roles supernode, trainer)")
    deploy.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("deploy/federation.yaml"),
        help="federation manifest (default %(default)s)",
    )
    deploy.add_argument(
        "--dry-run",
        action="store_true",
        help="check and print the command line instead of starting it",
    )
    deploy.add_argument(
        "--no-connect",
        action="store_true",
        help="--dry-run of supernode/register: skip the TLS handshake with the "
        "SuperLink (e.g. before it is up)",
    )
    deploy.add_argument(
        "--no-trainer",
        action="store_true",
        help="supernode: do not start the node's warm trainer in the background "
        "(its own unit or `deploy trainer NAME` runs it)",
    )
    deploy.add_argument(
        "--no-proxy",
        action="store_true",
        help="superlink: do not start its Fleet proxy in the background (its own "
        "unit or `deploy proxy` runs it)",
    )
    deploy.set_defaults(func=_deploy)


def _certs(args: argparse.Namespace) -> int:
    from fedrec_app.core.errors import FedrecError
    from fedrec_app.ops.certs import (
        certificate_sans,
        issue_server_cert,
        make_certs,
        make_signing_key,
        renew_server_cert,
    )

    if args.signing_key:
        if args.name or args.san or args.renew_server:
            raise FedrecError("--signing-key takes neither --name, --san nor --renew-server")
        paths = make_signing_key(args.out, force=args.force)
        print(f"signing key: {paths.signing_key}  (public {paths.signing_pub})")
        return 0
    if args.renew_server:
        if args.name or args.force:
            raise FedrecError("--renew-server takes neither --name nor --force (it keeps the CA)")
        cert, key = renew_server_cert(args.out, args.san)
        print(f"SuperLink:   {cert}  (key {key}), signed by the existing CA {args.out / 'ca.crt'}")
        print(f"SANs:        {', '.join(certificate_sans(cert))}")
        print(
            "copy both to the SuperLink host and restart the SuperLink and its proxy; "
            "nodes keep their ca.crt"
        )
        return 0
    if args.name:
        cert, key = issue_server_cert(args.out, args.name, args.san, force=args.force)
        print(f"{args.name}: {cert}  (key {key}), SANs: {', '.join(certificate_sans(cert))}")
        return 0
    paths = make_certs(args.out, args.san, force=args.force)
    print(f"CA:          {paths.ca_cert}  (key {paths.ca_key})")
    print(f"SuperLink:   {paths.server_cert}  (key {paths.server_key})")
    print(f"SANs:        {', '.join(certificate_sans(paths.server_cert))}")
    print(f"signing key: {paths.signing_key}  (public {paths.signing_pub})")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from fedrec_app.ops.certs import make_node_keys

    for key in make_node_keys(args.out, args.names):
        print(f"{key.name}: {key.private}  {key.public}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import shlex

    from fedrec_app.core.errors import FedrecError
    from fedrec_app.ops.deploy import (
        PROXY_LOG,
        TRAINER_LOG,
        exec_launch,
        launch_for,
        register_nodes,
        start_in_background,
        write_proxy_config,
    )
    from fedrec_app.ops.manifest import load_manifest

    manifest = load_manifest(args.config)
    if args.name is not None and args.role not in ("supernode", "trainer"):
        raise FedrecError(f"deploy {args.role} takes no NAME (got {args.name!r})")
    if args.no_connect and not args.dry_run:
        raise FedrecError("--no-connect applies to --dry-run only")
    if args.role == "register":
        if args.dry_run:
            manifest.check("register")
            for node in manifest.supernodes:
                print(f"{node.name}: would register {node.public_key}")
            _dry_run_reach(manifest, args)
            return 0
        for name, node_id in register_nodes(manifest).items():
            print(f"{name}: {node_id}")
        return 0
    if args.no_trainer and args.role != "supernode":
        raise FedrecError("--no-trainer applies to deploy supernode only")
    if args.no_proxy and args.role != "superlink":
        raise FedrecError("--no-proxy applies to deploy superlink only")
    launch = launch_for(manifest, args.role, args.name)
    trainer = None
    if args.role == "supernode" and not args.no_trainer:
        trainer = launch_for(manifest, "trainer", args.name)
    proxy = None
    if args.role == "superlink" and not args.no_proxy:
        proxy = launch_for(manifest, "proxy")
    if args.dry_run:
        flwr_env = {k: v for k, v in launch.env.items() if k.startswith("FLWR_")}
        print(f"cd {shlex.quote(str(launch.cwd))}")
        print(
            " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(flwr_env.items())),
            shlex.join(launch.argv),
        )
        for background, log_name in ((trainer, TRAINER_LOG), (proxy, PROXY_LOG)):
            if background is not None:
                print(f"# in the background, logging to {background.cwd / log_name}:")
                print(shlex.join(background.argv))
        _dry_run_reach(manifest, args)
        return 0
    if args.role == "proxy" or proxy is not None:
        write_proxy_config(manifest)
    if trainer is not None:
        start_in_background(trainer, trainer.cwd / TRAINER_LOG)
    if proxy is not None:
        start_in_background(proxy, proxy.cwd / PROXY_LOG)
    exec_launch(launch)
    return 0  # not reached: exec replaced this process


def _dry_run_reach(manifest: Manifest, args: argparse.Namespace) -> None:
    """--dry-run of a role that dials the SuperLink: a verified TLS handshake with it."""
    from fedrec_app.ops.reach import check_reachable

    if args.no_connect:
        return
    for line in check_reachable(manifest, args.role, args.name):
        print(f"# {line}")
