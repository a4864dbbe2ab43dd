"""What a node does for one message: load its own partition, evaluate the incoming model, train.

Called by the ClientApp (``fedrec_app.client_app``). The node's users' rows live in its state
dir (``fedrec_app.node.state``) between rounds and never leave the node unless the run shares
user factors. Failures raise ``NodeFailure`` (``fedrec_app.node.setup``) with a short code from
``protocol.ERROR_CODES``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import MetricRecord, RecordDict

from fedrec_app.core import protocol
from fedrec_app.core.config import RunConfig
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import TRAIN_LOSS, EvalSums
from fedrec_app.core.rated import rated_arrays
from fedrec_app.core.scoring import USER_ARRAYS
from fedrec_app.core.training import (
    SHARED_ARRAYS,
    TrainConfig,
    evaluate,
    init_item_arrays,
    init_user_arrays,
    train_local,
)
from fedrec_app.data.partition import Partition, load_partition
from fedrec_app.node.setup import NodeFailure, NodeSetup
from fedrec_app.node.state import NodeState, load_state, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOrder:
    """The ``config`` record of a message from the server."""

    round: int
    state_key: str
    catalogue_fingerprint: str
    evaluate: bool


@lru_cache(maxsize=4)
def cached_partition(partition_dir: Path) -> Partition:
    """The verified partition (loaded once per process)."""
    try:
        return load_partition(partition_dir)
    except FedrecError as exc:
        raise NodeFailure("bad-partition", str(exc)) from exc


def read_order(content: RecordDict) -> RoundOrder:
    try:
        config = content.config_records[protocol.CONFIG]
        server_round = config["round"]
        if not isinstance(server_round, int):
            raise TypeError(f"round {server_round!r} is not an int")
        return RoundOrder(
            round=server_round,
            state_key=str(config["state-key"]),
            catalogue_fingerprint=str(config["catalogue-fingerprint"]),
            evaluate=bool(config["evaluate"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NodeFailure("bad-message", f"config record: {exc!r}") from exc


def train_round(
    content: RecordDict, run_cfg: RunConfig, setup: NodeSetup, run_id: int
) -> RecordDict:
    """Evaluate the incoming model (if asked), train local epochs, save user rows; the reply."""
    started = time.perf_counter()
    order = read_order(content)
    part, shared = _prepare(content, order, setup)
    state = load_state(setup.state_dir, order.state_key)
    if state is not None and state.run_id == run_id and state.round >= order.round:
        raise NodeFailure("stale", f"round {order.round}: this node already trained {state.round}")
    tcfg = run_cfg.train_config(order.round)
    _configure_device(setup)
    users = _user_arrays(state, part, tcfg)
    # The optimizer continues where this node left off, unless its user rows were rebuilt.
    optimizer = None
    if (
        run_cfg.keep_optimizer
        and state is not None
        and state.optimizer
        and np.array_equal(state.user_arrays["user_ids"], users["user_ids"])
    ):
        optimizer = state.optimizer
    metrics: dict[str, float] = {}
    if order.evaluate:
        eval_started = time.perf_counter()
        metrics.update(protocol.eval_metrics(_evaluate(shared, users, part), order.round - 1))
        metrics["eval-seconds"] = time.perf_counter() - eval_started
    result = train_local(
        shared,
        users,
        part.train,
        part.catalogue,
        tcfg,
        seed=_train_seed(run_cfg.seed, order.round, part.index),
        also_rated=part.val,
        optimizer_state=optimizer,
    )
    kept = result.optimizer_state if run_cfg.keep_optimizer else {}
    save_state(
        setup.state_dir,
        order.state_key,
        NodeState(run_id, order.round, result.user_arrays, optimizer=kept),
    )
    metrics.update(
        {
            TRAIN_LOSS: float(result.metrics.get("loss", float("nan"))),
            "num-examples": float(len(part.train)),
            "num-users": float(len(result.user_arrays["user_ids"])),
            "train-seconds": float(result.metrics.get("seconds", 0.0)),
            "seconds": time.perf_counter() - started,
        }
    )
    reply = RecordDict(
        {
            protocol.ARRAYS: protocol.to_record(result.shared_arrays),
            protocol.COUNTS: protocol.to_record(result.item_counts),
            protocol.METRICS: MetricRecord({**metrics}),
        }
    )
    if run_cfg.share_user_factors:
        # The rows, and which movies each of these users rated (so that the gateway never
        # recommends them one); in private mode neither leaves the node.
        reply[protocol.USERS] = protocol.to_record(
            {**result.serving_user_arrays, **_rated(result.user_arrays["user_ids"], part)}
        )
    log.info(
        "round %d: trained %d ratings of %d users in %.1f s",
        order.round,
        len(part.train),
        len(result.user_arrays["user_ids"]),
        metrics["seconds"],
    )
    return reply


def evaluate_round(
    content: RecordDict, run_cfg: RunConfig, setup: NodeSetup, run_id: int
) -> RecordDict:
    """Evaluate the incoming (final) model with this node's user rows; the reply (metrics only)."""
    order = read_order(content)
    part, shared = _prepare(content, order, setup)
    state = load_state(setup.state_dir, order.state_key)
    users = _user_arrays(state, part, run_cfg.train_config())
    metrics = protocol.eval_metrics(_evaluate(shared, users, part), order.round)
    return RecordDict({protocol.METRICS: MetricRecord({**metrics})})


