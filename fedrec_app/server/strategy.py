"""Server-side federation loop: bounded waits, per-row aggregation, global metrics from sums.

One phase per round: each train reply also carries the evaluation of the previous round's global
model (rating and ranking sums on the node's test and validation data), so round ``r``'s replies
say how the model of round ``r - 1`` did. The final model gets one evaluate phase at the end.

Flower's own sampling waits for nodes forever and its ``send_and_receive`` polls every 3 s; this
loop bounds the wait for nodes (``node-wait-timeout``), polls for replies every half second and
aggregates what arrived by ``round-timeout``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedrec_app.core import protocol
from fedrec_app.core.config import RunConfig
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.metrics import TRAIN_LOSS, EvalSums, metric_key, split_metrics
from fedrec_app.core.rated import RATED_ARRAYS, from_lists, rated_lists, rated_problem
from fedrec_app.core.scoring import USER_ARRAYS
from fedrec_app.server.aggregation import average_rows

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# While a round waits for its nodes, one "still training" line this often (`fedrec up` and
# `flwr log` would otherwise show nothing for the whole first round, which loads TensorFlow).
HEARTBEAT_SECONDS = 20.0
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


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float, poll: float = 1.0) -> list[int]:
    """Node ids once at least ``min_nodes`` are online; FederationError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    next_note = 0.0
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= min_nodes:
            return ids
        now = time.monotonic()
        if now >= deadline:
            raise FederationError(
                f"only {len(ids)} node(s) connected, fewer than min-nodes={min_nodes}, "
                f"within node-wait-timeout={timeout:g} s: the run stops"
            )
        if now >= next_note:
            log.info("waiting for nodes: %d of min-nodes=%d connected", len(ids), min_nodes)
            next_note = now + 10.0
        time.sleep(min(poll, max(deadline - now, 0.0)))


def sample_nodes(
    node_ids: Sequence[int], fraction: float, min_nodes: int, rng: np.random.Generator
) -> list[int]:
    """A random ``fraction`` of the nodes, never fewer than ``min_nodes`` (or all there are)."""
    count = min(len(node_ids), max(min_nodes, math.ceil(fraction * len(node_ids))))
    # Node ids are unsigned 64-bit: pick positions, never put the ids through numpy.
    picked = rng.choice(len(node_ids), size=count, replace=False)
    return sorted(node_ids[int(i)] for i in picked)


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    heartbeat: Callable[[Sequence[Message], int, float], None] | None = None,
    heartbeat_every: float = HEARTBEAT_SECONDS,
) -> list[Message]:
    """Send ``messages`` and collect replies until all arrived or ``timeout`` s passed;
    ``heartbeat(replies so far, asked, seconds)`` every ``heartbeat_every`` s of the wait."""
    pending = set(grid.push_messages(list(messages)))
    asked = len(pending)
    started = time.monotonic()
    deadline = started + timeout
    next_beat = started + heartbeat_every
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending -= {reply.metadata.reply_to_message_id for reply in got}
        now = time.monotonic()
        if not pending or now >= deadline:
            break
        if heartbeat is not None and now >= next_beat:
            heartbeat(replies, asked, now - started)
            next_beat = now + heartbeat_every
        time.sleep(POLL_SECONDS)
    if pending:
        log.warning("%d node(s) did not reply within %g s", len(pending), timeout)
    return replies


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


# in the one line per round
SHOWN_METRICS = ((metric_key("test", "rmse"), "RMSE"), (metric_key("test", "ndcg@10"), "NDCG@10"))


def node_label(node: int, names: Mapping[int, str] | None = None) -> str:
    """``site1`` when the node told its site name, else ``node <id>``."""
    return (names or {}).get(node) or f"node {node}"


def learn_names(replies: Iterable[Message], names: dict[int, str]) -> None:
    """Remember the site name each reply carries (``protocol.add_site_name``) by node id: a node
    that fails later, when its reply has no content, is still named."""
    for reply in replies:
        if not reply.has_error():
            name = protocol.site_name(reply.content)
            if name:
                names[reply.metadata.src_node_id] = name


def round_line(
    head: str,
    asked: Sequence[int],
    answered: Iterable[int],
    result: RoundResult,
    names: Mapping[int, str],
    seconds: float,
) -> str:
    """The one line the operator reads per round (``flwr log``): the model the replies
    evaluated, which nodes replied (by site name) of how many asked, who failed or stayed
    silent, and the seconds it took."""
    parts = []
    if result.eval_round is not None and result.sums:
        metrics = metrics_of(result)
        shown = ", ".join(
            f"{label} {format_metric(key, metrics.get(key, math.nan))}"
            for key, label in SHOWN_METRICS
        )
        parts.append(f"model of round {result.eval_round} on the held-out ratings: {shown}")
    replied = ", ".join(sorted(node_label(n, names) for n in result.replied)) or "none"
    nodes = f"{len(result.replied)}/{len(asked)} nodes replied: {replied}"
    if result.failures:
        nodes += "; failed: " + "; ".join(result.failures)
    silent = sorted(node_label(n, names) for n in set(asked) - set(answered))
    if silent:
        nodes += "; no reply: " + ", ".join(silent)
    parts.append(nodes)
    parts.append(f"{seconds:.1f} s")
    return f"{head}: " + " | ".join(parts)


