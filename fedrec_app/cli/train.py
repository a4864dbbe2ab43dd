"""`fedrec train-central`: the same model on the same split without federation (the reference)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fedrec_app.core.training import TrainConfig

# TrainConfig fields that are hyperparameters of the central run (local_epochs is federation-only).
_HYPER = tuple(f for f in dataclasses.fields(TrainConfig) if f.name not in ("local_epochs", "seed"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "train-central",
        help="train the model centrally on a split (epochs chosen on validation); print metrics",
    )
    p.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    p.add_argument("--split", default="u1", help="u1..u5 | ua | ub | holdout (default u1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation slice and the model")
    p.add_argument(
        "--val-fraction",
        type=float,
        help="share of each user's training ratings held out for "
        "choosing the epochs (default: the partitioner's, 0.05); use the partition set's value",
    )
    p.add_argument("--epochs", type=int, default=30, help="most epochs (default %(default)s)")
    p.add_argument(
        "--patience",
        type=int,
        default=6,
        help="stop after this many epochs without a "
        "validation improvement of either head (default %(default)s)",
    )
    for f in _HYPER:
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            help="default %(default)s",
        )
    p.add_argument("--out", type=Path, help="write the selected model as a checkpoint folder here")
    p.add_argument(
        "--signing-key",
        type=Path,
        metavar="KEY",
        help="sign the --out checkpoint with this federation-signing.key (`fedrec "
        "certs`); unsigned, a gateway serves it only with --allow-unsigned",
    )
    p.add_argument("--json", type=Path, help="write the metrics and seconds as JSON here")
    p.set_defaults(func=_train_central)


def _train_central(args: argparse.Namespace) -> int:
    # TensorFlow (seconds to import) loads only once the arguments and the data are good.
    from fedrec_app.core.central import load_central_data, train_central, write_central_checkpoint
    from fedrec_app.core.errors import FedrecError
    from fedrec_app.core.files import write_json_atomic

    try:
        cfg = TrainConfig(seed=args.seed, **{f.name: getattr(args, f.name) for f in _HYPER})
    except ValueError as exc:
        raise FedrecError(str(exc)) from exc
    if args.epochs < 1 or args.patience < 1:
        raise FedrecError("--epochs and --patience must be >= 1")
    signing_key = None
    if args.signing_key is not None:  # checked before the training, not after
        from fedrec_app.core.signing import load_signing_key

        if args.out is None:
            raise FedrecError("--signing-key signs the --out checkpoint: give --out too")
        signing_key = load_signing_key(args.signing_key)
    data = load_central_data(args.data, args.split, args.seed, args.val_fraction)
    from fedrec_app.core.model import configure_device

    configure_device(threads=2)
    result = train_central(data, cfg, max_epochs=args.epochs, patience=args.patience)
    m = result.metrics
    print(
        f"train-central {args.split} (seed {args.seed}): epochs rating {result.rating_epoch}, "
        f"ranking {result.ranking_epoch} (of {len(result.history)})"
    )
    print(
        " ".join(f"{k.upper()} {v:.4f}" for k, v in m.items()) + f"  seconds {result.seconds:.1f}"
    )
    if args.out:
        folder = write_central_checkpoint(
            args.out, result, data, cfg, split=args.split, signing_key=signing_key
        )
        print(f"checkpoint: {folder}")
    if args.json:
        payload = {
            **m,
            "seconds": result.seconds,
            "rating_epoch": result.rating_epoch,
            "ranking_epoch": result.ranking_epoch,
            "config": cfg.to_dict(),
        }
        write_json_atomic(args.json, payload)
    return 0
