"""The movie catalogue: ids, titles, years and genres, as shown to users and used for item rows.

Pure Python + numpy (no pandas) so the gateway can read it quickly. Row ``i`` of every item array
belongs to movie ``movie_ids[i]``; ids are sorted ascending.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write

GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
HEADER = ("movie_id", "title", "year", "genres")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


def title_year(title: str) -> int | None:
    """The year of the title's trailing ``(YYYY)`` ("Kolya (Kolja) (1996)" -> 1996); else None."""
    match = _TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def movie_year(title: str, fallback: int | None) -> int | None:
    """A movie's year: the title's ``(YYYY)`` when present, else ``fallback`` (e.g. the release
    date's year, which in u.item is sometimes a re-release: "Return of the Jedi (1983)" is dated
    1997)."""
    year = title_year(title)
    return fallback if year is None else year


@dataclass(frozen=True, eq=False)
class Catalogue:
    movie_ids: np.ndarray
    titles: tuple[str, ...]
    years: tuple[int | None, ...]
    genres: tuple[tuple[str, ...], ...]
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.movie_ids, dtype=np.int64)
        if not (len(ids) == len(self.titles) == len(self.years) == len(self.genres)):
            raise ValueError("catalogue columns differ in length")
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError("catalogue movie_ids must be unique and sorted ascending")
        object.__setattr__(self, "movie_ids", ids)
        object.__setattr__(self, "_index", {int(m): i for i, m in enumerate(ids)})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalogue) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __len__(self) -> int:
        return len(self.movie_ids)

    def index_of(self, movie_id: int) -> int:
        """Row of ``movie_id``; KeyError if the catalogue does not hold it."""
        return self._index[int(movie_id)]

    def __contains__(self, movie_id: object) -> bool:
        return isinstance(movie_id, int | np.integer) and int(movie_id) in self._index

    def to_csv_bytes(self) -> bytes:
        """The canonical items.csv bytes (UTF-8, LF line ends)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEADER)
        for movie_id, title, year, genres in zip(
            self.movie_ids, self.titles, self.years, self.genres, strict=True
        ):
            writer.writerow((int(movie_id), title, "" if year is None else year, "|".join(genres)))
        return buffer.getvalue().encode("utf-8")

    @cached_property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the canonical items.csv bytes: identifies the item rows."""
        return "sha256:" + hashlib.sha256(self.to_csv_bytes()).hexdigest()


def write_catalogue_csv(catalogue: Catalogue, path: Path) -> None:
    """Write items.csv atomically (temp file in the same folder, then rename)."""
    atomic_write(Path(path), catalogue.to_csv_bytes())


def read_catalogue_csv(path: Path) -> Catalogue:
    """Read an items.csv written by :func:`write_catalogue_csv`; FedrecError names file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read catalogue: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FedrecError(f"{path}: catalogue is not UTF-8 ({exc.reason})") from exc
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(header) != HEADER:
        raise FedrecError(f"{path}: line 1: expected header {','.join(HEADER)}, got {header}")
    ids: list[int] = []
    titles: list[str] = []
    years: list[int | None] = []
    genres: list[tuple[str, ...]] = []
    for line_no, row in enumerate(rows, start=2):
        if len(row) != len(HEADER):
            raise FedrecError(f"{path}: line {line_no}: expected 4 fields, got {len(row)}")
        try:
            ids.append(int(row[0]))
            years.append(int(row[2]) if row[2] else None)
        except ValueError as exc:
            raise FedrecError(f"{path}: line {line_no}: {exc}") from exc
        titles.append(row[1])
        genres.append(tuple(g for g in row[3].split("|") if g))
    try:
        return Catalogue(np.asarray(ids), tuple(titles), tuple(years), tuple(genres))
    except ValueError as exc:
        raise FedrecError(f"{path}: {exc}") from exc
