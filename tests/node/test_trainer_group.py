"""`fedrec trainers`: co-located warm trainers forked from one TensorFlow import, as a real process.

The server loop and ClientApps run in this process through DirectGrid, as in test_trainer.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from direct_grid import DirectGrid, app_nodes, app_run_config

from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.node import setup as node_setup
from fedrec_app.ops.trainer_command import TRAINER_READY, trainer_log_line
from fedrec_app.server_app import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _wait_for(log: Path, proc: subprocess.Popen, pattern: str, count: int = 1) -> str:
    deadline = time.monotonic() + 120
    while len(re.findall(pattern, text := log.read_text(errors="replace"))) < count:
        assert proc.poll() is None, f"the group exited {proc.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no {pattern!r} (x{count}) in:\n{text}"
        time.sleep(0.05)
    return text


def test_a_group_serves_each_node_like_its_own_trainer_and_reforks_a_dead_one(
    partition_set: Path,
    tmp_path: Path,
) -> None:
    defaults = app_defaults()  # the model the trainers warm up
    config = app_run_config(
        partition_set,
        tmp_path / "ckpt",
        num_server_rounds=1,
        embedding_dim=defaults["embedding-dim"],
        rank_dim=defaults["rank-dim"],
    )
    cold = run(
        DirectGrid(app_nodes(partition_set, tmp_path / "cold"), 7, config),
        parse_run_config(config),
        7,
    )

    nodes = app_nodes(partition_set, tmp_path / "warm")
    state_dirs = [Path(n["state-dir"]) for n in nodes.values()]
    argv = [sys.executable, "-m", "fedrec_app", "trainers", "--threads", "1"]
    for node in nodes.values():
        argv += ["--state-dir", node["state-dir"]]
    for node in nodes.values():
        argv += ["--data-path", node["data-path"]]
    log = tmp_path / "trainers.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        for state_dir in state_dirs:
            _wait_for(log, proc, trainer_log_line(TRAINER_READY, state_dir))
        text = _wait_for(log, proc, "all 2 warm trainers of the group are ready")
        assert text.count("train step traced") == 2
        first_fork = text.index("forked the warm trainer")  # after every socket listens
        assert all(text.index(f"warm trainer listening on {d}") < first_fork for d in state_dirs)
        warm = run(DirectGrid(nodes, 7, config), parse_run_config(config), 7)
        assert cold is not None and warm is not None
        cold_arrays, warm_arrays = read_checkpoint(cold).arrays, read_checkpoint(warm).arrays
        assert sorted(warm_arrays) == sorted(cold_arrays)
        for name, array in cold_arrays.items():
            np.testing.assert_array_equal(warm_arrays[name], array, err_msg=name)
        assert _wait_for(log, proc, "serving run 7", count=2)

        first = re.search(
            rf"forked the warm trainer for {re.escape(str(state_dirs[0]))} "
            r"\(pid (\d+)\)",
            text,
        )
        assert first is not None
        os.kill(int(first.group(1)), signal.SIGKILL)
        _wait_for(log, proc, r"exited \(code -9\); forking it again")
        _wait_for(log, proc, trainer_log_line(TRAINER_READY, state_dirs[0]), count=2)
        again = run(DirectGrid(nodes, 8, config), parse_run_config(config), 8)
        assert again is not None
        assert _wait_for(log, proc, "serving run 8", count=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()
    for state_dir in state_dirs:  # every trainer cleaned up after itself
        assert not (state_dir / node_setup.SOCKET_FILE).exists()
        assert not (state_dir / node_setup.KEY_FILE).exists()


def test_a_trainer_that_fails_before_it_is_ready_gives_up_its_socket(
    partition_set: Path,
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    argv = [
        sys.executable,
        "-m",
        "fedrec_app",
        "trainers",
        "--threads",
        "1",
        "--state-dir",
        str(good),
        "--state-dir",
        str(bad),
        "--data-path",
        str(partition_set / "partition-0"),
        "--data-path",
        str(tmp_path / "no-such-partition"),
    ]
    log = tmp_path / "trainers.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(log, proc, r"exited before it was ready \(code 1\)")
        _wait_for(log, proc, trainer_log_line(TRAINER_READY, good))
        assert not (bad / node_setup.SOCKET_FILE).exists()  # its ClientApps train in-process
        assert (good / node_setup.SOCKET_FILE).exists()
        assert "all 2 warm trainers" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not (good / node_setup.SOCKET_FILE).exists()


def test_a_group_refuses_unpaired_data_paths(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app",
            "trainers",
            "--state-dir",
            str(tmp_path / "a"),
            "--state-dir",
            str(tmp_path / "b"),
            "--data-path",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "2 --state-dir but 1 --data-path" in result.stderr
