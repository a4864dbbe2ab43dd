"""A lower CPU priority for a process's start-up, set back afterwards where the kernel allows.

For a warm trainer that shares its host with the SuperLink, the SuperNodes and the ServerApp
(`fedrec trainer --nice`): they start first while it loads TensorFlow. Standard library only, so
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
    if not (autogroup_scheduling() and os.getsid(0) == os.getpid()):
        os.nice(nice)
        return _unchanged
    before = AUTOGROUP.read_text().split()[-1]  # "/autogroup-123 nice 0"
    AUTOGROUP.write_text(f"{min(nice, 19)}\n")

    def restore() -> None:
        try:
            AUTOGROUP.write_text(f"{before}\n")
        except OSError as exc:
            log.warning("CPU priority stays lowered: %s", exc)

    return restore


def autogroup_scheduling() -> bool:
    """Whether the kernel schedules by session (``kernel.sched_autogroup_enabled``)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def _unchanged() -> None:
    return None
