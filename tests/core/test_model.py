import numpy as np
import pytest

from fedrec_app.core import scoring
from fedrec_app.core.model import (
    MODEL_ARRAYS,
    FedRecModel,
    ModelShape,
    build_model,
    configure_device,
    get_optimizer_state,
    reset_optimizer,
    save_model_file,
    set_optimizer_state,
)

SHAPE = ModelShape(
    num_users=5,
    num_items=9,
    embedding_dim=4,
    rank_dim=3,
    l2_rating=0.1,
    l2_ranking=0.01,
    l2_bias=0.01,
)


def random_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    s = SHAPE
    f = lambda *shape: rng.normal(0.0, 0.8, shape).astype(np.float32)  # noqa: E731
    return {
        "item_embedding": f(s.num_items, s.embedding_dim),
        "item_bias": f(s.num_items),
        "item_rank_embedding": f(s.num_items, s.rank_dim),
        "item_rank_bias": f(s.num_items),
        "global_bias": np.float32(3.4),
        "user_embedding": f(s.num_users, s.embedding_dim),
        "user_bias": f(s.num_users),
        "user_rank_embedding": f(s.num_users, s.rank_dim),
    }


def test_keras_model_computes_the_scoring_formulas(rng: np.random.Generator) -> None:
    configure_device(-1)
    arrays = random_arrays(rng)
    model = FedRecModel(SHAPE)
    model.set_arrays(arrays)
    users = np.repeat(np.arange(SHAPE.num_users), SHAPE.num_items)
    items = np.tile(np.arange(SHAPE.num_items), SHAPE.num_users)
    negatives = rng.integers(0, SHAPE.num_items, size=(len(users), 2))
    out = model({"user": users, "item": items, "negatives": negatives}, training=False)
    rating = np.asarray(out["rating"]).reshape(SHAPE.num_users, SHAPE.num_items)
    rank = np.asarray(out["rank"])
    assert rank.shape == (len(users), 3)
    for u in range(SHAPE.num_users):
        want_rating = scoring.predict_ratings(
            arrays, arrays["user_embedding"][u], arrays["user_bias"][u]
        )
        want_rank = scoring.ranking_scores(arrays, arrays["user_rank_embedding"][u])
        np.testing.assert_allclose(rating[u], want_rating, atol=1e-4, rtol=0)
        rows = users == u
        np.testing.assert_allclose(rank[rows, 0], want_rank, atol=1e-4, rtol=0)
        np.testing.assert_allclose(rank[rows, 1:], want_rank[negatives[rows]], atol=1e-4, rtol=0)
    # The clipping is part of the formula: these random arrays reach both ends of the scale.
    assert rating.min() == 1.0 and rating.max() == 5.0


def test_l2_is_a_batch_loss_not_a_weight_regularizer(rng: np.random.Generator) -> None:
    model = FedRecModel(SHAPE)
    model.set_arrays(random_arrays(rng))
    model({"user": np.array([0]), "item": np.array([1]), "negatives": np.array([[2]])})
    assert len(model.losses) == 2  # one per head, from add_loss on the gathered rows
    assert all(w.regularizer is None for w in model.weights)


def test_arrays_round_trip_and_shape_errors(rng: np.random.Generator) -> None:
    arrays = random_arrays(rng)
    model = FedRecModel(SHAPE)
    model.set_arrays(arrays)
    back = model.get_arrays()
    assert set(back) == set(MODEL_ARRAYS)
    for name in MODEL_ARRAYS:
        np.testing.assert_array_equal(back[name], arrays[name])
    arrays["item_bias"] = arrays["item_bias"][:-1]
    with pytest.raises(ValueError, match="item_bias"):
        model.set_arrays(arrays)


def test_saved_model_file_loads_back_with_the_same_arrays(rng, tmp_path) -> None:
    import keras

    arrays = random_arrays(rng)
    save_model_file(arrays, SHAPE, tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, FedRecModel) and loaded.shape_spec == SHAPE
    for name, value in loaded.get_arrays().items():
        np.testing.assert_array_equal(value, arrays[name])


def test_optimizer_state_round_trips_and_resets(rng) -> None:
    model = build_model(SHAPE, 0.01)
    batch = {"user": np.array([0, 1]), "item": np.array([1, 2]), "negatives": np.array([[3], [4]])}
    target = {"rating": np.array([3.0, 4.0]), "rank": np.array([[1.0, 0.0], [1.0, 0.0]])}
    model.fit(batch, target, verbose=0)
    state = get_optimizer_state(model)
    assert int(state["opt_00"]) == 1  # one step taken
    assert any(np.abs(v).sum() > 0 for v in state.values())
    reset_optimizer(model)
    assert all(np.abs(v).sum() == 0 for v in get_optimizer_state(model).values())
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    set_optimizer_state(model, state)
    for name, value in get_optimizer_state(model).items():
        np.testing.assert_array_equal(value, state[name])
    with pytest.raises(ValueError, match="optimizer state"):
        set_optimizer_state(model, {"opt_00": state["opt_00"]})


def test_implicit_model_scores_like_numpy_with_the_implicit_term(rng: np.random.Generator) -> None:
    """SVD++ term: Keras with the matrix N equals numpy with user_embedding + N @ item_implicit;
    a model saved with the served rows (N zero) scores the same."""
    configure_device(-1)
    shape = ModelShape(**{**SHAPE.__dict__, "implicit": True})
    arrays = random_arrays(rng)
    arrays["item_implicit"] = rng.normal(0.0, 0.5, (shape.num_items, shape.embedding_dim))
    matrix = np.zeros((shape.num_users, shape.num_items), np.float32)
    matrix[0, [1, 2, 5]] = 3**-0.5
    matrix[3, 7] = 1.0
    model = FedRecModel(shape)
    model.set_arrays(arrays)
    model.set_implicit(matrix)
    assert set(model.get_arrays()) == set(MODEL_ARRAYS) | {"item_implicit"}
    users = np.repeat(np.arange(shape.num_users), shape.num_items)
    items = np.tile(np.arange(shape.num_items), shape.num_users)
    out = model({"user": users, "item": items, "negatives": items[:, None]}, training=False)
    rating = np.asarray(out["rating"]).reshape(shape.num_users, shape.num_items)
    served = arrays["user_embedding"] + matrix @ arrays["item_implicit"]
    for u in range(shape.num_users):
        want = scoring.predict_ratings(arrays, served[u], arrays["user_bias"][u])
        np.testing.assert_allclose(rating[u], want, atol=1e-4, rtol=0)
    # without item_implicit the model loads zeros: it scores like the plain model
    plain = FedRecModel(shape)
    plain.set_arrays({k: v for k, v in arrays.items() if k != "item_implicit"})
    assert not plain.get_arrays()["item_implicit"].any()
