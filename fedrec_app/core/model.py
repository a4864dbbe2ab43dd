"""Keras 3 recommender: a biased-MF rating head and a logistic-MF ranking head (keras.ops only).

The model's weights are exactly the named arrays of the checkpoint contract (see
`fedrec_app.core.scoring`): item-side `item_embedding (I,k)`, `item_bias (I,)`, `item_rank_embedding
(I,r)`, `item_rank_bias (I,)`, the scalar `global_bias`, and user-side `user_embedding (U,k)`,
`user_bias (U,)`, `user_rank_embedding (U,r)`. With `ModelShape.implicit`, the rating head also has
the item-side `item_implicit (I,k)` (SVD++'s implicit factors): a user's rating-head vector is
`user_embedding[u] + sum_j N[u, j] * item_implicit[j]`, where `N` (the non-trainable
`implicit_matrix (U,I)`, set with `set_implicit`) holds `|R(u)| ** -0.5` for each item `j` in
the set `R(u)` of items the user rated in the training data, 0 elsewhere.

One training example is one rating plus `n` sampled negatives of the same user:
inputs `user (B,)`, `item (B,)`, `negatives (B,n)` (row indices) and optional per-example L2
weights `user_reg (B,)`, `item_reg (B,)` for the rating head (default 1); outputs `rating (B,)`
(unclipped while training, clipped to 1-5 otherwise) and `rank (B,1+n)` logits (positive first).
L2 is applied only to the rows gathered in the batch, through `add_loss` (never an
`embeddings_regularizer`, which would move rows the batch does not touch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from fedrec_app.core.scoring import GLOBAL_ARRAYS, ITEM_ARRAYS, RATING_MAX, RATING_MIN, USER_ARRAYS

log = logging.getLogger(__name__)

MODEL_ARRAYS: tuple[str, ...] = ITEM_ARRAYS + GLOBAL_ARRAYS + USER_ARRAYS
IMPLICIT_ARRAYS: tuple[str, ...] = ("item_implicit",)  # with ModelShape.implicit only
# Batches per call of the compiled train step: the same updates in the same order as one batch
# per call, without the Python round trip per batch (a local epoch runs about 2x faster on CPU).
STEPS_PER_EXECUTION = 32


@dataclass(frozen=True)
class ModelShape:
    """What fixes the model's variables: table sizes, factor sizes and the L2 weights."""

    num_users: int
    num_items: int
    embedding_dim: int
    rank_dim: int
    l2_rating: float
    l2_ranking: float
    l2_bias: float
    implicit: bool = (
        False  # SVD++ implicit term in the rating head (item_implicit, implicit_matrix)
    )


