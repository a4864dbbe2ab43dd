"""`fedrec_app.trainer.lower_priority`: the process's nice value and, for a session leader, its
autogroup's (Linux weighs sessions against each other before nice values count)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AUTOGROUP = Path("/proc/self/autogroup")
PROBE = """
import os, sys
from pathlib import Path
from fedrec_app.trainer import lower_priority
lower_priority(int(sys.argv[1]))
group = Path("/proc/self/autogroup")
print(os.getpriority(os.PRIO_PROCESS, 0), group.read_text().split()[-1] if group.exists() else "-")
"""


def _probe(nice: int, new_session: bool) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(nice)], capture_output=True, text=True, check=True,
        start_new_session=new_session,
    ).stdout.split()  # fmt: skip
    return int(out[0]), out[1]


def test_zero_leaves_the_priority_alone() -> None:
    assert _probe(0, new_session=True)[0] == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_session_leader_lowers_its_process_and_its_session() -> None:
    nice, group = _probe(7, new_session=True)
    assert nice == min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
    if AUTOGROUP.exists():
        assert group == "7"


@pytest.mark.skipif(not AUTOGROUP.exists(), reason="no autogroup scheduling on this kernel")
def test_a_process_in_a_shared_session_leaves_the_session_alone() -> None:
    mine = AUTOGROUP.read_text().split()[-1]
    nice, group = _probe(7, new_session=False)
    assert nice == min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
    assert group == mine
