"""The nodes' replies, read and combined: refusals, a train phase's aggregate (per-row FedAvg,
users' rows, train metrics), the evaluation sums, and the errors that end a run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message, MetricRecord

from fedrec_app.core import protocol
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import TRAIN_LOSS, EvalSums, metric_key, split_metrics
from fedrec_app.core.rated import RATED_ARRAYS, from_lists, rated_lists, rated_problem
from fedrec_app.core.scoring import USER_ARRAYS
from fedrec_app.server.aggregation import average_rows

log = logging.getLogger(__name__)

# Node timings in a train reply -> round metrics ``node.<key>`` (the slowest node's): a node's
# whole handler (partition load, TensorFlow import, evaluation, training), its evaluation and its
# training.
_NODE_TIMES = ("seconds", "eval-seconds", "train-seconds")


class FederationError(FedrecError):
    """The federation cannot go on (too few nodes, no replies)."""


class AppRefusedError(FederationError):
    """Every sampled node refused to run this app: their admins have not approved its FAB."""


def check_refusals(replies: Sequence[Message], sampled: int, phase: str) -> None:
    """AppRefusedError naming the nodes and their reason when all ``sampled`` nodes refused
    the app (``protocol.refusal_reason``); the run fails with it, so the operator sees why."""
    refusals = sorted(
        reason
        for reply in replies
        if reply.has_error()
        and (reason := reply.error.reason) is not None
        and protocol.is_refusal(reason)
    )
    if refusals and len(refusals) >= sampled:
        raise AppRefusedError(
            f"{phase}: all {sampled} sampled node(s) refused to run this app: "
            + "; ".join(refusals)
        )


@dataclass
class RoundResult:
    """What one phase produced: aggregated arrays (train only), metrics, failures."""

    shared: dict[str, np.ndarray] | None
    users: list[dict[str, np.ndarray]]
    eval_round: int | None
    sums: dict[str, EvalSums]
    num_replies: int
    failures: list[str] = field(default_factory=list)
    train: dict[str, float] = field(default_factory=dict)
    replied: list[int] = field(default_factory=list)  # the nodes whose replies were used


def merge_users(
    previous: Mapping[str, np.ndarray] | None, updates: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray] | None:
    """User rows of all nodes in one table sorted by user id; new rows replace old ones.

    Each user's rated movie ids (``fedrec_app.core.rated``) come with their row; they are kept
    only while every row kept came with them (an older table without them drops them until
    each of its users has a newer row)."""
    tables = ([previous] if previous is not None else []) + list(updates)
    if not tables:
        return None
    ids = np.concatenate([np.asarray(t["user_ids"], np.int64) for t in tables])
    # The last occurrence of each user wins: later tables are newer.
    last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]
    out = {"user_ids": ids[last]}
    for name in USER_ARRAYS:
        out[name] = np.concatenate([np.asarray(t[name]) for t in tables])[last]
    rated: list[np.ndarray | None] = []
    for table in tables:
        has = all(name in table for name in RATED_ARRAYS)
        rated.extend(rated_lists(table) if has else [None] * len(table["user_ids"]))
    kept = [rated[i] for i in last]
    if all(items is not None for items in kept):
        out.update(from_lists(kept))
    return out


def aggregate(
    previous: Mapping[str, np.ndarray],
    replies: Sequence[Message],
    server_lr: float = 1.0,
    names: Mapping[int, str] | None = None,
) -> RoundResult:
    """Per-row weighted average of the train replies (a touched row moves ``server_lr`` times
    the way to it), plus summed evaluation sums. Failures name nodes by ``names`` (site names)."""
    updates, users, failures, usable = [], [], [], []
    loss, examples = 0.0, 0.0
    slowest: dict[str, float] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            failures.append(f"{node_label(node, names)}: {reply.error.reason}")
            continue
        records = reply.content.array_records
        try:
            arrays = protocol.from_record(records[protocol.ARRAYS])
            counts = protocol.from_record(records[protocol.COUNTS])
            _check_shapes(previous, arrays, counts)
            user_rows = (
                protocol.from_record(records[protocol.USERS]) if protocol.USERS in records else None
            )
            problem = rated_problem(user_rows) if user_rows is not None else None
            if problem:
                raise ValueError(f"users: {problem}")
        except (KeyError, ValueError) as exc:
            failures.append(f"{node_label(node, names)}: bad reply ({exc!r})")
            continue
        usable.append(reply)
        updates.append((arrays, counts))
        if user_rows is not None:
            users.append(user_rows)
        metrics = reply.content.metric_records[protocol.METRICS]
        n = _number(metrics, "num-examples")
        loss += _number(metrics, TRAIN_LOSS) * n
        examples += n
        for key in _NODE_TIMES:
            name = metric_key("node", key)
            slowest[name] = max(slowest.get(name, 0.0), _number(metrics, key))
    result = evaluation(usable, names)
    result.shared = average_rows(previous, updates, server_lr) if updates else None
    result.users = users
    result.failures = failures
    result.train = {TRAIN_LOSS: loss / examples, **slowest} if examples else {}
    return result


def _number(metrics: MetricRecord, key: str) -> float:
    """A reply's scalar metric ``key`` (0.0 when absent); a list there is a bad reply."""
    value = metrics.get(key, 0.0)
    if isinstance(value, list):
        raise FederationError(f"reply metric {key!r} is a list, not a number")
    return float(value)


def evaluation(replies: Sequence[Message], names: Mapping[int, str] | None = None) -> RoundResult:
    """The evaluation sums of the replies, added over the nodes (errors are failures)."""
    sums: dict[str, EvalSums] = {}
    eval_rounds: set[int] = set()
    failures, count, replied = [], 0, []
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            failures.append(f"{node_label(node, names)}: {reply.error.reason}")
            continue
        count += 1
        replied.append(node)
        metrics = reply.content.metric_records.get(protocol.METRICS, MetricRecord())
        if protocol.EVAL_ROUND not in metrics:
            continue
        eval_rounds.add(int(_number(metrics, protocol.EVAL_ROUND)))
        for split, split_sums in protocol.read_eval_sums(metrics).items():
            sums[split] = sums[split] + split_sums if split in sums else split_sums
    if len(eval_rounds) > 1:
        raise FederationError(f"replies evaluate different rounds: {sorted(eval_rounds)}")
    return RoundResult(
        shared=None,
        users=[],
        eval_round=eval_rounds.pop() if eval_rounds else None,
        sums=sums,
        num_replies=count,
        failures=failures,
        replied=replied,
    )


def _check_shapes(
    previous: Mapping[str, np.ndarray],
    arrays: Mapping[str, np.ndarray],
    counts: Mapping[str, np.ndarray],
) -> None:
    for name, prev in previous.items():
        if np.shape(arrays[name]) != np.shape(prev):
            raise ValueError(f"{name} has shape {np.shape(arrays[name])}, not {np.shape(prev)}")
        if np.shape(counts[name]) != np.shape(prev)[:1]:
            raise ValueError(f"counts of {name} have shape {np.shape(counts[name])}")


def metrics_of(result: RoundResult) -> dict[str, float]:
    """Global metrics of each split: ``test.rmse``, ``val.ndcg@10``, …"""
    out: dict[str, float] = {}
    for split, sums in result.sums.items():
        out.update(split_metrics(split, sums.finalize()))
    return out


def node_label(node: int, names: Mapping[int, str] | None = None) -> str:
    """``site1`` when the node told its site name, else ``node <id>``."""
    return (names or {}).get(node) or f"node {node}"