def warm_up(partition_dir: Path, run_cfg: RunConfig) -> float:
    """One throw-away local epoch on this node's partition from fresh arrays, so that the model of
    ``run_cfg``'s shapes is built and its train step traced before the first round; the seconds it
    took. Nothing is saved: a round's result does not depend on whether a warm-up ran."""
    started = time.perf_counter()
    part = cached_partition(partition_dir)
    tcfg = run_cfg.train_config()
    train_local(
        init_item_arrays(len(part.catalogue), tcfg),
        _user_arrays(None, part, tcfg),
        part.train,
        part.catalogue,
        tcfg,
        epochs=1,
        also_rated=part.val,
    )
    return time.perf_counter() - started


def _configure_device(setup: NodeSetup) -> None:
    """The node's device and thread cap, before its first TensorFlow op (once per process)."""
    from fedrec_app.core.model import configure_device  # TensorFlow

    configure_device(setup.gpu_index, setup.threads)


def _prepare(
    content: RecordDict, order: RoundOrder, setup: NodeSetup
) -> tuple[Partition, dict[str, np.ndarray]]:
    part = cached_partition(setup.partition_dir)
    if part.catalogue.fingerprint != order.catalogue_fingerprint:
        raise NodeFailure(
            "catalogue-mismatch",
            f"{part.folder}/items.csv is {part.catalogue.fingerprint}, "
            f"server has {order.catalogue_fingerprint}",
        )
    if protocol.ARRAYS not in content.array_records:
        raise NodeFailure("bad-message", "no arrays record")
    try:
        shared = protocol.from_record(content.array_records[protocol.ARRAYS])
    except ValueError as exc:
        raise NodeFailure("bad-message", f"arrays record: {exc}") from exc
    num_items = len(part.catalogue)
    for name in SHARED_ARRAYS:
        if name not in shared:
            raise NodeFailure("bad-message", f"array {name} missing")
        if name != "global_bias" and shared[name].shape[:1] != (num_items,):
            raise NodeFailure("bad-message", f"array {name} has shape {shared[name].shape}")
    return part, shared


def _evaluate(
    shared: Mapping[str, np.ndarray], users: Mapping[str, np.ndarray], part: Partition
) -> dict[str, EvalSums]:
    """Test sums (ranking excludes train + val items) and validation sums (excludes train)."""
    seen = pd.concat([part.train, part.val], ignore_index=True)
    return {
        "test": evaluate(shared, users, seen, part.test, part.catalogue),
        "val": evaluate(shared, users, part.train, part.val, part.catalogue),
    }


def _user_arrays(
    state: NodeState | None, part: Partition, tcfg: TrainConfig
) -> dict[str, np.ndarray]:
    """This partition's user rows: from the saved state where present, fresh for new users."""
    ids = np.unique(
        np.concatenate([part.train["user_id"].to_numpy(), part.val["user_id"].to_numpy()])
    )
    fresh = init_user_arrays(ids, tcfg)
    if state is None:
        return fresh
    saved = state.user_arrays
    saved_ids = np.asarray(saved["user_ids"], np.int64)
    if np.array_equal(saved_ids, ids):
        return dict(saved)
    pos = np.searchsorted(saved_ids, ids)
    known = (pos < len(saved_ids)) & (saved_ids[np.minimum(pos, len(saved_ids) - 1)] == ids)
    log.warning("node state covers %d of %d users: fresh rows for the rest", known.sum(), len(ids))
    for name in USER_ARRAYS:
        if saved[name].shape[1:] == fresh[name].shape[1:]:
            fresh[name][known] = saved[name][pos[known]]
    return fresh


def _rated(user_ids: np.ndarray, part: Partition) -> dict[str, np.ndarray]:
    """The movie ids each of ``user_ids`` rated at this node (train, validation and test), as
    ``fedrec_app.core.rated``'s CSR pair."""
    frames = [part.train, part.val, part.test]
    return rated_arrays(
        user_ids,
        np.concatenate([f["user_id"].to_numpy() for f in frames]),
        np.concatenate([f["movie_id"].to_numpy() for f in frames]),
    )


def _train_seed(seed: int, server_round: int, partition_index: int) -> int:
    """A different, reproducible stream of shuffles and negatives per (run seed, round, node)."""
    return int(np.random.SeedSequence([seed, server_round, partition_index]).generate_state(1)[0])
