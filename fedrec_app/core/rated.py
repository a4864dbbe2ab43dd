"""Which movies each user rated, as two arrays beside the user rows (numpy only).

When a run shares user factors, each node also sends the movie ids its users rated (all of the
node's ratings of them: training, validation and test), so that the gateway never recommends a
movie to the user who already rated it. They travel and are stored in CSR form, aligned with
``user_ids``:

- ``user_rated_offsets (U + 1,) int64``: user row ``r`` rated
  ``user_rated_items[user_rated_offsets[r]:user_rated_offsets[r + 1]]``;
- ``user_rated_items (R,) int64``: movie ids, ascending within each user.

In private mode (``share-user-factors=false``) neither leaves the node, as the user rows do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RATED_OFFSETS, RATED_ITEMS = "user_rated_offsets", "user_rated_items"
RATED_ARRAYS: tuple[str, ...] = (RATED_OFFSETS, RATED_ITEMS)


def rated_arrays(
    user_ids: np.ndarray, rating_user_ids: np.ndarray, rating_movie_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """The CSR pair for ``user_ids`` (sorted, unique) from ratings given as two parallel arrays
    of user and movie ids; ratings of users not in ``user_ids`` are left out, duplicates merged."""
    user_ids = np.asarray(user_ids, np.int64)
    users = np.asarray(rating_user_ids, np.int64)
    movies = np.asarray(rating_movie_ids, np.int64)
    rows = np.searchsorted(user_ids, users)
    if len(user_ids):
        known = (rows < len(user_ids)) & (user_ids[np.minimum(rows, len(user_ids) - 1)] == users)
    else:
        known = np.zeros(len(users), dtype=bool)
    pairs = np.unique(np.stack([rows[known], movies[known]], axis=1), axis=0).reshape(-1, 2)
    counts = np.bincount(pairs[:, 0], minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return {RATED_OFFSETS: offsets, RATED_ITEMS: pairs[:, 1].astype(np.int64)}


def rated_lists(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One array of movie ids per user row."""
    offsets = np.asarray(arrays[RATED_OFFSETS], np.int64)
    return np.split(np.asarray(arrays[RATED_ITEMS], np.int64), offsets[1:-1])


def from_lists(lists: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The CSR pair of per-user movie id arrays (inverse of ``rated_lists``)."""
    counts = np.fromiter((len(items) for items in lists), np.int64, len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    items = np.concatenate([np.asarray(i, np.int64) for i in lists]) if lists else np.empty(0)
    return {RATED_OFFSETS: offsets, RATED_ITEMS: items.astype(np.int64)}


def rated_problem(
    arrays: Mapping[str, np.ndarray], movie_ids: np.ndarray | None = None
) -> str | None:
    """What is wrong with the CSR pair in ``arrays`` (None when it is absent or sound): both
    present, offsets ``0 .. len(items)`` non-decreasing with one per user row plus one, and
    (given ``movie_ids``) every item a known movie id."""
    present = [name for name in RATED_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(RATED_ARRAYS):
        return f"rated movies incomplete: has {present}, needs {list(RATED_ARRAYS)}"
    if "user_ids" not in arrays:
        return "rated movies without user_ids"
    offsets, items = np.asarray(arrays[RATED_OFFSETS]), np.asarray(arrays[RATED_ITEMS])
    if offsets.dtype.kind not in "iu" or items.dtype.kind not in "iu":
        return "rated movies must be integer arrays"
    if offsets.ndim != 1 or items.ndim != 1:
        return "rated movies must be 1-D arrays"
    num_users = len(arrays["user_ids"])
    if len(offsets) != num_users + 1:
        return f"{RATED_OFFSETS} has {len(offsets)} entries, expected {num_users + 1}"
    if offsets[0] != 0 or offsets[-1] != len(items) or np.any(np.diff(offsets) < 0):
        return f"{RATED_OFFSETS} do not index {RATED_ITEMS} (0 .. {len(items)}, non-decreasing)"
    if movie_ids is not None and not np.all(np.isin(items, movie_ids)):
        unknown = np.setdiff1d(items, movie_ids)[:5].tolist()
        return f"{RATED_ITEMS} holds movie ids the catalogue lacks: {unknown}"
    return None
