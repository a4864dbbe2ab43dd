"""Node state: user rows survive in the state dir, written atomically, errors name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec_app.node.state import NodeState, NodeStateError, load_state, save_state, state_path


def _users(rng: np.random.Generator, n: int = 4) -> dict[str, np.ndarray]:
    return {
        "user_ids": np.arange(10, 10 + n, dtype=np.int64),
        "user_embedding": rng.normal(size=(n, 3)).astype(np.float32),
        "user_bias": rng.normal(size=n).astype(np.float32),
        "user_rank_embedding": rng.normal(size=(n, 2)).astype(np.float32),
    }


def test_round_trip_keeps_rows_and_a_64_bit_run_id(tmp_path: Path, rng) -> None:
    users = _users(rng)
    run_id = 2**64 - 5  # Flower run ids are unsigned 64-bit
    save_state(tmp_path, "123", NodeState(run_id=run_id, round=3, user_arrays=users))
    loaded = load_state(tmp_path, "123")
    assert loaded is not None and (loaded.run_id, loaded.round) == (run_id, 3)
    for name, value in users.items():
        np.testing.assert_array_equal(loaded.user_arrays[name], value)
    assert [p.name for p in tmp_path.iterdir()] == ["123.npz"]  # no temporary file left


def test_optimizer_state_travels_with_the_user_rows(tmp_path: Path, rng) -> None:
    optimizer = {"opt_00": np.asarray(7, np.int64), "opt_01": rng.normal(size=(5, 3))}
    save_state(tmp_path, "k", NodeState(9, 4, _users(rng), optimizer=optimizer))
    loaded = load_state(tmp_path, "k")
    assert loaded is not None and sorted(loaded.optimizer) == ["opt_00", "opt_01"]
    np.testing.assert_array_equal(loaded.optimizer["opt_01"], optimizer["opt_01"])
    save_state(tmp_path, "k", NodeState(9, 5, _users(rng)))
    assert load_state(tmp_path, "k").optimizer == {}


def test_overwrite_replaces_and_other_keys_are_separate(tmp_path: Path, rng) -> None:
    save_state(tmp_path, "a", NodeState(1, 1, _users(rng)))
    save_state(tmp_path, "a", NodeState(1, 2, _users(rng, 2)))
    state = load_state(tmp_path, "a")
    assert state is not None and state.round == 2 and len(state.user_arrays["user_ids"]) == 2
    assert load_state(tmp_path, "b") is None


def test_corrupt_or_inconsistent_state_names_the_file(tmp_path: Path, rng) -> None:
    state_path(tmp_path, "x").write_bytes(b"not a zip")
    with pytest.raises(NodeStateError, match="x.npz"):
        load_state(tmp_path, "x")
    users = _users(rng)
    users["user_bias"] = users["user_bias"][:2]
    save_state(tmp_path, "y", NodeState(1, 1, users))
    with pytest.raises(NodeStateError, match="user_bias has 2 rows"):
        load_state(tmp_path, "y")


def test_key_must_be_a_plain_name(tmp_path: Path) -> None:
    with pytest.raises(NodeStateError, match="plain name"):
        state_path(tmp_path, "../escape")
