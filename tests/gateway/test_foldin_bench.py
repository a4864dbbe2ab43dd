"""`fedrec bench fold-in` on synthetic MovieLens-format data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fedrec_app.bench.foldin import run_foldin_bench
from fedrec_app.core.checkpoint import write_checkpoint
from fedrec_app.data.movielens import read_items, read_split


@pytest.fixture(scope="module")
def synthetic_checkpoint(synthetic_ml, tmp_path_factory):
    catalogue = read_items(synthetic_ml)
    train, _ = read_split(synthetic_ml, "u1")
    users = np.unique(train["user_id"].to_numpy())
    rng = np.random.default_rng(5)
    num_items, num_users = len(catalogue), len(users)
    arrays = {
        "item_ids": catalogue.movie_ids,
        "item_embedding": rng.normal(0, 0.3, (num_items, 3)).astype(np.float32),
        "item_bias": rng.normal(0, 0.3, num_items).astype(np.float32),
        "item_rank_embedding": rng.normal(0, 0.5, (num_items, 2)).astype(np.float32),
        "item_rank_bias": rng.normal(0, 0.5, num_items).astype(np.float32),
        "global_bias": np.float32(3.4),
        "user_ids": users,
        "user_embedding": rng.normal(0, 0.3, (num_users, 3)).astype(np.float32),
        "user_bias": rng.normal(0, 0.2, num_users).astype(np.float32),
        "user_rank_embedding": rng.normal(0, 0.5, (num_users, 2)).astype(np.float32),
    }
    folder = tmp_path_factory.mktemp("foldin") / "final"
    return write_checkpoint(folder, arrays, catalogue, {"run_id": "syn", "round": 1}), arrays


def test_learned_row_is_the_rating_formula(synthetic_ml, synthetic_checkpoint) -> None:
    folder, a = synthetic_checkpoint
    result = run_foldin_bench(folder, synthetic_ml, "u1")
    train, test = read_split(synthetic_ml, "u1")
    test = test[test["user_id"].isin(set(train["user_id"]))]
    assert result["users"] == test["user_id"].nunique()
    user_row = {int(u): i for i, u in enumerate(a["user_ids"])}
    rows_u = test["user_id"].map(user_row).to_numpy()
    rows_i = test["movie_id"].to_numpy() - 1  # synthetic movie ids are 1..I
    predicted = np.clip(
        a["global_bias"]
        + a["user_bias"][rows_u]
        + a["item_bias"][rows_i]
        + np.einsum("ij,ij->i", a["user_embedding"][rows_u], a["item_embedding"][rows_i]),
        1,
        5,
    )
    want = float(np.sqrt(np.mean((predicted - test["rating"].to_numpy()) ** 2)))
    assert result["metrics"]["learned"]["rmse"] == pytest.approx(want, rel=1e-5)
    assert all(np.isfinite(v) for v in result["metrics"]["fold-in"].values())


def test_cli_writes_json(synthetic_ml, synthetic_checkpoint, tmp_path) -> None:
    folder, _ = synthetic_checkpoint
    out = tmp_path / "foldin.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app",
            "bench",
            "fold-in",
            "--checkpoint",
            str(folder),
            "--data",
            str(synthetic_ml),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| fold-in |" in result.stdout and "| learned |" in result.stdout
    assert set(json.loads(out.read_text())["metrics"]) == {"fold-in", "learned"}
