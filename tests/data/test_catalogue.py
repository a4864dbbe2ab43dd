from pathlib import Path

import numpy as np
import pytest

from fedrec_app.core.errors import FedrecError
from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv, write_catalogue_csv


def _catalogue() -> Catalogue:
    return Catalogue(
        np.array([1, 2, 5]),
        ("Toy Story (1995)", 'Café, "quoted" (1996)', "unknown"),
        (1995, 1996, None),
        (("Animation", "Comedy"), ("Drama",), ()),
    )


def test_round_trip_keeps_every_field_and_fingerprint(tmp_path: Path) -> None:
    catalogue = _catalogue()
    write_catalogue_csv(catalogue, tmp_path / "items.csv")
    again = read_catalogue_csv(tmp_path / "items.csv")
    assert again.titles == catalogue.titles
    assert again.years == catalogue.years
    assert again.genres == catalogue.genres
    assert again.movie_ids.tolist() == [1, 2, 5]
    assert again.fingerprint == catalogue.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["items.csv"]  # no temp file left


def test_index_and_membership() -> None:
    catalogue = _catalogue()
    assert catalogue.index_of(5) == 2
    assert 2 in catalogue and 3 not in catalogue and "2" not in catalogue
    with pytest.raises(KeyError):
        catalogue.index_of(3)


def test_fingerprint_changes_with_any_title() -> None:
    other = Catalogue(np.array([1, 2, 5]), ("x", "y", "z"), (None,) * 3, ((),) * 3)
    assert other.fingerprint != _catalogue().fingerprint


def test_unsorted_ids_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Catalogue(np.array([2, 1]), ("a", "b"), (None, None), ((), ()))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,title\n", "line 1: expected header"),
        ("movie_id,title,year,genres\n1,A,1995\n", "line 2: expected 4 fields"),
        ("movie_id,title,year,genres\nx,A,1995,\n", "line 2"),
        ("movie_id,title,year,genres\n2,A,,\n1,B,,\n", "sorted"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "items.csv"
    path.write_text(content)
    with pytest.raises(FedrecError, match=message) as info:
        read_catalogue_csv(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="cannot read catalogue"):
        read_catalogue_csv(tmp_path / "nope.csv")
