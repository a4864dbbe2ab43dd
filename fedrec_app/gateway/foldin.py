"""Fold-in: user vectors for someone the checkpoint has never seen, from a list of ratings.

Both solvers minimise the training objective of ``fedrec_app.core.model`` for one user with the item
rows held fixed, so a folded-in user is what training would have made of that user:

- rating head: ridge regression of ``rating - global_bias - item_bias`` on ``[item_embedding, 1]``
  (vector + user bias), L2 ``prior + P * l2_rating`` on the vector and ``prior + P * l2_bias`` on
  the bias for P ratings;
- ranking head: L2-regularised logistic regression (Newton/IRLS) with the rated items as positives,
  except those rated ``<= low_rating``, which are explicit negatives (as in training, so a low
  rating pushes similar movies down), and every unrated item as a negative, the unrated items
  weighted so that they count as ``negatives`` sampled negatives per rated item (as in
  training); offset ``item_rank_bias``, L2 ``prior + P * (1 + negatives) * l2_ranking``.

The ``prior`` term keeps a user with very few ratings close to the average user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FoldInParams:
    """Regularisation of the fold-in (read from the checkpoint's hyperparameters when present)."""

    l2_rating: float = 0.1
    l2_bias: float = 0.01
    l2_ranking: float = 0.01
    negatives: int = 4
    low_rating: float = 0.0  # ratings <= this are explicit negatives of the ranking head
    prior: float = 1.0
    max_iterations: int = 30
    tolerance: float = 1e-6

    @classmethod
    def from_hyperparameters(cls, hyper: Mapping[str, object] | None) -> FoldInParams:
        """Read ``l2_rating``, ``l2_bias``, ``l2_ranking``, ``negatives``, ``low_rating`` (or
        kebab-case keys) if present."""
        hyper = hyper or {}
        values: dict[str, Any] = {}  # each a float or an int, as its field's kind says
        for field, keys, kind in (
            ("l2_rating", ("l2_rating", "l2-rating"), float),
            ("l2_bias", ("l2_bias", "l2-bias"), float),
            ("l2_ranking", ("l2_ranking", "l2-ranking"), float),
            ("negatives", ("negatives",), int),
            ("low_rating", ("low_rating", "low-rating"), float),
        ):
            for key in keys:
                value = hyper.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    values[field] = kind(value)
                    break
        return cls(**values)


def fold_in_rating(
    arrays: Mapping[str, np.ndarray], rows: np.ndarray, ratings: np.ndarray, params: FoldInParams
) -> tuple[np.ndarray, float]:
    """Rating-head user vector and bias that best explain ``ratings`` of the items ``rows``."""
    q = np.asarray(arrays["item_embedding"], dtype=np.float64)[rows]
    x = np.hstack([q, np.ones((len(rows), 1))])
    target = (
        np.asarray(ratings, dtype=np.float64)
        - float(arrays["global_bias"])
        - np.asarray(arrays["item_bias"], dtype=np.float64)[rows]
    )
    penalty = np.full(x.shape[1], params.prior + len(rows) * params.l2_rating)
    penalty[-1] = params.prior + len(rows) * params.l2_bias
    solution = np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ target)
    return solution[:-1].astype(np.float32), float(solution[-1])


def fold_in_ranking(
    arrays: Mapping[str, np.ndarray],
    rows: np.ndarray,
    params: FoldInParams,
    ratings: np.ndarray | None = None,
) -> np.ndarray:
    """Ranking-head user vector from which items were rated (positives, or explicit negatives
    where ``ratings`` are ``<= params.low_rating``) and which were not (``ratings`` None: every
    rated item is a positive)."""
    y_items = np.asarray(arrays["item_rank_embedding"], dtype=np.float64)
    offset = np.asarray(arrays["item_rank_bias"], dtype=np.float64)
    num_items, dim = y_items.shape
    rows = np.asarray(rows, dtype=np.int64)
    rated = np.zeros(num_items, dtype=bool)
    rated[rows] = True
    target = rated.astype(np.float64)
    if ratings is not None:
        target[rows] = (np.asarray(ratings, dtype=np.float64) > params.low_rating).astype(float)
    num_rated = int(rated.sum())
    num_unrated = num_items - num_rated
    weights = np.ones(num_items)
    if num_unrated:
        weights[~rated] = min(1.0, params.negatives * num_rated / num_unrated)
    l2 = params.prior + num_rated * (1 + params.negatives) * params.l2_ranking
    vector = np.zeros(dim)
    for _ in range(params.max_iterations):
        prob = 1.0 / (1.0 + np.exp(-(y_items @ vector + offset)))
        gradient = y_items.T @ (weights * (target - prob)) - l2 * vector
        hessian = (y_items * (weights * prob * (1.0 - prob))[:, None]).T @ y_items
        step = np.linalg.solve(hessian + l2 * np.eye(dim), gradient)
        vector += step
        if np.max(np.abs(step)) < params.tolerance:
            break
    return vector.astype(np.float32)
