"""Unit tests of the numpy serving path: steps, fold-in, predictions."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec_app.core import scoring
from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.rated import rated_lists
from fedrec_app.data.catalogue import movie_year
from fedrec_app.gateway.foldin import FoldInParams, fold_in_ranking, fold_in_rating
from fedrec_app.gateway.recommender import (
    Recommender,
    Scored,
    UnknownGenreError,
    UnknownIdsError,
    match_percent,
)


@pytest.fixture(scope="module")
def recommender(checkpoint_dir) -> Recommender:
    return Recommender.load(checkpoint_dir)


def test_recommend_orders_by_score_and_applies_threshold(recommender) -> None:
    user = recommender.user(5)
    ratings = scoring.predict_ratings(recommender.arrays, user.vector, user.bias)
    scores = scoring.ranking_scores(recommender.arrays, user.rank_vector)
    for threshold in (1.0, 3.0, 4.5):
        got = recommender.recommend(user, 10, threshold)
        allowed = np.flatnonzero(ratings >= threshold)
        want = allowed[np.argsort(-scores[allowed], kind="stable")][:10]
        assert [s.row for s in got] == list(want)
        assert all(s.rating >= threshold for s in got)


def test_candidates_genre_and_exclusions(recommender) -> None:
    mask = recommender.candidates("Drama", exclude_rows=[0, 3])
    genres = recommender.catalogue.genres
    assert not mask[0] and not mask[3]
    assert all(mask[i] == ("Drama" in genres[i]) for i in range(len(genres)) if i not in (0, 3))
    user = recommender.user(1)
    assert all("Drama" in genres[s.row] for s in recommender.recommend(user, 20, 1.0, mask))


def test_unknown_ids_are_named(recommender) -> None:
    with pytest.raises(UnknownIdsError, match="unknown user id: 999"):
        recommender.user(999)
    with pytest.raises(UnknownIdsError, match="unknown movie ids: 2, 4"):
        recommender.item_rows([1, 4, 2, 4])
    with pytest.raises(UnknownIdsError, match="unknown user id: 0"):
        recommender.predict([1, 0], [1, 1])


def test_predict_names_every_unknown_user_and_movie(recommender) -> None:
    with pytest.raises(UnknownIdsError) as info:
        recommender.predict([1, 99999, 77, 99999], [88888, 1, 4, 1])
    assert info.value.unknown == {"user": [77, 99999], "movie": [4, 88888]}
    assert str(info.value) == "unknown user ids: 77, 99999; unknown movie ids: 4, 88888"
    with pytest.raises(UnknownIdsError) as info:
        recommender.require_known(user_ids=[1], movie_ids=[2])
    assert info.value.unknown == {"movie": [2]} and str(info.value) == "unknown movie id: 2"
    recommender.require_known(user_ids=[1, 25], movie_ids=[1, 79])  # all known: no error


def test_year_is_the_titles_when_it_has_one(recommender) -> None:
    cat = recommender.catalogue
    row = cat.index_of(3)
    assert (cat.titles[row], cat.years[row]) == ("Test Movie 3 (1973)", None)
    assert recommender.items[row]["year"] == 1973
    for item, title, year in zip(recommender.items, cat.titles, cat.years, strict=True):
        assert item["year"] == movie_year(title, year)


def test_genre_check_is_shared(recommender) -> None:
    assert recommender.checked_genre(None) is None
    assert recommender.checked_genre("Drama") == "Drama"
    for call in (
        lambda: recommender.checked_genre("Scifi"),
        lambda: recommender.search("", "Scifi"),
        lambda: recommender.candidates("Scifi"),
        lambda: recommender.search("", ""),
    ):
        with pytest.raises(UnknownGenreError) as info:
            call()
        assert info.value.known == list(recommender.genres)
        assert "unknown genre" in str(info.value)
    assert "'Scifi'; one of " in str(UnknownGenreError("Scifi", recommender.genres))
    drama = recommender.search("", "Drama", limit=200)
    assert drama and all("Drama" in recommender.catalogue.genres[r] for r in drama)


def test_predict_is_the_rating_formula(recommender, checkpoint_dir) -> None:
    a = read_checkpoint(checkpoint_dir).arrays
    got = recommender.predict([1, 2, 2], [1, 5, 79])
    for value, (row, item) in zip(got, [(0, 0), (1, 2), (1, 39)], strict=True):
        want = np.clip(
            a["global_bias"]
            + a["user_bias"][row]
            + a["item_bias"][item]
            + a["user_embedding"][row] @ a["item_embedding"][item],
            1,
            5,
        )
        assert value == pytest.approx(want, abs=1e-6)


def test_fold_in_rating_recovers_a_user(recommender) -> None:
    """Ratings made by a known vector are explained again by the solved vector (weak prior)."""
    a = recommender.arrays
    rng = np.random.default_rng(1)
    true_vector = rng.normal(0, 0.5, a["item_embedding"].shape[1])
    rows = np.arange(len(a["item_bias"]))
    raw = a["global_bias"] + 0.3 + a["item_bias"] + a["item_embedding"] @ true_vector
    params = FoldInParams(l2_rating=0.0, l2_bias=0.0, prior=1e-6)
    vector, bias = fold_in_rating(a, rows, raw, params)
    assert vector == pytest.approx(true_vector, abs=1e-3)
    assert bias == pytest.approx(0.3, abs=1e-3)
    # a strong prior pulls a user with few ratings toward the average user
    vector, bias = fold_in_rating(a, rows[:3], raw[:3], FoldInParams(prior=1e6))
    assert np.abs(vector).max() < 1e-3 and abs(bias) < 1e-3


def test_fold_in_ranking_finds_the_cluster_rated() -> None:
    """Items in two clusters: rating items of one cluster ranks that cluster's others first."""
    rng = np.random.default_rng(2)
    centres = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    cluster = np.repeat([0, 1], 30)
    arrays = {
        "item_rank_embedding": (centres[cluster] + rng.normal(0, 0.2, (60, 3))).astype(np.float32),
        "item_rank_bias": np.zeros(60, np.float32),
    }
    rated = np.array([31, 35, 40, 52])  # all in cluster 1
    vector = fold_in_ranking(arrays, rated, FoldInParams())
    scores = scoring.ranking_scores(arrays, vector)
    exclude = np.zeros(60, bool)
    exclude[rated] = True
    top = scoring.top_n(scores, 20, exclude)
    assert set(cluster[top]) == {1}
    # the solution is a stationary point of the regularised logistic loss
    params = FoldInParams()
    positives = np.zeros(60, bool)
    positives[rated] = True
    weights = np.where(positives, 1.0, params.negatives * 4 / 56)
    prob = 1 / (1 + np.exp(-(arrays["item_rank_embedding"] @ vector)))
    l2 = params.prior + 4 * (1 + params.negatives) * params.l2_ranking
    gradient = arrays["item_rank_embedding"].T @ (weights * (positives - prob)) - l2 * vector
    assert np.abs(gradient).max() < 1e-4


