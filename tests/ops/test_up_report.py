"""`fedrec up`'s numbered steps: its own and those `LocalFederation.start` reports through the
same hooks (`fedrec_app.ops.progress`)."""

from __future__ import annotations

import pytest

from fedrec_app.ops.progress import reported_step
from fedrec_app.ops.up_report import STEPS, StepReport


def test_steps_are_numbered_timed_and_closed_with_their_notes() -> None:
    lines: list[str] = []
    report = StepReport(lines.append)
    report.closing_notes["superlink"] = ["locked: the proxy"]
    with report.step("data", "MovieLens"):
        report.note("extracted")
    timings: dict[str, float] = {}
    with reported_step(report, "superlink", "on 127.0.0.1", timings):  # as the federation does
        report.note("listening")
    assert lines[0] == f"[1/{len(STEPS)}] data: MovieLens"
    assert lines[1] == "      extracted" and lines[2].startswith("      data done in ")
    assert lines[3] == f"[6/{len(STEPS)}] superlink: on 127.0.0.1"
    assert lines[4:6] == ["      listening", "      locked: the proxy"]
    assert lines[6].startswith("      superlink done in ")
    assert list(report.timings) == ["data", "superlink"] and list(timings) == ["superlink"]
    assert "superlink" in report.summary() and "total" in report.summary()


def test_a_failed_step_reports_no_end_and_no_time() -> None:
    lines: list[str] = []
    report = StepReport(lines.append)
    with pytest.raises(RuntimeError), report.step("train", "5 rounds"):
        raise RuntimeError("run failed")
    assert lines == [f"[10/{len(STEPS)}] train: 5 rounds"] and report.timings == {}
