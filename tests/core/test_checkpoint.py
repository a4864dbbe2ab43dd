import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fedrec_app.core.checkpoint import (
    SIGNATURE,
    CheckpointError,
    point,
    read_checkpoint,
    round_folder_name,
    verify_checkpoint,
    write_checkpoint,
)
from fedrec_app.core.files import sha256_file
from fedrec_app.core.signing import new_signing_key
from fedrec_app.data.catalogue import Catalogue

KEY = new_signing_key()


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
    # User factors are personal data: the owner and its group (the gateway's user) only.
    assert folder.stat().st_mode & 0o777 == 0o750
    assert run_dir.stat().st_mode & 0o777 == 0o750
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "weights.npz": 0o640,
        "items.csv": 0o640,
        "manifest.json": 0o640,
    }


def test_modes_do_not_depend_on_the_umask(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    old = os.umask(0o002)  # a lax umask would leave world-readable files
    try:
        folder = write_checkpoint(
            tmp_path / "ck",
            _arrays(rng, catalogue, users=2),
            catalogue,
            {"round": 1},
            write_model=lambda path: path.write_bytes(b"model"),
            signing_key=KEY,
        )
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o750
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    names = {"weights.npz", "items.csv", "model.keras", "manifest.json", "manifest.sig"}
    assert set(modes) == names
    assert set(modes.values()) == {0o640}


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


def _forge(folder: Path, rng: np.random.Generator) -> None:
    """What a forger can do without the key: new weights, the manifest's sha256 recomputed."""
    with np.load(folder / "weights.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["item_bias"] = arrays["item_bias"] + rng.normal(size=arrays["item_bias"].shape)
    np.savez(folder / "weights.npz", **arrays)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["weights.npz"] = sha256_file(folder / "weights.npz")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_signed_checkpoint_verifies_with_its_public_key(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    arrays = _arrays(rng, catalogue, users=2)
    folder = write_checkpoint(tmp_path / "ck", arrays, catalogue, {"round": 1}, signing_key=KEY)
    record = json.loads((folder / SIGNATURE).read_text())
    assert record["algorithm"] == "ed25519"
    # The signature covers the exact manifest bytes, and the manifest lists every other file.
    KEY.public_key().verify(
        base64.b64decode(record["signature"]), (folder / "manifest.json").read_bytes()
    )
    assert set(json.loads((folder / "manifest.json").read_text())["files"]) == {
        "weights.npz",
        "items.csv",
    }
    checkpoint = read_checkpoint(folder, verify_key=KEY.public_key())
    np.testing.assert_array_equal(checkpoint.arrays["item_bias"], arrays["item_bias"])


def test_forged_checkpoint_with_recomputed_hashes_is_refused(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    folder = write_checkpoint(
        tmp_path / "ck", _arrays(rng, catalogue), catalogue, {"round": 1}, signing_key=KEY
    )
    _forge(folder, rng)
    verify_checkpoint(folder)  # the hashes alone are consistent again: that is the forgery
    with pytest.raises(CheckpointError, match=f"{folder}.*signature does not verify"):
        read_checkpoint(folder, verify_key=KEY.public_key())


def test_signature_by_another_key_is_refused_naming_both_keys(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    other = new_signing_key()
    folder = write_checkpoint(
        tmp_path / "ck", _arrays(rng, catalogue), catalogue, {"round": 1}, signing_key=other
    )
    read_checkpoint(folder, verify_key=other.public_key())  # valid for its own key
    with pytest.raises(CheckpointError, match="signature does not verify.*another key"):
        read_checkpoint(folder, verify_key=KEY.public_key())


def test_unsigned_or_mangled_signature_is_refused(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    unsigned = write_checkpoint(tmp_path / "u", _arrays(rng, catalogue), catalogue, {"round": 1})
    assert not (unsigned / SIGNATURE).exists()
    read_checkpoint(unsigned)  # without a verify key only the hashes count
    with pytest.raises(CheckpointError, match=f"{unsigned}: unsigned checkpoint.*signature"):
        read_checkpoint(unsigned, verify_key=KEY.public_key())
    signed = write_checkpoint(
        tmp_path / "s", _arrays(rng, catalogue), catalogue, {"round": 1}, signing_key=KEY
    )
    record = json.loads((signed / SIGNATURE).read_text())
    for bad, message in (
        ("not json", "malformed signature"),
        (json.dumps({**record, "algorithm": "rsa"}), "algorithm 'rsa'"),
        (json.dumps({**record, "signature": "%%%"}), "malformed signature"),
        (
            json.dumps({**record, "signature": base64.b64encode(b"x" * 64).decode()}),
            "signature does not verify",
        ),
    ):
        (signed / SIGNATURE).write_text(bad)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(signed, verify_key=KEY.public_key())


def test_metric_keys_of_older_checkpoints_are_read_with_todays_names(tmp_path: Path, rng) -> None:
    catalogue = _catalogue()
    old = {"round": 2, "rmse": 0.9, "val_rmse": 0.95, "train_loss": 0.4, "node_seconds": 3.0}
    manifest = {"round": 2, "metrics": old, "history": [old], "run_config": {}}
    folder = write_checkpoint(tmp_path / "fed", _arrays(rng, catalogue), catalogue, manifest)
    read = verify_checkpoint(folder)
    today = {"round": 2, "test.rmse": 0.9, "val.rmse": 0.95, "train.loss": 0.4, "node.seconds": 3.0}
    assert read["metrics"] == today and read["history"] == [today]
    # a central checkpoint's history held validation figures under plain names
    central = {
        "round": 2,
        "metrics": {"rmse": 0.9, "seconds": 5.0},
        "history": [{"round": 1, "epoch": 1, "loss": 0.5, "rmse": 1.1}],
        "run_config": {"mode": "central"},
    }
    folder = write_checkpoint(tmp_path / "central", _arrays(rng, catalogue), catalogue, central)
    read = verify_checkpoint(folder)
    assert read["metrics"] == {"test.rmse": 0.9, "seconds": 5.0}
    assert read["history"] == [{"round": 1, "epoch": 1, "train.loss": 0.5, "val.rmse": 1.1}]
