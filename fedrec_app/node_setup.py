"""Where a node's partition and state live, and how a node refuses a message.

Kept free of pandas and TensorFlow: the per-message ClientApp process imports it, and with a warm
trainer running that is all it imports besides Flower.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.config import RunConfig
from fedrec_app.data.layout import partition_dir_name

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
    over run-config ``partition-set``, state in the temp folder."""
    device = {
        "gpu_index": _optional_int(node_config, "gpu-index"),
        "threads": _optional_int(node_config, "threads", minimum=1),
    }
    data_path = node_config.get("data-path")
    if data_path:
        partition_dir = Path(str(data_path))
        state_dir = node_config.get("state-dir")
        if not state_dir:
            state_dir = Path(tempfile.gettempdir()) / "fedrec-node-state" / f"node-{node_id}"
            log.warning("node-config has no state-dir: keeping user rows in %s", state_dir)
        return NodeSetup(partition_dir, Path(str(state_dir)), **device)
    if "partition-id" in node_config and run_cfg.partition_set:
        index = int(node_config["partition-id"])  # type: ignore[call-overload]
        set_dir = Path(run_cfg.partition_set)
        state_dir = node_config.get("state-dir") or (
            Path(tempfile.gettempdir()) / "fedrec-node-state" / f"sim-{set_dir.name}-{index}"
        )
        return NodeSetup(set_dir / partition_dir_name(index), Path(str(state_dir)), **device)
    raise NodeFailure("no-partition", f"node-config {sorted(node_config)} names no data-path")


def _optional_int(
    node_config: Mapping[str, object], key: str, minimum: int | None = None
) -> int | None:
    value = node_config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (
        minimum is not None and value < minimum
    ):
        least = "" if minimum is None else f" >= {minimum}"
        raise NodeFailure("bad-node-config", f"node-config '{key}': expected an integer{least}, "
                          f"got {value!r}")  # fmt: skip
    return value
