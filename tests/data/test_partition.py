"""Partition sets: the contract's properties, determinism, refusals, and the verified loader."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fedrec_app.core.errors import FedrecError
from fedrec_app.data.catalogue import read_catalogue_csv
from fedrec_app.data.movielens import read_items, read_split
from fedrec_app.data.partition import (
    PART_FILES,
    PARTITION_MANIFEST,
    load_partition,
    load_partition_set_member,
    make_partitions,
    verify_partition_set,
)


def _rows(frame: pd.DataFrame) -> Counter:
    return Counter(
        zip(
            frame["user_id"].tolist(),
            frame["movie_id"].tolist(),
            frame["rating"].tolist(),
            frame["timestamp"].tolist(),
            strict=True,
        )
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_partition_contract(data_dir: Path, set_dir: Path, split: str, k: int) -> None:
    """Users disjoint; train+val == source train and test == source test, exactly; every
    partition has test users; counts match the manifest; val users have training ratings."""
    source_train, source_test = read_split(data_dir, split)
    parts = [load_partition_set_member(set_dir, i) for i in range(k)]
    manifest = yaml.safe_load((set_dir / PARTITION_MANIFEST).read_text())
    seen: set[int] = set()
    train_all, test_all = Counter(), Counter()
    for part, entry in zip(parts, manifest["partitions"], strict=True):
        users = set(part.train["user_id"]) | set(part.val["user_id"]) | set(part.test["user_id"])
        assert not users & seen
        seen |= users
        assert part.test["user_id"].nunique() > 0
        assert set(part.val["user_id"]) <= set(part.train["user_id"])
        assert entry["users"] == len(users)
        for name, frame in zip(PART_FILES, (part.train, part.val, part.test), strict=True):
            assert entry["files"][name]["rows"] == len(frame)
        train_all += _rows(part.train) + _rows(part.val)
        test_all += _rows(part.test)
        assert part.catalogue == read_items(data_dir)
    assert train_all == _rows(source_train)
    assert test_all == _rows(source_test)
    assert manifest["totals"]["users"] == len(seen)


@pytest.mark.parametrize(
    ("scheme", "split", "k"),
    [
        ("random", "u1", 5),
        ("random", "ub", 3),
        ("random", "holdout", 4),
        ("activity", "u2", 4),
        ("genre", "u5", 6),
        ("genre", "ua", 1),
    ],
)
def test_partition_contract(
    synthetic_ml: Path, tmp_path: Path, scheme: str, split: str, k: int
) -> None:
    out = tmp_path / "set"
    result = make_partitions(synthetic_ml, out, k, scheme=scheme, split=split, seed=3)
    assert not result.already_present
    assert_partition_contract(synthetic_ml, out, split, k)
    assert read_catalogue_csv(out / "items.csv") == read_items(synthetic_ml)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp folder left


def test_same_seed_byte_identical_other_seed_differs(synthetic_ml: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        make_partitions(synthetic_ml, tmp_path / name, 4, split="u3", seed=seed)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_rerun_same_out_reports_present(synthetic_ml: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    make_partitions(synthetic_ml, out, 3, seed=1)
    before = _files(out)
    assert make_partitions(synthetic_ml, out, 3, seed=1).already_present
    assert _files(out) == before


def test_conflicting_out_folder(synthetic_ml: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    make_partitions(synthetic_ml, out, 3, seed=1)
    before = _files(out)
    with pytest.raises(FedrecError, match="already holds a different partition set.*seed: 1"):
        make_partitions(synthetic_ml, out, 3, seed=2)
    with pytest.raises(FedrecError, match="num_partitions: 3 there, 4 now"):
        make_partitions(synthetic_ml, out, 4, seed=1)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_out_folder_with_other_content(synthetic_ml: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FedrecError, match="not a partition set"):
        make_partitions(synthetic_ml, out, 3)
    assert _files(out) == {"notes.txt": b"mine"}


def test_empty_out_folder_is_used(synthetic_ml: Path, tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    make_partitions(synthetic_ml, tmp_path / "set", 2)
    verify_partition_set(tmp_path / "set")


def test_existing_set_that_fails_verification(synthetic_ml: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    make_partitions(synthetic_ml, out, 3, seed=1)
    (out / "partition-1" / "val.csv").unlink()
    with pytest.raises(FedrecError, match=r"fails verification .*partition-1/val\.csv: missing"):
        make_partitions(synthetic_ml, out, 3, seed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 61}, "61 partitions but split u1 has only 60 users"),
        ({"num_partitions": 0}, "must be >= 1"),
        ({"num_partitions": 2, "scheme": "zipf"}, "unknown scheme 'zipf'"),
        ({"num_partitions": 2, "alpha": 0.3}, "--alpha applies only to --scheme genre"),
        ({"num_partitions": 2, "scheme": "genre", "alpha": 0.0}, "alpha must be > 0"),
        ({"num_partitions": 2, "split": "u6"}, "unknown split 'u6'"),
        ({"num_partitions": 2, "val_fraction": 0.9}, "validation fraction"),
    ],
)
def test_bad_parameters(synthetic_ml: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    k = kwargs.pop("num_partitions")
    with pytest.raises(FedrecError, match=message):
        make_partitions(synthetic_ml, tmp_path / "set", k, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_more_partitions_than_test_users(synthetic_ml: Path, tmp_path: Path) -> None:
    test_users = read_split(synthetic_ml, "u1")[1]["user_id"].nunique()
    with pytest.raises(FedrecError, match=f"only {test_users} users of split u1 have test"):
        make_partitions(synthetic_ml, tmp_path / "set", test_users + 1)


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="data folder .* not found"):
        make_partitions(tmp_path / "nowhere", tmp_path / "set", 2)


def test_rating_of_unknown_movie(ml_copy: Path, tmp_path: Path) -> None:
    path = ml_copy / "u1.test"
    lines = path.read_text().splitlines(keepends=True)
    user, _, rating, stamp = lines[0].split("\t")
    lines[0] = f"{user}\t9999\t{rating}\t{stamp}"
    path.write_text("".join(lines))
    with pytest.raises(FedrecError, match=r"u1\.test: movie_id 9999 is not in u\.item"):
        make_partitions(ml_copy, tmp_path / "set", 2)


def test_activity_scheme_orders_by_activity(synthetic_ml: Path, tmp_path: Path) -> None:
    make_partitions(synthetic_ml, tmp_path / "set", 3, scheme="activity", split="u4")
    means = []
    for i in range(3):
        part = load_partition_set_member(tmp_path / "set", i)
        ratings = pd.concat([part.train, part.val])
        means.append(ratings.groupby("user_id").size().mean())
    assert means == sorted(means) and means[0] < means[-1]


def test_genre_scheme_is_non_iid(synthetic_ml: Path, tmp_path: Path) -> None:
    """With a small alpha, partitions differ in genre mix more than random ones do."""

    def spread(scheme: str, **kwargs: float) -> float:
        out = tmp_path / scheme
        make_partitions(synthetic_ml, out, 3, scheme=scheme, seed=5, **kwargs)
        catalogue = read_items(synthetic_ml)
        shares = []
        for i in range(3):
            part = load_partition_set_member(out, i)
            genres = Counter(
                g for m in part.train["movie_id"] for g in catalogue.genres[catalogue.index_of(m)]
            )
            total = sum(genres.values())
            shares.append([genres[g] / total for g in ("Action", "Adventure", "Animation")])
        return float(np.std(shares, axis=0).sum())

    assert spread("genre", alpha=0.1) > spread("random")


# ----------------------------------------------------------------------------- the loader


@pytest.fixture
def set_dir(synthetic_ml: Path, tmp_path: Path) -> Path:
    out = tmp_path / "set"
    make_partitions(synthetic_ml, out, 3, split="u1", seed=9)
    return out


def test_load_partition(set_dir: Path) -> None:
    part = load_partition(set_dir / "partition-2")
    assert part.index == 2
    assert part.folder == (set_dir / "partition-2").resolve()
    for frame in (part.train, part.val, part.test):
        assert list(frame.columns) == ["user_id", "movie_id", "rating", "timestamp"]
        assert [str(t) for t in frame.dtypes] == ["int64", "int64", "float32", "int64"]
    with pytest.raises(FedrecError, match="partition 3 out of range"):
        load_partition_set_member(set_dir, 3)


@pytest.mark.parametrize("name", ["train.csv", "val.csv", "test.csv", "items.csv"])
def test_load_detects_missing_file(set_dir: Path, name: str) -> None:
    path = set_dir / "partition-1" / name
    path.unlink()
    with pytest.raises(FedrecError, match=f"{path.name}: missing"):
        load_partition(set_dir / "partition-1")


@pytest.mark.parametrize("name", ["train.csv", "test.csv", "items.csv"])
def test_load_detects_truncated_file(set_dir: Path, name: str) -> None:
    path = set_dir / "partition-1" / name
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(FedrecError, match=f"{path.name}: .* bytes, the manifest says"):
        load_partition(set_dir / "partition-1")


@pytest.mark.parametrize("name", ["train.csv", "val.csv", "items.csv"])
def test_load_detects_altered_file(set_dir: Path, name: str) -> None:
    path = set_dir / "partition-0" / name
    data = bytearray(path.read_bytes())
    digit = data.index(b"3", len(data) // 2)  # same size, different content
    data[digit] = ord("4")
    path.write_bytes(bytes(data))
    with pytest.raises(
        FedrecError, match=f"{path.name}: sha256 does not match the partition manifest"
    ):
        load_partition(set_dir / "partition-0")


def test_each_partition_folder_is_self_contained(set_dir: Path, tmp_path: Path) -> None:
    """A partition folder moved away from its set loads alone; its own manifest lists only its
    own files and counts, and pins the catalogue by the sha256 of its items.csv."""
    whole = yaml.safe_load((set_dir / PARTITION_MANIFEST).read_text())
    alone = tmp_path / "site-host" / "data"
    alone.parent.mkdir()
    (set_dir / "partition-1").rename(alone)
    part = load_partition(alone)
    own = yaml.safe_load((alone / PARTITION_MANIFEST).read_text())
    assert sorted(p.name for p in alone.iterdir()) == [
        "items.csv",
        PARTITION_MANIFEST,
        *sorted(PART_FILES),
    ]
    assert own["index"] == part.index == 1
    assert own["catalogue"]["fingerprint"] == part.catalogue.fingerprint
    assert own["catalogue"]["fingerprint"] == "sha256:" + own["files"]["items.csv"]["sha256"]
    assert own["files"]["items.csv"] == whole["files"]["items.csv"]
    entry = whole["partitions"][1]
    assert own["users"] == entry["users"] and own["test_users"] == entry["test_users"]
    assert {k: own["files"][k] for k in PART_FILES} == entry["files"]
    text = (alone / PARTITION_MANIFEST).read_text()
    assert "partitions" not in own and "totals" not in own
    for other in (whole["partitions"][0], whole["partitions"][2]):
        assert other["files"]["train.csv"]["sha256"] not in text
    assert own["origin"]["kind"] == "split" and own["origin"]["num_partitions"] == 3


def test_load_detects_missing_manifest_and_stray_folder(set_dir: Path) -> None:
    (set_dir / "partition-7").mkdir()
    with pytest.raises(FedrecError, match="partition-7/manifest.yaml: missing: not a partition"):
        load_partition(set_dir / "partition-7")
    (set_dir / PARTITION_MANIFEST).unlink()  # the set's manifest: a node does not need it
    load_partition(set_dir / "partition-0")
    (set_dir / "partition-0" / PARTITION_MANIFEST).unlink()
    with pytest.raises(FedrecError, match="partition-0/manifest.yaml: missing"):
        load_partition(set_dir / "partition-0")
    with pytest.raises(FedrecError, match="partition folder .* not found"):
        load_partition(set_dir / "partition-9")


def test_old_layout_is_refused_naming_the_missing_manifest(set_dir: Path) -> None:
    """A set made before partitions carried their own manifest: a clear error, and the demo
    command refuses to call it present."""
    (set_dir / "partition-0" / PARTITION_MANIFEST).unlink()
    with pytest.raises(FedrecError, match=r"partition-0/manifest\.yaml: missing.*remake it"):
        load_partition(set_dir / "partition-0")
    with pytest.raises(FedrecError, match=r"partition-0/manifest\.yaml: missing"):
        verify_partition_set(set_dir)


def test_manifest_whose_catalogue_is_not_its_items_is_refused(set_dir: Path) -> None:
    path = set_dir / "partition-0" / PARTITION_MANIFEST
    own = yaml.safe_load(path.read_text())
    own["catalogue"]["fingerprint"] = "sha256:" + "0" * 64
    path.write_text(yaml.safe_dump(own))
    with pytest.raises(FedrecError, match="catalogue.fingerprint .* is not the sha256 of items"):
        load_partition(set_dir / "partition-0")


def test_real_u1_five_partitions(ml100k_dir: Path, tmp_path: Path) -> None:
    """The issue's acceptance run: u1, 5 partitions, seed 7; exact union, byte-identical rerun."""
    for name in ("a", "b"):
        make_partitions(ml100k_dir, tmp_path / name, 5, split="u1", seed=7)
    assert_partition_contract(ml100k_dir, tmp_path / "a", "u1", 5)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
