import json
import subprocess
import sys

import numpy as np
import pytest
from signing_keys import signing_key_file, verify_key_file

from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.rated import rated_lists
from fedrec_app.core.signing import load_verify_key
from fedrec_app.data.partition import load_partition_set_member, make_partitions


@pytest.mark.slow
def test_train_central_cli_writes_metrics_and_a_valid_checkpoint(synthetic_ml, tmp_path) -> None:
    out, report = tmp_path / "central", tmp_path / "central.json"
    cmd = [
        sys.executable,
        "-m",
        "fedrec_app",
        "train-central",
        "--data",
        str(synthetic_ml),
        "--split",
        "u1",
        "--epochs",
        "4",
        "--embedding-dim",
        "8",
        "--rank-dim",
        "8",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--json",
        str(report),
        "--signing-key",
        str(signing_key_file()),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "RMSE" in result.stdout and "NDCG@10" in result.stdout
    metrics = json.loads(report.read_text())
    assert 0 < metrics["rmse"] < 2 and 0 <= metrics["ndcg@10"] <= 1
    assert 1 <= metrics["rating_epoch"] <= 4
    # verifies the signature, the sha256 of every file and the catalogue fingerprint
    ckpt = read_checkpoint(out, load_verify_key(verify_key_file()))
    assert ckpt.manifest["has_user_factors"]
    assert ckpt.manifest["metrics"]["test.rmse"] == pytest.approx(metrics["rmse"])
    assert (ckpt.path / "model.keras").is_file()
    # each user's rated movies (u1.base and u1.test together: all of u.data), for the gateway
    rated: dict[int, set[int]] = {}
    for line in (synthetic_ml / "u.data").read_text().splitlines():
        user, movie = (int(x) for x in line.split("\t")[:2])
        rated.setdefault(user, set()).add(movie)
    lists = rated_lists(ckpt.arrays)
    assert {u: set(lists[r].tolist()) for r, u in enumerate(ckpt.arrays["user_ids"])} == rated


def test_central_train_val_split_is_the_partitioners(synthetic_ml, tmp_path) -> None:
    from fedrec_app.core.central import load_central_data

    data = load_central_data(synthetic_ml, "u1", seed=3)
    make_partitions(synthetic_ml, tmp_path / "set", 3, split="u1", seed=3)
    parts = [load_partition_set_member(tmp_path / "set", k) for k in range(3)]
    for name in ("train", "val", "test"):
        ours = getattr(data, name)[["user_id", "movie_id"]].to_numpy()
        theirs = np.concatenate(
            [getattr(p, name)[["user_id", "movie_id"]].to_numpy() for p in parts]
        )
        assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))


def test_train_central_cli_rejects_bad_hyperparameters(synthetic_ml) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fedrec_app",
        "train-central",
        "--data",
        str(synthetic_ml),
        "--negatives",
        "0",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 2
    assert "negatives" in result.stderr and "Traceback" not in result.stderr
