"""End every process a test started, even when the test fails or times out (a pytest plugin).

tests/conftest.py loads it for the suite; a pytest run elsewhere loads it with
``-p process_cleanup`` and ``-c`` this repo's pyproject.toml (its ``pythonpath`` holds tests/), as
tests/test_process_cleanup.py does.

**Marking.** ``FEDREC_TEST_OWNER`` in ``os.environ`` names who is starting processes now, so
every process started inherits the mark, and keeps it after its parent dies and it is
reparented (Flower's SuperLink and SuperNodes spawn SuperExecs and app processes): a test (its
function-scoped fixtures included) runs under ``<session token>/m<N>/t<M>``; a module- or
class-scoped fixture is set up under its module's ``<token>/m<N>``, and a session-scoped one
under ``<token>``, whichever test first asks for it (``pytest_fixture_setup`` below).

**Ending.** A sweep sends SIGTERM to every live process marked with its scope or a scope inside
it, and to every descendant of this pytest process started since the scope began (one started
with an environment of its own carries no mark: nginx's workers), then SIGKILL to what is still
there after ``GRACE`` seconds; this process and its ancestors are never touched. Only a process
that both drops the mark from its environment and leaves this process's tree escapes. The
sweeps run:

- after a test that **failed** (setup or call; a pytest-timeout timeout is a failure: with
  ``timeout_method = "signal"`` the test gets an exception, so its fixtures' finalizers run and
  then this sweep). A test that passes may have restarted a process that the module's later
  tests use (a SuperNode of a module-scoped federation), so its processes are left to:
- the end of each **module**, after its module-scoped fixtures were torn down (the autouse
  fixture is set up first, so it is finalised last): whatever a fixture or a test of the module
  left running;
- the end of the **session**, for session-scoped fixtures.

Each sweep that ends something warns (``LeftoverProcessWarning``, in pytest's warnings summary),
naming the scope, the test that started each process and its command line, so a leak is seen.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
import uuid
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

OWNER_VAR = "FEDREC_TEST_OWNER"
GRACE = 5.0  # seconds between SIGTERM and SIGKILL

_TOKEN = uuid.uuid4().hex[:12]  # this pytest process's session: nested pytest runs differ
_COUNTER = itertools.count(1)
_LABELS: dict[str, str] = {_TOKEN: "the test session"}  # owner mark -> test or module name
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_OWN_FIXTURES = {"_session_processes", "_module_processes", "_test_processes"}
_module_scope: str | None = None  # the mark of the module whose tests run now


class LeftoverProcessWarning(UserWarning):
    """A test, module or session left processes running; they were ended."""


@dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    started: int  # clock ticks after boot: with the pid, tells a reused pid apart
    owner: str | None


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) of a process; None once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _owner(pid: int) -> str | None:
    prefix = f"{OWNER_VAR}=".encode()
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # another user's process, or gone
        return None
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160] or "?"


def _live_processes() -> list[_Process]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # a zombie is dead already
            continue
        found.append(_Process(pid, stat[1], stat[2], _owner(pid)))
    return found


def _now_ticks() -> int:
    """Now, in the unit and from the origin of a process's start time in /proc/PID/stat."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)


def _within(owner: str | None, scope: str) -> bool:
    return owner is not None and (owner == scope or owner.startswith(scope + "/"))


def _left_by(scope: str, since: int) -> list[_Process]:
    """Live processes marked with ``scope`` (or a scope inside it), and this process's
    descendants started after ``since``; never this process or its ancestors."""
    processes = _live_processes()
    children: dict[int, list[int]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process.pid)
    descendants: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in descendants:
                descendants.add(child)
                todo.append(child)
    protected = {os.getpid()}
    pid = os.getpid()
    while (stat := _stat(pid)) is not None and stat[1] > 0:
        pid = stat[1]
        protected.add(pid)
    return [
        p
        for p in processes
        if p.pid not in protected
        and (_within(p.owner, scope) or (p.pid in descendants and p.started > since))
    ]


def _alive(process: _Process) -> bool:
    stat = _stat(process.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[2] == process.started


def _signal(processes: list[_Process], signum: signal.Signals) -> None:
    for process in processes:
        if _alive(process):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signum)


def _started_by(owner: str | None) -> str:
    """The test (or module, or session) whose mark ``owner`` is."""
    while owner:
        if owner in _LABELS:
            return _LABELS[owner]
        owner = owner.rpartition("/")[0]
    return "an unmarked child"


def end_processes(scope: str, since: int, what: str) -> None:
    """SIGTERM what ``scope`` left running, SIGKILL it after ``GRACE`` s; warn naming it."""
    left = _left_by(scope, since)
    if not left:
        return
    commands = {p.pid: _command(p.pid) for p in left}
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    stubborn = [p for p in left if _alive(p)]
    _signal(stubborn, signal.SIGKILL)
    listed = "; ".join(
        f"pid {p.pid} from {_started_by(p.owner)}{' (SIGKILL)' if p in stubborn else ''}: "
        f"{commands[p.pid]}"
        for p in sorted(left, key=lambda p: p.pid)
    )
    warnings.warn(
        LeftoverProcessWarning(f"{what}: ended {len(left)} process(es) left running: {listed}"),
        stacklevel=1,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """A fixture's processes carry the mark of the fixture's scope, whenever it is set up (a
    session-scoped one first used in some module's test belongs to the session)."""
    mark = _TOKEN if fixturedef.scope in ("session", "package") else _module_scope
    if fixturedef.scope == "function" or fixturedef.argname in _OWN_FIXTURES or mark is None:
        return (yield)
    previous = os.environ.get(OWNER_VAR)
    os.environ[OWNER_VAR] = mark
    try:
        return (yield)
    finally:
        _restore(previous)


def _owning(owner: str, label: str) -> tuple[str | None, int]:
    """Mark what starts from now on with ``owner``; the previous mark and the start time."""
    _LABELS[owner] = label
    previous = os.environ.get(OWNER_VAR)
    os.environ[OWNER_VAR] = owner
    return previous, _now_ticks()


def _restore(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(OWNER_VAR, None)
    else:
        os.environ[OWNER_VAR] = previous


@pytest.fixture(scope="session", autouse=True)
def _session_processes() -> Iterator[None]:
    """Processes of session-scoped fixtures: ended when the session ends."""
    previous, since = _owning(_TOKEN, "the test session")
    yield
    _restore(previous)
    end_processes(_TOKEN, since, "after the test session")


@pytest.fixture(scope="module", autouse=True)
def _module_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Processes of a module's fixtures and tests: ended when the module is done."""
    global _module_scope
    scope = f"{_TOKEN}/m{next(_COUNTER)}"
    previous, since = _owning(scope, request.node.nodeid)
    _module_scope = scope
    yield
    _module_scope = None
    _restore(previous)
    end_processes(scope, since, f"after module {request.node.nodeid}")


@pytest.fixture(autouse=True)
def _test_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's processes: ended right after it if it failed (or timed out)."""
    scope = f"{_module_scope or _TOKEN}/t{next(_COUNTER)}"
    previous, since = _owning(scope, request.node.nodeid)
    yield
    _restore(previous)
    reports = request.node.stash.get(_REPORTS, {})
    if any(report.failed for report in reports.values()):
        end_processes(scope, since, f"after the failed test {request.node.nodeid}")
