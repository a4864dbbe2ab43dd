"""A site's own ratings into its own partition folder (``fedrec partition site``).

Each site brings its own data: a MovieLens-format ratings file (tab-separated
``user\\titem\\trating\\ttimestamp`` like ``u.data``, or a CSV with the header
``user_id,movie_id,rating,timestamp``), optionally a test file in the same format (else a
per-user random ``test_fraction`` of the ratings is held out with ``seed``), and the federation's
shared catalogue ``items.csv`` (public movie metadata; the run pins its fingerprint). The result is
a self-contained partition folder (``fedrec_app.data.layout``): ``train.csv``, ``val.csv``,
``test.csv``, a copy of ``items.csv`` and a ``manifest.yaml`` describing only these files. It is
written to a temporary folder beside ``out`` and renamed into place.
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

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import sha256_file
from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv
from fedrec_app.data.layout import (
    existing_output,
    read_partition_manifest,
    verify_partition_folder,
)
from fedrec_app.data.movielens import (
    RATING_COLUMNS,
    per_user_sample,
    read_ratings,
    sort_ratings,
)
from fedrec_app.data.partition import DEFAULT_VAL_FRACTION, write_partition_folder

log = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.2
CSV_HEADER = ",".join(RATING_COLUMNS)


@dataclass(frozen=True)
class SiteResult:
    out: Path
    already_present: bool
    manifest: dict[str, Any]


def read_site_ratings(path: Path) -> tuple[pd.DataFrame, int]:
    """Ratings of a site's file and the line number of its first data row (1 for tab-separated,
    2 for CSV with header); FedrecError names the file, the line and the field."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            first = handle.readline().decode("ascii", errors="replace").strip()
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if first != CSV_HEADER and "," not in first:
        return read_ratings(path), 1  # u.data style; checks fields and ranges per line
    if first != CSV_HEADER:
        raise FedrecError(f"{path}: line 1: expected the header {CSV_HEADER}, got {first[:60]!r}")
    return read_ratings(path, header=CSV_HEADER), 2


def _check_rows(
    frame: pd.DataFrame, first_line: int, path: Path, catalogue: Catalogue, catalogue_path: Path
) -> None:
    """Every movie in the catalogue; no (user, movie) pair twice."""
    known = np.isin(frame["movie_id"].to_numpy(), catalogue.movie_ids)
    if not known.all():
        row = int(np.argmin(known))
        raise FedrecError(
            f"{path}: line {row + first_line}: movie_id {frame['movie_id'].iloc[row]} is not in "
            f"the catalogue {catalogue_path}"
        )
    twice = frame.duplicated(["user_id", "movie_id"], keep="first").to_numpy()
    if twice.any():
        row = int(np.argmax(twice))
        user, movie = int(frame["user_id"].iloc[row]), int(frame["movie_id"].iloc[row])
        raise FedrecError(
            f"{path}: line {row + first_line}: user_id {user} rates movie_id {movie} a second time"
        )


def make_site_partition(
    ratings: Path,
    catalogue: Path,
    out: Path,
    *,
    test: Path | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> SiteResult:
    """Turn a site's own ratings into its partition folder ``out`` (temp folder, then rename).

    An ``out`` already holding the folder these inputs make is verified and left alone; one
    holding anything else is refused.
    """
    ratings, catalogue, out = Path(ratings), Path(catalogue), Path(out)
    if test is not None and test_fraction is not None:
        raise FedrecError("give either --test or --test-fraction, not both")
    if test is None:
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
        if not 0.0 < test_fraction < 1.0:
            raise FedrecError(f"test fraction must lie strictly in 0..1, got {test_fraction}")
    if not 0.0 <= val_fraction <= 0.5:
        raise FedrecError(f"validation fraction must lie in 0..0.5, got {val_fraction}")
    cat = read_catalogue_csv(catalogue)
    origin: dict[str, Any] = {
        "kind": "site",
        "ratings": {"file": ratings.name, "sha256": sha256_file(ratings)},
        "test": None if test is None else {"file": test.name, "sha256": sha256_file(test)},
        "test_fraction": test_fraction,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
    }
    existing = _existing_folder(out, origin, cat)
    if existing is not None:
        return SiteResult(out, True, existing)

    train, first = read_site_ratings(ratings)
    _check_rows(train, first, ratings, cat, catalogue)
    if len(train) == 0:
        raise FedrecError(f"{ratings}: no ratings")
    split_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if test is not None:
        test_frame, test_first = read_site_ratings(test)
        _check_rows(test_frame, test_first, test, cat, catalogue)
        both = pd.concat([train, test_frame], ignore_index=True)
        overlap = both.duplicated(["user_id", "movie_id"], keep="first").to_numpy()[len(train) :]
        if overlap.any():
            row = int(np.argmax(overlap))
            raise FedrecError(
                f"{test}: line {row + test_first}: user_id {test_frame['user_id'].iloc[row]} "
                f"movie_id {test_frame['movie_id'].iloc[row]} is also in {ratings}"
            )
        train, test_frame = sort_ratings(train), sort_ratings(test_frame)
    else:
        assert test_fraction is not None
        everything = sort_ratings(train)
        in_test = per_user_sample(everything["user_id"].to_numpy(), test_fraction, split_rng)
        train = everything[~in_test].reset_index(drop=True)
        test_frame = everything[in_test].reset_index(drop=True)
    if len(test_frame) == 0:
        raise FedrecError(
            f"{ratings}: no test ratings (every user has a single rating); give --test"
        )
    in_val = per_user_sample(train["user_id"].to_numpy(), val_fraction, val_rng)
    frames = {"train.csv": train[~in_val], "val.csv": train[in_val], "test.csv": test_frame}
    users = len(np.union1d(train["user_id"].to_numpy(), test_frame["user_id"].to_numpy()))
    # The node's train seed mixes in its index: different per site, the same on every rerun.
    index = int(origin["ratings"]["sha256"][:7], 16)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        manifest = write_partition_folder(staging, index, origin, cat, frames, users=users)
        try:
            if out.is_dir():
                out.rmdir()  # empty (checked above); a race that filled it fails here
            staging.rename(out)
        except OSError as exc:
            raise FedrecError(
                f"{out}: cannot move the new partition folder there ({exc.strerror or exc}); "
                "nothing overwritten"
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote the partition folder %s (%d users)", out, users)
    return SiteResult(out, False, manifest)


def _existing_folder(
    out: Path, origin: dict[str, Any], catalogue: Catalogue
) -> dict[str, Any] | None:
    """The manifest of ``out`` when it already holds this very folder; None when it is free."""
    if not existing_output(out, "partition folder"):
        return None
    manifest = read_partition_manifest(out)
    same = (
        manifest.get("origin") == origin
        and manifest["catalogue"].get("fingerprint") == catalogue.fingerprint
    )
    if not same:
        raise FedrecError(
            f"{out} already holds a different partition folder (other ratings, catalogue or "
            "options); nothing overwritten: choose another --out or remove it"
        )
    try:
        verify_partition_folder(out)
    except FedrecError as exc:
        raise FedrecError(
            f"{out} holds this partition folder but it fails verification ({exc}); remove it to "
            "rebuild"
        ) from exc
    return manifest
