"""Ctrl+C on a process holding a LocalFederation stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from launch_helpers import processes_mentioning, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HARNESS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fedrec_app.ops.federation import LocalFederation
    with LocalFederation(Path(sys.argv[1]), ["solo"]) as fed:
        print("READY", fed.superlink.pid, fed.nodes["solo"].process.pid, flush=True)
        time.sleep(600)
""")


def test_sigint_tears_the_federation_down(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        pids = [int(x) for x in line.split()[1:]]
        assert len(processes_mentioning(str(tmp_path))) >= 4  # SuperLink, SuperNode, SuperExecs
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) != 0  # KeyboardInterrupt, after the teardown
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(str(tmp_path), timeout=0) == []
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        )
