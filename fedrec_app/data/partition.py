"""Split a MovieLens split into user-disjoint partitions (one per SuperNode), and load one back.

On disk (``partitions/NAME``): ``manifest.yaml``, ``items.csv`` (the catalogue) and
``partition-<k>/{train,val,test}.csv`` with header ``user_id,movie_id,rating,timestamp``, rows in
(user, movie, timestamp) order. ``val.csv`` is a per-user random slice of the training ratings,
for model selection; the union of train and val over all partitions is the source training split
and the union of test is the source test split, exactly.

Each ``partition-<k>`` is self-contained (``fedrec_app.data.layout``): it also holds a copy of
``items.csv`` and its own ``manifest.yaml``, which says nothing about the other partitions, so a
site gets only its own folder and a node verifies it alone. A site with its own ratings makes
such a folder with ``fedrec_app.data.site``.

Schemes: ``fedrec_app.data.schemes``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import sha256_bytes, sha256_file
from fedrec_app.data import schemes
from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv
from fedrec_app.data.layout import (
    ITEMS,
    PART_FILES,
    PARTITION_FORMAT,
    PARTITION_KIND,
    PARTITION_MANIFEST,
    existing_output,
    load_manifest_yaml,
    partition_dir_name,
    verify_files,
    verify_partition_folder,
)
from fedrec_app.data.movielens import (
    HOLDOUT,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    RATING_COLUMNS,
    SPLITS,
    per_user_sample,
    ratings_frame,
    read_items,
    read_split,
    resolve_data_dir,
    sort_ratings,
    verify_movielens_folder,
)

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("random", "activity", "genre")
DEFAULT_ALPHA = 0.5
DEFAULT_VAL_FRACTION = 0.05
FORMAT_VERSION = 1
# Manifest keys that define a partition set: equal keys (and sources) mean the same set.
_PARAMETER_KEYS = (
    "format_version",
    "scheme",
    "alpha",
    "seed",
    "split",
    "num_partitions",
    "val_fraction",
    "holdout",
    "source",
)


@dataclass(frozen=True)
class Partition:
    index: int
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    catalogue: Catalogue
    folder: Path  # the partition folder (resolved)


@dataclass(frozen=True)
class PartitionResult:
    out: Path
    already_present: bool
    manifest: dict[str, Any]


# ----------------------------------------------------------------------------- make


def make_partitions(
    data_dir: Path,
    out: Path,
    num_partitions: int,
    *,
    scheme: str = "random",
    alpha: float | None = None,
    split: str = "u1",
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> PartitionResult:
    """Write a partition set to ``out`` (temp folder, then rename); same inputs, same bytes.

    An ``out`` already holding this very set is verified and left alone; one holding anything
    else is refused.
    """
    if scheme not in SCHEMES:
        raise FedrecError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if alpha is not None and scheme != "genre":
        raise FedrecError("--alpha applies only to --scheme genre")
    if scheme == "genre":
        alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
        if not alpha > 0:
            raise FedrecError(f"alpha must be > 0, got {alpha}")
    if split not in (*SPLITS, HOLDOUT):
        raise FedrecError(f"unknown split {split!r}; choose one of {', '.join((*SPLITS, HOLDOUT))}")
    if num_partitions < 1:
        raise FedrecError(f"number of partitions must be >= 1, got {num_partitions}")
    if not 0.0 <= val_fraction <= 0.5:
        raise FedrecError(f"validation fraction must lie in 0..0.5, got {val_fraction}")

    data_dir = resolve_data_dir(data_dir)
    verify_movielens_folder(data_dir)
    sources = [f"{split}.base", f"{split}.test"] if split != HOLDOUT else ["u.data"]
    params: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "scheme": scheme,
        "alpha": alpha,
        "seed": int(seed),
        "split": split,
        "num_partitions": int(num_partitions),
        "val_fraction": float(val_fraction),
        "holdout": (
            {"seed": HOLDOUT_SEED, "fraction": HOLDOUT_FRACTION} if split == HOLDOUT else None
        ),
        "source": {name: sha256_file(data_dir / name) for name in [*sources, "u.item", "u.genre"]},
    }
    out = Path(out)
    existing = _existing_set(out, params)
    if existing is not None:
        return PartitionResult(out, True, existing)

    catalogue = read_items(data_dir)
    train, test = read_split(data_dir, split)
    _check_known_movies(train, catalogue, data_dir / sources[0])
    _check_known_movies(test, catalogue, data_dir / sources[-1])
    train, test = sort_ratings(train), sort_ratings(test)

    users = np.union1d(train["user_id"].to_numpy(), test["user_id"].to_numpy())
    test_users = np.unique(test["user_id"].to_numpy())
    if num_partitions > len(users):
        raise FedrecError(
            f"{num_partitions} partitions but split {split} has only {len(users)} users"
        )
    if num_partitions > len(test_users):
        raise FedrecError(
            f"{num_partitions} partitions but only {len(test_users)} users of split {split} "
            "have test ratings; every partition needs some"
        )
    assign_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    has_test = np.isin(users, test_users)
    if scheme == "random":
        part = schemes.assign_random(has_test, num_partitions, assign_rng)
    elif scheme == "activity":
        part = schemes.assign_activity(users, train, num_partitions, assign_rng)
    else:
        assert alpha is not None  # set for the genre scheme above
        part = schemes.assign_genre(users, train, catalogue, num_partitions, alpha, assign_rng)
    part = schemes.ensure_test_users(part, has_test, num_partitions)

    in_val = per_user_sample(train["user_id"].to_numpy(), val_fraction, val_rng)
    frames = {"train.csv": train[~in_val], "val.csv": train[in_val], "test.csv": test}
    user_part = pd.Series(part, index=users)
    manifest = _write_set(out, params, catalogue, frames, user_part, num_partitions)
    log.info("wrote %d partitions to %s", num_partitions, out)
    return PartitionResult(out, False, manifest)


def _check_known_movies(frame: pd.DataFrame, catalogue: Catalogue, path: Path) -> None:
    movie_ids = frame["movie_id"].to_numpy()
    unknown = np.setdiff1d(movie_ids, catalogue.movie_ids)
    if len(unknown):
        raise FedrecError(f"{path}: movie_id {unknown[0]} is not in u.item")


def _write_set(
    out: Path,
    params: dict[str, Any],
    catalogue: Catalogue,
    frames: dict[str, pd.DataFrame],
    user_part: pd.Series,
    k: int,
) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        items = catalogue.to_csv_bytes()
        (staging / ITEMS).write_bytes(items)
        entries = []
        labels = {
            name: user_part.loc[frame["user_id"]].to_numpy() for name, frame in frames.items()
        }
        origin = {"kind": "split", **{k: v for k, v in params.items() if k != "format_version"}}
        for index in range(k):
            folder = staging / partition_dir_name(index)
            folder.mkdir()
            own = write_partition_folder(
                folder,
                index,
                origin,
                catalogue,
                {name: frame[labels[name] == index] for name, frame in frames.items()},
                users=int((user_part == index).sum()),
                items=items,
            )
            entries.append(
                {
                    "index": index,
                    "path": partition_dir_name(index),
                    "users": own["users"],
                    "test_users": own["test_users"],
                    "files": {name: own["files"][name] for name in frames},
                }
            )
        manifest = {
            **params,
            "catalogue": {"fingerprint": catalogue.fingerprint, "num_items": len(catalogue)},
            "totals": {
                "users": len(user_part),
                **{name.removesuffix(".csv"): len(frame) for name, frame in frames.items()},
            },
            "files": {ITEMS: {"sha256": sha256_bytes(items), "bytes": len(items)}},
            "partitions": entries,
        }
        (staging / PARTITION_MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
        try:
            staging.rename(out)
        except OSError as exc:
            raise FedrecError(
                f"{out}: cannot move the new partition set there ({exc.strerror or exc}); "
                "nothing overwritten"
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def write_partition_folder(
    folder: Path,
    index: int,
    origin: dict[str, Any],
    catalogue: Catalogue,
    frames: dict[str, pd.DataFrame],
    *,
    users: int,
    items: bytes | None = None,
) -> dict[str, Any]:
    """Write ``train/val/test.csv``, ``items.csv`` and the folder's own ``manifest.yaml`` into
    ``folder`` (an empty folder); return that manifest. ``origin`` says how the folder was made
    (never anything about other partitions)."""
    items = catalogue.to_csv_bytes() if items is None else items
    (folder / ITEMS).write_bytes(items)
    files: dict[str, dict[str, Any]] = {ITEMS: {"sha256": sha256_bytes(items), "bytes": len(items)}}
    for name in PART_FILES:
        data = _csv_bytes(frames[name])
        (folder / name).write_bytes(data)
        files[name] = {"sha256": sha256_bytes(data), "rows": len(frames[name]), "bytes": len(data)}
    manifest = {
        "format_version": PARTITION_FORMAT,
        "kind": PARTITION_KIND,
        "index": int(index),
        "origin": origin,
        "catalogue": {"fingerprint": catalogue.fingerprint, "num_items": len(catalogue)},
        "users": int(users),
        "test_users": int(frames["test.csv"]["user_id"].nunique()),
        "files": files,
    }
    (folder / PARTITION_MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return manifest


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    lines = [",".join(RATING_COLUMNS)]
    lines.extend(
        f"{u},{m},{r},{t}"
        for u, m, r, t in zip(
            frame["user_id"].tolist(),
            frame["movie_id"].tolist(),
            frame["rating"].astype(np.int64).tolist(),
            frame["timestamp"].tolist(),
            strict=True,
        )
    )
    return ("\n".join(lines) + "\n").encode("ascii")


def _existing_set(out: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of ``out`` when it already holds this set; None when ``out`` is free."""
    if not existing_output(out, "partition set"):
        return None
    manifest = read_manifest(out)
    differences = [
        f"{key}: {manifest.get(key)!r} there, {params[key]!r} now"
        for key in _PARAMETER_KEYS
        if manifest.get(key) != params[key]
    ]
    if differences:
        raise FedrecError(
            f"{out} already holds a different partition set ({'; '.join(differences)}); "
            "nothing overwritten: choose another --out or remove it"
        )
    try:
        verify_partition_set(out)
    except FedrecError as exc:
        raise FedrecError(
            f"{out} holds this partition set but it fails verification ({exc}); remove it to "
            "rebuild"
        ) from exc
    return manifest


