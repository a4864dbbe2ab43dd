"""`fedrec data download` and `fedrec partition` as a user runs them: real subprocesses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest


def fedrec(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_download_then_partition(synthetic_zip: Path, tmp_path: Path) -> None:
    md5 = hashlib.md5(synthetic_zip.read_bytes()).hexdigest()
    first = fedrec(
        "data", "download", "--zip", synthetic_zip, "--md5", md5, "--data", "data", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert "ready" in first.stdout
    # --dest is --data's old name: still accepted, with a note
    again = fedrec(
        "data", "download", "--zip", synthetic_zip, "--md5", md5, "--dest", "data", cwd=tmp_path
    )
    assert again.returncode == 0
    assert "already present and valid" in again.stdout
    assert "--dest is deprecated; use --data" in again.stderr

    args = [
        "partition",
        "--data",
        "data",
        "--num-partitions",
        "3",
        "--seed",
        "4",
        "--out",
        "partitions/s3",
    ]
    made = fedrec(*args, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("partition-") == 3
    assert (tmp_path / "partitions/s3/partition-2/test.csv").is_file()
    assert "already there" in fedrec(*args, cwd=tmp_path).stdout
    other = fedrec(*args[:6], "9", "--out", "partitions/s3", cwd=tmp_path)
    assert_user_error(other, "already holds a different partition set")


def test_download_wrong_md5(synthetic_zip: Path, tmp_path: Path) -> None:
    result = fedrec("data", "download", "--zip", synthetic_zip, "--data", tmp_path / "d")
    assert_user_error(result, "fedrec data: error:", "does not match the expected")
    assert not (tmp_path / "d").exists()


def test_download_offline_names_zip(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/ml-100k.zip"  # nothing listens on port 1: as offline
    result = fedrec("data", "download", "--url", url, "--data", tmp_path / "d")
    assert_user_error(result, f"download of {url} failed", "--zip path/to/ml-100k.zip")
    assert not (tmp_path / "d").exists()


def test_download_data_and_dest_disagree(tmp_path: Path) -> None:
    result = fedrec("data", "download", "--data", tmp_path / "a", "--dest", tmp_path / "b")
    assert_user_error(result, "give one of them")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--num-partitions", "500"], ["500 partitions but split u1 has only 60 users"]),
        (["--num-partitions", "2", "--scheme", "iid"], ["unknown scheme 'iid'"]),
        (["--num-partitions", "2", "--split", "u0"], ["unknown split 'u0'"]),
    ],
)
def test_partition_refusals(
    synthetic_ml: Path, tmp_path: Path, extra: list[str], fragments: list[str]
) -> None:
    result = fedrec("partition", "--data", synthetic_ml, *extra, "--out", tmp_path / "set")
    assert_user_error(result, *fragments)
    assert not (tmp_path / "set").exists()


def test_partition_missing_data_and_malformed_line(ml_copy: Path, tmp_path: Path) -> None:
    missing = fedrec(
        "partition", "--data", tmp_path / "none", "--num-partitions", "2", "--out", tmp_path / "set"
    )
    assert_user_error(missing, "not found", "fedrec data download")
    path = ml_copy / "u1.base"
    lines = path.read_text().splitlines(keepends=True)
    lines[41] = "5\t6\tfour\t881250949\n"
    path.write_text("".join(lines))
    bad = fedrec("partition", "--data", ml_copy, "--num-partitions", "2", "--out", tmp_path / "set")
    assert_user_error(bad, f"{path}: line 42: rating 'four' is not an integer")
    assert not (tmp_path / "set").exists()
