"""`fedrec data download`, `fedrec partition` (the demo: split MovieLens 100k for several sites)
and `fedrec partition site` (a site's own ratings into its own partition folder)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def md5_hex(value: str) -> str:
    """argparse type of --md5: 32 hex digits (checked before anything is fetched or started)."""
    if not re.fullmatch(r"[0-9a-fA-F]{32}", value.strip()):
        raise argparse.ArgumentTypeError(f"{value!r} is not an md5 (32 hex digits)")
    return value.strip().lower()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = subparsers.add_parser("data", help="get the MovieLens 100k data set")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    download = data_sub.add_parser(
        "download",
        help="fetch ml-100k.zip (or take --zip), verify its md5, extract into DIR/ml-100k",
    )
    download.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="the folder that holds (or will hold) ml-100k/, like `fedrec up --data` "
        "(default: ./data)",
    )
    # The old name of --data: still accepted, with a deprecation note (hidden from --help).
    download.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    download.add_argument("--url", help="default: the GroupLens ml-100k.zip")
    download.add_argument(
        "--md5", type=md5_hex, help="expected md5 of the archive (default: the official one)"
    )
    download.add_argument(
        "--zip",
        type=Path,
        metavar="FILE",
        help="use this local ml-100k.zip instead of the URL (offline)",
    )
    download.set_defaults(func=_download)

    part = subparsers.add_parser(
        "partition",
        help="split a MovieLens split into user-disjoint partitions (the demo); "
        "`partition site`: a site's own ratings into its partition folder",
    )
    part.add_argument("--data", type=Path, help="the ml-100k folder (required)")
    part.add_argument("--num-partitions", type=int, metavar="K", help="(required)")
    part.add_argument("--scheme", default="random", help="random | activity | genre")
    part.add_argument("--alpha", type=float, help="Dirichlet concentration for --scheme genre")
    part.add_argument("--split", default="u1", help="u1..u5 | ua | ub | holdout (default u1)")
    part.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    part.add_argument(
        "--val-fraction", type=float, help="share of each user's training ratings in val.csv (0.05)"
    )
    part.add_argument("--out", type=Path, help="e.g. partitions/u1-5 (required)")
    part.set_defaults(func=lambda args: _partition(args, part))

    part_sub = part.add_subparsers(
        dest="partition_command",
        metavar="site",
        help="optional: `fedrec partition site …` turns one site's own ratings into its own "
        "partition folder (see `fedrec partition site --help`)",
    )
    site = part_sub.add_parser(
        "site",
        help="turn this site's own MovieLens-format ratings into its partition folder",
        description="Turn this site's own ratings (u.data style tab-separated, or CSV with the "
        "header user_id,movie_id,rating,timestamp) into a self-contained partition folder "
        "(train.csv, val.csv, test.csv, items.csv, manifest.yaml) for its SuperNode's data-path.",
    )
    site.add_argument("--ratings", type=Path, required=True, help="this site's ratings file")
    holdout = site.add_mutually_exclusive_group()
    holdout.add_argument("--test", type=Path, help="this site's test ratings (same format)")
    holdout.add_argument(
        "--test-fraction", type=float, help="else hold out this share of each user's ratings (0.2)"
    )
    site.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    site.add_argument(
        "--val-fraction", type=float, help="share of each user's training ratings in val.csv (0.05)"
    )
    site.add_argument(
        "--catalogue", type=Path, required=True, help="the federation's shared items.csv"
    )
    site.add_argument("--out", type=Path, required=True, help="the partition folder to write")
    site.set_defaults(func=_partition_site)


def _download(args: argparse.Namespace) -> int:
    from fedrec_app.core.errors import FedrecError
    from fedrec_app.data.download import download

    data = args.data
    if args.dest is not None:
        print(
            "fedrec data download: note: --dest is deprecated; use --data (the name "
            "`fedrec up` and the other commands use)",
            file=sys.stderr,
        )
        if data is not None and data != args.dest:
            raise FedrecError(f"--data {data} and --dest {args.dest}: give one of them")
        data = args.dest
    options = {"url": args.url, "md5": args.md5}
    result = download(
        data or Path("data"),
        zip_path=args.zip,
        **{k: v for k, v in options.items() if v is not None},
    )
    c = result.counts
    state = "already present and valid, nothing done" if result.already_present else "ready"
    print(f"{result.folder}: {state} ({c.users} users, {c.items} items, {c.ratings} ratings)")
    return 0


def _partition(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from fedrec_app.data.partition import make_partitions

    missing = [
        flag
        for flag, value in (
            ("--data", args.data),
            ("--num-partitions", args.num_partitions),
            ("--out", args.out),
        )
        if value is None
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")

    val = {} if args.val_fraction is None else {"val_fraction": args.val_fraction}
    result = make_partitions(
        args.data,
        args.out,
        args.num_partitions,
        scheme=args.scheme,
        alpha=args.alpha,
        split=args.split,
        seed=args.seed,
        **val,
    )
    m = result.manifest
    if result.already_present:
        print(f"{result.out}: this partition set is already there and verifies; nothing done")
        return 0
    print(
        f"{result.out}: {m['num_partitions']} partitions of split {m['split']} "
        f"(scheme {m['scheme']}, seed {m['seed']})"
    )
    for entry in m["partitions"]:
        rows = {name: f["rows"] for name, f in entry["files"].items()}
        print(
            f"  {entry['path']}: {entry['users']} users ({entry['test_users']} with test), "
            f"train {rows['train.csv']}, val {rows['val.csv']}, test {rows['test.csv']}"
        )
    return 0


def _partition_site(args: argparse.Namespace) -> int:
    from fedrec_app.data.site import make_site_partition

    val = {} if args.val_fraction is None else {"val_fraction": args.val_fraction}
    result = make_site_partition(
        args.ratings,
        args.catalogue,
        args.out,
        test=args.test,
        test_fraction=args.test_fraction,
        seed=args.seed,
        **val,
    )
    if result.already_present:
        print(f"{result.out}: this partition folder is already there and verifies; nothing done")
        return 0
    m = result.manifest
    rows = {name: f["rows"] for name, f in m["files"].items() if "rows" in f}
    print(
        f"{result.out}: {m['users']} users ({m['test_users']} with test), train "
        f"{rows['train.csv']}, val {rows['val.csv']}, test {rows['test.csv']}; catalogue "
        f"{m['catalogue']['fingerprint']}"
    )
    return 0