@dataclass
class FederationLoop:
    """Runs the rounds; ``on_evaluated(round, metrics)`` fires when a round's model is scored
    and ``on_trained(round, shared, users, round_metrics)`` after each aggregation."""

    grid: Grid
    cfg: RunConfig
    state_key: str
    catalogue_fingerprint: str
    on_trained: Callable[
        [int, dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, float]], None
    ]
    on_evaluated: Callable[[int, dict[str, float]], None]
    names: dict[int, str] = field(default_factory=dict)  # node id -> site name, as told

    def run(
        self,
        shared: dict[str, np.ndarray],
        users: dict[str, np.ndarray] | None,
        start_round: int,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Rounds ``start_round + 1 .. num-server-rounds``; then the final evaluation."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 7, start_round])
        for server_round in range(start_round + 1, cfg.num_server_rounds + 1):
            started = time.monotonic()
            nodes = wait_for_nodes(self.grid, cfg.min_nodes, cfg.node_wait_timeout)
            chosen = sample_nodes(nodes, cfg.fraction_train, cfg.min_nodes, rng)
            evaluate_first = server_round > 1
            messages = [
                self._message(MessageType.TRAIN, shared, server_round, node, evaluate_first)
                for node in chosen
            ]
            head = f"round {server_round}/{cfg.num_server_rounds}"
            replies = exchange(
                self.grid, messages, cfg.round_timeout, self._heartbeat(head, "training")
            )
            check_refusals(replies, len(chosen), f"round {server_round}")
            learn_names(replies, self.names)
            result = aggregate(shared, replies, cfg.server_lr, self.names)
            if result.shared is not None:
                shared = result.shared
                users = merge_users(users, result.users) if result.users else users
            seconds = time.monotonic() - started
            round_metrics = {
                **result.train,
                "nodes": float(result.num_replies),
                "failures": float(len(result.failures)),
                "seconds": seconds,
            }
            self._report(result)
            self.on_trained(server_round, shared, users, round_metrics)
            line = round_line(
                f"round {server_round}/{cfg.num_server_rounds}",
                chosen,
                [r.metadata.src_node_id for r in replies],
                result,
                self.names,
                seconds,
            )
            if result.shared is None:
                line += " | no usable reply: the model stays as it was"
            log.log(
                logging.WARNING
                if result.failures or result.shared is None or result.num_replies < len(chosen)
                else logging.INFO,
                "%s",
                line,
            )
            log.debug("round %d: %s", server_round, _fmt(round_metrics))
        if cfg.final_evaluate:
            self._final_evaluation(shared)
        return shared, users

    def _final_evaluation(self, shared: dict[str, np.ndarray]) -> None:
        cfg = self.cfg
        started = time.monotonic()
        nodes = wait_for_nodes(self.grid, cfg.min_nodes, cfg.node_wait_timeout)
        messages = [
            self._message(MessageType.EVALUATE, shared, cfg.num_server_rounds, node, True)
            for node in nodes
        ]
        replies = exchange(
            self.grid,
            messages,
            cfg.round_timeout,
            self._heartbeat("final evaluation", "evaluating"),
        )
        check_refusals(replies, len(nodes), "final evaluation")
        learn_names(replies, self.names)
        result = evaluation(replies, self.names)
        self._report(result)
        line = round_line(
            "final evaluation",
            nodes,
            [r.metadata.src_node_id for r in replies],
            result,
            self.names,
            time.monotonic() - started,
        )
        log.log(logging.WARNING if result.num_replies < len(nodes) else logging.INFO, "%s", line)

    def _heartbeat(self, head: str, doing: str) -> Callable[[Sequence[Message], int, float], None]:
        """The "still training" line of a long wait (the round's one line comes at its end):
        who replied so far."""

        def beat(replies: Sequence[Message], asked: int, seconds: float) -> None:
            learn_names(replies, self.names)
            replied = sorted(node_label(r.metadata.src_node_id, self.names) for r in replies)
            who = f" ({', '.join(replied)})" if replied else ""
            log.info(
                "%s: still %s, %d of %d nodes replied%s, %.0f s so far",
                head,
                doing,
                len(replies),
                asked,
                who,
                seconds,
            )

        return beat

    def _report(self, result: RoundResult) -> None:
        if result.eval_round is None or not result.sums:
            return
        metrics = metrics_of(result)
        log.debug("model of round %d: %s", result.eval_round, _fmt(metrics))
        self.on_evaluated(result.eval_round, metrics)

    def _message(
        self,
        kind: str,
        shared: Mapping[str, np.ndarray],
        server_round: int,
        node: int,
        evaluate: bool,
    ) -> Message:
        content = RecordDict(
            {
                protocol.ARRAYS: protocol.to_record(shared),
                protocol.CONFIG: ConfigRecord(
                    {
                        "round": server_round,
                        "state-key": self.state_key,
                        "catalogue-fingerprint": self.catalogue_fingerprint,
                        "evaluate": evaluate,
                    }
                ),
            }
        )
        return Message(
            content=content, message_type=kind, dst_node_id=node, group_id=str(server_round)
        )


def format_metric(key: str, value: float) -> str:
    """One figure as an operator reads it: counts as integers, RMSE/MAE/losses with 4 decimals,
    ranking metrics (``ndcg@10``, ``hr@10``, …) with 3, seconds with 1."""
    name = key.rpartition(".")[2]
    if name in ("rmse", "mae") or "loss" in name:
        return f"{value:.4f}"
    if "@" in name:
        return f"{value:.3f}"
    if "seconds" in name:
        return f"{value:.1f}"
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{key}={format_metric(key, value)}" for key, value in sorted(metrics.items()))
