from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import rating_sums
from fedrec_app.core.training import (
    TrainConfig,
    count_weights,
    evaluate,
    implicit_matrix,
    init_item_arrays,
    init_user_arrays,
    item_rows,
    rank_labels,
    rated_keys,
    sample_negatives,
    train_local,
    user_rows,
    with_implicit,
)
from fedrec_app.data.movielens import read_items, read_split


def test_negatives_are_never_items_the_user_rated(rng: np.random.Generator) -> None:
    num_items = 12
    # User 0 rated all items but 11; user 1 rated a random half; user 2 rated one item.
    users = np.r_[np.zeros(11, int), np.ones(6, int), [2]]
    items = np.r_[np.arange(11), rng.choice(num_items, 6, replace=False), [4]]
    keys = rated_keys(users, items, num_items)
    batch_users = np.repeat([0, 1, 2], 200)
    neg = sample_negatives(batch_users, keys, num_items, 5, rng)
    assert neg.shape == (600, 5)
    assert np.all(neg[batch_users == 0] == 11)
    for u in (1, 2):
        assert not np.isin(neg[batch_users == u], items[users == u]).any()
    # Everything that is allowed does get drawn (uniform over the unrated items).
    assert set(np.unique(neg[batch_users == 2])) == set(range(num_items)) - {4}


def test_user_who_rated_every_item_has_no_negatives(rng: np.random.Generator) -> None:
    keys = rated_keys(np.zeros(3, int), np.arange(3), 3)
    with pytest.raises(FedrecError, match="rated every item"):
        sample_negatives(np.zeros(2, int), keys, 3, 1, rng)


def test_user_rows_do_not_depend_on_the_partition() -> None:
    cfg = TrainConfig(embedding_dim=4, rank_dim=3)
    alone = init_user_arrays([7], cfg)
    among = init_user_arrays([3, 7, 11], cfg)
    for name in ("user_embedding", "user_rank_embedding"):
        np.testing.assert_array_equal(alone[name][0], among[name][1])
    assert among["user_ids"].tolist() == [3, 7, 11]


def test_evaluate_ranks_only_items_not_rated_in_training() -> None:
    catalogue = SimpleNamespace(movie_ids=np.array([10, 20, 30, 40]))
    shared = {
        "item_embedding": np.zeros((4, 2), np.float32),
        "item_bias": np.array([0.0, 0.5, 0.0, -3.0], np.float32),
        "item_rank_embedding": np.zeros((4, 2), np.float32),
        "item_rank_bias": np.array([4.0, 3.0, 2.0, 1.0], np.float32),  # item 10 scores highest
        "global_bias": np.float32(3.0),
    }
    users = {
        "user_ids": np.array([1]),
        "user_embedding": np.zeros((1, 2), np.float32),
        "user_bias": np.array([0.25], np.float32),
        "user_rank_embedding": np.zeros((1, 2), np.float32),
    }
    frame = lambda m, r: pd.DataFrame({"user_id": [1] * len(m), "movie_id": m, "rating": r})  # noqa: E731
    sums = evaluate(shared, users, frame([10], [5.0]), frame([20, 40], [5.0, 2.0]), catalogue, k=2)
    m = sums.finalize()
    # Item 10 was rated in training: the top 2 are items 20, 30; 20 is the only relevant one.
    assert (m["hr@2"], m["p@2"], m["r@2"], m["ndcg@2"]) == (1.0, 0.5, 1.0, 1.0)
    expected = rating_sums(np.array([3.75, 1.0]), np.array([5.0, 2.0]), k=2)  # 3-3+0.25 clips to 1
    assert sums.sse == pytest.approx(expected.sse) and sums.num_ratings == 2


@pytest.fixture(scope="module")
def synthetic_split(synthetic_ml):
    train, test = read_split(synthetic_ml, "u1")
    return train, test, read_items(synthetic_ml)


