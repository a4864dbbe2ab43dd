"""Where a node's partition and state live, and how a node refuses a message.

The state dir (user rows between rounds, the warm trainer's socket and key) is node-config
``state-dir``, created 0700 when missing and refused (``bad-node-config``, naming the folder)
when another user owns it or could write into it or swap it (``fedrec_app.node.private_dir``).
Without one (a deployment node-config that omits it, and every simulated node) it is a private
folder (0700, checked) under this user's ``$XDG_STATE_HOME/fedrec`` or
``~/.local/state/fedrec``: ``node-<node-id>``, or ``sim-<partition-set>-<partition-id>``. Never
the shared temp dir, where another user could plant a folder or a socket first.

Kept free of pandas and TensorFlow: the per-message ClientApp process imports it, and with a warm
trainer running that is all it imports besides Flower.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.core.config import RunConfig
from fedrec_app.data.layout import partition_dir_name
from fedrec_app.node.private_dir import UnsafeFolderError, default_state_base, ensure_dir

log = logging.getLogger(__name__)

SOCKET_FILE = "trainer.sock"  # the warm trainer's, in the node's state-dir
KEY_FILE = "trainer.key"


def socket_path(state_dir: Path) -> Path:
    """The warm trainer's Unix socket in a node's state-dir."""
    return Path(state_dir) / SOCKET_FILE


class NodeFailure(Exception):
    """A message this node cannot serve; ``code`` (from ``protocol.ERROR_CODES``) is what the
    server is told."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class NodeSetup:
    """Where this node's partition and state live, and what it trains on (node-config
    ``gpu-index``: a GPU, negative for the CPU; ``threads``: a cap on TensorFlow's CPU threads)."""

    partition_dir: Path
    state_dir: Path
    gpu_index: int | None = None
    threads: int | None = None


def node_setup(node_config: Mapping[str, object], run_cfg: RunConfig, node_id: int) -> NodeSetup:
    """Deployment: ``data-path`` + ``state-dir`` from node-config. Simulation: ``partition-id``
    over run-config ``partition-set``. The state dir is created or checked (see the module's
    docstring); the returned one is resolved."""
    device = {
        "gpu_index": _optional_int(node_config, "gpu-index"),
        "threads": _optional_int(node_config, "threads", minimum=1),
    }
    data_path = node_config.get("data-path")
    given = node_config.get("state-dir")
    if data_path:
        state_dir = _state_dir(given, f"node-{node_id}")
        if not given:
            log.warning("node-config has no state-dir: keeping user rows in %s", state_dir)
        return NodeSetup(Path(str(data_path)), state_dir, **device)
    if "partition-id" in node_config and run_cfg.partition_set:
        index = int(node_config["partition-id"])  # type: ignore[call-overload]
        set_dir = Path(run_cfg.partition_set)
        state_dir = _state_dir(given, f"sim-{set_dir.name}-{index}")
        return NodeSetup(set_dir / partition_dir_name(index), state_dir, **device)
    raise NodeFailure("no-partition", f"node-config {sorted(node_config)} names no data-path")


def _state_dir(given: object, default_name: str) -> Path:
    """Node-config's ``state-dir`` if given, else ``default_name`` in this user's private base;
    created 0700 when missing, refused when not safe."""
    try:
        if given:
            return ensure_dir(Path(str(given)))
        base = ensure_dir(default_state_base(), private=True)
        return ensure_dir(base / default_name, private=True)
    except UnsafeFolderError as exc:
        raise NodeFailure("bad-node-config", f"state-dir: {exc}") from exc


def _optional_int(
    node_config: Mapping[str, object], key: str, minimum: int | None = None
) -> int | None:
    value = node_config.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        least = "" if minimum is None else f" >= {minimum}"
        raise NodeFailure(
            "bad-node-config", f"node-config '{key}': expected an integer{least}, got {value!r}"
        )
    return value
