"""Centralized training of the same model on the same split: the reference for federation.

The training ratings are split into train and validation exactly as the partitioner does it
(a one-partition set with the same seed and validation fraction), so the central model sees the
same training ratings the federation's nodes see together. The number of epochs is chosen on the
validation slice, never on the test set, separately for the two heads (they share no weights):
the rating head by validation RMSE, the ranking head by validation NDCG@10.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedrec_app.core.metrics import TRAIN_LOSS, split_metrics
from fedrec_app.core.training import (
    MODEL_TYPE,
    TrainConfig,
    evaluate,
    implicit_matrix,
    init_item_arrays,
    init_user_arrays,
    item_rows,
    model_shape,
    rated_keys,
    train_local,
    user_rows,
    with_implicit,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedrec_app.data.catalogue import Catalogue

log = logging.getLogger(__name__)

RANKING_ARRAYS: tuple[str, ...] = ("item_rank_embedding", "item_rank_bias", "user_rank_embedding")


@dataclass
class CentralResult:
    """Test metrics of the selected model, its arrays and the per-epoch validation history.

    `user_arrays` are the rows a checkpoint holds: with the implicit term added
    (`fedrec_app.core.training`)."""

    metrics: dict[str, float]
    seconds: float
    rating_epoch: int
    ranking_epoch: int
    shared_arrays: dict[str, np.ndarray]
    user_arrays: dict[str, np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class CentralData:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    catalogue: Catalogue


def load_central_data(
    data_dir: Path, split: str, seed: int, val_fraction: float | None = None
) -> CentralData:
    """Train/val/test of `split` with the partitioner's validation slice (same seed, fraction)."""
    from fedrec_app.data.partition import (
        DEFAULT_VAL_FRACTION,
        load_partition_set_member,
        make_partitions,
    )

    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    with tempfile.TemporaryDirectory(prefix="fedrec-central-") as tmp:
        out = Path(tmp) / "central"
        make_partitions(Path(data_dir), out, 1, split=split, seed=seed, val_fraction=fraction)
        part = load_partition_set_member(out, 0)
    return CentralData(part.train, part.val, part.test, part.catalogue)


def train_central(
    data: CentralData, cfg: TrainConfig, max_epochs: int = 40, patience: int = 6
) -> CentralResult:
    """Train epoch by epoch on `data.train`, keep each head's best epoch on `data.val`.

    Stops after `max_epochs`, or once neither head improved for `patience` epochs.
    """
    start = time.perf_counter()
    users = np.unique(
        np.concatenate([f["user_id"].to_numpy() for f in (data.train, data.val, data.test)])
    )
    shared = init_item_arrays(len(data.catalogue), cfg)
    user_arrays = init_user_arrays(users, cfg)
    seen = pd.concat([data.train, data.val], ignore_index=True)
    best_rating = (math.inf, 0, shared, user_arrays)
    best_ranking = (-math.inf, 0, shared, user_arrays)
    history: list[dict[str, float]] = []
    optimizer_state = None
    for epoch in range(1, max_epochs + 1):
        result = train_local(
            shared,
            user_arrays,
            data.train,
            data.catalogue,
            cfg,
            epochs=1,
            seed=cfg.seed * 100_003 + epoch,
            also_rated=data.val,
            optimizer_state=optimizer_state,
        )
        shared, user_arrays = result.shared_arrays, result.user_arrays
        optimizer_state = result.optimizer_state
        val = evaluate(shared, user_arrays, data.train, data.val, data.catalogue).finalize()
        history.append({"epoch": epoch, "loss": result.metrics["loss"], **val})
        log.info(
            "epoch %d: loss %.4f, val rmse %.4f ndcg@10 %.4f (%.1f s)",
            epoch,
            result.metrics["loss"],
            val["rmse"],
            val["ndcg@10"],
            time.perf_counter() - start,
        )
        if val["rmse"] < best_rating[0]:
            best_rating = (val["rmse"], epoch, shared, user_arrays)
        if val["ndcg@10"] > best_ranking[0]:
            best_ranking = (val["ndcg@10"], epoch, shared, user_arrays)
        if epoch - max(best_rating[1], best_ranking[1]) >= patience:
            break
    shared, user_arrays = combine_heads(best_rating[2:], best_ranking[2:])
    metrics = evaluate(shared, user_arrays, seen, data.test, data.catalogue).finalize()
    if cfg.implicit:  # the served user rows hold the implicit term (over train + validation)
        movie_ids = np.asarray(data.catalogue.movie_ids, np.int64)
        keys = rated_keys(
            user_rows(user_arrays, seen["user_id"].to_numpy()),
            item_rows(movie_ids, seen["movie_id"].to_numpy()),
            len(movie_ids),
        )
        matrix = implicit_matrix(keys, len(user_arrays["user_ids"]), len(movie_ids))
        user_arrays = with_implicit(shared, user_arrays, matrix)
    return CentralResult(
        metrics=metrics,
        seconds=time.perf_counter() - start,
        rating_epoch=best_rating[1],
        ranking_epoch=best_ranking[1],
        shared_arrays=shared,
        user_arrays=user_arrays,
        history=history,
    )


def combine_heads(
    rating: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    ranking: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(shared, user) arrays: rating head from `rating`, ranking head from `ranking`."""
    merged = []
    for rating_part, ranking_part in zip(rating, ranking, strict=True):
        merged.append(
            {
                name: (ranking_part if name in RANKING_ARRAYS else rating_part)[name]
                for name in rating_part
            }
        )
    return merged[0], merged[1]


def write_central_checkpoint(
    folder: Path,
    result: CentralResult,
    data: CentralData,
    cfg: TrainConfig,
    split: str,
    signing_key: Ed25519PrivateKey | None = None,
) -> Path:
    """Write the selected central model as a checkpoint folder (with user factors), signed with
    ``signing_key`` when given."""
    from fedrec_app.core.checkpoint import write_checkpoint
    from fedrec_app.core.model import save_model_file
    from fedrec_app.core.rated import rated_arrays

    rated = pd.concat([data.train, data.val, data.test], ignore_index=True)
    arrays = {
        "item_ids": np.asarray(data.catalogue.movie_ids, np.int64),
        **result.shared_arrays,
        **result.user_arrays,
        # what each user rated, so that the gateway never recommends it to them
        **rated_arrays(
            result.user_arrays["user_ids"],
            rated["user_id"].to_numpy(),
            rated["movie_id"].to_numpy(),
        ),
    }
    shape = model_shape(cfg, len(result.user_arrays["user_ids"]), len(data.catalogue))
    manifest = {
        "run_id": f"central-{split}-seed{cfg.seed}",
        "round": max(result.rating_epoch, result.ranking_epoch),
        "model": {"type": MODEL_TYPE, "hyperparameters": cfg.to_dict()},
        "metrics": {**split_metrics("test", result.metrics), "seconds": result.seconds},
        "history": [
            {
                "round": h["epoch"],
                TRAIN_LOSS: h["loss"],
                **split_metrics("val", {k: v for k, v in h.items() if k not in ("epoch", "loss")}),
            }
            for h in result.history
        ],
        "run_config": {
            "mode": "central",
            "split": split,
            "rating_epoch": result.rating_epoch,
            "ranking_epoch": result.ranking_epoch,
        },
    }
    return write_checkpoint(
        Path(folder),
        arrays,
        data.catalogue,
        manifest,
        write_model=lambda path: save_model_file(arrays, shape, path),
        signing_key=signing_key,
    )