def test_short_training_beats_the_global_mean(synthetic_split) -> None:
    train, test, catalogue = synthetic_split
    train = train[~train["movie_id"].isin(catalogue.movie_ids[:3])]  # items nobody rated
    cfg = TrainConfig(embedding_dim=8, rank_dim=8, batch_size=64, learning_rate=0.01, seed=1)
    shared = init_item_arrays(len(catalogue), cfg)
    users = init_user_arrays(np.union1d(train["user_id"], test["user_id"]), cfg)
    result = train_local(shared, users, train, catalogue, cfg, epochs=15)
    trained = evaluate(result.shared_arrays, result.user_arrays, train, test, catalogue)
    mean = rating_sums(np.full(len(test), train["rating"].mean()), test["rating"].to_numpy())
    assert trained.finalize()["rmse"] < mean.finalize()["rmse"] - 0.05

    # Counts: each rating touched its item once per epoch; rows no rating touched are unchanged.
    rated = np.bincount(
        np.searchsorted(catalogue.movie_ids, train["movie_id"]), minlength=len(catalogue)
    )
    np.testing.assert_array_equal(result.item_counts["item_embedding"], 15 * rated)
    assert int(result.item_counts["global_bias"]) == 15 * len(train)
    untouched = rated == 0
    assert untouched.any()
    np.testing.assert_array_equal(
        result.shared_arrays["item_embedding"][untouched], shared["item_embedding"][untouched]
    )
    assert (result.item_counts["item_rank_bias"] >= result.item_counts["item_bias"]).all()


def test_train_local_refuses_users_without_rows(synthetic_split) -> None:
    train, _, catalogue = synthetic_split
    cfg = TrainConfig(embedding_dim=4, rank_dim=4)
    users = init_user_arrays([1], cfg)
    with pytest.raises(FedrecError, match="user_id"):
        train_local(init_item_arrays(len(catalogue), cfg), users, train, catalogue, cfg, 1)


def test_count_weights_hold_rare_rows_tighter() -> None:
    rows = np.array([0, 0, 0, 1])  # row 0 has 3 examples, row 1 one; mean count over examples 2.5
    np.testing.assert_allclose(count_weights(rows, 1.0), [2.5 / 3] * 3 + [2.5], rtol=1e-6)
    np.testing.assert_array_equal(count_weights(rows, 0.0), np.ones(4))


def test_rank_labels_make_low_ratings_explicit_negatives() -> None:
    ratings = np.array([1, 2, 3, 4, 5], np.float32)
    np.testing.assert_array_equal(rank_labels(ratings, 2.0), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(rank_labels(ratings, 0.0), np.ones(5))


def test_implicit_matrix_normalises_each_users_rated_items() -> None:
    keys = rated_keys(np.array([0, 0, 0, 0, 2]), np.array([1, 3, 4, 4, 0]), num_items=5)
    matrix = implicit_matrix(keys, num_users=3, num_items=5)
    want = np.zeros((3, 5), np.float32)
    want[0, [1, 3, 4]] = 3**-0.5  # the duplicate (0, 4) counts once
    want[2, 0] = 1.0
    np.testing.assert_allclose(matrix, want, rtol=1e-6)


@pytest.mark.slow  # TensorFlow
def test_implicit_term_is_what_serving_and_evaluation_score(synthetic_split) -> None:
    """Training with the implicit term: the served user rows are the node's rows plus the term,
    and evaluating the node's rows with `item_implicit` equals evaluating the served rows."""
    train, test, catalogue = synthetic_split
    cfg = TrainConfig(embedding_dim=8, rank_dim=8, batch_size=64, learning_rate=0.01, implicit=1)
    shared = init_item_arrays(len(catalogue), cfg)
    assert not shared["item_implicit"].any()
    users = init_user_arrays(np.union1d(train["user_id"], test["user_id"]), cfg)
    result = train_local(shared, users, train, catalogue, cfg, epochs=3)
    implicit = result.shared_arrays["item_implicit"]
    assert implicit.any()
    movie_ids = np.asarray(catalogue.movie_ids)
    rated = np.bincount(item_rows(movie_ids, train["movie_id"]), minlength=len(catalogue))
    assert (result.item_counts["item_implicit"][rated == 0] == 0).all()
    assert (result.item_counts["item_implicit"][rated > 0] > 0).all()
    keys = rated_keys(
        user_rows(users, train["user_id"].to_numpy()),
        item_rows(movie_ids, train["movie_id"].to_numpy()),
        len(catalogue),
    )
    matrix = implicit_matrix(keys, len(users["user_ids"]), len(catalogue))
    np.testing.assert_allclose(
        result.serving_user_arrays["user_embedding"],
        result.user_arrays["user_embedding"] + matrix @ implicit,
        atol=1e-5,
    )
    assert with_implicit(
        shared | {"item_implicit": implicit}, result.user_arrays, matrix
    ).keys() == (result.user_arrays.keys())
    own = evaluate(result.shared_arrays, result.user_arrays, train, test, catalogue).finalize()
    base = {k: v for k, v in result.shared_arrays.items() if k != "item_implicit"}
    served = evaluate(base, result.serving_user_arrays, train, test, catalogue).finalize()
    assert own["rmse"] == pytest.approx(served["rmse"], abs=1e-5)
    assert own["ndcg@10"] == pytest.approx(served["ndcg@10"], abs=1e-9)
