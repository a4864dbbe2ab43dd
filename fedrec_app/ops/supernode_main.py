"""`flower-supernode` that asks the SuperLink for the next message soon after each reply.

Flower 1.42's SuperNode sleeps a hard-coded 3 s whenever a pull finds no message. Right after it
sends a reply its next pull is nearly always empty (the ServerApp is still waiting for the other
nodes or aggregating), so every round pays most of those 3 s on every node. This entry point
runs Flower's own SuperNode unchanged except for that one wait: for ``QUICK_POLL_WINDOW`` seconds
after start-up and after each reply it polls every ``QUICK_POLL`` seconds, then every 3 s as
before. Every launch path starts SuperNodes through it (`SuperNodeCommand`). With a Flower whose
loop differs it warns and runs Flower's SuperNode unchanged.

Run as ``python -m fedrec_app.ops.supernode_main ARGS``: the same arguments as
``flower-supernode``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

QUICK_POLL = 0.25
QUICK_POLL_WINDOW = 20.0
FLOWER_IDLE_WAIT = 3  # the literal in flwr/supernode/start_client_internal.py


class QuickPollClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop; only its idle wait
    (``sleep(3)``) changes: short within ``window`` seconds of the last reply or start."""

    def __init__(self, quick: float = QUICK_POLL, window: float = QUICK_POLL_WINDOW,
                 clock: ModuleType = time) -> None:
        self._time = clock
        self.quick = quick
        self.window = window
        self.last_activity = clock.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)

    def replied(self) -> None:
        self.last_activity = self._time.monotonic()

    def sleep(self, seconds: float) -> None:
        quiet_for = self._time.monotonic() - self.last_activity
        if seconds == FLOWER_IDLE_WAIT and quiet_for < self.window:
            seconds = self.quick
        self._time.sleep(seconds)


def install(module: ModuleType, clock: QuickPollClock) -> None:
    """Put ``clock`` into Flower's SuperNode loop module; fail loudly if the loop changed."""
    push: Callable[..., None] | None = getattr(module, "_push_messages", None)
    if getattr(module, "time", None) is not time or push is None:
        raise RuntimeError(f"{module.__name__} no longer has the loop the quick poll knows "
                           "(flwr 1.42)")

    def push_then_poll_quickly(*args: Any, **kwargs: Any) -> None:
        push(*args, **kwargs)
        clock.replied()

    module.time = clock  # type: ignore[attr-defined]
    module._push_messages = push_then_poll_quickly  # type: ignore[attr-defined]


def main() -> None:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    try:
        install(start_client_internal, QuickPollClock())
    except RuntimeError as exc:  # another Flower: its own SuperNode, with its own waits
        logging.getLogger(__name__).warning("%s; running it unchanged", exc)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
