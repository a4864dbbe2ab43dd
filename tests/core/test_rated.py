"""Each user's rated movie ids: built at the node, merged by the server, kept in checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from direct_grid import DirectGrid
from flwr.app import Message, MetricRecord, RecordDict

from fedrec_app.core import protocol
from fedrec_app.core.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.core.rated import (
    RATED_ITEMS,
    RATED_OFFSETS,
    from_lists,
    rated_arrays,
    rated_lists,
    rated_problem,
)
from fedrec_app.data.catalogue import Catalogue
from fedrec_app.server.keeper import resume_point
from fedrec_app.server.replies import aggregate, merge_users


def test_rated_arrays_group_sort_and_deduplicate_by_user() -> None:
    arrays = rated_arrays(
        np.array([2, 5, 9]),
        np.array([5, 2, 5, 7, 5, 2]),  # user 7 has no row: left out
        np.array([30, 10, 4, 99, 30, 11]),
    )
    np.testing.assert_array_equal(arrays[RATED_OFFSETS], [0, 2, 4, 4])
    np.testing.assert_array_equal(arrays[RATED_ITEMS], [10, 11, 4, 30])
    lists = rated_lists(arrays)
    assert [x.tolist() for x in lists] == [[10, 11], [4, 30], []]
    again = from_lists(lists)
    for name in (RATED_OFFSETS, RATED_ITEMS):
        np.testing.assert_array_equal(again[name], arrays[name])
    empty = rated_arrays(np.array([], np.int64), np.array([1]), np.array([2]))
    assert empty[RATED_OFFSETS].tolist() == [0] and empty[RATED_ITEMS].size == 0


def test_rated_problems_are_named() -> None:
    users = {"user_ids": np.array([1, 2])}
    ok = {**users, RATED_OFFSETS: np.array([0, 1, 3]), RATED_ITEMS: np.array([5, 6, 7])}
    assert rated_problem(ok, np.array([5, 6, 7])) is None
    assert rated_problem(users) is None  # absent: nothing to check
    assert "incomplete" in rated_problem({**users, RATED_ITEMS: np.array([5])})
    assert "expected 3" in rated_problem({**ok, RATED_OFFSETS: np.array([0, 3])})
    assert "non-decreasing" in rated_problem({**ok, RATED_OFFSETS: np.array([0, 2, 1])})
    assert "non-decreasing" in rated_problem({**ok, RATED_OFFSETS: np.array([0, 1, 4])})
    assert "integer" in rated_problem({**ok, RATED_ITEMS: np.array([5.0, 6.0, 7.0])})
    assert "[7]" in rated_problem(ok, np.array([5, 6]))


def _users(ids: list[int], value: float, rated: list[list[int]] | None) -> dict[str, np.ndarray]:
    n = len(ids)
    table = {
        "user_ids": np.asarray(ids, np.int64),
        "user_embedding": np.full((n, 2), value, np.float32),
        "user_bias": np.full(n, value, np.float32),
        "user_rank_embedding": np.full((n, 3), value, np.float32),
    }
    if rated is not None:
        table |= from_lists([np.asarray(r, np.int64) for r in rated])
    return table


def test_merge_users_carries_each_users_rated_movies_with_their_row() -> None:
    merged = merge_users(
        _users([5, 1], 0.0, [[50], [10, 11]]), [_users([7, 5], 1.0, [[70], [50, 51]])]
    )
    assert merged is not None
    np.testing.assert_array_equal(merged["user_ids"], [1, 5, 7])
    assert [x.tolist() for x in rated_lists(merged)] == [[10, 11], [50, 51], [70]]


def test_merge_users_drops_rated_movies_while_a_kept_row_lacks_them() -> None:
    old = _users([5, 1], 0.0, None)  # e.g. resumed from a checkpoint written before them
    merged = merge_users(old, [_users([5], 1.0, [[50]])])
    assert merged is not None and RATED_OFFSETS not in merged and RATED_ITEMS not in merged
    merged = merge_users(old, [_users([5, 1], 1.0, [[50], [10]])])  # every row renewed
    assert merged is not None
    assert [x.tolist() for x in rated_lists(merged)] == [[10], [50]]


@pytest.fixture
def _task_identity() -> None:
    DirectGrid({}, run_id=1, run_config={})  # sets the identity Message() needs


def _reply(node: int, users: dict[str, np.ndarray]) -> Message:
    arrays = {"item_bias": np.zeros(3, np.float32), "global_bias": np.asarray(3.0, np.float32)}
    counts = {"item_bias": np.ones(3, np.int64), "global_bias": np.asarray(3, np.int64)}
    content = RecordDict(
        {
            protocol.ARRAYS: protocol.to_record(arrays),
            protocol.COUNTS: protocol.to_record(counts),
            protocol.USERS: protocol.to_record(users),
            protocol.METRICS: MetricRecord({"num-examples": 3.0, "train.loss": 1.0}),
        }
    )
    ask = Message(content=RecordDict(), message_type="train", dst_node_id=node)
    ask.metadata.__dict__["_message_id"] = ask.object_id
    reply = Message(content, reply_to=ask)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


@pytest.mark.usefixtures("_task_identity")
def test_a_reply_with_broken_rated_movies_is_a_failure_not_a_crash() -> None:
    previous = {"item_bias": np.zeros(3, np.float32), "global_bias": np.asarray(3.0, np.float32)}
    good = _users([1], 1.0, [[2]])
    bad = {**_users([4], 1.0, [[2]]), RATED_OFFSETS: np.array([0, 5])}
    result = aggregate(previous, [_reply(1, good), _reply(2, bad)])
    assert len(result.users) == 1 and result.num_replies == 1
    assert len(result.failures) == 1 and "node 2: bad reply" in result.failures[0]
    assert "user_rated_offsets" in result.failures[0]


def _checkpoint_arrays(catalogue: Catalogue) -> dict[str, np.ndarray]:
    n, rng = len(catalogue), np.random.default_rng(0)
    return {
        "item_ids": catalogue.movie_ids,
        "item_embedding": rng.normal(size=(n, 3)).astype(np.float32),
        "item_bias": rng.normal(size=n).astype(np.float32),
        "item_rank_embedding": rng.normal(size=(n, 2)).astype(np.float32),
        "item_rank_bias": rng.normal(size=n).astype(np.float32),
        "global_bias": np.float32(3.5),
        **_users([10, 11], 0.5, [[1, 3], []]),
    }


def test_checkpoints_keep_rated_movies_and_refuse_broken_ones(tmp_path: Path) -> None:
    catalogue = Catalogue(np.arange(1, 5), tuple(f"M{i}" for i in range(4)), (2000,) * 4, ((),) * 4)
    arrays = _checkpoint_arrays(catalogue)
    folder = write_checkpoint(tmp_path / "ok", arrays, catalogue, {"run_id": "1", "round": 1})
    ckpt = read_checkpoint(folder)
    assert [x.tolist() for x in rated_lists(ckpt.arrays)] == [[1, 3], []]
    with pytest.raises(CheckpointError, match=r"catalogue lacks: \[9\]"):
        write_checkpoint(
            tmp_path / "bad",
            {**arrays, RATED_ITEMS: np.array([1, 9])},
            catalogue,
            {"run_id": "1", "round": 1},
        )
    with pytest.raises(CheckpointError, match="rated movies incomplete"):
        without = {k: v for k, v in arrays.items() if k != RATED_OFFSETS}
        write_checkpoint(tmp_path / "bad", without, catalogue, {"run_id": "1", "round": 1})


def test_a_run_resumed_from_a_checkpoint_keeps_its_rated_movies(tmp_path: Path) -> None:
    catalogue = Catalogue(np.arange(1, 5), tuple(f"M{i}" for i in range(4)), (2000,) * 4, ((),) * 4)
    folder = write_checkpoint(
        tmp_path / "round-0001",
        _checkpoint_arrays(catalogue),
        catalogue,
        {"run_id": "1", "round": 1, "state_key": "1"},
    )
    raw = app_defaults() | {
        "embedding-dim": 3,
        "rank-dim": 2,
        "num-server-rounds": 3,
        "resume-from": str(folder),
    }
    point = resume_point(parse_run_config(raw), catalogue)
    assert point is not None and point.users is not None
    assert [x.tolist() for x in rated_lists(point.users)] == [[1, 3], []]
    merged = merge_users(point.users, [_users([11], 1.0, [[2]])])  # the next round's rows
    assert merged is not None
    assert [x.tolist() for x in rated_lists(merged)] == [[1, 3], [2]]
