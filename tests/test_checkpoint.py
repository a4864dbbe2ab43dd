import json
from pathlib import Path

import numpy as np
import pytest

from fedrec_app.checkpoint import (
    CheckpointError,
    point,
    read_checkpoint,
    round_folder_name,
    write_checkpoint,
)
from fedrec_app.data.catalogue import Catalogue


def _catalogue(n: int = 4) -> Catalogue:
    return Catalogue(
        np.arange(1, n + 1), tuple(f"Movie {i}" for i in range(n)), (2000,) * n, (("Drama",),) * n
    )


def _arrays(rng: np.random.Generator, catalogue: Catalogue, users: int = 0) -> dict:
    n = len(catalogue)
    arrays = {
        "item_ids": catalogue.movie_ids,
        "item_embedding": rng.normal(size=(n, 3)).astype(np.float32),
        "item_bias": rng.normal(size=n).astype(np.float32),
        "item_rank_embedding": rng.normal(size=(n, 2)).astype(np.float32),
        "item_rank_bias": rng.normal(size=n).astype(np.float32),
        "global_bias": np.float32(3.5),
    }
    if users:
        arrays |= {
            "user_ids": np.arange(10, 10 + users),
            "user_embedding": rng.normal(size=(users, 3)).astype(np.float32),
            "user_bias": rng.normal(size=users).astype(np.float32),
            "user_rank_embedding": rng.normal(size=(users, 2)).astype(np.float32),
        }
    return arrays


def test_write_then_read_through_pointer(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    arrays = _arrays(rng, catalogue, users=2)
    run_dir = tmp_path / "run-1"
    folder = write_checkpoint(
        run_dir / round_folder_name(3), arrays, catalogue, {"run_id": "1", "round": 3}
    )
    point(run_dir, "latest", folder)
    checkpoint = read_checkpoint(run_dir / "latest")
    assert checkpoint.path == folder.resolve()
    assert checkpoint.round == 3 and checkpoint.has_user_factors
    assert checkpoint.manifest["catalogue"]["num_items"] == 4
    for name, value in arrays.items():
        np.testing.assert_array_equal(checkpoint.arrays[name], value)
    assert sorted(p.name for p in run_dir.iterdir()) == ["latest", "round-0003"]
    # Readable by a gateway running as another user (no secrets in a checkpoint).
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in folder.iterdir())


def test_rewrite_replaces_folder_and_repoints(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    first = write_checkpoint(tmp_path / "final", _arrays(rng, catalogue), catalogue, {"round": 1})
    write_checkpoint(first, _arrays(rng, catalogue), catalogue, {"round": 2})
    assert read_checkpoint(first).round == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


@pytest.mark.parametrize("victim", ["weights.npz", "items.csv"])
def test_altered_or_missing_file_is_refused_naming_it(tmp_path: Path, rng, victim: str) -> None:
    catalogue = _catalogue()
    folder = write_checkpoint(tmp_path / "ck", _arrays(rng, catalogue), catalogue, {"round": 1})
    with open(folder / victim, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(CheckpointError, match=f"{victim}: sha256 does not match"):
        read_checkpoint(folder)
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=f"{victim}: missing"):
        read_checkpoint(folder)


def test_manifest_problems_are_named(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    folder = write_checkpoint(tmp_path / "ck", _arrays(rng, catalogue), catalogue, {"round": 1})
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_checkpoint(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        read_checkpoint(folder)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        read_checkpoint(tmp_path / "absent")


def test_inconsistent_arrays_are_never_written(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    arrays = _arrays(rng, catalogue)
    arrays["item_bias"] = arrays["item_bias"][:2]
    with pytest.raises(CheckpointError, match="item_bias has"):
        write_checkpoint(tmp_path / "ck", arrays, catalogue, {"round": 1})
    arrays = _arrays(rng, catalogue, users=2)
    del arrays["user_bias"]
    with pytest.raises(CheckpointError, match="user factors incomplete"):
        write_checkpoint(tmp_path / "ck", arrays, catalogue, {"round": 1})
    arrays = _arrays(rng, catalogue)
    arrays["item_embedding"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN"):
        write_checkpoint(tmp_path / "ck", arrays, catalogue, {"round": 1})
    assert list(tmp_path.iterdir()) == []
