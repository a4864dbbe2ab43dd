"""`fedrec_app.ops.supernode_main`: Flower's SuperNode with a short idle poll after each reply.

The federation tests run every SuperNode through it; these check the wait it picks and that it
fits the Flower loop installed here.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from flwr.supernode import start_client_internal

from fedrec_app.ops.flower import SuperNodeCommand
from fedrec_app.ops.supernode_main import FLOWER_IDLE_WAIT, QuickPollClock, install


class SteppedClock:
    """A stand-in for the ``time`` module whose sleeps advance a counter instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_idle_wait_is_short_within_the_window_then_flowers_own() -> None:
    clock = SteppedClock()
    quick = QuickPollClock(quick=0.25, window=1.0, clock=clock)  # type: ignore[arg-type]
    for _ in range(6):
        quick.sleep(FLOWER_IDLE_WAIT)
    assert clock.slept == [0.25, 0.25, 0.25, 0.25, 3, 3]
    quick.replied()
    quick.sleep(FLOWER_IDLE_WAIT)
    assert clock.slept[-1] == 0.25


def test_other_waits_and_attributes_pass_through() -> None:
    clock = SteppedClock()
    quick = QuickPollClock(quick=0.25, window=10.0, clock=clock)  # type: ignore[arg-type]
    quick.sleep(0.5)  # Flower's wait for a reply to push
    assert clock.slept == [0.5]
    assert quick.monotonic() == clock.now


def test_install_fits_the_installed_flower_and_marks_each_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushed: list[tuple[object, ...]] = []
    monkeypatch.setattr(start_client_internal, "_push_messages", lambda *a: pushed.append(a))
    monkeypatch.setattr(start_client_internal, "time", start_client_internal.time)
    clock = SteppedClock()
    quick = QuickPollClock(quick=0.25, window=1.0, clock=clock)  # type: ignore[arg-type]
    install(start_client_internal, quick)
    assert start_client_internal.time is quick
    clock.now += 50
    start_client_internal._push_messages("state")
    assert pushed == [("state",)] and quick.last_activity == clock.now


def test_install_refuses_a_loop_it_does_not_know() -> None:
    changed = types.ModuleType("flwr.supernode.start_client_internal")
    with pytest.raises(RuntimeError, match="no longer has the loop the quick poll knows"):
        install(changed, QuickPollClock())


def test_supernode_command_runs_through_it_unless_asked_not_to(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    quick = SuperNodeCommand(
        superlink="127.0.0.1:1", runtime_port=2, ca_cert=ca, allow_any_app=True
    ).argv()
    assert quick[1:4] == ["-m", "fedrec_app.ops.supernode_main", "--allow-any-app"]
    plain = SuperNodeCommand(
        superlink="127.0.0.1:1", runtime_port=2, ca_cert=ca, quick_poll=False, allow_any_app=True
    ).argv()
    assert plain[0].endswith("flower-supernode") and plain[1:] == quick[4:]
