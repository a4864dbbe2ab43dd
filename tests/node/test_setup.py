"""A node's set-up from its node-config, and the warm trainer's command line built from it."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.core.errors import FedrecError
from fedrec_app.node.setup import NodeFailure, NodeSetup, node_setup
from fedrec_app.ops.trainer_command import TrainerCommand, TrainerGroupCommand

RUN_CONFIG = parse_run_config(app_defaults())


def test_deployment_node_config_names_partition_state_and_device(tmp_path: Path) -> None:
    config = {
        "data-path": str(tmp_path / "p0"),
        "state-dir": str(tmp_path / "s"),
        "gpu-index": -1,
        "threads": 2,
    }
    assert node_setup(config, RUN_CONFIG, 7) == NodeSetup(tmp_path / "p0", tmp_path / "s", -1, 2)
    plain = node_setup({"data-path": "/d", "state-dir": str(tmp_path / "s")}, RUN_CONFIG, 7)
    assert (plain.gpu_index, plain.threads) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"), [("threads", 0), ("threads", "2"), ("gpu-index", 1.5), ("gpu-index", True)]
)
def test_bad_device_values_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(NodeFailure, match=f"bad-node-config: node-config '{key}'"):
        node_setup({"data-path": "/d", "state-dir": "/s", key: value}, RUN_CONFIG, 7)


def test_trainer_command_follows_the_node_config(tmp_path: Path) -> None:
    config = {
        "data-path": str(tmp_path / "p0"),
        "state-dir": str(tmp_path / "s"),
        "gpu-index": 0,
        "threads": 1,
    }
    argv = TrainerCommand.for_node(config).argv()
    assert argv[:4] == [sys.executable, "-m", "fedrec_app", "trainer"]
    assert argv[4:] == [
        "--state-dir",
        str(tmp_path / "s"),
        "--data-path",
        str(tmp_path / "p0"),
        "--gpu-index",
        "0",
        "--threads",
        "1",
    ]


def test_trainer_group_command_pairs_each_state_dir_with_its_data(tmp_path: Path) -> None:
    configs = [
        {"state-dir": str(tmp_path / f"s{k}"), "data-path": str(tmp_path / f"p{k}"), "threads": 1}
        for k in range(2)
    ]
    argv = TrainerGroupCommand.for_nodes(configs, nice=10).argv()
    assert argv[:4] == [sys.executable, "-m", "fedrec_app", "trainers"]
    assert argv[4:] == [
        "--state-dir",
        str(tmp_path / "s0"),
        "--state-dir",
        str(tmp_path / "s1"),
        "--data-path",
        str(tmp_path / "p0"),
        "--data-path",
        str(tmp_path / "p1"),
        "--threads",
        "1",
        "--nice",
        "10",
    ]
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


def test_a_missing_state_dir_is_created_private_and_an_open_one_refused(tmp_path: Path) -> None:
    made = node_setup({"data-path": "/d", "state-dir": str(tmp_path / "new" / "s")}, RUN_CONFIG, 7)
    for folder in (made.state_dir, made.state_dir.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (tmp_path / "open").mkdir(mode=0o700)
    (tmp_path / "open").chmod(0o770)
    with pytest.raises(
        NodeFailure,
        match=f"bad-node-config: state-dir: {tmp_path / 'open'} is writable by group or others",
    ):
        node_setup({"data-path": "/d", "state-dir": str(tmp_path / "open")}, RUN_CONFIG, 7)


def test_without_state_dir_the_node_uses_its_users_private_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    setup = node_setup({"data-path": "/d"}, RUN_CONFIG, 7)
    assert setup.state_dir == tmp_path / "xdg" / "fedrec" / "node-7"
    assert stat.S_IMODE(setup.state_dir.stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec: absolute only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    setup = node_setup({"data-path": "/d"}, RUN_CONFIG, 8)
    assert setup.state_dir == tmp_path / "home" / ".local" / "state" / "fedrec" / "node-8"
    (setup.state_dir.parent / "node-9").mkdir(mode=0o755)  # private means 0700, nothing less
    with pytest.raises(NodeFailure, match="node-9 has mode 755; it must be private"):
        node_setup({"data-path": "/d"}, RUN_CONFIG, 9)
