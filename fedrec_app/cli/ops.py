"""`fedrec certs` (CA + SuperLink server certificate) and `fedrec keys` (SuperNode key pairs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    certs = subparsers.add_parser(
        "certs",
        help="make a CA and a SuperLink server certificate",
        description="Write ca.crt/ca.key and server.pem/server.key (ECDSA P-384). The server "
        "certificate covers every --san plus localhost, 127.0.0.1 and ::1.",
    )
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output folder")
    certs.add_argument(
        "--san", action="append", default=[], metavar="IP_OR_DNS",
        help="an address SuperNodes and the CLI dial (repeatable)",
    )
    certs.add_argument("--force", action="store_true", help="replace an existing CA")
    certs.set_defaults(func=_certs)

    keys = subparsers.add_parser(
        "keys",
        help="make one OpenSSH ECDSA P-384 key pair per SuperNode",
        description="Write NAME (private, 0600) and NAME.pub per SuperNode; never overwrites.",
    )
    keys.add_argument("--out", type=Path, default=Path("certs/nodes"), help="output folder")
    keys.add_argument("names", nargs="+", metavar="NAME", help="SuperNode names")
    keys.set_defaults(func=_keys)


def _certs(args: argparse.Namespace) -> int:
    from fedrec_app.ops.certs import certificate_sans, make_certs

    paths = make_certs(args.out, args.san, force=args.force)
    print(f"CA:          {paths.ca_cert}  (key {paths.ca_key})")
    print(f"SuperLink:   {paths.server_cert}  (key {paths.server_key})")
    print(f"SANs:        {', '.join(certificate_sans(paths.server_cert))}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from fedrec_app.ops.certs import make_node_keys

    for key in make_node_keys(args.out, args.names):
        print(f"{key.name}: {key.private}  {key.public}")
    return 0
