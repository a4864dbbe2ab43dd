"""The command line of a SuperNode's warm trainer (`fedrec trainer`), built from its node-config.

ops only starts the trainer as a process; the trainer itself is ``fedrec_app.trainer``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.errors import FedrecError

TRAINER_LISTENING = "warm trainer listening"  # ClientApps that connect now wait for the warm-up
TRAINER_READY = "warm trainer ready"  # warmed up: the train step is traced


@dataclass(frozen=True)
class TrainerCommand:
    state_dir: Path
    data_path: Path | None = None
    gpu_index: int | None = None
    threads: int | None = None
    nice: int = 0

    @classmethod
    def for_node(cls, node_config: Mapping[str, object], nice: int = 0) -> TrainerCommand:
        """The trainer of the SuperNode whose node-config this is (same state-dir, data-path);
        ``nice`` lowers its CPU priority (`fedrec trainer --nice`)."""
        if not node_config.get("state-dir"):
            raise FedrecError("a warm trainer needs the node's state-dir in its node-config")
        data_path = node_config.get("data-path")
        gpu, threads = node_config.get("gpu-index"), node_config.get("threads")
        return cls(
            state_dir=Path(str(node_config["state-dir"])),
            data_path=Path(str(data_path)) if data_path else None,
            gpu_index=int(gpu) if gpu is not None else None,  # type: ignore[call-overload]
            threads=int(threads) if threads is not None else None,  # type: ignore[call-overload]
            nice=nice,
        )

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "fedrec_app", "trainer", "--state-dir", str(self.state_dir)]
        if self.data_path is not None:
            argv += ["--data-path", str(self.data_path)]
        if self.gpu_index is not None:
            argv += ["--gpu-index", str(self.gpu_index)]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.nice:
            argv += ["--nice", str(self.nice)]
        return argv
