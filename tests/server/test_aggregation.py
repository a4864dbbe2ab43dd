"""Per-row weighted FedAvg of the nodes' shared arrays."""

import numpy as np
import pytest

from fedrec_app.server.aggregation import average_rows


def test_average_rows_weights_by_counts_and_keeps_untouched_rows() -> None:
    prev = {"item_bias": np.array([9.0, 9.0, 9.0], np.float32), "global_bias": np.float32(3.0)}
    node_a = (
        {"item_bias": np.array([1.0, 2.0, 5.0]), "global_bias": np.float32(3.2)},
        {"item_bias": np.array([1, 3, 0]), "global_bias": np.array(30)},
    )
    node_b = (
        {"item_bias": np.array([3.0, 4.0, 7.0]), "global_bias": np.float32(3.6)},
        {"item_bias": np.array([3, 0, 0]), "global_bias": np.array(10)},
    )
    out = average_rows(prev, [node_a, node_b])
    np.testing.assert_allclose(out["item_bias"], [(1 * 1 + 3 * 3) / 4, 2.0, 9.0])
    assert float(out["global_bias"]) == pytest.approx((3.2 * 30 + 3.6 * 10) / 40)


def test_average_rows_handles_matrix_rows() -> None:
    prev = {"item_embedding": np.zeros((2, 3), np.float32)}
    upd = {"item_embedding": np.ones((2, 3))}
    out = average_rows(prev, [(upd, {"item_embedding": np.array([2, 0])})])
    np.testing.assert_array_equal(out["item_embedding"], [[1, 1, 1], [0, 0, 0]])


def test_server_learning_rate_scales_the_step_of_touched_rows_only() -> None:
    prev = {"item_bias": np.array([1.0, 1.0], np.float32)}
    update = ({"item_bias": np.array([2.0, 5.0])}, {"item_bias": np.array([4, 0])})
    out = average_rows(prev, [update], server_lr=2.0)
    np.testing.assert_allclose(out["item_bias"], [3.0, 1.0])
