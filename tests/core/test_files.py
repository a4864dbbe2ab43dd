"""The shared file helpers: atomic JSON writes and the sha256 check of a folder's files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import check_sha256s, sha256_file, write_json_atomic


class _Refused(FedrecError):
    pass


def test_json_is_written_whole_with_its_mode_and_no_temp_file_left(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "out" / "result.json", {"a": [1, 2]}, mode=0o600)
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_unserialisable_value_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "r.json", {"old": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"new": object()})
    assert json.loads(path.read_text()) == {"old": True}


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    for name in ("a.csv", "b.npz"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    return tmp_path, {name: sha256_file(tmp_path / name) for name in ("a.csv", "b.npz")}


def test_matching_files_pass(folder: tuple[Path, dict[str, str]]) -> None:
    check_sha256s(*folder, "the manifest")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "b.npz").write_bytes(b"x"), r"b\.npz: sha256 does not match the list"),
        (lambda d: (d / "a.csv").unlink(), r"a\.csv: missing \(listed in the list\)"),
    ],
)
def test_the_first_file_that_is_off_is_named_with_the_callers_error(
    folder: tuple[Path, dict[str, str]], change, message: str
) -> None:
    path, expected = folder
    change(path)
    with pytest.raises(_Refused, match=message):
        check_sha256s(path, expected, "the list", _Refused)


@pytest.mark.parametrize("name", ["../a.csv", "sub/a.csv", ".."])
def test_a_name_that_is_not_plain_is_refused(
    folder: tuple[Path, dict[str, str]], name: str
) -> None:
    path, _ = folder
    with pytest.raises(FedrecError, match="not a plain file name"):
        check_sha256s(path, {name: "0" * 64}, "the manifest")
