"""`fedrec up`: option checks, log-line parsing, and the whole launch end to end (real
processes on synthetic MovieLens-format data), stopped with SIGINT at two points."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from launch_helpers import processes_mentioning, wait_for_output, wait_gone
from synthetic import make_synthetic_movielens, zip_movielens

from fedrec_app.cli import main
from fedrec_app.core.checkpoint import verify_checkpoint
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.signing import load_verify_key
from fedrec_app.data.catalogue import read_catalogue_csv
from fedrec_app.ops.federation import free_port
from fedrec_app.ops.up import UpOptions
from fedrec_app.ops.up_report import STEPS, exposure_warning, server_line

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nodes": 0}, "--nodes 0"),
        ({"rounds": 0}, "--rounds 0"),
        ({"local_epochs": 0}, "--local-epochs 0"),
        ({"port": 70000}, "--port 70000"),
        ({"port": 9000, "superlink_port": 9000}, "the gateway serves on that port"),
        ({"zip_path": Path("/nonexistent/ml-100k.zip")}, "--zip /nonexistent"),
    ],
)
def test_bad_options_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(FedrecError, match=message):
        UpOptions(**fields).check()


def test_cli_refuses_a_taken_gateway_port_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            [
                "up",
                "--work",
                str(tmp_path / "w"),
                "--data",
                str(tmp_path / "d"),
                "--port",
                str(port),
            ]
        )
    assert code == 2
    assert f"--port {port}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "w").exists()


def test_server_lines_shown_while_training() -> None:
    line = (
        "round 4/6: model of round 3 on the held-out ratings: RMSE 0.9310, NDCG@10 0.3910 | "
        "3/3 nodes replied: sn1, sn2, sn3 | 9.1 s"
    )
    assert server_line(f"INFO fedrec_app.server.strategy: {line}") == line
    assert server_line("\x1b[92mINFO \x1b[0m: flwr noise") is None
    assert server_line("\x1b[91mERROR \x1b[0m:     Exit Code: 201") == "ERROR: Exit Code: 201"
    assert server_line("INFO :      [ROUND 1/3]") is None


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def synthetic_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = make_synthetic_movielens(tmp_path_factory.mktemp("up-data") / "ml-100k", seed=11)
    archive = zip_movielens(folder, folder.parent / "ml-100k.zip")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def _start_up(
    tmp_path: Path,
    synthetic_zip: tuple[Path, str],
    port: int,
    rounds: int,
    sigint_ignored: bool = False,
) -> tuple[subprocess.Popen, Path, Path]:
    archive, md5 = synthetic_zip
    work, out = tmp_path / "work", tmp_path / "up.out"
    argv = [
        sys.executable,
        "run_app.py",
        "--nodes",
        "2",
        "--rounds",
        str(rounds),
        "--local-epochs",
        "1",
        "--work",
        str(work),
        "--data",
        str(tmp_path / "data"),
        "--zip",
        str(archive),
        "--md5",
        md5,
        "--port",
        str(port),
    ]
    with out.open("wb") as handle:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sigint_ignored
            else None,
        )
    return proc, work, out


def _interrupt(proc: subprocess.Popen, work: Path) -> int:
    """SIGINT (Ctrl+C) to `fedrec up` alone; its exit code, once nothing it started is left."""
    assert processes_mentioning(str(work)), "the launch started no processes?"
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    left = wait_gone(str(work), timeout=10)
    assert not left, f"processes left behind: {left}"
    return code


@pytest.mark.integration
@pytest.mark.slow
def test_up_serves_recommendations_then_ctrl_c_stops_everything(
    tmp_path: Path, synthetic_zip: tuple[Path, str]
) -> None:
    port = free_port()
    proc, work, out = _start_up(tmp_path, synthetic_zip, port, rounds=1)
    try:
        text = wait_for_output(out, "Press Ctrl+C", 600, alive=lambda: proc.poll() is None)
        for number, step in enumerate(STEPS, 1):
            assert f"[{number}/11] {step}:" in text and f"{step} done in" in text
        assert "[5/11] trainers: 2 warm trainers" in text
        assert "model of round 1 on the held-out ratings: RMSE" in text
        assert f'curl "http://127.0.0.1:{port}/recommend?user_id=4&n=5"' in text
        url = f"http://127.0.0.1:{port}/recommend?user_id=4&n=5"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        recs = answer["recommendations"]
        assert answer["user_id"] == 4 and len(recs) == 5
        catalogue = read_catalogue_csv(next((work / "partitions").glob("*/items.csv")))
        for rec in recs:
            assert rec["movie_title"] == catalogue.titles[catalogue.index_of(rec["movie_id"])]
            assert 2.0 <= rec["predicted_rating"] <= 5.0
        run_dirs = [p for p in (work / "checkpoints").iterdir() if p.is_dir()]
        assert len(run_dirs) == 1 and (run_dirs[0] / "final" / "manifest.json").is_file()
        # signed with the key `fedrec up` made; the gateway it started checks that signature
        public = load_verify_key(work / "certs" / "federation-signing.pub")
        verify_checkpoint(run_dirs[0] / "final", public)
        assert "--verify-key" in next(
            cmd for _, cmd in processes_mentioning(str(work)) if " gateway " in cmd
        )
        assert _interrupt(proc, work) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert "stopped: gateway, follower, supernodes, superlink" in text
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=3)


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_while_training_leaves_nothing_behind(
    tmp_path: Path, synthetic_zip: tuple[Path, str]
) -> None:
    # Started the way a script's background job is (SIGINT ignored): Ctrl+C must still work.
    proc, work, out = _start_up(
        tmp_path, synthetic_zip, free_port(), rounds=50, sigint_ignored=True
    )
    try:
        wait_for_output(out, "[10/11] train:", 300, alive=lambda: proc.poll() is None)
        assert _interrupt(proc, work) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert "interrupted: stopping what was started" in text
    assert "stopped: follower, supernodes, superlink" in text
    assert "[11/11]" not in text


@pytest.mark.integration
@pytest.mark.slow
def test_a_failed_run_stops_the_launch_with_the_runs_own_error(
    tmp_path: Path, synthetic_zip: tuple[Path, str]
) -> None:
    archive, md5 = synthetic_zip
    work = tmp_path / "work"
    argv = [
        sys.executable,
        "-m",
        "fedrec_app",
        "up",
        "--nodes",
        "2",
        "--rounds",
        "1",
        "--work",
        str(work),
        "--data",
        str(tmp_path / "data"),
        "--zip",
        str(archive),
        "--md5",
        md5,
        "--port",
        str(free_port()),
        "--run-config",
        f"catalogue='{tmp_path / 'missing' / 'items.csv'}'",
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ended finished:failed: ServerApp failed with exception" in done.stderr
    assert "missing/items.csv" in done.stderr and "ServerApp log (tail)" in done.stderr
    assert "[11/11]" not in done.stdout
    assert "stopped: follower, supernodes, superlink" in done.stdout
    assert not wait_gone(str(work), timeout=10)


def test_a_host_other_than_loopback_is_warned_about_service_by_service() -> None:
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1"):
        assert exposure_warning(host, 8000, 9092, fleet_proxy=True) is None
    proxied = exposure_warning("0.0.0.0", 8000, 9092, fleet_proxy=True)
    assert proxied is not None
    lines = proxied.splitlines()
    assert lines[0].startswith("WARNING: --host 0.0.0.0 listens on every network interface")
    assert "gateway on port 8000: plain HTTP, NO API key" in lines[1]
    assert "Fleet proxy (nginx) on port 9092" in lines[2] and "Fleet API" in lines[2]
    assert "Control and runtime APIs (127.0.0.1)" in lines[3]
    bare = exposure_warning("192.168.5.10", 8080, 9093, fleet_proxy=False, gateway_keys=True)
    assert bare is not None
    assert "listens on 192.168.5.10;" in bare
    assert "gateway on port 8080: HTTP, API key needed" in bare
    assert "SuperLink on port 9093" in bare and "Control API has NO login" in bare
    assert "Control and runtime APIs" not in bare  # nothing in front: they are exposed too
