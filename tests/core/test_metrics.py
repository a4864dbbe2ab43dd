import math

import numpy as np
import pytest

from fedrec_app.core.metrics import EvalSums, rating_sums, user_ranking_sums


def test_ranking_sums_match_hand_computed_case() -> None:
    # Recommended rows best first; relevant rows 3, 1 and 7 (7 is not recommended).
    sums = user_ranking_sums(np.array([5, 3, 9, 1]), np.array([3, 1, 7]), k=4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # hits at ranks 2 and 4
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three relevant items fit in the top 4
    m = sums.finalize()
    assert m["hr@4"] == 1.0
    assert m["p@4"] == pytest.approx(2 / 4)
    assert m["r@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)


def test_ranking_only_counts_top_k_and_users_with_relevant_items() -> None:
    miss = user_ranking_sums(np.arange(20), np.array([10]), k=10)  # relevant item at rank 11
    assert (miss.hits, miss.precision, miss.ndcg, miss.num_users) == (0.0, 0.0, 0.0, 1)
    nothing_relevant = user_ranking_sums(np.arange(10), np.array([], dtype=int))
    assert nothing_relevant.num_users == 0
    m = (miss + nothing_relevant).finalize()
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0


def test_rating_sums_and_global_combination_is_not_a_mean_of_node_means() -> None:
    node_a = rating_sums(np.array([3.0, 3.0]), np.array([5.0, 1.0]))  # errors 2, 2
    node_b = rating_sums(np.array([4.0]), np.array([4.0]))  # error 0
    total = (node_a + node_b).finalize()
    assert total["rmse"] == pytest.approx(math.sqrt(8 / 3))
    assert total["mae"] == pytest.approx(4 / 3)
    mean_of_means = (node_a.finalize()["rmse"] + node_b.finalize()["rmse"]) / 2
    assert total["rmse"] != pytest.approx(mean_of_means)


def test_empty_sums_finalize_to_nan_and_round_trip_through_dict() -> None:
    assert all(math.isnan(v) for v in EvalSums().finalize().values())
    sums = rating_sums(np.array([1.0, 2.0]), np.array([2.0, 2.0])) + user_ranking_sums(
        np.array([1, 2]), np.array([2])
    )
    again = EvalSums.from_dict(sums.to_dict())
    assert again == sums
    assert isinstance(again.num_ratings, int)


def test_sums_with_different_k_do_not_add() -> None:
    with pytest.raises(ValueError, match="k=5"):
        _ = EvalSums(k=5) + EvalSums(k=10)
