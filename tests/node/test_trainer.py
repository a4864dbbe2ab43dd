"""The warm trainer (fedrec_app.node.trainer) as a real process, serving ClientApps over its socket.

The server loop and ClientApps run in this process through DirectGrid; each node's messages go
to a real `fedrec trainer` subprocess when one runs for its state dir.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from direct_grid import DirectGrid, app_nodes, app_run_config
from flwr.app import RecordDict

from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.node import setup as node_setup
from fedrec_app.node import trainer_client
from fedrec_app.node.setup import NodeFailure
from fedrec_app.server_app import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

READY = "warm trainer ready"


class TrainerProcess:
    """`fedrec trainer` for one node, its log in a file."""

    def __init__(self, node_config: dict, log_path: Path) -> None:
        self.state_dir = Path(node_config["state-dir"])
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "fedrec_app",
            "trainer",
            "--state-dir",
            str(self.state_dir),
            "--data-path",
            node_config["data-path"],
            "--threads",
            "1",
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"trainer exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the trainer's log:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def start_trainer(tmp_path: Path) -> Iterator:
    started: list[TrainerProcess] = []

    def start(node_config: dict) -> TrainerProcess:
        proc = TrainerProcess(node_config, tmp_path / f"trainer-{len(started)}.log")
        started.append(proc)
        proc.wait_for(READY)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _final_arrays(final: Path | None) -> dict[str, np.ndarray]:
    assert final is not None
    return read_checkpoint(final).arrays


def test_warm_trainer_gives_the_same_model_as_in_process_training(
    partition_set: Path,
    tmp_path: Path,
    start_trainer,
) -> None:
    # The app's default model sizes: the run reuses the model the trainers warmed up.
    defaults = app_defaults()
    config = app_run_config(
        partition_set,
        tmp_path / "ckpt",
        num_server_rounds=2,
        embedding_dim=defaults["embedding-dim"],
        rank_dim=defaults["rank-dim"],
    )
    cold_nodes = app_nodes(partition_set, tmp_path / "cold")
    cold = _final_arrays(run(DirectGrid(cold_nodes, 7, config), parse_run_config(config), 7))

    warm_nodes = app_nodes(partition_set, tmp_path / "warm")
    trainers = [start_trainer(node_config) for node_config in warm_nodes.values()]
    for proc in trainers:  # socket and key are private to the node's user
        for name in (node_setup.SOCKET_FILE, node_setup.KEY_FILE):
            assert stat.S_IMODE(os.stat(proc.state_dir / name).st_mode) == 0o600
    warm = _final_arrays(run(DirectGrid(warm_nodes, 7, config), parse_run_config(config), 7))

    assert all("train step traced" in proc.log() for proc in trainers)
    assert all("serving run 7" in proc.log() for proc in trainers)
    assert sorted(warm) == sorted(cold)
    for name in cold:
        # float32 sums may be ordered differently by TensorFlow's threads in another process:
        # equal to float32 rounding (differences of ~1e-8 seen), far below any training step
        np.testing.assert_allclose(warm[name], cold[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_trainer_crash_fails_that_round_only(
    partition_set: Path,
    tmp_path: Path,
    start_trainer,
) -> None:
    config = app_run_config(
        partition_set, tmp_path / "ckpt", num_server_rounds=2, local_epochs=20, min_nodes=1
    )
    nodes = app_nodes(partition_set, tmp_path / "state")
    crashing = start_trainer(next(iter(nodes.values())))

    def kill_when_busy() -> None:
        crashing.wait_for("serving run 8")
        crashing.proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    final = run(DirectGrid(nodes, 8, config), parse_run_config(config), 8)
    killer.join()

    history = read_checkpoint(final).manifest["history"]
    assert [(e["nodes"], e["failures"]) for e in history] == [(1, 1), (2, 0)]
    # The dead trainer left its socket behind: the next message trained in-process.
    assert (crashing.state_dir / node_setup.SOCKET_FILE).exists()


def test_a_wrong_key_is_refused(partition_set: Path, tmp_path: Path, start_trainer) -> None:  # noqa: F811
    node_config = next(iter(app_nodes(partition_set, tmp_path / "state").values()))
    proc = start_trainer(node_config)
    (proc.state_dir / node_setup.KEY_FILE).write_bytes(b"not the key")
    with pytest.raises(NodeFailure, match="trainer-failed: .*key challenge failed"):
        trainer_client.ask(proc.state_dir, "train_round", RecordDict(), {}, node_config, 1, 9)
    proc.wait_for("refused a connection")


def test_a_second_trainer_for_the_same_node_refuses_to_start(
    partition_set: Path,
    tmp_path: Path,
    start_trainer,
) -> None:
    node_config = next(iter(app_nodes(partition_set, tmp_path / "state").values()))
    first = start_trainer(node_config)
    second = TrainerProcess(node_config, tmp_path / "second.log")
    assert second.proc.wait(timeout=60) == 2
    assert "a warm trainer already serves" in second.log()
    with pytest.raises(NodeFailure, match="bad-message: unknown operation"):  # the first serves
        trainer_client.ask(first.state_dir, "no-such-op", RecordDict(), {}, node_config, 1, 9)


def test_no_trainer_means_in_process(tmp_path: Path) -> None:
    assert trainer_client.ask(tmp_path, "train_round", RecordDict(), {}, {}, 1, 9) is None


def test_the_client_app_side_imports_neither_tensorflow_nor_pandas() -> None:
    """What a ClientApp process loads when a warm trainer serves it (paid every round)."""
    code = (
        "import sys, fedrec_app.client_app, fedrec_app.node.trainer_client, fedrec_app.node.setup; "
        "heavy = {'tensorflow', 'keras', 'pandas'} & {m.split('.')[0] for m in sys.modules}; "
        "sys.exit(', '.join(sorted(heavy)) or None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_node_module_defers_tensorflow_until_it_trains() -> None:
    code = (
        "import sys, fedrec_app.node.task; "
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
