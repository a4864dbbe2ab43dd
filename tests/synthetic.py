"""A small synthetic data set in the MovieLens 100k format, made by the tests.

Ratings follow a latent-factor model with user and item biases (so a model can beat the global
mean); item genres follow the items' dominant latent factor (so users have genre tastes). The
files are laid out and split the way GroupLens's ``mku.sh`` and ``allbut.pl`` do it:

- ``u.data``: ``user\\titem\\trating\\ttimestamp``, in an order loosely grouped by user (like the
  real file, where ``u1.test`` only covers the lowest user ids);
- ``u1..u5``: five consecutive chunks of ``u.data`` as test sets, the rest as base, each sorted by
  (user, item);
- ``ua``/``ub``: the 1st-10th / 11th-20th rating of each user (in ``u.data`` order) as test;
- ``u.item``: latin-1, 24 pipe-separated fields; one non-ASCII title and one ``unknown`` movie
  with no release date, as in the real file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

GENRE_NAMES = (
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
OCCUPATIONS = ("administrator", "artist", "engineer", "student", "writer", "other")
SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
NON_ASCII_TITLE = "Café Éternité (1994)"  # encodable in latin-1, not in ASCII
UNKNOWN_ITEM = 2  # movie id of the "unknown" title with an empty release date
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def make_synthetic_movielens(
    folder: Path,
    *,
    n_users: int = 60,
    n_items: int = 120,
    ratings_per_user: int | tuple[int, int] = (20, 45),
    seed: int = 0,
    n_factors: int = 3,
) -> Path:
    """Write a MovieLens-100k-format folder (u.data, u.item, u.genre, splits, …) to ``folder``.

    ``ratings_per_user`` is a count or an inclusive (min, max) range. Returns ``folder``.
    """
    lo, hi = (
        (ratings_per_user, ratings_per_user)
        if isinstance(ratings_per_user, int)
        else ratings_per_user
    )
    if not 1 <= lo <= hi <= n_items:
        raise ValueError(f"ratings_per_user {ratings_per_user} must lie in 1..n_items={n_items}")
    if n_items < 3 or n_users < 1:
        raise ValueError("need at least 1 user and 3 items")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    user_f = rng.normal(0.0, 0.9, (n_users, n_factors))
    item_f = rng.normal(0.0, 0.9, (n_items, n_factors))
    user_b = rng.normal(0.0, 0.4, n_users)
    item_b = rng.normal(0.0, 0.5, n_items)
    popularity = rng.zipf(1.6, n_items).astype(float) + rng.uniform(0.0, 1.0, n_items)
    popularity /= popularity.sum()

    rows = []
    for u in range(n_users):
        count = int(rng.integers(lo, hi + 1))
        items = rng.choice(n_items, size=count, replace=False, p=popularity)
        score = 3.5 + user_b[u] + item_b[items] + item_f[items] @ user_f[u]
        rating = np.clip(np.rint(score + rng.normal(0.0, 0.35, count)), 1, 5).astype(int)
        start = int(rng.integers(874_724_710, 890_000_000))
        stamps = start + np.sort(rng.integers(0, 3_000_000, count))
        rows.extend(zip([u + 1] * count, items + 1, rating, stamps, strict=True))
    data = np.array(rows, dtype=np.int64)
    # Loosely grouped by user, like the real u.data: chunk i of the file covers mostly one id range.
    order = np.argsort(data[:, 0] / n_users + rng.uniform(0.0, 0.5, len(data)), kind="stable")
    data = data[order]

    _write_ratings(folder / "u.data", data)
    _write_splits(folder, data)
    _write_items(folder / "u.item", item_f, rng)
    (folder / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(GENRE_NAMES)) + "\n", encoding="latin-1"
    )
    (folder / "u.info").write_text(f"{n_users} users\n{n_items} items\n{len(data)} ratings\n")
    (folder / "u.occupation").write_text("".join(f"{o}\n" for o in OCCUPATIONS))
    (folder / "u.user").write_text(
        "".join(
            f"{u}|{rng.integers(16, 70)}|{'MF'[u % 2]}|{OCCUPATIONS[u % len(OCCUPATIONS)]}"
            f"|{rng.integers(10000, 99999)}\n"
            for u in range(1, n_users + 1)
        )
    )
    (folder / "README").write_text("Synthetic MovieLens-format data made by the fedrec tests.\n")
    return folder


def zip_movielens(folder: Path, zip_path: Path) -> Path:
    """Pack ``folder``'s files into ``zip_path`` under a top folder ``ml-100k/`` (official layout).

    The bytes depend only on the files (fixed timestamps), so the md5 is stable.
    """
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("ml-100k/", _FIXED_ZIP_TIME), b"")
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                info = zipfile.ZipInfo(f"ml-100k/{path.name}", _FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return zip_path


def _write_ratings(path: Path, data: np.ndarray) -> None:
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.tolist()))


def _sorted(data: np.ndarray) -> np.ndarray:
    return data[np.lexsort((data[:, 1], data[:, 0]))]


def _write_splits(folder: Path, data: np.ndarray) -> None:
    bounds = np.linspace(0, len(data), 6).astype(int)
    for k in range(5):
        in_test = np.zeros(len(data), dtype=bool)
        in_test[bounds[k] : bounds[k + 1]] = True
        _write_ratings(folder / f"u{k + 1}.test", _sorted(data[in_test]))
        _write_ratings(folder / f"u{k + 1}.base", _sorted(data[~in_test]))
    seen: dict[int, int] = {}
    nth = np.empty(len(data), dtype=int)
    for row, user in enumerate(data[:, 0].tolist()):
        seen[user] = seen.get(user, 0) + 1
        nth[row] = seen[user]
    for name, first, last in (("ua", 1, 10), ("ub", 11, 20)):
        in_test = (nth >= first) & (nth <= last)
        _write_ratings(folder / f"{name}.test", _sorted(data[in_test]))
        _write_ratings(folder / f"{name}.base", _sorted(data[~in_test]))


def _write_items(path: Path, item_f: np.ndarray, rng: np.random.Generator) -> None:
    lines = []
    n_factors = item_f.shape[1]
    for i in range(len(item_f)):
        movie_id = i + 1
        flags = [0] * len(GENRE_NAMES)
        if movie_id == UNKNOWN_ITEM:
            title, date = "unknown", ""
            flags[0] = 1
        else:
            year = int(rng.integers(1930, 1998))
            title = NON_ASCII_TITLE if movie_id == 1 else f"Movie {movie_id} ({year})"
            if movie_id == 1:
                year = 1994
            date = f"{int(rng.integers(1, 29)):02d}-{_MONTHS[int(rng.integers(12))]}-{year}"
            # Genre follows the dominant latent factor (factor f -> genres 1+f, 1+f+n, …).
            top = int(np.argmax(item_f[i]))
            flags[1 + top] = 1
            if rng.random() < 0.4:
                flags[1 + n_factors + int(rng.integers(len(GENRE_NAMES) - 1 - n_factors))] = 1
        url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}" if date else ""
        fields = [str(movie_id), title, date, "", url, *map(str, flags)]
        lines.append("|".join(fields) + "\n")
    path.write_bytes("".join(lines).encode("latin-1"))
