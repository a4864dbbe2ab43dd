"""`fedrec_app.node.priority.lower_priority`: lower for the start-up, set back afterwards where the
kernel lets an unprivileged process (its session's autogroup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec_app.node.priority import autogroup_scheduling

PROBE = """
import os, sys
from pathlib import Path
from fedrec_app.node import priority
from fedrec_app.node.priority import lower_priority
if len(sys.argv) > 2:  # stand in for the kernel's file
    priority.AUTOGROUP = Path(sys.argv[2])
group = Path("/proc/self/autogroup")
def now():  # a session in the default group shows no autogroup line
    return f"{os.getpriority(os.PRIO_PROCESS, 0)},{(group.read_text().split() or ['-'])[-1]}"
set_back = lower_priority(int(sys.argv[1]))
lowered = now()
set_back()
print(lowered, now())
"""
pytestmark = pytest.mark.skipif(
    not autogroup_scheduling(), reason="no autogroup scheduling on this kernel"
)


def _probe(nice: int, new_session: bool, *group_file: Path) -> tuple[str, str]:
    """(process nice, autogroup nice) once lowered and once set back, in a fresh process."""
    lowered, after = subprocess.run(
        [sys.executable, "-c", PROBE, str(nice), *map(str, group_file)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=new_session,
    ).stdout.split()
    return lowered, after


def _mine(lowered_by: int = 0) -> str:
    nice = min(os.getpriority(os.PRIO_PROCESS, 0) + lowered_by, 19)
    return f"{nice},{(Path('/proc/self/autogroup').read_text().split() or ['-'])[-1]}"


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


def test_a_session_leader_the_kernel_shows_no_group_lowers_itself_for_good(
    tmp_path: Path,
) -> None:
    """The kernel shows an empty file for a session in the default group (seen in CI)."""
    empty = tmp_path / "autogroup"
    empty.write_text("")
    lowered, after = _probe(7, True, empty)
    nice = min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
    assert lowered == after == f"{nice},0"
    assert empty.read_text() == ""
