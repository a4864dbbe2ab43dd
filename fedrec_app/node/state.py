"""A node's own user parameters between rounds, kept on disk in its state dir.

Flower's ``context.state`` lives in memory and dies with the SuperNode; this file does not. One
``<state-dir>/<key>.npz`` per training run (the key is the run id a run started from, so a run
resumed from a checkpoint continues with the same user rows). Writes are atomic: a temporary
file in the same folder, fsync, rename.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write
from fedrec_app.core.scoring import USER_ARRAYS

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
_META = ("_run_id", "_round")
_OPT = "optimizer."


class NodeStateError(FedrecError):
    """A node state file is unreadable or inconsistent."""


@dataclass(frozen=True)
class NodeState:
    """User rows after the node's last training, and which run/round wrote them.

    ``optimizer`` holds the local optimizer's state (moments, step), so training continues
    from one round to the next instead of restarting Adam each round (empty: start fresh).
    """

    run_id: int
    round: int
    user_arrays: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)


def state_path(state_dir: Path, key: str) -> Path:
    if not _KEY.match(key):
        raise NodeStateError(f"node state key {key!r} is not a plain name")
    return Path(state_dir) / f"{key}.npz"


def load_state(state_dir: Path, key: str) -> NodeState | None:
    """The saved state for ``key``, or None when there is none yet."""
    path = state_path(state_dir, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise NodeStateError(f"{path}: unreadable node state: {exc}") from exc
    missing = [name for name in (*_META, "user_ids", *USER_ARRAYS) if name not in data]
    if missing:
        raise NodeStateError(f"{path}: node state lacks {missing}")
    num_users = len(data["user_ids"])
    for name in USER_ARRAYS:
        if len(data[name]) != num_users:
            raise NodeStateError(f"{path}: {name} has {len(data[name])} rows, not {num_users}")
    users = {name: data[name] for name in ("user_ids", *USER_ARRAYS)}
    optimizer = {k[len(_OPT) :]: v for k, v in data.items() if k.startswith(_OPT)}
    return NodeState(
        run_id=int(data["_run_id"]),
        round=int(data["_round"]),
        user_arrays=users,
        optimizer=optimizer,
    )


def save_state(state_dir: Path, key: str, state: NodeState) -> Path:
    """Write ``state`` atomically; returns the file."""
    path = state_path(state_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: Mapping[str, np.ndarray] = {
        **{name: np.asarray(state.user_arrays[name]) for name in ("user_ids", *USER_ARRAYS)},
        "_run_id": np.asarray(state.run_id, np.uint64),
        "_round": np.asarray(state.round, np.int64),
        **{f"{_OPT}{name}": np.asarray(value) for name, value in state.optimizer.items()},
    }
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return atomic_write(path, buffer.getvalue(), mode=0o600)  # user rows never leave the node
