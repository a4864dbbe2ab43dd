"""ManagedProcess: readiness, early exit, stop order, nothing left behind (real processes)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedrec_app.ops.process import ManagedProcess, ProcessError

# Like uvicorn: the first SIGTERM only starts a graceful wait; it also starts a detached child
# in its own session (as flower-superlink does with its SuperExec) and writes its pid.
STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    terms = []
    signal.signal(signal.SIGTERM, lambda *a: terms.append(1) if not terms else sys.exit(7))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             start_new_session=True)
    open(sys.argv[1], "w").write(str(child.pid))
    print("READY pid", flush=True)
    while True:
        time.sleep(0.05)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is as good as gone
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_stop_sends_second_sigterm_and_reaps_detached_children(tmp_path: Path) -> None:
    script, pidfile = tmp_path / "stubborn.py", tmp_path / "child.pid"
    script.write_text(STUBBORN)
    proc = ManagedProcess(
        "stubborn",
        [sys.executable, str(script), str(pidfile)],
        dict(os.environ),
        tmp_path / "logs" / "stubborn.log",
    )
    proc.start()
    proc.wait_for_log("READY", timeout=20)
    child = int(pidfile.read_text())
    assert _alive(child)
    started = time.monotonic()
    code = proc.stop(grace=1.0, second_grace=5.0)
    assert code == 7  # exited on the second SIGTERM, not killed
    assert time.monotonic() - started < 6
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "deaf",
        [
            sys.executable,
            "-c",
            "import signal,time\nsignal.signal(signal.SIGTERM, "
            "signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(300)",
        ],
        dict(os.environ),
        tmp_path / "deaf.log",
    ).start()
    proc.wait_for_log("up", timeout=20)
    assert proc.stop(grace=0.5, second_grace=0.5) == -signal.SIGKILL
    assert not proc.alive()


def test_wait_for_log_reports_early_exit_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "failing",
        [sys.executable, "-c", "print('[code: 2004] refused'); raise SystemExit(1)"],
        dict(os.environ),
        tmp_path / "f.log",
    ).start()
    with pytest.raises(ProcessError, match=r"exited with code 1(.|\n)*2004"):
        proc.wait_for_log("never", timeout=20)
    # the log is appended to, and the next start only looks at its own output
    proc.start()
    assert proc.wait_exit(timeout=20) == 1
    assert proc.log_text().count("2004") == 1
    assert proc.log_text(since=0).count("\n[code: 2004] refused") == 2


def test_wait_for_log_times_out(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        dict(os.environ),
        tmp_path / "s.log",
    ).start()
    try:
        with pytest.raises(ProcessError, match="did not appear"):
            proc.wait_for_log("never", timeout=0.5)
    finally:
        proc.stop(grace=2)
    assert not proc.alive()
