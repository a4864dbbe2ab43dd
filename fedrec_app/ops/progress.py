"""Progress hooks of a launch: what `LocalFederation.start` reports, step by step.

`fedrec up` prints them as numbered steps (`fedrec_app.ops.up_report.StepReport`); tests and
benchmarks get `LoggedSteps`, which logs them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger(__name__)


class StartHooks(Protocol):
    """Told about each step of a launch while it runs."""

    def step_started(self, name: str, what: str) -> None:
        """Step ``name`` begins; ``what`` says what it does."""

    def note(self, text: str) -> None:
        """A detail of the running step."""

    def step_done(self, name: str, seconds: float) -> None:
        """Step ``name`` ended well after ``seconds`` of wall time."""


class LoggedSteps:
    """The hooks that only log."""

    def step_started(self, name: str, what: str) -> None:
        log.info("%s: %s", name, what)

    def note(self, text: str) -> None:
        log.info("  %s", text)

    def step_done(self, name: str, seconds: float) -> None:
        log.info("%s done in %.1f s", name, seconds)


@contextlib.contextmanager
def reported_step(
    hooks: StartHooks, name: str, what: str, timings: dict[str, float]
) -> Iterator[None]:
    """Report step ``name`` around the block and record its wall time in ``timings`` (neither
    the time nor the end is reported when the block fails)."""
    hooks.step_started(name, what)
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 2)
    hooks.step_done(name, timings[name])