@keras.saving.register_keras_serializable(package="fedrec")
class FedRecModel(keras.Model):  # type: ignore[misc]  # Keras ships no type information
    """Biased MF (rating) + logistic MF with sampled negatives (ranking), over shared row tables."""

    def __init__(self, shape: ModelShape | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = ModelShape(**shape) if isinstance(shape, dict) else shape
        self.shape_spec = shape
        u, i, k, r = shape.num_users, shape.num_items, shape.embedding_dim, shape.rank_dim
        zeros = keras.initializers.Zeros()
        self.user_embedding = self.add_weight(
            shape=(u, k), initializer=zeros, name="user_embedding"
        )
        self.user_bias = self.add_weight(shape=(u,), initializer=zeros, name="user_bias")
        self.user_rank_embedding = self.add_weight(
            shape=(u, r), initializer=zeros, name="user_rank_embedding"
        )
        self.item_embedding = self.add_weight(
            shape=(i, k), initializer=zeros, name="item_embedding"
        )
        self.item_bias = self.add_weight(shape=(i,), initializer=zeros, name="item_bias")
        self.item_rank_embedding = self.add_weight(
            shape=(i, r), initializer=zeros, name="item_rank_embedding"
        )
        self.item_rank_bias = self.add_weight(shape=(i,), initializer=zeros, name="item_rank_bias")
        self.global_bias = self.add_weight(shape=(), initializer=zeros, name="global_bias")
        if shape.implicit:
            self.item_implicit = self.add_weight(
                shape=(i, k), initializer=zeros, name="item_implicit"
            )
            self.implicit_matrix = self.add_weight(
                shape=(u, i), initializer=zeros, name="implicit_matrix", trainable=False
            )
        self.built = True  # every weight exists now; no input shape changes them

    def call(self, inputs: dict[str, Any], training: bool = False) -> dict[str, Any]:
        user, item, negatives = inputs["user"], inputs["item"], inputs["negatives"]
        s = self.shape_spec
        # Rating head: biased MF.
        wu, wi = inputs.get("user_reg", 1.0), inputs.get("item_reg", 1.0)
        p_u = ops.take(self.user_embedding, user, axis=0)
        q_i = ops.take(self.item_embedding, item, axis=0)
        b_u = ops.take(self.user_bias, user, axis=0)
        b_i = ops.take(self.item_bias, item, axis=0)
        l2_user = ops.sum(p_u * p_u, -1)
        if s.implicit:  # SVD++: add the normalised sum of the rated items' implicit factors
            n_u = ops.take(self.implicit_matrix, user, axis=0)  # (B, I)
            p_u = p_u + ops.matmul(n_u, self.item_implicit)
            # L2 on every implicit row in the example's sum, as SVD++'s per-rating update does
            rated = ops.cast(n_u > 0, n_u.dtype)
            l2_user = l2_user + ops.matmul(rated, ops.sum(self.item_implicit**2, -1))
        rating = self.global_bias + b_u + b_i + ops.sum(p_u * q_i, axis=-1)
        self.add_loss(
            s.l2_rating * ops.mean(wu * l2_user + wi * ops.sum(q_i * q_i, -1))
            + s.l2_bias * ops.mean(wu * b_u * b_u + wi * b_i * b_i)
        )
        # Ranking head: logistic MF over the positive item and the sampled negatives.
        items = ops.concatenate([ops.expand_dims(item, -1), negatives], axis=-1)  # (B, 1+n)
        x_u = ops.take(self.user_rank_embedding, user, axis=0)  # (B, r)
        y_j = ops.take(self.item_rank_embedding, items, axis=0)  # (B, 1+n, r)
        c_j = ops.take(self.item_rank_bias, items, axis=0)  # (B, 1+n)
        logits = ops.sum(ops.expand_dims(x_u, 1) * y_j, axis=-1) + c_j
        self.add_loss(
            s.l2_ranking
            * ops.mean(ops.sum(x_u * x_u, -1) + ops.mean(ops.sum(y_j * y_j, -1) + c_j * c_j, -1))
        )
        if not training:
            rating = ops.clip(rating, RATING_MIN, RATING_MAX)
        return {"rating": rating, "rank": logits}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": asdict(self.shape_spec)}

    @property
    def array_names(self) -> tuple[str, ...]:
        """The contract's arrays of this model: MODEL_ARRAYS, and `item_implicit` if implicit."""
        return MODEL_ARRAYS + (IMPLICIT_ARRAYS if self.shape_spec.implicit else ())

    def get_arrays(self) -> dict[str, np.ndarray]:
        """The model's weights as the named float32 arrays of the contract."""
        return {name: np.array(getattr(self, name).numpy()) for name in self.array_names}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Load the named arrays into the model's weights (shapes must match exactly); a missing
        `item_implicit` loads as zeros (a model without the implicit term scores the same)."""
        for name in self.array_names:
            var = getattr(self, name)
            if name in IMPLICIT_ARRAYS and name not in arrays:
                var.assign(np.zeros(var.shape, dtype="float32"))
                continue
            value = np.asarray(arrays[name], dtype="float32")
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    f"array {name!r}: shape {value.shape}, model wants {tuple(var.shape)}"
                )
            var.assign(value)

    def set_implicit(self, matrix: np.ndarray) -> None:
        """Load the `(U,I)` implicit matrix `N` (see the module docstring); implicit models only."""
        self.implicit_matrix.assign(np.asarray(matrix, dtype="float32"))


def build_model(shape: ModelShape, learning_rate: float) -> FedRecModel:
    """A compiled model: MSE on the rating head, sigmoid cross-entropy on the ranking head."""
    model = FedRecModel(shape)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss={
            "rating": keras.losses.MeanSquaredError(),
            "rank": keras.losses.BinaryCrossentropy(from_logits=True),
        },
        jit_compile=False,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def save_model_file(arrays: dict[str, np.ndarray], shape: ModelShape, path: Path) -> None:
    """Write `arrays` as a Keras `.keras` file (e.g. a checkpoint's model.keras)."""
    model = FedRecModel(shape)
    model.set_arrays(arrays)
    model.save(Path(path))


_MODELS: dict[ModelShape, FedRecModel] = {}


def cached_model(shape: ModelShape, learning_rate: float) -> FedRecModel:
    """This process's compiled model for `shape` (built once, then reused), at `learning_rate`."""
    model = _MODELS.get(shape)
    if model is None:
        model = _MODELS[shape] = build_model(shape, learning_rate)
    model.optimizer.learning_rate.assign(learning_rate)
    return model


def _optimizer_slots(model: keras.Model) -> list[Any]:
    """The optimizer's state variables (step count, moments), built if need be; not its rate."""
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return [v for v in optimizer.variables if v is not optimizer.learning_rate]


def reset_optimizer(model: keras.Model) -> None:
    """Zero the optimizer's state (moments, step count) but keep its learning rate."""
    for var in _optimizer_slots(model):
        var.assign(ops.zeros(var.shape, dtype=var.dtype))


def get_optimizer_state(model: keras.Model) -> dict[str, np.ndarray]:
    """The optimizer's state as arrays `opt_00`, `opt_01`, … (to keep it between rounds)."""
    return {f"opt_{i:02d}": np.array(v.numpy()) for i, v in enumerate(_optimizer_slots(model))}


def set_optimizer_state(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Load a state from `get_optimizer_state` of a model of the same shape."""
    slots = _optimizer_slots(model)
    if len(state) != len(slots):
        raise ValueError(f"optimizer state has {len(state)} arrays, the model wants {len(slots)}")
    for i, var in enumerate(slots):
        value = np.asarray(state[f"opt_{i:02d}"])
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"optimizer state opt_{i:02d}: shape {value.shape}, want {var.shape}")
        var.assign(value.astype(var.dtype))


_DEVICE_DONE: str | None = None


def configure_device(gpu_index: int | None = None, threads: int | None = None) -> str:
    """Once per process: pick the GPU `gpu_index` (memory growth on) or the CPU; log and return it.

    `gpu_index` None means the first GPU if there is one, a negative index means the CPU.
    `threads` caps the CPU threads TensorFlow uses. Later calls return the first answer.
    """
    global _DEVICE_DONE
    if _DEVICE_DONE is not None:
        return _DEVICE_DONE
    device = "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # device set-up is backend-specific; the model is not

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        gpus = tf.config.list_physical_devices("GPU")
        if gpu_index is None:
            gpu_index = 0
        if gpus and gpu_index >= 0:
            if gpu_index >= len(gpus):
                log.warning(
                    "GPU %d requested but only %d visible: training on CPU", gpu_index, len(gpus)
                )
                tf.config.set_visible_devices([], "GPU")
            else:
                gpu = gpus[gpu_index]
                tf.config.set_visible_devices([gpu], "GPU")
                tf.config.experimental.set_memory_growth(gpu, True)
                device = f"gpu:{gpu_index} ({gpu.name})"
        elif gpus:
            tf.config.set_visible_devices([], "GPU")
    log.info(
        "training device: %s (keras backend %s, pid %d)",
        device,
        keras.backend.backend(),
        os.getpid(),
    )
    _DEVICE_DONE = device
    return device
