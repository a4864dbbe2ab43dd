"""`fedrec bench launch`'s summary: per-pair speedups and medians (the launches themselves are
`fedrec up`, tested end to end in tests/ops/test_up.py)."""

from __future__ import annotations

import pytest

from fedrec_app.bench.launch import summarize, table

METRICS = {"test.rmse": 0.92, "test.ndcg@10": 0.40}


def _launch(seconds: float, rmse: float = 0.92) -> dict:
    return {
        "seconds": seconds,
        "steps": {"superlink": 1.0, "train": seconds - 1.0},
        "metrics": {**METRICS, "test.rmse": rmse},
        "sample": {},
    }


def test_speedup_is_the_median_of_the_pairs_ratios() -> None:
    runs = [
        {"warm": _launch(60.0), "cold": _launch(90.0)},  # 1.5
        {"warm": _launch(70.0), "cold": _launch(84.0)},  # 1.2
        {"warm": _launch(50.0), "cold": _launch(100.0)},  # 2.0
    ]
    result = summarize(runs)
    assert result["speedups"] == [1.5, 1.2, 2.0]
    assert result["speedup"] == 1.5
    assert (result["warm"], result["cold"]) == (60.0, 90.0)
    assert result["same_final_metrics"] is True
    shown = table(result)
    assert "| 3 | cold | 100.0 | 1.0 | 99.0 | 0.9200 | 0.4000 |" in shown
    assert "1.50x (median; each pair: 1.50x, 1.20x, 2.00x)" in shown


def test_a_pair_with_different_final_metrics_is_reported() -> None:
    runs = [
        {"warm": _launch(60.0), "cold": _launch(90.0)},
        {"warm": _launch(60.0), "cold": _launch(90.0, rmse=0.95)},
    ]
    assert summarize(runs)["same_final_metrics"] is False


def test_no_pairs_is_an_error(tmp_path) -> None:
    from fedrec_app.bench.launch import run_launch_bench

    with pytest.raises(ValueError, match="pairs=0"):
        run_launch_bench(tmp_path, pairs=0)
