"""A node's set-up from its node-config, and the warm trainer's command line built from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedrec_app.config import app_defaults, parse_run_config
from fedrec_app.node_setup import NodeFailure, NodeSetup, node_setup
from fedrec_app.ops.trainer import TrainerCommand

RUN_CONFIG = parse_run_config(app_defaults())


def test_deployment_node_config_names_partition_state_and_device(tmp_path: Path) -> None:
    config = {"data-path": str(tmp_path / "p0"), "state-dir": str(tmp_path / "s"),
              "gpu-index": -1, "threads": 2}  # fmt: skip
    assert node_setup(config, RUN_CONFIG, 7) == NodeSetup(tmp_path / "p0", tmp_path / "s", -1, 2)
    plain = node_setup({"data-path": "/d", "state-dir": "/s"}, RUN_CONFIG, 7)
    assert (plain.gpu_index, plain.threads) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"), [("threads", 0), ("threads", "2"), ("gpu-index", 1.5), ("gpu-index", True)]
)
def test_bad_device_values_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(NodeFailure, match=f"bad-node-config: node-config '{key}'"):
        node_setup({"data-path": "/d", "state-dir": "/s", key: value}, RUN_CONFIG, 7)


def test_trainer_command_follows_the_node_config(tmp_path: Path) -> None:
    config = {"data-path": str(tmp_path / "p0"), "state-dir": str(tmp_path / "s"),
              "gpu-index": 0, "threads": 1}  # fmt: skip
    argv = TrainerCommand.for_node(config).argv()
    assert argv[:4] == [sys.executable, "-m", "fedrec_app", "trainer"]
    assert argv[4:] == ["--state-dir", str(tmp_path / "s"), "--data-path", str(tmp_path / "p0"),
                        "--gpu-index", "0", "--threads", "1"]  # fmt: skip


def test_trainer_command_passes_a_lower_priority(tmp_path: Path) -> None:
    config = {"state-dir": str(tmp_path / "s")}
    assert "--nice" not in TrainerCommand.for_node(config).argv()
    assert TrainerCommand.for_node(config, nice=10).argv()[-2:] == ["--nice", "10"]
