"""`fedrec partition site`: a site's own ratings into its own self-contained partition folder."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedrec_app.core.errors import FedrecError
from fedrec_app.data.catalogue import write_catalogue_csv
from fedrec_app.data.layout import PARTITION_MANIFEST
from fedrec_app.data.movielens import read_items, read_ratings
from fedrec_app.data.partition import load_partition
from fedrec_app.data.site import make_site_partition


@pytest.fixture
def catalogue(synthetic_ml: Path, tmp_path: Path) -> Path:
    path = tmp_path / "shared" / "items.csv"
    path.parent.mkdir()
    write_catalogue_csv(read_items(synthetic_ml), path)
    return path


@pytest.fixture
def ratings(synthetic_ml: Path, tmp_path: Path) -> Path:
    """One site's ratings: the first 400 lines of u.data (u.data style, tab-separated)."""
    lines = (synthetic_ml / "u.data").read_text().splitlines()[:400]
    path = tmp_path / "site" / "ratings.tsv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(frame: pd.DataFrame) -> Counter:
    return Counter(map(tuple, frame[["user_id", "movie_id", "rating", "timestamp"]].to_numpy()))


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_site_folder_holds_exactly_its_ratings(
    ratings: Path, catalogue: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data" / "fedrec"
    result = make_site_partition(ratings, catalogue, out, seed=3)
    assert not result.already_present
    part = load_partition(out)
    source = read_ratings(ratings)
    assert _rows(pd.concat([part.train, part.val, part.test])) == _rows(source)
    assert set(part.test["user_id"]) <= set(part.train["user_id"])
    assert 0.1 < len(part.test) / len(source) < 0.3
    assert (out / "items.csv").read_bytes() == catalogue.read_bytes()
    own = yaml.safe_load((out / PARTITION_MANIFEST).read_text())
    assert own["origin"] == {
        "kind": "site",
        "ratings": {"file": "ratings.tsv", "sha256": own["origin"]["ratings"]["sha256"]},
        "test": None,
        "test_fraction": 0.2,
        "seed": 3,
        "val_fraction": 0.05,
    }
    assert own["users"] == source["user_id"].nunique()
    assert own["catalogue"]["fingerprint"] == part.catalogue.fingerprint
    assert sorted(p.name for p in out.iterdir()) == [
        "items.csv",
        PARTITION_MANIFEST,
        "test.csv",
        "train.csv",
        "val.csv",
    ]
    _no_leftovers(out.parent)
    # same inputs: left alone; other options into the same folder: refused
    assert make_site_partition(ratings, catalogue, out, seed=3).already_present
    with pytest.raises(FedrecError, match="already holds a different partition folder"):
        make_site_partition(ratings, catalogue, out, seed=4)
    (out / "train.csv").write_text("user_id,movie_id,rating,timestamp\n")
    with pytest.raises(FedrecError, match=r"fails verification .*train\.csv"):
        make_site_partition(ratings, catalogue, out, seed=3)


def test_csv_and_tab_formats_give_the_same_folder(
    ratings: Path, catalogue: Path, tmp_path: Path
) -> None:
    frame = read_ratings(ratings)
    csv_path = tmp_path / "site" / "ratings.csv"
    csv_path.write_text(
        "user_id,movie_id,rating,timestamp\n"
        + "".join(f"{u},{m},{int(r)},{t}\n" for u, m, r, t in frame.itertuples(index=False))
    )
    make_site_partition(ratings, catalogue, tmp_path / "a", seed=1)
    make_site_partition(csv_path, catalogue, tmp_path / "b", seed=1)
    for name in ("train.csv", "val.csv", "test.csv", "items.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_own_test_file(ratings: Path, catalogue: Path, tmp_path: Path) -> None:
    lines = ratings.read_text().splitlines()
    train, test = tmp_path / "site" / "base.tsv", tmp_path / "site" / "test.tsv"
    train.write_text("\n".join(lines[:300]) + "\n")
    test.write_text("\n".join(lines[300:]) + "\n")
    make_site_partition(train, catalogue, tmp_path / "p", test=test, val_fraction=0.0)
    part = load_partition(tmp_path / "p")
    assert _rows(part.test) == _rows(read_ratings(test))
    assert _rows(part.train) == _rows(read_ratings(train)) and part.val.empty
    overlap = tmp_path / "site" / "overlap.tsv"
    overlap.write_text(lines[5] + "\n")
    with pytest.raises(FedrecError, match=r"overlap\.tsv: line 1: .* is also in .*base\.tsv"):
        make_site_partition(train, catalogue, tmp_path / "q", test=overlap)
    with pytest.raises(FedrecError, match="either --test or --test-fraction"):
        make_site_partition(train, catalogue, tmp_path / "q", test=test, test_fraction=0.1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1\t99999\t4\t881250949", r"line 3: movie_id 99999 is not in the catalogue .*items\.csv"),
        ("1\t1\t6\t881250949", r"line 3: rating 6 is not 1\.\.5"),
        ("1\t1\t0\t881250949", r"line 3: rating 0 is not 1\.\.5"),
        ("1\t1\t4", r"line 3: expected 4 tab-separated fields"),
        ("1\tx\t4\t881250949", r"line 3: movie_id 'x' is not an integer"),
    ],
)
def test_bad_tab_lines_are_named(catalogue: Path, tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "r.tsv"
    path.write_text(f"1\t2\t3\t881250949\n2\t3\t5\t881250950\n{line}\n")
    with pytest.raises(FedrecError, match=rf"r\.tsv: {message}"):
        make_site_partition(path, catalogue, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,movie,rating,time\n1,2,3,4\n", r"line 1: expected the header user_id,movie_id"),
        ("user_id,movie_id,rating,timestamp\n1,2,3,4\n1,2,7,5\n", r"line 3: rating 7 is not"),
        ("user_id,movie_id,rating,timestamp\n1,2,3,4\n1,2\n", r"line 3: expected 4 comma-sep"),
        ("user_id,movie_id,rating,timestamp\n1,2,3,4\n2,5,3.5,4\n", r"line 3: rating '3\.5' is"),
        (
            "user_id,movie_id,rating,timestamp\n1,2,3,4\n1,2,5,9\n",
            r"line 3: user_id 1 rates "
            r"movie_id 2 a second time",
        ),
        ("user_id,movie_id,rating,timestamp\n", r"no ratings"),
        ("user_id,movie_id,rating,timestamp\n1,2,3,4\n2,3,4,5\n", r"no test ratings"),
    ],
)
def test_bad_csv_is_named(catalogue: Path, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(FedrecError, match=rf"r\.csv: {message}"):
        make_site_partition(path, catalogue, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_missing_inputs_and_busy_out(ratings: Path, catalogue: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match=r"none\.tsv: cannot read"):
        make_site_partition(tmp_path / "none.tsv", catalogue, tmp_path / "out")
    with pytest.raises(FedrecError, match=r"none\.csv: cannot read catalogue"):
        make_site_partition(ratings, tmp_path / "none.csv", tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FedrecError, match="not a partition folder .* nothing overwritten"):
        make_site_partition(ratings, catalogue, busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    with pytest.raises(FedrecError, match="test fraction must lie strictly in 0..1"):
        make_site_partition(ratings, catalogue, tmp_path / "out", test_fraction=1.0)
    (tmp_path / "empty").mkdir()  # an empty folder is used
    make_site_partition(ratings, catalogue, tmp_path / "empty")
    load_partition(tmp_path / "empty")


def test_cli_partition_site(ratings: Path, catalogue: Path, tmp_path: Path) -> None:
    def fedrec(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedrec_app", *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    out = tmp_path / "data" / "fedrec"
    args = ["partition", "site", "--ratings", ratings, "--catalogue", catalogue, "--out", out]
    made = fedrec(*args, "--test-fraction", "0.25", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert f"{out}: " in made.stdout and "with test" in made.stdout
    assert yaml.safe_load((out / PARTITION_MANIFEST).read_text())["origin"]["test_fraction"] == 0.25
    again = fedrec(*args, "--test-fraction", "0.25", "--seed", "2")
    assert "already there and verifies" in again.stdout
    bad = fedrec(
        "partition",
        "site",
        "--ratings",
        catalogue,
        "--catalogue",
        catalogue,
        "--out",
        tmp_path / "x",
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "items.csv: line 1: expected the header user_id,movie_id" in bad.stderr
    both = fedrec(*args, "--test", ratings, "--test-fraction", "0.1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    demo = fedrec("partition", "--data", tmp_path)
    assert demo.returncode == 2 and "required: --num-partitions, --out" in demo.stderr