# ----------------------------------------------------------------------------- load and verify


def read_manifest(set_dir: Path) -> dict[str, Any]:
    """The parsed ``manifest.yaml`` of a partition set (FedrecError if missing or malformed)."""
    path = Path(set_dir) / PARTITION_MANIFEST
    manifest = load_manifest_yaml(path)
    if (
        not isinstance(manifest, dict)
        or manifest.get("format_version") != FORMAT_VERSION
        or not isinstance(manifest.get("partitions"), list)
        or not isinstance(manifest.get("files"), dict)
    ):
        raise FedrecError(f"{path}: not a format-{FORMAT_VERSION} partition manifest")
    return manifest


def verify_partition_set(set_dir: Path) -> dict[str, Any]:
    """Check every file of a partition set against its manifest; return the manifest."""
    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir)
    verify_files(set_dir, manifest["files"])
    for entry in manifest["partitions"]:
        verify_files(set_dir / entry["path"], entry["files"])
        verify_partition_folder(set_dir / entry["path"])
    return manifest


def load_partition(path: Path) -> Partition:
    """Load ONE partition folder (``…/NAME/partition-<k>``, or a site's own folder) after checking
    its files and its ``items.csv`` against its own ``manifest.yaml``; nothing outside the folder
    is read."""
    path = Path(path)
    manifest = verify_partition_folder(path)
    catalogue = read_catalogue_csv(path / ITEMS)
    if catalogue.fingerprint != manifest["catalogue"]["fingerprint"]:
        raise FedrecError(
            f"{path / ITEMS}: catalogue fingerprint {catalogue.fingerprint} differs from "
            f"{path / PARTITION_MANIFEST} ({manifest['catalogue']['fingerprint']})"
        )
    frames = {name: _read_csv(path / name) for name in PART_FILES}
    return Partition(
        index=int(manifest["index"]),
        train=frames["train.csv"],
        val=frames["val.csv"],
        test=frames["test.csv"],
        catalogue=catalogue,
        folder=path.resolve(),
    )


def load_partition_set_member(set_dir: Path, index: int) -> Partition:
    """Partition ``index`` of the set in ``set_dir`` (for simulation, where nodes are numbered)."""
    manifest = read_manifest(set_dir)
    count = len(manifest["partitions"])
    if not 0 <= index < count:
        raise FedrecError(f"{set_dir}: partition {index} out of range (the set has {count})")
    return load_partition(Path(set_dir) / partition_dir_name(index))


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype="int64")
    if tuple(frame.columns) != RATING_COLUMNS:
        raise FedrecError(f"{path}: expected header {','.join(RATING_COLUMNS)}")
    return ratings_frame(frame["user_id"], frame["movie_id"], frame["rating"], frame["timestamp"])
