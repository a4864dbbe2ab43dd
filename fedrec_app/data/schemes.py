"""How `fedrec partition` deals users to partitions.

Schemes (how users are assigned; every scheme then makes sure each partition has test users):

- ``random``: users shuffled with the seed and dealt round-robin (users with test ratings first),
  so partitions are near-equal and every one gets test users;
- ``activity``: users ranked by their number of training ratings and cut into K equal-sized bands,
  so partition k holds the k-th lightest band and rating counts differ strongly between partitions;
- ``genre``: each user's dominant genre (most-rated, weighted by 1/number of the movie's genres);
  the users of each genre are spread over the partitions with Dirichlet(``alpha``) proportions
  (small alpha: each partition is dominated by a few genres).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrec_app.data.catalogue import GENRES, Catalogue


def assign_random(has_test: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Deal shuffled users round-robin, users with test ratings first."""
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(has_test)), rng.permutation(np.flatnonzero(~has_test))]
    )
    part = np.empty(len(has_test), dtype=np.int64)
    part[order] = np.arange(len(order)) % k
    return part


def assign_activity(
    users: np.ndarray, train: pd.DataFrame, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Cut users ranked by training-rating count (random tie-break) into k equal bands."""
    counts = train["user_id"].value_counts().reindex(users, fill_value=0).to_numpy()
    order = np.lexsort((rng.random(len(users)), counts))
    part = np.empty(len(users), dtype=np.int64)
    for band, members in enumerate(np.array_split(order, k)):
        part[members] = band
    return part


def assign_genre(
    users: np.ndarray,
    train: pd.DataFrame,
    catalogue: Catalogue,
    k: int,
    alpha: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Spread the users of each dominant genre over partitions in Dirichlet(alpha) proportions."""
    flags = np.array(
        [[g in movie_genres for g in GENRES] for movie_genres in catalogue.genres], dtype=float
    )
    weights = flags / np.maximum(flags.sum(axis=1, keepdims=True), 1.0)
    rows = np.searchsorted(catalogue.movie_ids, train["movie_id"].to_numpy())
    user_rows = np.searchsorted(users, train["user_id"].to_numpy())
    taste = np.zeros((len(users), len(GENRES)))
    np.add.at(taste, user_rows, weights[rows])
    dominant = taste.argmax(axis=1)  # ties (and users without training ratings): first genre
    part = np.empty(len(users), dtype=np.int64)
    for genre in range(len(GENRES)):
        members = rng.permutation(np.flatnonzero(dominant == genre))
        shares = rng.dirichlet(np.full(k, alpha))
        if len(members) == 0:
            continue
        cuts = np.rint(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for index, chunk in enumerate(np.split(members, cuts)):
            part[chunk] = index
    return part


def ensure_test_users(part: np.ndarray, has_test: np.ndarray, k: int) -> np.ndarray:
    """Move test users (highest id first) from the richest partitions to any that has none."""
    part = part.copy()
    while True:
        per_part = np.bincount(part[has_test], minlength=k)
        empty = np.flatnonzero(per_part == 0)
        if len(empty) == 0:
            return part
        donor = int(np.argmax(per_part))
        moved = np.flatnonzero(has_test & (part == donor))[-1]
        part[moved] = empty[0]
