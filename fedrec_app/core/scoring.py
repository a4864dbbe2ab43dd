"""The model's two formulas in numpy: predicted rating and ranking score, plus top-N.

The Keras model (``fedrec_app.core.model``) computes exactly these; evaluation and the gateway use
these numpy versions so that serving never needs TensorFlow.

- predicted rating = clip(global_bias + user_bias + item_bias
                          + user_embedding . item_embedding, 1, 5)
- ranking score    = user_rank_embedding . item_rank_embedding + item_rank_bias
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

RATING_MIN, RATING_MAX = 1.0, 5.0
ITEM_ARRAYS: tuple[str, ...] = (
    "item_embedding",
    "item_bias",
    "item_rank_embedding",
    "item_rank_bias",
)
USER_ARRAYS: tuple[str, ...] = ("user_embedding", "user_bias", "user_rank_embedding")
GLOBAL_ARRAYS: tuple[str, ...] = ("global_bias",)


def predict_ratings(
    arrays: Mapping[str, np.ndarray],
    user_vector: np.ndarray,
    user_bias: float,
    items: np.ndarray | slice = slice(None),
) -> np.ndarray:
    """Predicted ratings (1-5) of one user, given its rating-head vector and bias, for ``items``."""
    raw = (
        float(arrays["global_bias"])
        + float(user_bias)
        + arrays["item_bias"][items]
        + arrays["item_embedding"][items] @ user_vector
    )
    ratings: np.ndarray = np.clip(raw, RATING_MIN, RATING_MAX)
    return ratings


def ranking_scores(
    arrays: Mapping[str, np.ndarray],
    user_rank_vector: np.ndarray,
    items: np.ndarray | slice = slice(None),
) -> np.ndarray:
    """Ranking scores of one user, given its ranking-head vector, for ``items`` (default: all)."""
    scores: np.ndarray = (
        arrays["item_rank_embedding"][items] @ user_rank_vector + arrays["item_rank_bias"][items]
    )
    return scores


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Row indices of the ``n`` highest scores, best first; rows in ``exclude`` (bool mask) skipped.

    Ties break by lower row index, so results are deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    candidates = np.flatnonzero(np.isfinite(scores))
    if len(candidates) == 0 or n <= 0:
        return np.empty(0, dtype=np.int64)
    n = min(n, len(candidates))
    cand_scores = scores[candidates]
    if n < len(candidates):
        part = np.argpartition(-cand_scores, n - 1)[:n]
    else:
        part = np.arange(len(candidates))
    # Sort the short list by (-score, index) for a stable, deterministic order.
    chosen = candidates[part]
    order = np.lexsort((chosen, -scores[chosen]))
    return chosen[order].astype(np.int64)


def predict_pairs(
    arrays: Mapping[str, np.ndarray], user_rows: np.ndarray, item_rows: np.ndarray
) -> np.ndarray:
    """Predicted ratings (1-5) of many (user row, item row) pairs at once (needs user arrays)."""
    raw = (
        float(arrays["global_bias"])
        + arrays["user_bias"][user_rows]
        + arrays["item_bias"][item_rows]
        + np.einsum(
            "ij,ij->i", arrays["user_embedding"][user_rows], arrays["item_embedding"][item_rows]
        )
    )
    ratings: np.ndarray = np.clip(raw, RATING_MIN, RATING_MAX)
    return ratings
