"""MovieLens 100k: the folder check and the readers (``fedrec_app.data.download`` fetches it).

Readers return ratings as DataFrames with int64 ``user_id``, ``movie_id``, ``timestamp`` and
float32 ``rating``; a malformed line raises :class:`FedrecError` naming file, line and problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import check_sha256s
from fedrec_app.data.catalogue import GENRES, Catalogue, movie_year

log = logging.getLogger(__name__)

FOLDER_NAME = "ml-100k"
SPLITS: tuple[str, ...] = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
HOLDOUT = "holdout"
HOLDOUT_SEED = 0
HOLDOUT_FRACTION = 0.2
RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
REQUIRED_FILES: tuple[str, ...] = (
    "u.data",
    "u.item",
    "u.genre",
    "u.info",
    *(f"{split}.{part}" for split in SPLITS for part in ("base", "test")),
)
# Written into a folder that `download` extracted: sha256 of every file, to spot later changes.
MARKER = ".fedrec-source.json"
_ITEM_FIELDS = 5 + len(GENRES)


@dataclass(frozen=True)
class DatasetCounts:
    users: int
    items: int
    ratings: int


# ----------------------------------------------------------------------------- folder check


def resolve_data_dir(data_dir: Path) -> Path:
    """``data_dir`` itself, or its ``ml-100k`` subfolder when given the download destination."""
    data_dir = Path(data_dir)
    if not (data_dir / "u.data").exists() and (data_dir / FOLDER_NAME / "u.data").exists():
        return data_dir / FOLDER_NAME
    return data_dir


def verify_movielens_folder(folder: Path) -> DatasetCounts:
    """Check that ``folder`` is a whole MovieLens 100k folder: files present, row counts agree
    with ``u.info``, and (for a downloaded folder) every file matches its recorded sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FedrecError(f"data folder {folder} not found (run `fedrec data download`)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FedrecError(f"{folder}: incomplete data folder, missing {', '.join(missing)}")
    counts = _read_info(folder / "u.info")
    lines = {name: _count_lines(folder / name) for name in REQUIRED_FILES if name != "u.info"}
    expected = {"u.data": counts.ratings, "u.item": counts.items}
    for name, want in expected.items():
        if lines[name] != want:
            raise FedrecError(f"{folder / name}: {lines[name]} lines, u.info says {want}")
    for split in SPLITS:
        got = lines[f"{split}.base"] + lines[f"{split}.test"]
        if got != counts.ratings:
            raise FedrecError(
                f"{folder}: {split}.base + {split}.test hold {got} lines, u.info says "
                f"{counts.ratings} ratings (truncated split file?)"
            )
    marker = folder / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise FedrecError(f"{marker}: unreadable checksum record ({exc})") from exc
        if not isinstance(recorded, dict):
            raise FedrecError(f"{marker}: unreadable checksum record (files is not a mapping)")
        check_sha256s(folder, recorded, MARKER)
    return counts


def _read_info(path: Path) -> DatasetCounts:
    values: dict[str, int] = {}
    for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise FedrecError(f"{path}: line {line_no}: expected '<count> <what>', got {line!r}")
        values[parts[1]] = int(parts[0])
    try:
        return DatasetCounts(values["users"], values["items"], values["ratings"])
    except KeyError as exc:
        raise FedrecError(f"{path}: no '{exc.args[0]}' count") from exc


def _count_lines(path: Path) -> int:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise FedrecError(f"{path}: last line is cut off (truncated file)")
    return data.count(b"\n")


# ----------------------------------------------------------------------------- readers


def read_ratings(path: Path, header: str | None = None) -> pd.DataFrame:
    """Read a ``user\\titem\\trating\\ttimestamp`` file (u.data, u1.base, …); with ``header``,
    a CSV whose first line (checked by the caller) is that header."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line_no = exc.object[: exc.start].count(b"\n") + 1
        raise FedrecError(f"{path}: line {line_no}: non-ASCII byte in a ratings file") from exc
    if header is None:
        sep, first, shape = "\t", 1, "tab-separated fields (user, item, rating, timestamp)"
        lines = text.split("\n")
    else:
        sep, first, shape = ",", 2, f"comma-separated fields ({header})"
        lines = text.replace("\r\n", "\n").split("\n")[1:]
    if lines and lines[-1] == "":
        lines.pop()
    values = np.empty((len(lines), 4), dtype=np.int64)
    for row, line in enumerate(lines):
        fields = line.split(sep)
        if len(fields) != 4:
            raise FedrecError(
                f"{path}: line {row + first}: expected 4 {shape}, got {len(fields)}: {line[:60]!r}"
            )
        for col, (name, field) in enumerate(zip(RATING_COLUMNS, fields, strict=True)):
            try:
                values[row, col] = int(field)
            except ValueError:
                raise FedrecError(
                    f"{path}: line {row + first}: {name} {field[:30]!r} is not an integer"
                ) from None
    _check_range(path, values[:, 0], 1, None, "user_id", first)
    _check_range(path, values[:, 1], 1, None, "movie_id", first)
    _check_range(path, values[:, 2], 1, 5, "rating", first)
    _check_range(path, values[:, 3], 0, None, "timestamp", first)
    return ratings_frame(values[:, 0], values[:, 1], values[:, 2], values[:, 3])


def _check_range(
    path: Path, column: np.ndarray, low: int, high: int | None, name: str, first_line: int
) -> None:
    bad = column < low if high is None else (column < low) | (column > high)
    if bad.any():
        row = int(np.argmax(bad))
        allowed = f">= {low}" if high is None else f"{low}..{high}"
        raise FedrecError(f"{path}: line {row + first_line}: {name} {column[row]} is not {allowed}")


def ratings_frame(
    user_id: np.ndarray, movie_id: np.ndarray, rating: np.ndarray, timestamp: np.ndarray
) -> pd.DataFrame:
    """The ratings DataFrame every reader returns (int64 ids/timestamps, float32 rating)."""
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_id, dtype=np.int64),
            "movie_id": np.asarray(movie_id, dtype=np.int64),
            "rating": np.asarray(rating, dtype=np.float32),
            "timestamp": np.asarray(timestamp, dtype=np.int64),
        }
    )


def read_items(data_dir: Path) -> Catalogue:
    """Read ``u.item`` (latin-1, 24 fields) and check ``u.genre``; return the catalogue."""
    data_dir = Path(data_dir)
    _check_genres(data_dir / "u.genre")
    path = data_dir / "u.item"
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    rows: dict[int, tuple[str, int | None, tuple[str, ...]]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split("|")
        if len(fields) != _ITEM_FIELDS:
            raise FedrecError(
                f"{path}: line {line_no}: expected {_ITEM_FIELDS} '|'-separated fields, "
                f"got {len(fields)}"
            )
        try:
            movie_id = int(fields[0])
        except ValueError:
            raise FedrecError(
                f"{path}: line {line_no}: movie id {fields[0]!r} is not an integer"
            ) from None
        if movie_id in rows:
            raise FedrecError(f"{path}: line {line_no}: movie id {movie_id} appears twice")
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise FedrecError(f"{path}: line {line_no}: genre flags must be 0 or 1, got {flags}")
        title = fields[1]
        genres = tuple(g for g, flag in zip(GENRES, flags, strict=True) if flag == "1")
        rows[movie_id] = (title, _release_year(fields[2], title, path, line_no), genres)
    ids = sorted(rows)
    return Catalogue(
        np.asarray(ids, dtype=np.int64),
        tuple(rows[i][0] for i in ids),
        tuple(rows[i][1] for i in ids),
        tuple(rows[i][2] for i in ids),
    )


def _release_year(date: str, title: str, path: Path, line_no: int) -> int | None:
    """The movie's year: the title's ``(YYYY)`` when present, else the release date's year.

    The title wins because u.item's release date is sometimes a re-release ("Return of the Jedi
    (1983)" is dated 14-Mar-1997). A malformed release date is still an error.
    """
    released: int | None = None
    if date:
        try:
            released = datetime.strptime(date, "%d-%b-%Y").year
        except ValueError:
            raise FedrecError(
                f"{path}: line {line_no}: release date {date!r} is not like 01-Jan-1995"
            ) from None
    return movie_year(title, released)


def _check_genres(path: Path) -> None:
    try:
        lines = [line for line in path.read_text(encoding="latin-1").splitlines() if line]
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    expected = [f"{name}|{i}" for i, name in enumerate(GENRES)]
    for line_no, (got, want) in enumerate(zip(lines, expected, strict=False), start=1):
        if got != want:
            raise FedrecError(f"{path}: line {line_no}: expected {want!r}, got {got!r}")
    if len(lines) != len(expected):
        raise FedrecError(f"{path}: {len(lines)} genres, expected {len(expected)}")


def read_split(
    data_dir: Path,
    split: str,
    *,
    holdout_seed: int = HOLDOUT_SEED,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) of a canonical split (u1..u5, ua, ub) or of ``holdout``.

    ``holdout`` takes ``holdout_fraction`` (at least one) of each user's ratings in ``u.data``
    at random (``holdout_seed``) as test; users with a single rating keep it in train.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FedrecError(f"data folder {data_dir} not found (run `fedrec data download`)")
    if split in SPLITS:
        return read_ratings(data_dir / f"{split}.base"), read_ratings(data_dir / f"{split}.test")
    if split != HOLDOUT:
        raise FedrecError(f"unknown split {split!r}; choose one of {', '.join((*SPLITS, HOLDOUT))}")
    if not 0.0 < holdout_fraction < 1.0:
        raise FedrecError(f"holdout fraction {holdout_fraction} must lie strictly between 0 and 1")
    ratings = sort_ratings(read_ratings(data_dir / "u.data"))
    in_test = per_user_sample(
        ratings["user_id"].to_numpy(), holdout_fraction, np.random.default_rng(holdout_seed)
    )
    return ratings[~in_test].reset_index(drop=True), ratings[in_test].reset_index(drop=True)


def sort_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by (user_id, movie_id, timestamp): the order of every file we write."""
    return ratings.sort_values(
        ["user_id", "movie_id", "timestamp"], kind="stable", ignore_index=True
    )


def per_user_sample(users: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask picking round(fraction * n) random rows of each user, at least 1 (when fraction > 0)
    and at most n - 1, so every user keeps a row outside the sample.

    ``users`` must be grouped (rows of one user contiguous); the result depends only on the rows'
    order and ``rng``.
    """
    if len(users) == 0:
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    take = np.clip(np.rint(sizes * fraction), 1 if fraction > 0 else 0, sizes - 1).astype(int)
    group = np.repeat(np.arange(len(starts)), sizes)
    # Rank rows within their user by a random key; the lowest `take` ranks are picked.
    order = np.lexsort((rng.random(len(users)), group))
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - np.repeat(starts, sizes)
    picked: np.ndarray = rank < take[group]
    return picked
