"""`fedrec bench fold-in`: how good are folded-in users (POST /recommend) against learned ones?

For every test user of a split, the gateway's fold-in solves the user's vectors from the user's
training ratings alone; the test ratings are then scored with the same metrics as training
(``fedrec_app.core.metrics``: RMSE/MAE over all test ratings, full-ranking HR/P/R/NDCG@10 over the
items the user did not rate in training). When the checkpoint holds user factors, the learned
vectors are scored the same way, so the two rows compare directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fedrec_app.core import scoring
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import RELEVANT_MIN, TOP_K, EvalSums, rating_sums, user_ranking_sums
from fedrec_app.data.movielens import read_split
from fedrec_app.gateway.recommender import Recommender, UnknownIdsError, UserVectors


def _user_sums(
    recommender: Recommender,
    user: UserVectors,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    test_ratings: np.ndarray,
) -> EvalSums:
    arrays = recommender.arrays
    predicted = scoring.predict_ratings(arrays, user.vector, user.bias, test_rows)
    exclude = np.zeros(recommender.num_items, dtype=bool)
    exclude[train_rows] = True
    top = scoring.top_n(scoring.ranking_scores(arrays, user.rank_vector), TOP_K, exclude)
    relevant = test_rows[test_ratings >= RELEVANT_MIN]
    return rating_sums(predicted, test_ratings) + user_ranking_sums(top, relevant)


def _score_user(
    recommender: Recommender,
    history: pd.DataFrame | None,
    user_id: int,
    rows: pd.DataFrame,
    sums: dict[str, EvalSums],
    seconds: list[float],
) -> None:
    """Add one test user's sums (fold-in and, if present, learned) to ``sums``."""
    if history is None:
        return  # nothing to fold in from
    train_rows = recommender.item_rows(history["movie_id"].tolist())
    test_rows = recommender.item_rows(rows["movie_id"].tolist())
    test_ratings = rows["rating"].to_numpy(np.float64)
    start = time.perf_counter()
    folded = recommender.fold_in(history["movie_id"].tolist(), history["rating"].tolist())
    seconds.append(time.perf_counter() - start)
    users = {"fold-in": folded}
    if "learned" in sums:
        try:
            users["learned"] = recommender.user(user_id)
        except UnknownIdsError as exc:
            raise FedrecError(f"{recommender.checkpoint.path}: {exc} (a test user)") from exc
    for name, vectors in users.items():
        sums[name] = sums[name] + _user_sums(
            recommender, vectors, train_rows, test_rows, test_ratings
        )


def run_foldin_bench(checkpoint: Path, data_dir: Path, split: str) -> dict[str, Any]:
    """Metrics of folded-in (and, if present, learned) user vectors on ``split``'s test set."""
    recommender = Recommender.load(checkpoint)
    train, test = read_split(data_dir, split)
    known = set(recommender.catalogue.movie_ids.tolist())
    unknown = sorted((set(train["movie_id"]) | set(test["movie_id"])) - known)
    if unknown:
        raise FedrecError(f"{data_dir}: {split} has movies the checkpoint lacks: {unknown[:10]}")
    train_by_user = {u: g for u, g in train.groupby("user_id")}
    sums = {"fold-in": EvalSums()}
    if recommender.has_user_factors:
        sums["learned"] = EvalSums()
    seconds: list[float] = []
    with threadpool_limits(limits=1, user_api="blas"):  # as the gateway serves
        for user_id, rows in test.groupby("user_id"):
            _score_user(recommender, train_by_user.get(user_id), int(user_id), rows, sums, seconds)
    if not seconds:
        raise FedrecError(f"{data_dir}: no {split} test user has training ratings")
    return {
        "benchmark": "fold-in vs learned user vectors",
        "checkpoint": str(recommender.checkpoint.path),
        "split": split,
        "users": len(seconds),
        "fold_in_params": vars(recommender.fold_in_params),
        "fold_in_ms": {
            "p50": round(1000 * float(np.percentile(seconds, 50)), 3),
            "p99": round(1000 * float(np.percentile(seconds, 99)), 3),
        },
        "metrics": {name: s.finalize() for name, s in sums.items()},
    }


def table(result: dict[str, Any]) -> str:
    """The metrics as a Markdown table."""
    names = list(next(iter(result["metrics"].values())))
    lines = [
        f"{result['split']}, {result['users']} test users; fold-in p50 "
        f"{result['fold_in_ms']['p50']} ms, p99 {result['fold_in_ms']['p99']} ms per user.",
        "",
        "| user vectors | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for who, metrics in result["metrics"].items():
        lines.append(f"| {who} | " + " | ".join(f"{metrics[n]:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"
