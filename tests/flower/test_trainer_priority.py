"""`fedrec_app.trainer.loading_priority`: lower while the trainer loads, set back afterwards
where the kernel lets an unprivileged process (its session's autogroup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec_app.trainer import _autogroup_scheduling

PROBE = """
import os, sys
from pathlib import Path
from fedrec_app.trainer import loading_priority
group = Path("/proc/self/autogroup")
def now():
    return f"{os.getpriority(os.PRIO_PROCESS, 0)},{group.read_text().split()[-1]}"
with loading_priority(int(sys.argv[1])):
    inside = now()
print(inside, now())
"""
AUTOGROUP = pytest.mark.skipif(
    not _autogroup_scheduling(), reason="no autogroup scheduling on this kernel"
)


def _probe(nice: int, new_session: bool) -> tuple[str, str]:
    """(process nice, autogroup nice) inside the block and after it, in a fresh process."""
    inside, after = subprocess.run(
        [sys.executable, "-c", PROBE, str(nice)], capture_output=True, text=True, check=True,
        start_new_session=new_session,
    ).stdout.split()  # fmt: skip
    return inside, after


def _mine(lowered_by: int = 0) -> str:
    nice = min(os.getpriority(os.PRIO_PROCESS, 0) + lowered_by, 19)
    return f"{nice},{Path('/proc/self/autogroup').read_text().split()[-1]}"


@AUTOGROUP
def test_zero_leaves_the_priority_alone() -> None:
    assert _probe(0, new_session=False) == (_mine(), _mine())


@AUTOGROUP
def test_a_session_leader_lowers_its_session_while_loading_then_sets_it_back() -> None:
    inside, after = _probe(7, new_session=True)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert inside == f"{nice},7"
    assert after == f"{nice},0"


@AUTOGROUP
def test_a_process_in_a_shared_session_lowers_only_itself() -> None:
    inside, after = _probe(7, new_session=False)
    assert inside == after == _mine(lowered_by=7)  # unprivileged processes cannot raise it again
