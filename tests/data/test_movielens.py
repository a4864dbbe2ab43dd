"""Readers and the folder check, on synthetic data (and the real copy when present)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from synthetic import NON_ASCII_TITLE, UNKNOWN_ITEM

from fedrec_app.core.errors import FedrecError
from fedrec_app.data.catalogue import GENRES, movie_year, title_year
from fedrec_app.data.movielens import (
    SPLITS,
    read_items,
    read_ratings,
    read_split,
    verify_movielens_folder,
)


def _rows(path: Path) -> list[tuple[int, ...]]:
    """Independent parse of a ratings file (numpy), for comparisons."""
    return [tuple(r) for r in np.loadtxt(path, dtype=np.int64, ndmin=2).tolist()]


def _frame_rows(frame) -> list[tuple[int, ...]]:
    return list(
        zip(
            frame["user_id"].tolist(),
            frame["movie_id"].tolist(),
            frame["rating"].astype(int).tolist(),
            frame["timestamp"].tolist(),
            strict=True,
        )
    )


def test_read_ratings_matches_file(synthetic_ml: Path) -> None:
    frame = read_ratings(synthetic_ml / "u.data")
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "user_id": "int64",
        "movie_id": "int64",
        "rating": "float32",
        "timestamp": "int64",
    }
    assert _frame_rows(frame) == _rows(synthetic_ml / "u.data")


def test_read_items_latin1_years_genres(synthetic_ml: Path) -> None:
    catalogue = read_items(synthetic_ml)
    lines = (synthetic_ml / "u.item").read_bytes().decode("latin-1").splitlines()
    assert len(catalogue) == len(lines)
    assert NON_ASCII_TITLE in catalogue.titles
    row = catalogue.index_of(UNKNOWN_ITEM)
    assert (catalogue.titles[row], catalogue.years[row]) == ("unknown", None)
    for line in lines:
        fields = line.split("|")
        i = catalogue.index_of(int(fields[0]))
        if fields[2]:
            assert catalogue.years[i] == int(fields[2][-4:])
        assert catalogue.genres[i] == tuple(
            g for g, flag in zip(GENRES, fields[5:], strict=True) if flag == "1"
        )


def test_read_items_real(ml100k_dir: Path) -> None:
    catalogue = read_items(ml100k_dir)
    assert len(catalogue) == 1682
    toy = catalogue.index_of(1)
    assert catalogue.titles[toy] == "Toy Story (1995)"
    assert catalogue.years[toy] == 1995
    jedi = catalogue.index_of(181)  # u.item dates it 14-Mar-1997 (a re-release)
    assert (catalogue.titles[jedi], catalogue.years[jedi]) == ("Return of the Jedi (1983)", 1983)
    assert catalogue.genres[toy] == ("Animation", "Children's", "Comedy")
    assert any("é" in title for title in catalogue.titles)  # latin-1 decoded


@pytest.mark.parametrize("split", SPLITS)
def test_canonical_split_union_is_u_data(synthetic_ml: Path, split: str) -> None:
    train, test = read_split(synthetic_ml, split)
    assert len(test) > 0
    assert Counter(_frame_rows(train) + _frame_rows(test)) == Counter(
        _rows(synthetic_ml / "u.data")
    )


def test_real_u1_sizes(ml100k_dir: Path) -> None:
    train, test = read_split(ml100k_dir, "u1")
    assert (len(train), len(test)) == (80000, 20000)
    assert verify_movielens_folder(ml100k_dir).ratings == 100000


def test_holdout_split(synthetic_ml: Path) -> None:
    train, test = read_split(synthetic_ml, "holdout")
    assert Counter(_frame_rows(train) + _frame_rows(test)) == Counter(
        _rows(synthetic_ml / "u.data")
    )
    per_user = test.groupby("user_id").size()
    assert set(per_user.index) == set(train["user_id"])  # every user has a held-out rating
    again_train, again_test = read_split(synthetic_ml, "holdout")
    assert _frame_rows(again_test) == _frame_rows(test)
    other = read_split(synthetic_ml, "holdout", holdout_seed=1)[1]
    assert _frame_rows(other) != _frame_rows(test)


def test_unknown_split(synthetic_ml: Path) -> None:
    with pytest.raises(FedrecError, match="unknown split 'u9'"):
        read_split(synthetic_ml, "u9")


def _replace_line(path: Path, line_no: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"1\t2\t3", "expected 4 tab-separated fields"),
        (b"1\tx\t3\t881250949", "movie_id 'x' is not an integer"),
        (b"1\t2\t7\t881250949", "rating 7 is not 1..5"),
        (b"0\t2\t3\t881250949", "user_id 0 is not >= 1"),
        (b"1\t2\t3\t88125\xe90949", "non-ASCII byte"),
        (b"", "expected 4 tab-separated fields"),
    ],
)
def test_malformed_ratings_line(ml_copy: Path, line: bytes, problem: str) -> None:
    path = ml_copy / "u1.base"
    _replace_line(path, 17, line)
    with pytest.raises(FedrecError) as info:
        read_ratings(path)
    assert str(path) in str(info.value)
    assert "line 17:" in str(info.value)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f[:10], "expected 24 '|'-separated fields, got 10"),
        (lambda f: [f[0], f[1], "1995-01-01", *f[3:]], "release date '1995-01-01'"),
        (lambda f: [*f[:5], "2", *f[6:]], "genre flags must be 0 or 1"),
        (lambda f: ["seven", *f[1:]], "movie id 'seven' is not an integer"),
    ],
)
def test_malformed_item_line(ml_copy: Path, change, problem: str) -> None:
    path = ml_copy / "u.item"
    lines = path.read_bytes().decode("latin-1").split("\n")
    lines[4] = "|".join(change(lines[4].split("|")))
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(FedrecError, match=r"u\.item: line 5: ") as info:
        read_items(ml_copy)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Return of the Jedi (1983)", 1983),
        ("Shall We Dance? (1996)", 1996),
        ("Shall We Dance? (1937)", 1937),
        ("Kolya (Kolja) (1996)", 1996),
        ("Nosferatu (Nosferatu, eine Symphonie des Grauens) (1922)", 1922),
        ("Kolya (Kolja)", None),
        ("Good Will Hunting", None),
        ("1-900 (1994) The Sequel", None),
        ("Movie (96)", None),
        ("unknown", None),
        ("", None),
    ],
)
def test_title_year(title: str, year: int | None) -> None:
    assert title_year(title) == year
    assert movie_year(title, 1997) == (1997 if year is None else year)
    assert movie_year(title, None) == year


@pytest.mark.parametrize(
    ("title", "date", "year"),
    [
        ("Return of the Jedi (1983)", "14-Mar-1997", 1983),  # re-release date: the title wins
        ("Kolya (Kolja) (1996)", "24-Jan-1997", 1996),
        ("Kolya (Kolja)", "24-Jan-1997", 1997),  # no year in the title: the release date's
        ("Shall We Dance? (1996)", "", 1996),
        ("unknown", "", None),
    ],
)
def test_read_items_year_from_title(ml_copy: Path, title: str, date: str, year: int | None) -> None:
    path = ml_copy / "u.item"
    lines = path.read_bytes().decode("latin-1").split("\n")
    fields = lines[4].split("|")
    lines[4] = "|".join([fields[0], title, date, *fields[3:]])
    path.write_bytes("\n".join(lines).encode("latin-1"))
    catalogue = read_items(ml_copy)
    row = catalogue.index_of(int(fields[0]))
    assert (catalogue.titles[row], catalogue.years[row]) == (title, year)


def test_wrong_genre_file(ml_copy: Path) -> None:
    _replace_line(ml_copy / "u.genre", 3, b"Adventures|2")
    with pytest.raises(FedrecError, match=r"u\.genre: line 3: expected 'Adventure\|2'"):
        read_items(ml_copy)


def test_folder_check_counts(synthetic_ml: Path) -> None:
    counts = verify_movielens_folder(synthetic_ml)
    info = (synthetic_ml / "u.info").read_text().split()
    assert (counts.users, counts.items, counts.ratings) == (
        int(info[0]),
        int(info[2]),
        int(info[4]),
    )


def test_folder_check_missing_file(ml_copy: Path) -> None:
    (ml_copy / "u3.test").unlink()
    with pytest.raises(FedrecError, match=r"incomplete data folder, missing u3\.test"):
        verify_movielens_folder(ml_copy)


def test_folder_check_truncated_split(ml_copy: Path) -> None:
    path = ml_copy / "ua.base"
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])  # one line fewer
    with pytest.raises(FedrecError, match=r"ua\.base \+ ua\.test hold"):
        verify_movielens_folder(ml_copy)


def test_folder_check_cut_mid_line(ml_copy: Path) -> None:
    path = ml_copy / "u.data"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(FedrecError, match=r"u\.data: last line is cut off"):
        verify_movielens_folder(ml_copy)


def test_folder_check_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="not found"):
        verify_movielens_folder(tmp_path / "nowhere")
