"""Rating and top-N ranking metrics as combinable sums, so nodes can be merged into global figures.

RMSE = sqrt(sum of squared errors over all test ratings / their count) and MAE likewise: never a
mean of node means. Ranking ("full ranking"): for each test user, every catalogue item the user
did not rate in training is ranked; test items rated >= `RELEVANT_MIN` are relevant; HR@k, P@k,
R@k and NDCG@k are means over the users with at least one relevant item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

RELEVANT_MIN = 4.0
TOP_K = 10
# Every figure keeps one name from node reply to checkpoint history: ``<split>.<name>``, the split
# being ``train``, ``test`` (held-out ratings), ``val`` (validation) or ``node`` (the slowest
# node's timings): ``train.loss``, ``test.rmse``, ``val.ndcg@10``, ``node.train-seconds``.
TRAIN_LOSS = "train.loss"


def metric_key(split: str, name: str) -> str:
    """The name a figure carries from node to checkpoint: ``<split>.<name>``."""
    return f"{split}.{name}"


def split_metrics(split: str, values: Mapping[str, float]) -> dict[str, float]:
    """``values`` (e.g. ``EvalSums.finalize()``) named as figures of ``split``."""
    return {metric_key(split, name): value for name, value in values.items()}


@dataclass(frozen=True)
class EvalSums:
    """Sums behind the metrics; `a + b` merges two nodes (or two user groups) exactly."""

    sse: float = 0.0  # sum of squared rating errors
    sae: float = 0.0  # sum of absolute rating errors
    num_ratings: int = 0
    hits: float = 0.0  # users with >= 1 relevant item in their top k
    precision: float = 0.0  # sum over users of hits_in_top_k / k
    recall: float = 0.0  # sum over users of hits_in_top_k / num_relevant
    ndcg: float = 0.0  # sum over users of NDCG@k
    num_users: int = 0  # users with >= 1 relevant test item
    k: int = TOP_K

    def __add__(self, other: EvalSums) -> EvalSums:
        if not isinstance(other, EvalSums):
            return NotImplemented
        if self.k != other.k:
            raise ValueError(f"cannot add metrics at k={self.k} and k={other.k}")
        return EvalSums(
            **{
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in fields(self)
                if f.name != "k"
            },
            k=self.k,
        )

    def to_dict(self) -> dict[str, float]:
        """Plain numbers (e.g. for a Flower MetricRecord); `from_dict` reverses it."""
        return {name: float(value) for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> EvalSums:
        ints = {"num_ratings", "num_users", "k"}
        # int or float per field: the names decide, so a mapping of one value type cannot
        kwargs: dict[str, Any] = {
            f.name: (int if f.name in ints else float)(values[f.name]) for f in fields(cls)
        }
        return cls(**kwargs)

    def finalize(self) -> dict[str, float]:
        """rmse, mae, hr@k, p@k, r@k, ndcg@k (NaN where there is nothing to average)."""
        k = self.k

        def mean(total: float, count: int) -> float:
            return total / count if count else math.nan

        mse = mean(self.sse, self.num_ratings)
        return {
            "rmse": math.sqrt(mse) if self.num_ratings else math.nan,
            "mae": mean(self.sae, self.num_ratings),
            f"hr@{k}": mean(self.hits, self.num_users),
            f"p@{k}": mean(self.precision, self.num_users),
            f"r@{k}": mean(self.recall, self.num_users),
            f"ndcg@{k}": mean(self.ndcg, self.num_users),
        }


def rating_sums(predicted: np.ndarray, actual: np.ndarray, k: int = TOP_K) -> EvalSums:
    """Error sums of predicted against actual ratings."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return EvalSums(
        sse=float(np.sum(err * err)), sae=float(np.sum(np.abs(err))), num_ratings=int(err.size), k=k
    )


def user_ranking_sums(top: np.ndarray, relevant: np.ndarray, k: int = TOP_K) -> EvalSums:
    """Ranking sums of one user: `top` = recommended rows best first, `relevant` = relevant rows.

    A user with no relevant item contributes nothing (it is not counted in `num_users`).
    """
    relevant = np.unique(np.asarray(relevant))
    if relevant.size == 0:
        return EvalSums(k=k)
    top = np.asarray(top)[:k]
    gains = np.isin(top, relevant)
    num_hits = int(gains.sum())
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.sum(discounts[: len(top)][gains]))
    idcg = float(np.sum(discounts[: min(relevant.size, k)]))
    return EvalSums(
        hits=float(num_hits > 0),
        precision=num_hits / k,
        recall=num_hits / relevant.size,
        ndcg=dcg / idcg,
        num_users=1,
        k=k,
    )
