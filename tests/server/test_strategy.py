"""Server-side aggregation and waits: per-row weighting, untouched rows, global metrics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from direct_grid import DirectGrid
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from fedrec_app.core import protocol
from fedrec_app.core.metrics import EvalSums
from fedrec_app.server import strategy
from fedrec_app.server.replies import (
    AppRefusedError,
    FederationError,
    aggregate,
    check_refusals,
    evaluation,
    merge_users,
    metrics_of,
)
from fedrec_app.server.round_log import format_metric, format_metrics, learn_names, round_line
from fedrec_app.server.strategy import FederationLoop, exchange, sample_nodes, wait_for_nodes

N_ITEMS, K = 4, 2  # items, factors


def _previous() -> dict[str, np.ndarray]:
    return {
        "item_embedding": np.full((N_ITEMS, K), 9.0, np.float32),
        "item_bias": np.full(N_ITEMS, 9.0, np.float32),
        "item_rank_embedding": np.full((N_ITEMS, K), 9.0, np.float32),
        "item_rank_bias": np.full(N_ITEMS, 9.0, np.float32),
        "global_bias": np.asarray(3.0, np.float32),
    }


def _reply(node: int, value: float, counts: list[int], examples: int, **extra) -> Message:
    """A train reply whose rows all equal ``value``, with per-row ``counts``."""
    arrays = {name: np.full_like(v, value) for name, v in _previous().items()}
    row_counts = {name: np.asarray(counts, np.int64) for name in arrays if name != "global_bias"}
    row_counts["global_bias"] = np.asarray(examples, np.int64)
    metrics = {"num-examples": float(examples), "train.loss": value, **extra}
    content = RecordDict(
        {
            protocol.ARRAYS: protocol.to_record(arrays),
            protocol.COUNTS: protocol.to_record(row_counts),
            protocol.METRICS: MetricRecord(metrics),
        }
    )
    return _answer(node, content)


def _answer(node: int, content: RecordDict | Error) -> Message:
    ask = Message(content=RecordDict(), message_type="train", dst_node_id=node)
    ask.metadata.__dict__["_message_id"] = ask.object_id
    reply = Message(content, reply_to=ask)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    DirectGrid({}, run_id=1, run_config={})  # sets the identity Message() needs


def test_rows_are_averaged_over_the_nodes_that_touched_them() -> None:
    result = aggregate(
        _previous(),
        [_reply(1, 1.0, [3, 1, 0, 0], examples=4), _reply(2, 5.0, [0, 1, 2, 0], examples=12)],
    )
    assert result.shared is not None and result.num_replies == 2
    expected = np.array([1.0, (1.0 + 5.0) / 2, 5.0, 9.0])  # row 3: nobody touched it
    np.testing.assert_allclose(result.shared["item_bias"], expected)
    np.testing.assert_allclose(result.shared["item_embedding"], np.repeat(expected[:, None], K, 1))
    np.testing.assert_allclose(result.shared["global_bias"], (1.0 * 4 + 5.0 * 12) / 16)
    assert result.train["train.loss"] == pytest.approx((1.0 * 4 + 5.0 * 12) / 16)


def test_weights_follow_counts_not_node_numbers() -> None:
    result = aggregate(
        _previous(), [_reply(1, 0.0, [1, 1, 1, 1], 1), _reply(2, 4.0, [3, 3, 3, 3], 1)]
    )
    assert result.shared is not None
    np.testing.assert_allclose(result.shared["item_rank_bias"], np.full(N_ITEMS, 3.0))


def test_errors_and_malformed_replies_are_failures_and_ignored() -> None:
    error = _answer(3, Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="fedrec:internal"))
    bad = _reply(4, 100.0, [1, 1, 1, 1], 1)
    arrays = protocol.from_record(bad.content.array_records[protocol.ARRAYS])
    arrays["item_bias"] = np.zeros(N_ITEMS + 1, np.float32)
    bad.content.array_records[protocol.ARRAYS] = protocol.to_record(arrays)
    result = aggregate(_previous(), [_reply(1, 2.0, [1, 0, 0, 0], 1), error, bad])
    assert result.num_replies == 1 and len(result.failures) == 2
    assert "fedrec:internal" in result.failures[0] and "node 4" in result.failures[1]
    np.testing.assert_allclose(result.shared["item_bias"], [2.0, 9.0, 9.0, 9.0])


def test_no_usable_reply_leaves_no_model() -> None:
    error = _answer(3, Error(code=ErrorCode.NODE_UNAVAILABLE, reason="gone"))
    assert aggregate(_previous(), [error]).shared is None


def test_global_rmse_comes_from_summed_errors_not_node_means() -> None:
    a = protocol.eval_metrics({"test": EvalSums(sse=9.0, sae=3.0, num_ratings=1)}, 2)
    b = protocol.eval_metrics({"test": EvalSums(sse=3.0, sae=3.0, num_ratings=3)}, 2)
    result = evaluation([_answer(1, _metrics(a)), _answer(2, _metrics(b))])
    assert result.eval_round == 2
    metrics = result.sums["test"].finalize()
    assert metrics["rmse"] == pytest.approx(math.sqrt(12 / 4))  # node means would give 2.0
    assert metrics["mae"] == pytest.approx(6 / 4)


def _metrics(values: dict[str, float]) -> RecordDict:
    return RecordDict({protocol.METRICS: MetricRecord(values)})


def test_merge_users_newer_rows_win_and_ids_are_sorted() -> None:
    def table(ids: list[int], value: float) -> dict[str, np.ndarray]:
        n = len(ids)
        return {
            "user_ids": np.asarray(ids, np.int64),
            "user_embedding": np.full((n, 2), value, np.float32),
            "user_bias": np.full(n, value, np.float32),
            "user_rank_embedding": np.full((n, 3), value, np.float32),
        }

    merged = merge_users(table([5, 1], 0.0), [table([7, 5], 1.0)])
    assert merged is not None
    np.testing.assert_array_equal(merged["user_ids"], [1, 5, 7])
    np.testing.assert_array_equal(merged["user_bias"], [0.0, 1.0, 1.0])
    assert merge_users(None, []) is None


def test_sample_nodes_keeps_64_bit_ids_and_bounds(rng) -> None:
    ids = [2**64 - 1, 907206179778976599, 13903444021816782848, 5]
    chosen = sample_nodes(ids, fraction=0.5, min_nodes=1, rng=rng)
    assert len(chosen) == 2 and set(chosen) <= set(ids)
    assert len(sample_nodes(ids, fraction=0.1, min_nodes=3, rng=rng)) == 3
    assert sorted(sample_nodes(ids, fraction=1.0, min_nodes=9, rng=rng)) == sorted(ids)


def test_wait_for_nodes_fails_in_time_with_a_clear_message() -> None:
    grid = DirectGrid({11: {}}, run_id=1, run_config={})
    assert wait_for_nodes(grid, min_nodes=1, timeout=5) == [11]
    started = time.monotonic()
    with pytest.raises(FederationError, match=r"1 node\(s\) connected, fewer than min-nodes=2"):
        wait_for_nodes(grid, min_nodes=2, timeout=0.5, poll=0.1)
    assert time.monotonic() - started < 3


def test_the_run_fails_only_when_every_sampled_node_refused_the_app() -> None:
    def refusal(node: int) -> Message:
        reason = protocol.refusal_reason(node, "ab" * 32)
        return _answer(node, Error(code=ErrorCode.INVALID_FAB, reason=reason))

    with pytest.raises(AppRefusedError, match="round 3: all 2 sampled node") as caught:
        check_refusals([refusal(7), refusal(8)], 2, "round 3")
    for node in (7, 8):
        assert f"node {node}: app {'ab' * 32} is not approved on this node" in str(caught.value)
    other = _answer(9, Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="fedrec:internal"))
    check_refusals([refusal(7), other], 2, "round 1")  # one node ran it: the round goes on
    check_refusals([refusal(7)], 2, "round 1")  # the other may still answer in a later round
    check_refusals([_reply(1, 1.0, [1, 1, 1, 1], 1)], 1, "round 1")


def _named(reply: Message, site: str) -> Message:
    protocol.add_site_name(reply.content, {protocol.SITE_NAME: site})
    return reply


def test_the_round_line_names_sites_failures_and_silent_nodes() -> None:
    sums = protocol.eval_metrics(
        {"test": EvalSums(sse=4.0, sae=2.0, num_ratings=4, hits=1.0, ndcg=0.25, num_users=1)}, 6
    )
    first = [
        _named(_reply(11, 1.0, [1, 1, 1, 1], 1, **sums), "lab-a"),
        _named(_reply(12, 1.0, [1, 1, 1, 1], 1, **sums), "lab-b"),
    ]
    names: dict[int, str] = {}
    learn_names(first, names)
    assert names == {11: "lab-a", 12: "lab-b"}
    # round 7: lab-b's trainer died (an error reply has no content: named from before), node 13
    # never told its name, node 14 never answered
    failed = _answer(
        12, Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="fedrec:trainer-failed")
    )
    replies = [first[0], failed, _reply(13, 1.0, [1, 1, 1, 1], 1, **sums)]
    learn_names(replies, names)
    result = aggregate(_previous(), replies, names=names)
    line = round_line("round 7/9", [11, 12, 13, 14], [11, 12, 13], result, names, 12.34)
    assert line == (
        "round 7/9: model of round 6 on the held-out ratings: RMSE 1.0000, NDCG@10 0.250 | "
        "2/4 nodes replied: lab-a, node 13; failed: lab-b: fedrec:trainer-failed; "
        "no reply: node 14 | 12.3 s"
    )
    plain = [_reply(11, 1.0, [1, 1, 1, 1], 1)]  # round 1: no evaluation rides on it yet
    quiet = round_line("round 1/9", [11], [11], aggregate(_previous(), plain), names, 3.0)
    assert quiet == "round 1/9: 1/1 nodes replied: lab-a | 3.0 s"  # nothing evaluated yet
    none = round_line("final evaluation", [12], [], evaluation([]), names, 30.0)
    assert none == "final evaluation: 0/1 nodes replied: none; no reply: lab-b | 30.0 s"


def test_a_reply_names_its_site_only_when_node_config_has_one() -> None:
    content = RecordDict({protocol.METRICS: MetricRecord({"num-examples": 1.0})})
    protocol.add_site_name(content, {"data-path": "/x"})
    assert protocol.site_name(content) is None and protocol.NODE not in content
    protocol.add_site_name(content, {protocol.SITE_NAME: " site1 "})
    assert protocol.site_name(content) == "site1"


def test_figures_are_printed_as_an_operator_reads_them() -> None:
    assert format_metric("test.rmse", 0.92421) == "0.9242"
    assert format_metric("val.mae", 0.7) == "0.7000"
    assert format_metric("test.ndcg@10", 0.40449) == "0.404"
    assert format_metric("val.hr@10", 1.0) == "1.000"
    assert format_metric("train.loss", 0.5) == "0.5000"
    assert format_metric("node.train-seconds", 12.345) == "12.3"
    figures = {"nodes": 3.0, "failures": 0.0, "seconds": 61.04, "test.ndcg@10": 0.4}
    assert format_metrics(figures) == "failures=0 nodes=3 seconds=61.0 test.ndcg@10=0.400"


def test_a_round_names_each_figure_split_dot_metric() -> None:
    a = protocol.eval_metrics({"test": EvalSums(sse=4.0, num_ratings=1), "val": EvalSums()}, 2)
    result = evaluation([_answer(1, _metrics(a))])
    assert {"test.rmse", "test.ndcg@10", "val.rmse", "val.hr@10"} <= set(metrics_of(result))


class _SlowGrid:
    """Replies that arrive at given seconds after the messages were sent."""

    def __init__(self, replies: list[tuple[float, Message]]) -> None:
        self.replies = replies
        self.sent_at = 0.0

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.sent_at = time.monotonic()
        return [reply.metadata.reply_to_message_id for _, reply in self.replies]

    def pull_messages(self, ids: set[str]) -> list[Message]:
        elapsed = time.monotonic() - self.sent_at
        return [
            reply
            for at, reply in self.replies
            if at <= elapsed and reply.metadata.reply_to_message_id in ids
        ]


def test_a_long_wait_says_who_replied_so_far(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While a round waits for its nodes (the first one loads TensorFlow), a heartbeat line
    says who replied so far; a quick round has none."""
    monkeypatch.setattr(strategy, "POLL_SECONDS", 0.02)
    first = _named(_reply(11, 1.0, [1, 1, 1, 1], 1), "lab-a")
    second = _named(_reply(12, 1.0, [1, 1, 1, 1], 1), "lab-b")
    beats: list[tuple[int, int, float]] = []
    grid = _SlowGrid([(0.05, first), (0.7, second)])
    replies = exchange(grid, [], 5.0, lambda got, asked, s: beats.append((len(got), asked, s)), 0.2)
    assert len(replies) == 2
    assert 1 <= len(beats) <= 4, beats
    assert all(count == 1 and asked == 2 for count, asked, _ in beats)
    assert [s for *_, s in beats] == sorted(s for *_, s in beats)
    quick: list[tuple[int, int, float]] = []
    exchange(_SlowGrid([(0.0, first)]), [], 5.0, lambda *a: quick.append(a), 0.2)
    assert quick == []

    loop = FederationLoop(
        grid=grid,  # type: ignore[arg-type]
        cfg=None,  # type: ignore[arg-type]
        state_key="",
        catalogue_fingerprint="",
        on_trained=lambda *a: None,
        on_evaluated=lambda *a: None,
    )
    with caplog.at_level("INFO", logger="fedrec_app.server.strategy"):
        loop._heartbeat("round 1/5", "training")([first], 3, 40.4)
    assert caplog.messages == [
        "round 1/5: still training, 1 of 3 nodes replied (lab-a), 40 s so far"
    ]