def test_fold_in_params_from_manifest() -> None:
    params = FoldInParams.from_hyperparameters(
        {"l2-rating": 0.2, "l2_bias": 0.05, "l2_ranking": 0.03, "negatives": 8, "other": "x"}
    )
    assert (params.l2_rating, params.l2_bias, params.l2_ranking) == (0.2, 0.05, 0.03)
    assert params.negatives == 8
    assert FoldInParams.from_hyperparameters(None) == FoldInParams()
    assert FoldInParams.from_hyperparameters({"negatives": True}) == FoldInParams()


def test_fold_in_gives_finite_vectors_of_the_model_shape(recommender) -> None:
    user = recommender.fold_in([1, 5], [5.0, 4.0])
    assert user.vector.shape == recommender.arrays["item_embedding"].shape[1:]
    assert np.isfinite(user.bias) and np.all(np.isfinite(user.rank_vector))


def test_rated_rows_are_each_users_rated_movies(recommender, checkpoint_dir) -> None:
    arrays = read_checkpoint(checkpoint_dir).arrays
    assert recommender.has_rated_movies
    for row, user_id in enumerate(arrays["user_ids"].tolist()):
        rows = recommender.rated_rows(user_id)
        movies = recommender.catalogue.movie_ids[rows]
        np.testing.assert_array_equal(np.sort(movies), rated_lists(arrays)[row])
    with pytest.raises(UnknownIdsError, match="unknown user id: 999"):
        recommender.rated_rows(999)


def test_match_is_the_ranking_score_as_a_percentage() -> None:
    assert [match_percent(s) for s in (-1e9, -2.0, 0.0, 0.4, 2.0, 1e9)] == [0, 12, 50, 60, 88, 100]
    assert Scored(row=0, score=1.0, rating=3.0).match == 73


def test_fold_in_ranking_low_ratings_push_the_cluster_down() -> None:
    """With low-rating 2, rating a cluster's items 1 star scores that cluster below the other;
    5 stars, above it."""
    rng = np.random.default_rng(3)
    centres = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    cluster = np.repeat([0, 1], 30)
    arrays = {
        "item_rank_embedding": (centres[cluster] + rng.normal(0, 0.2, (60, 3))).astype(np.float32),
        "item_rank_bias": np.zeros(60, np.float32),
    }
    rated = np.array([31, 35, 40, 52])  # all in cluster 1
    params = FoldInParams(low_rating=2.0)
    gap = {}  # mean score of cluster 1 minus cluster 0
    for stars in (1.0, 5.0):
        vector = fold_in_ranking(arrays, rated, params, np.full(len(rated), stars))
        scores = scoring.ranking_scores(arrays, vector)
        gap[stars] = scores[cluster == 1].mean() - scores[cluster == 0].mean()
    assert gap[5.0] > 1.0 and gap[1.0] < -0.2
    # without ratings (or with low-rating 0) every rated item is a positive, as before
    plain = fold_in_ranking(arrays, rated, FoldInParams())
    assert np.allclose(plain, fold_in_ranking(arrays, rated, FoldInParams(), np.ones(4)))
    assert np.allclose(plain, fold_in_ranking(arrays, rated, params, np.full(4, 5.0)))
    assert FoldInParams.from_hyperparameters({"low-rating": 2.0}).low_rating == 2.0
