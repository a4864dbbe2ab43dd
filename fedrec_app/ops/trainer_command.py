"""The command lines of warm trainers, built from node-configs: one SuperNode's (`fedrec trainer`)
or several co-located SuperNodes' from one TensorFlow import (`fedrec trainers`).

ops only starts the trainer as a process; the trainer itself is ``fedrec_app.node.trainer``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.core.errors import FedrecError
from fedrec_app.node.setup import socket_path

TRAINER_LISTENING = "warm trainer listening"  # ClientApps that connect now wait for the warm-up
TRAINER_READY = "warm trainer ready"  # warmed up: the train step is traced


def trainer_log_line(state: str, state_dir: Path) -> str:
    """The regex of one node's trainer logging ``state`` (TRAINER_LISTENING or TRAINER_READY):
    a group's log holds every member's lines."""
    return re.escape(f"{state} on {socket_path(Path(state_dir).resolve())}")


@dataclass(frozen=True)
class TrainerCommand:
    state_dir: Path
    data_path: Path | None = None
    gpu_index: int | None = None
    threads: int | None = None

    @classmethod
    def for_node(cls, node_config: Mapping[str, object]) -> TrainerCommand:
        """The trainer of the SuperNode whose node-config this is (same state-dir, data-path)."""
        if not node_config.get("state-dir"):
            raise FedrecError("a warm trainer needs the node's state-dir in its node-config")
        data_path = node_config.get("data-path")
        gpu, threads = node_config.get("gpu-index"), node_config.get("threads")
        return cls(
            state_dir=Path(str(node_config["state-dir"])),
            data_path=Path(str(data_path)) if data_path else None,
            gpu_index=int(gpu) if gpu is not None else None,  # type: ignore[call-overload]
            threads=int(threads) if threads is not None else None,  # type: ignore[call-overload]
        )

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "fedrec_app", "trainer", "--state-dir", str(self.state_dir)]
        if self.data_path is not None:
            argv += ["--data-path", str(self.data_path)]
        if self.gpu_index is not None:
            argv += ["--gpu-index", str(self.gpu_index)]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        return argv


@dataclass(frozen=True)
class TrainerGroupCommand:
    """`fedrec trainers`: the trainers of SuperNodes on one host, forked from one TensorFlow
    import; ``nice`` lowers the group's CPU priority until all are warm."""

    members: tuple[TrainerCommand, ...]
    nice: int = 0

    @classmethod
    def for_nodes(
        cls, node_configs: Sequence[Mapping[str, object]], nice: int = 0
    ) -> TrainerGroupCommand:
        members = tuple(TrainerCommand.for_node(config) for config in node_configs)
        if not members:
            raise FedrecError("a trainer group needs at least one node")
        if any(m.gpu_index is not None for m in members):
            raise FedrecError(
                "a trainer group shares one device setup: start one `fedrec "
                "trainer` per node to give each its own gpu-index"
            )
        if len({m.threads for m in members}) > 1:
            raise FedrecError("a trainer group's nodes must have the same threads")
        if len({m.data_path is None for m in members}) > 1:
            raise FedrecError("a trainer group needs a data-path for every node or for none")
        return cls(members, nice)

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "fedrec_app", "trainers"]
        for member in self.members:
            argv += ["--state-dir", str(member.state_dir)]
        for member in self.members:  # every node's or none (for_nodes)
            if member.data_path is not None:
                argv += ["--data-path", str(member.data_path)]
        if self.members[0].threads is not None:
            argv += ["--threads", str(self.members[0].threads)]
        if self.nice:
            argv += ["--nice", str(self.nice)]
        return argv
