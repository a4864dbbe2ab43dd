"""Local training and evaluation, shared by the Flower ClientApp and the central trainer.

Over 400 lines for one reason: one training step from arrays to arrays (config, initial rows,
row mapping, negatives, the loop, evaluation), whose parts share `TrainConfig` and the row maps.

Arrays travel as dicts of numpy arrays named as in `fedrec_app.core.scoring`:

- *shared arrays* (sent to the server, averaged per row): the item arrays plus `global_bias`, and
  with `TrainConfig.implicit` the SVD++ implicit factors `item_implicit (I,k)`;
- *user arrays* (stay with the node): `user_ids (U,) int64` naming the rows, plus the user arrays.

With the implicit term, a user's rating-head vector is `user_embedding + |R(u)| ** -0.5 *
sum_{j in R(u)} item_implicit[j]` over the items `R(u)` the user rated in the node's training data
(train + validation ratings; only which items, not the values). Each node computes it from its own
users' ratings, so nothing about a user leaves the node; `item_implicit` rows are averaged like the
other item rows. `LocalResult.serving_user_arrays` holds the user rows with the term added (what
a checkpoint holds and the gateway scores: `fedrec_app.core.scoring`'s formulas are unchanged).

The global bias is one trainable scalar, initialised to `TrainConfig.global_bias_init` and
averaged on the server like an item row whose count is the number of rating examples a node
trained on (so it converges to what one model trained on all ratings would learn).

Data frames have columns `user_id`, `movie_id`, `rating` (the partition format).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import RELEVANT_MIN, TOP_K, EvalSums, rating_sums, user_ranking_sums
from fedrec_app.core.scoring import (
    GLOBAL_ARRAYS,
    ITEM_ARRAYS,
    USER_ARRAYS,
    predict_ratings,
    ranking_scores,
    top_n,
)

if TYPE_CHECKING:
    import pandas as pd

    from fedrec_app.core.model import ModelShape
    from fedrec_app.data.catalogue import Catalogue

log = logging.getLogger(__name__)

SHARED_ARRAYS: tuple[str, ...] = ITEM_ARRAYS + GLOBAL_ARRAYS  # every model has these
IMPLICIT_ARRAY = "item_implicit"  # with TrainConfig.implicit: SVD++ implicit item factors (I,k)
MODEL_TYPE = "biased-mf+logistic-mf"  # the checkpoint manifest's model.type


@dataclass(frozen=True)
class TrainConfig:
    """Model and local-training hyperparameters (one set for central and federated training)."""

    embedding_dim: int = 32  # k: rating-head factors
    rank_dim: int = 32  # r: ranking-head factors
    l2_rating: float = 0.1  # per-batch L2 on the gathered rating-head factor rows
    l2_bias: float = 0.01  # per-batch L2 on the gathered user and item rating biases
    # Each example's rating-head L2 on a row is weighted (row count / mean count) ** -power, so
    # rarely rated users and items are held closer to zero (0 = plain per-example L2).
    l2_count_power: float = 0.5
    l2_ranking: float = 0.01  # per-batch L2 on the gathered ranking-head rows
    negatives: int = 4  # sampled negatives per rated example (ranking head)
    # Ranking head: a rating <= low_rating is an explicit negative (label 0) instead of a positive,
    # so low ratings push similar movies down (0 = every rated item is a positive).
    low_rating: float = 2.0
    # Rating head: 1 adds the SVD++ implicit user term (see the module docstring); 0 = plain MF.
    implicit: int = 1
    learning_rate: float = 5e-3  # Adam
    batch_size: int = 256
    local_epochs: int = 3  # epochs per call of train_local in a federation
    init_std: float = 0.01  # std of the initial factor rows
    global_bias_init: float = 3.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.implicit not in (0, 1):
            raise ValueError(f"TrainConfig.implicit must be 0 or 1, got {self.implicit}")
        for name in ("embedding_dim", "rank_dim", "negatives", "batch_size", "local_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "l2_rating",
            "l2_bias",
            "l2_count_power",
            "l2_ranking",
            "init_std",
            "low_rating",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class LocalResult:
    """What one local training returns.

    `item_counts[name]` holds, per row of shared array `name`, how many training examples
    gathered that row (0 = untouched: the server must not average this node's row in);
    `item_counts["global_bias"]` is a 0-d array with the number of rating examples.
    `optimizer_state` stays on the node and goes into the next call's `optimizer_state`.
    """

    shared_arrays: dict[str, np.ndarray]
    user_arrays: dict[str, np.ndarray]
    item_counts: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    serving_user_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.serving_user_arrays:
            self.serving_user_arrays = self.user_arrays


def model_shape(cfg: TrainConfig, num_users: int, num_items: int) -> ModelShape:
    """The `fedrec_app.core.model.ModelShape` for `cfg` and these table sizes (imports Keras)."""
    from fedrec_app.core.model import ModelShape

    return ModelShape(
        num_users=num_users,
        num_items=num_items,
        embedding_dim=cfg.embedding_dim,
        rank_dim=cfg.rank_dim,
        l2_rating=cfg.l2_rating,
        l2_ranking=cfg.l2_ranking,
        l2_bias=cfg.l2_bias,
        implicit=bool(cfg.implicit),
    )


def shared_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The shared arrays of a model trained with `cfg`."""
    return SHARED_ARRAYS + ((IMPLICIT_ARRAY,) if cfg.implicit else ())


# ------------------------------------------------------------------ initialisation


def init_item_arrays(
    num_items: int, cfg: TrainConfig, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Fresh shared arrays: small random factors, zero item biases, the initial global bias."""
    rng = np.random.default_rng([cfg.seed if seed is None else seed, 1])
    arrays = {
        "item_embedding": _normal(rng, (num_items, cfg.embedding_dim), cfg.init_std),
        "item_bias": np.zeros(num_items, np.float32),
        "item_rank_embedding": _normal(rng, (num_items, cfg.rank_dim), cfg.init_std),
        "item_rank_bias": np.zeros(num_items, np.float32),
        "global_bias": np.asarray(cfg.global_bias_init, np.float32),
    }
    if cfg.implicit:
        arrays[IMPLICIT_ARRAY] = np.zeros((num_items, cfg.embedding_dim), np.float32)
    return arrays


def init_user_arrays(
    user_ids: Iterable[int], cfg: TrainConfig, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Fresh user arrays; each user's rows depend only on (seed, user_id), not on the partition."""
    ids = np.unique(np.asarray(list(user_ids), dtype=np.int64))
    base = cfg.seed if seed is None else seed
    emb = np.empty((len(ids), cfg.embedding_dim), np.float32)
    rank = np.empty((len(ids), cfg.rank_dim), np.float32)
    for row, uid in enumerate(ids):
        rng = np.random.default_rng([base, 2, int(uid)])
        emb[row] = _normal(rng, (cfg.embedding_dim,), cfg.init_std)
        rank[row] = _normal(rng, (cfg.rank_dim,), cfg.init_std)
    return {
        "user_ids": ids,
        "user_embedding": emb,
        "user_bias": np.zeros(len(ids), np.float32),
        "user_rank_embedding": rank,
    }


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


# ------------------------------------------------------------------ index mapping, negatives


def user_rows(user_arrays: Mapping[str, np.ndarray], user_ids: np.ndarray) -> np.ndarray:
    """Rows of `user_ids` in the user arrays; FedrecError if a user has no row."""
    return _rows(np.asarray(user_arrays["user_ids"]), user_ids, "user_id", "user arrays")


def item_rows(movie_ids_sorted: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Rows of `movie_ids` in the catalogue; FedrecError if a movie is not in it."""
    return _rows(movie_ids_sorted, movie_ids, "movie_id", "catalogue")


def _rows(sorted_ids: np.ndarray, ids: np.ndarray, what: str, where: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    rows = np.searchsorted(sorted_ids, ids)
    found = (rows < len(sorted_ids)) & (sorted_ids[np.minimum(rows, len(sorted_ids) - 1)] == ids)
    if not found.all():
        missing = np.unique(ids[~found])[:5].tolist()
        raise FedrecError(f"{what} {missing} not in the {where}")
    return rows.astype(np.int64)


def rated_keys(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted unique keys `user_row * num_items + item_row` of the rated (user, item) pairs."""
    return np.unique(np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64))


def count_weights(rows: np.ndarray, power: float) -> np.ndarray:
    """Per-example L2 weights `(count of the example's row / mean over examples) ** -power`."""
    counts = np.bincount(rows)[rows].astype(np.float64)
    weights: np.ndarray = ((counts / counts.mean()) ** -power).astype(np.float32)
    return weights


def implicit_matrix(keys: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    """The `(num_users, num_items)` matrix `N` of the implicit term from the rated pairs `keys`
    (`rated_keys`): `|R(u)| ** -0.5` where user row `u` rated item row `j`, else 0."""
    keys = np.asarray(keys, np.int64)
    users, items = keys // num_items, keys % num_items
    counts = np.bincount(users, minlength=num_users).astype(np.float64)
    matrix = np.zeros((num_users, num_items), np.float32)
    matrix[users, items] = (counts[users] ** -0.5).astype(np.float32)
    return matrix


def with_implicit(
    shared_arrays: Mapping[str, np.ndarray],
    user_arrays: Mapping[str, np.ndarray],
    matrix: np.ndarray,
) -> dict[str, np.ndarray]:
    """`user_arrays` with the implicit term `matrix @ item_implicit` added to `user_embedding`
    (unchanged when `shared_arrays` has no `item_implicit`)."""
    out = dict(user_arrays)
    if IMPLICIT_ARRAY in shared_arrays:
        implicit = np.asarray(shared_arrays[IMPLICIT_ARRAY], np.float32)
        out["user_embedding"] = (
            np.asarray(user_arrays["user_embedding"], np.float32) + matrix @ implicit
        ).astype(np.float32)
    return out


def rank_labels(ratings: np.ndarray, low_rating: float) -> np.ndarray:
    """Ranking-head labels of rated examples: 1, or 0 (an explicit negative) if <= low_rating."""
    return (np.asarray(ratings, np.float64) > low_rating).astype(np.float32)


def sample_negatives(
    users: np.ndarray, keys: np.ndarray, num_items: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`(len(users), n)` item rows drawn uniformly from the items each user has NOT rated.

    `keys` are the rated pairs from `rated_keys`. A user who rated every item has no negatives:
    FedrecError.
    """
    users = np.asarray(users, np.int64)
    per_user = np.bincount((keys // num_items).astype(np.int64))
    full = np.flatnonzero(per_user >= num_items)
    if full.size and np.isin(users, full).any():
        raise FedrecError(f"user rows {full[:5].tolist()} rated every item: no negatives to sample")
    neg = rng.integers(0, num_items, size=(len(users), n), dtype=np.int64)
    todo = np.ones(neg.shape, dtype=bool)
    while True:
        rows, cols = np.nonzero(todo)
        query = users[rows] * num_items + neg[rows, cols]
        pos = np.searchsorted(keys, query)
        bad = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == query)
        if not bad.any():
            return neg
        todo[:] = False
        todo[rows[bad], cols[bad]] = True
        neg[rows[bad], cols[bad]] = rng.integers(0, num_items, size=int(bad.sum()), dtype=np.int64)


# ------------------------------------------------------------------ training


def train_local(
    shared_arrays: Mapping[str, np.ndarray],
    user_arrays: Mapping[str, np.ndarray],
    train_df: pd.DataFrame,
    catalogue: Catalogue,
    cfg: TrainConfig,
    epochs: int | None = None,
    *,
    seed: int | None = None,
    also_rated: pd.DataFrame | None = None,
    optimizer_state: Mapping[str, np.ndarray] | None = None,
) -> LocalResult:
    """Train both heads for `epochs` (default `cfg.local_epochs`) on `train_df`; return new arrays.

    Negatives are drawn per epoch from the catalogue items the user rated neither in `train_df`
    nor in `also_rated` (e.g. the node's validation ratings). `seed` varies the shuffling and the
    negatives between calls (e.g. the round number). The optimizer continues from
    `optimizer_state` (a previous result's `optimizer_state`, e.g. kept in the node's state dir)
    or starts fresh when it is None.
    """
    from fedrec_app.core.model import (
        cached_model,
        get_optimizer_state,
        reset_optimizer,
        set_optimizer_state,
    )

    epochs = cfg.local_epochs if epochs is None else epochs
    if len(train_df) == 0:
        raise FedrecError("no training ratings: cannot train")
    start = time.perf_counter()
    movie_ids = np.asarray(catalogue.movie_ids, np.int64)
    num_items = len(movie_ids)
    users = user_rows(user_arrays, train_df["user_id"].to_numpy())
    items = item_rows(movie_ids, train_df["movie_id"].to_numpy())
    ratings = train_df["rating"].to_numpy(np.float32)
    keys = rated_keys(users, items, num_items)
    if also_rated is not None and len(also_rated):
        extra_u = user_rows(user_arrays, also_rated["user_id"].to_numpy())
        extra_i = item_rows(movie_ids, also_rated["movie_id"].to_numpy())
        keys = np.union1d(keys, rated_keys(extra_u, extra_i, num_items))

    model = cached_model(
        model_shape(cfg, len(user_arrays["user_ids"]), num_items), cfg.learning_rate
    )
    if optimizer_state is None:
        reset_optimizer(model)
    else:
        set_optimizer_state(model, dict(optimizer_state))
    model.set_arrays({**shared_arrays, **user_arrays})
    num_users = len(user_arrays["user_ids"])
    matrix = implicit_matrix(keys, num_users, num_items) if cfg.implicit else None
    if matrix is not None:
        model.set_implicit(matrix)

    user_reg = count_weights(users, cfg.l2_count_power)
    item_reg = count_weights(items, cfg.l2_count_power)
    rng = np.random.default_rng([cfg.seed if seed is None else seed, 3])
    rating_counts = np.zeros(num_items, np.int64)
    rank_counts = np.zeros(num_items, np.int64)
    labels = np.zeros((len(ratings), 1 + cfg.negatives), np.float32)
    labels[:, 0] = rank_labels(ratings, cfg.low_rating)
    loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(ratings))
        neg = sample_negatives(users[order], keys, num_items, cfg.negatives, rng)
        history = model.fit(
            {
                "user": users[order],
                "item": items[order],
                "negatives": neg,
                "user_reg": user_reg[order],
                "item_reg": item_reg[order],
            },
            {"rating": ratings[order], "rank": labels[order]},
            batch_size=cfg.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        loss = float(history.history["loss"][-1])
        rating_counts += np.bincount(items, minlength=num_items)
        rank_counts += np.bincount(items, minlength=num_items)
        rank_counts += np.bincount(neg.ravel(), minlength=num_items)

    arrays = model.get_arrays()
    shared = {name: arrays[name] for name in shared_names(cfg)}
    new_users = {"user_ids": np.asarray(user_arrays["user_ids"], np.int64)}
    new_users.update({name: arrays[name] for name in USER_ARRAYS})
    counts = {name: rating_counts.copy() for name in ("item_embedding", "item_bias")}
    counts.update({name: rank_counts.copy() for name in ("item_rank_embedding", "item_rank_bias")})
    counts["global_bias"] = np.asarray(len(ratings) * epochs, np.int64)
    serving = new_users
    if matrix is not None:
        # item j's implicit row is in the rating of every example of a user who rated j
        per_user = np.bincount(users, minlength=num_users).astype(np.float64)
        counts[IMPLICIT_ARRAY] = (
            np.bincount(keys % num_items, weights=per_user[keys // num_items], minlength=num_items)
            * epochs
        ).astype(np.int64)
        serving = with_implicit(shared, new_users, matrix)
    seconds = time.perf_counter() - start
    log.debug(
        "train_local: %d ratings x %d epochs in %.2f s, loss %.4f",
        len(ratings),
        epochs,
        seconds,
        loss,
    )
    return LocalResult(
        shared_arrays=shared,
        user_arrays=new_users,
        item_counts=counts,
        metrics={"loss": loss, "num_examples": float(len(ratings)), "seconds": seconds},
        optimizer_state=get_optimizer_state(model),
        serving_user_arrays=serving,
    )


# ------------------------------------------------------------------ evaluation


def evaluate(
    shared_arrays: Mapping[str, np.ndarray],
    user_arrays: Mapping[str, np.ndarray],
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    catalogue: Catalogue,
    k: int = TOP_K,
) -> EvalSums:
    """Rating errors and full-catalogue top-k sums of `test_df`, with the scoring.py formulas.

    `train_df` holds every rating the model saw for these users (train + validation): those
    items are excluded from each user's ranking. A test user without a user row is scored with
    zero user factors (biases and item terms only). When `shared_arrays` holds `item_implicit`,
    each user's rating-head vector gets the implicit term over the user's `train_df` items
    (`user_arrays` are then a node's own rows, not a checkpoint's, which already include it).
    """
    movie_ids = np.asarray(catalogue.movie_ids, np.int64)
    num_items = len(movie_ids)
    test_items = item_rows(movie_ids, test_df["movie_id"].to_numpy())
    test_users = test_df["user_id"].to_numpy(np.int64)
    test_ratings = test_df["rating"].to_numpy(np.float64)
    train_users = train_df["user_id"].to_numpy(np.int64)
    train_items = item_rows(movie_ids, train_df["movie_id"].to_numpy())
    known = np.asarray(user_arrays["user_ids"], np.int64)

    order = np.argsort(train_users, kind="stable")
    tu_sorted, ti_sorted = train_users[order], train_items[order]
    implicit = shared_arrays.get(IMPLICIT_ARRAY)
    sums = EvalSums(k=k)
    for uid in np.unique(test_users):
        sel = test_users == uid
        lo, hi = np.searchsorted(tu_sorted, [uid, uid + 1])
        row = np.searchsorted(known, uid)
        if row < len(known) and known[row] == uid:
            vec = user_arrays["user_embedding"][row]
            bias = float(user_arrays["user_bias"][row])
            rank_vec = user_arrays["user_rank_embedding"][row]
        else:
            vec = np.zeros(shared_arrays["item_embedding"].shape[1], np.float32)
            bias = 0.0
            rank_vec = np.zeros(shared_arrays["item_rank_embedding"].shape[1], np.float32)
        if implicit is not None and hi > lo:
            rated = np.unique(ti_sorted[lo:hi])
            vec = vec + implicit[rated].sum(axis=0) / np.sqrt(len(rated))
        pred = predict_ratings(shared_arrays, vec, bias, test_items[sel])
        sums = sums + rating_sums(pred, test_ratings[sel], k=k)
        exclude = np.zeros(num_items, dtype=bool)
        exclude[ti_sorted[lo:hi]] = True
        relevant = test_items[sel][test_ratings[sel] >= RELEVANT_MIN]
        relevant = relevant[~exclude[relevant]]
        if relevant.size:
            top = top_n(ranking_scores(shared_arrays, rank_vec), k, exclude=exclude)
            sums = sums + user_ranking_sums(top, relevant, k=k)
    return sums
