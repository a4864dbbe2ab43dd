"""A lower CPU priority for a process's start-up, set back afterwards where the kernel allows.

For warm trainers that share their host with the SuperLink, the SuperNodes and the ServerApp
(`fedrec trainer --nice`, `fedrec trainers --nice`): those start first while the trainers load
TensorFlow. Standard library only, so
that the priority drops before anything heavy is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(nice: int) -> Callable[[], None]:
    """Lower this process's CPU priority by ``nice`` (0: unchanged); returns what sets it back.

    Linux's autogroup scheduling weighs sessions against each other and orders by nice only within
    one: a process that leads its own session lowers its session's group, which it may set back
    without privilege. Elsewhere ``os.nice`` lowers the process for good (an unprivileged process
    cannot raise its priority again) and setting back does nothing.
    """
    if nice <= 0:
        return _unchanged
    before = session_group_nice() if os.getsid(0) == os.getpid() else None
    if before is None:
        os.nice(nice)
        return _unchanged
    AUTOGROUP.write_text(f"{min(nice, 19)}\n")

    def restore() -> None:
        try:
            AUTOGROUP.write_text(f"{before}\n")
        except OSError as exc:
            log.warning("CPU priority stays lowered: %s", exc)

    return restore


def session_group_nice() -> int | None:
    """The nice value of this process's session group; None where it has none.

    The kernel shows nothing for a session in the default group (one that never called
    ``setsid``), and the file is missing where autogroup scheduling is off or not built in.
    """
    if not autogroup_scheduling():
        return None
    try:
        fields = AUTOGROUP.read_text().split()  # "/autogroup-123 nice 0"
    except OSError:
        return None
    return int(fields[-1]) if fields else None


def autogroup_scheduling() -> bool:
    """Whether the kernel schedules by session (``kernel.sched_autogroup_enabled``)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def _unchanged() -> None:
    return None
