"""Helpers for launch tests: find processes by what they mention, read a child's output."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line or environment holds `text`
    (every process a launch starts carries its work dir in FLWR_HOME or its arguments)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (needle in cmdline or needle in environ):
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_gone(text: str, timeout: float = 15.0) -> list[tuple[int, str]]:
    """Wait until no process mentions `text`; what is still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def wait_for_output(path: Path, marker: str, timeout: float, alive=lambda: True) -> str:
    """Wait until `marker` appears in the file at `path`; its text. Fails if `alive()` turns
    false first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        if not alive():
            raise AssertionError(f"process ended before {marker!r}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen within {timeout:.0f} s:\n{text[-4000:]}")
        time.sleep(1.0)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
