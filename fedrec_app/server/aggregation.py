"""Server-side aggregation: per-row weighted averages of the nodes' shared arrays."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def average_rows(
    previous: Mapping[str, np.ndarray],
    updates: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    server_lr: float = 1.0,
) -> dict[str, np.ndarray]:
    """Per-row weighted average of shared arrays over the nodes that touched each row.

    `updates` yields `(shared_arrays, item_counts)` per node (as in `LocalResult`). A row that no
    node touched keeps its `previous` value; a touched row moves `server_lr` times the way from
    `previous` to the nodes' weighted average (1.0: plain per-row FedAvg).
    """
    updates = list(updates)
    out: dict[str, np.ndarray] = {}
    for name, prev in previous.items():
        prev = np.asarray(prev, np.float64)
        total = np.zeros(prev.shape, np.float64)
        weight = np.zeros(prev.shape[:1], np.float64)
        for arrays, counts in updates:
            w = np.asarray(counts[name], np.float64)
            total += np.asarray(arrays[name], np.float64) * _rows_like(w, prev)
            weight += w
        w = _rows_like(weight, prev)
        avg = total / np.where(w > 0, w, 1.0)
        out[name] = np.where(w > 0, prev + server_lr * (avg - prev), prev).astype(np.float32)
    return out


def _rows_like(per_row: np.ndarray, array: np.ndarray) -> np.ndarray:
    """`per_row` reshaped to broadcast over the rows of `array`."""
    return per_row.reshape(per_row.shape + (1,) * (array.ndim - per_row.ndim))
