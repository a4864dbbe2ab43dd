"""The gateway's numpy scores equal the Keras model's on the same checkpoint (<= 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec_app.core import scoring
from fedrec_app.core.checkpoint import MODEL, read_checkpoint, write_checkpoint
from fedrec_app.gateway.recommender import Recommender

pytestmark = pytest.mark.slow  # imports TensorFlow


def test_numpy_serving_matches_keras(checkpoint_dir, tmp_path) -> None:
    keras = pytest.importorskip("keras")
    from fedrec_app.core.model import ModelShape, save_model_file

    source = read_checkpoint(checkpoint_dir)
    a = source.arrays
    shape = ModelShape(
        num_users=len(a["user_ids"]),
        num_items=len(a["item_ids"]),
        embedding_dim=a["item_embedding"].shape[1],
        rank_dim=a["item_rank_embedding"].shape[1],
        l2_rating=0.1,
        l2_ranking=0.01,
        l2_bias=0.01,
    )
    folder = write_checkpoint(
        tmp_path / "final",
        a,
        source.catalogue,
        {k: source.manifest[k] for k in ("run_id", "round", "model", "history")},
        write_model=lambda path: save_model_file(a, shape, path),
    )
    recommender = Recommender.load(folder)
    model = keras.models.load_model(folder / MODEL)  # the seed's way: the saved Keras file
    num_items = shape.num_items
    items = np.arange(num_items)
    for user_id in (1, 4, 13, 25):
        row = user_id - 1
        out = model.predict(
            {"user": np.full(num_items, row), "item": items, "negatives": items[:, None]},
            batch_size=num_items,
            verbose=0,
        )
        keras_rating = np.asarray(out["rating"]).reshape(-1)
        keras_score = np.asarray(out["rank"])[:, 0]
        user = recommender.user(user_id)
        numpy_rating = recommender.predict([user_id] * num_items, list(source.catalogue.movie_ids))
        numpy_score = scoring.ranking_scores(recommender.arrays, user.rank_vector)
        assert np.max(np.abs(numpy_rating - keras_rating)) <= 1e-4
        assert np.max(np.abs(numpy_score - keras_score)) <= 1e-4
        # the same ranking: top-N by score among items predicted >= 2.0
        keras_top = [i for i in np.argsort(-keras_score, kind="stable") if keras_rating[i] >= 2.0]
        served = [s.row for s in recommender.recommend(user, 10, 2.0)]
        assert served == keras_top[:10]
