"""`fedrec_app.priority.lower_priority`: lower for the start-up, set back afterwards where the
kernel lets an unprivileged process (its session's autogroup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec_app.priority import autogroup_scheduling

PROBE = """
import os, sys
from pathlib import Path
from fedrec_app.priority import lower_priority
group = Path("/proc/self/autogroup")
def now():
    return f"{os.getpriority(os.PRIO_PROCESS, 0)},{group.read_text().split()[-1]}"
set_back = lower_priority(int(sys.argv[1]))
lowered = now()
set_back()
print(lowered, now())
"""
pytestmark = pytest.mark.skipif(
    not autogroup_scheduling(), reason="no autogroup scheduling on this kernel"
)


def _probe(nice: int, new_session: bool) -> tuple[str, str]:
    """(process nice, autogroup nice) once lowered and once set back, in a fresh process."""
    lowered, after = subprocess.run(
        [sys.executable, "-c", PROBE, str(nice)], capture_output=True, text=True, check=True,
        start_new_session=new_session,
    ).stdout.split()  # fmt: skip
    return lowered, after


def _mine(lowered_by: int = 0) -> str:
    nice = min(os.getpriority(os.PRIO_PROCESS, 0) + lowered_by, 19)
    return f"{nice},{Path('/proc/self/autogroup').read_text().split()[-1]}"


def test_zero_leaves_the_priority_alone() -> None:
    assert _probe(0, new_session=False) == (_mine(), _mine())


def test_a_session_leader_lowers_its_session_then_sets_it_back() -> None:
    lowered, after = _probe(7, new_session=True)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert lowered == f"{nice},7"
    assert after == f"{nice},0"  # a new session's group starts at 0


def test_a_process_in_a_shared_session_lowers_only_itself_for_good() -> None:
    lowered, after = _probe(7, new_session=False)
    assert lowered == after == _mine(lowered_by=7)
