"""A node's set-up from its node-config, and the warm trainer's command line built from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedrec_app.config import app_defaults, parse_run_config
from fedrec_app.errors import FedrecError
from fedrec_app.node_setup import NodeFailure, NodeSetup, node_setup
from fedrec_app.ops.trainer import TrainerCommand, TrainerGroupCommand

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


def test_trainer_group_command_pairs_each_state_dir_with_its_data(tmp_path: Path) -> None:
    configs = [{"state-dir": str(tmp_path / f"s{k}"), "data-path": str(tmp_path / f"p{k}"),
                "threads": 1} for k in range(2)]  # fmt: skip
    argv = TrainerGroupCommand.for_nodes(configs, nice=10).argv()
    assert argv[:4] == [sys.executable, "-m", "fedrec_app", "trainers"]
    assert argv[4:] == ["--state-dir", str(tmp_path / "s0"), "--state-dir", str(tmp_path / "s1"),
                        "--data-path", str(tmp_path / "p0"), "--data-path", str(tmp_path / "p1"),
                        "--threads", "1", "--nice", "10"]  # fmt: skip
    alone = TrainerGroupCommand.for_nodes([{"state-dir": str(tmp_path / "s")}]).argv()
    assert alone[4:] == ["--state-dir", str(tmp_path / "s")]


@pytest.mark.parametrize(
    ("configs", "problem"),
    [
        ([], "at least one node"),
        ([{"state-dir": "/a", "gpu-index": 0}], "one `fedrec trainer` per node"),
        ([{"state-dir": "/a", "threads": 1}, {"state-dir": "/b", "threads": 2}], "same threads"),
        ([{"state-dir": "/a", "data-path": "/p"}, {"state-dir": "/b"}], "every node or for none"),
    ],
)
def test_trainer_group_command_refuses(configs: list[dict], problem: str) -> None:
    with pytest.raises(FedrecError, match=problem):
        TrainerGroupCommand.for_nodes(configs)
