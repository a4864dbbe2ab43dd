"""Ratings count (issue 13): on a trained checkpoint, rating the Star Wars trilogy 1 star instead
of 5 stars changes the fold-in's top 10 (at most 3 of 10 in common)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec_app.gateway.recommender import Recommender

pytestmark = pytest.mark.slow  # trains a small model (TensorFlow), about a minute on 2 cores

STAR_WARS, EMPIRE, JEDI = 50, 172, 181


@pytest.fixture(scope="module")
def trained(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    """A small central model trained on u1 with the app's ratings treatment, as a checkpoint."""
    from fedrec_app.core.central import (
        load_central_data,
        train_central,
        write_central_checkpoint,
    )
    from fedrec_app.core.config import app_defaults, parse_run_config
    from fedrec_app.core.model import configure_device

    configure_device(threads=2)
    app = parse_run_config(app_defaults()).train_config()
    cfg = type(app)(**{**app.to_dict(), "embedding_dim": 16, "rank_dim": 16, "learning_rate": 0.01})
    assert cfg.low_rating >= 1  # the app's default: low ratings are explicit negatives
    data = load_central_data(ml100k_dir, "u1", seed=0)
    result = train_central(data, cfg, max_epochs=6, patience=6)
    folder = tmp_path_factory.mktemp("trained") / "final"
    write_central_checkpoint(folder, result, data, cfg, "u1")
    return Recommender.load(folder)


def top10(recommender: Recommender, stars: float) -> list[int]:
    rated = [STAR_WARS, EMPIRE, JEDI]
    user = recommender.fold_in(rated, [stars] * 3)
    rows = recommender.item_rows(rated)
    scored = recommender.recommend(user, 10, 2.0, recommender.candidates(exclude_rows=rows))
    return [int(recommender.catalogue.movie_ids[s.row]) for s in scored]


def test_one_star_and_five_stars_give_different_top10(trained: Recommender) -> None:
    loved, hated = top10(trained, 5.0), top10(trained, 1.0)
    assert len(loved) == len(hated) == 10
    assert len(set(loved) & set(hated)) <= 3, (loved, hated)
