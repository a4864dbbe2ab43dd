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
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrec_app.core import protocol
from fedrec_app.core.config import RunConfig
from fedrec_app.server.replies import (
    FederationError,
    RoundResult,
    aggregate,
    check_refusals,
    evaluation,
    merge_users,
    metrics_of,
    node_label,
)
from fedrec_app.server.round_log import format_metrics, learn_names, round_line

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# While a round waits for its nodes, one "still training" line this often (`fedrec up` and
# `flwr log` would otherwise show nothing for the whole first round, which loads TensorFlow).
HEARTBEAT_SECONDS = 20.0


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
            log.debug("round %d: %s", server_round, format_metrics(round_metrics))
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
        log.debug("model of round %d: %s", result.eval_round, format_metrics(metrics))
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
