import numpy as np

from fedrec_app.core.scoring import predict_ratings, ranking_scores, top_n


def _arrays(rng: np.random.Generator, items: int = 6, k: int = 3, r: int = 2) -> dict:
    return {
        "global_bias": np.float32(3.5),
        "item_bias": rng.normal(size=items).astype(np.float32),
        "item_embedding": rng.normal(size=(items, k)).astype(np.float32),
        "item_rank_embedding": rng.normal(size=(items, r)).astype(np.float32),
        "item_rank_bias": rng.normal(size=items).astype(np.float32),
    }


def test_predicted_rating_is_the_biased_mf_formula_clipped(rng) -> None:
    arrays = _arrays(rng)
    user, bias = rng.normal(size=3), 0.25
    expected = [
        min(5.0, max(1.0, 3.5 + bias + arrays["item_bias"][i] + arrays["item_embedding"][i] @ user))
        for i in range(6)
    ]
    np.testing.assert_allclose(predict_ratings(arrays, user, bias), expected, rtol=1e-6)
    arrays["item_bias"][:] = 100.0
    assert np.all(predict_ratings(arrays, user, bias) == 5.0)


def test_ranking_score_and_item_subset(rng) -> None:
    arrays = _arrays(rng)
    user = rng.normal(size=2)
    full = ranking_scores(arrays, user)
    expected = arrays["item_rank_embedding"] @ user + arrays["item_rank_bias"]
    np.testing.assert_allclose(full, expected, rtol=1e-6)
    np.testing.assert_allclose(ranking_scores(arrays, user, np.array([4, 1])), full[[4, 1]])


def test_top_n_orders_best_first_breaks_ties_by_row_and_skips_excluded() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.9, -1.0])
    assert top_n(scores, 3).tolist() == [3, 1, 2]
    excluded = np.array([False, False, False, True, False])
    assert top_n(scores, 10, exclude=excluded).tolist() == [1, 2, 0, 4]
    assert top_n(scores, 0).tolist() == []
    assert top_n(scores, 5, exclude=np.ones(5, dtype=bool)).tolist() == []


def test_top_n_agrees_with_full_sort(rng) -> None:
    scores = rng.normal(size=500)
    assert top_n(scores, 20).tolist() == np.argsort(-scores)[:20].tolist()
