"""`fedrec bench quality`'s floors check and run list (no training)."""

from __future__ import annotations

import argparse

import pytest

from fedrec_app.bench.quality import check_floors, floors_text
from fedrec_app.cli.bench import FLOOR_RUNS, _int_list, _scheme_list


def run(scheme: str, k: int, rmse: float, ndcg: float, c_rmse: float, c_ndcg: float) -> dict:
    return {
        "scheme": scheme,
        "num_partitions": k,
        "federated": {"rmse": rmse, "ndcg@10": ndcg},
        "central": {"rmse": c_rmse, "ndcg@10": c_ndcg},
    }


def test_floors_check_names_each_floor_that_fails() -> None:
    rows = check_floors(
        [
            run("random", 3, 0.914, 0.455, 0.9125, 0.46),  # all four hold
            run("random", 10, 0.916, 0.440, 0.912, 0.455),  # all four fail
            run("genre", 5, 0.925, 0.30, 0.912, 0.46),  # RMSE gap 0.013 > 0.01
        ]
    )
    assert [r["ok"] for r in rows] == [True] * 4 + [False] * 4 + [False]
    assert rows[4]["run"] == "random K=10" and rows[4]["floor"] == "RMSE <= 0.915"
    assert rows[-1]["value"] == pytest.approx(0.013)
    text = floors_text(rows)
    assert text.splitlines()[-1] == "floors: 4 of 9 hold"
    assert text.splitlines()[4].startswith("FAIL  random K=10")


def test_run_lists() -> None:
    assert _int_list("3,5,10,20") == [3, 5, 10, 20]
    assert _scheme_list("random,genre") == ["random", "genre"]
    for bad in ("0", "3,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _int_list(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        _scheme_list("random,zipf")
    assert FLOOR_RUNS == [
        ("random", 3),
        ("random", 5),
        ("random", 10),
        ("random", 20),
        ("activity", 5),
        ("genre", 5),
    ]
