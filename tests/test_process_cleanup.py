"""tests/process_cleanup.py in a pytest run of its own: a hung test is timed out and leaves no
process behind; a module's processes outlive a failed test of it; what ran before is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from launch_helpers import processes_mentioning

REPO = Path(__file__).resolve().parents[1]

HUNG_TESTS = '''
import os
import subprocess
import time
from pathlib import Path

import pytest

RECORD = Path(os.environ["CLEANUP_RECORD"])


def record(name, value):
    with RECORD.open("a") as out:
        out.write(f"{name} {value}\\n")


@pytest.fixture(scope="module")
def shared():
    """Left running on purpose: the module's sweep must end it, and only then."""
    process = subprocess.Popen(["sleep", "303"])
    record("module", process.pid)
    return process


def test_hangs(shared):
    record("owner", os.environ["FEDREC_TEST_OWNER"])
    child = subprocess.Popen(["sleep", "301"])
    record("child", child.pid)
    # A grandchild whose parent exits at once: reparented away from pytest, found by its mark.
    shell = subprocess.run(
        ["sh", "-c", "sleep 302 >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    )
    record("grandchild", int(shell.stdout))
    time.sleep(300)


def test_the_module_process_outlives_the_failed_test(shared):
    assert shared.poll() is None
'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_hung_test_is_timed_out_and_leaves_no_process_behind(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(HUNG_TESTS))
    record = tmp_path / "record.txt"
    before = subprocess.Popen(["sleep", "304"])  # running before the inner run: left alone
    try:
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-c",  # this repo's settings: pythonpath (tests/, so -p finds the plugin), timeouts
                str(REPO / "pyproject.toml"),
                "--rootdir",
                str(tmp_path),
                "-p",
                "process_cleanup",
                "-p",
                "no:cacheprovider",
                "--timeout",
                "5",
                "-q",
                str(tmp_path / "test_hung.py"),
            ],
            cwd=tmp_path,
            env={**os.environ, "CLEANUP_RECORD": str(record)},
            capture_output=True,
            text=True,
            timeout=240,  # the hung test alone sleeps 300 s
        )
        seconds = time.monotonic() - started
        out = done.stdout + done.stderr
        assert done.returncode == 1, out
        assert "Timeout (>5.0s) from pytest-timeout" in out, out
        assert "1 failed, 1 passed" in out, out
        # 15-25 s on 2 busy cores; the hung test alone would sleep 300 s
        assert seconds < 120, f"the inner run took {seconds:.0f} s:\n{out}"

        pids = dict(line.split(" ", 1) for line in record.read_text().splitlines())
        for name in ("child", "grandchild", "module"):
            assert not _alive(int(pids[name])), f"{name} (pid {pids[name]}) still runs:\n{out}"
        inner_session = pids["owner"].split("/")[0]
        assert processes_mentioning(f"FEDREC_TEST_OWNER={inner_session}") == []
        # Each leak is reported, naming the test that started it.
        assert "LeftoverProcessWarning" in out, out
        assert "after the failed test" in out and "sleep 301" in out and "sleep 302" in out, out
        assert "from test_hung.py::test_hangs: sleep 301" in out, out
        assert "after module test_hung.py" in out and "sleep 303" in out, out
        assert before.poll() is None, "the sweep ended a process started before the inner run"
    finally:
        before.send_signal(signal.SIGTERM)
        before.wait(10)
