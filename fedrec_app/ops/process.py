"""Long-running child processes: start without a shell in their own process group, log to a
file, wait for readiness, and stop in order (SIGTERM, a second SIGTERM, SIGKILL) leaving nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedrec_app.core.errors import FedrecError

log = logging.getLogger(__name__)

_RUNNING: dict[int, ManagedProcess] = {}


class ProcessError(FedrecError):
    """A managed process exited early or did not become ready in time."""


class ManagedProcess:
    """One child process (and everything it spawns) in its own process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._detached: set[int] = set()

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> ManagedProcess:
        if self.alive():
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            header = f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(self.argv)}\n"
            out.write(header.encode())
            out.flush()
            self._log_offset = out.tell()  # readiness looks at the output, not the header
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        _RUNNING[self._popen.pid] = self
        log.debug("started %s pid %d, log %s", self.name, self._popen.pid, self.log_path)
        return self

    def log_text(self, since: int | None = None) -> str:
        """The log from byte `since` (default: since this process last started; 0: all)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset if since is None else since)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The log's current size: pass it to `wait_for_log(since=…)` to see only what follows."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _early_exit(self, waiting_for: str) -> ProcessError:
        return ProcessError(
            f"{self.name} exited with code {self.returncode} while waiting for {waiting_for}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def wait_for_log(self, pattern: str, timeout: float, since: int | None = None) -> re.Match[str]:
        """Wait until `pattern` (a regex) appears in the log (since start, or since byte
        `since`); fail at once if the process exits."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(since))
            if match:
                return match
            if not self.alive():
                raise self._early_exit(repr(pattern))
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name}: {pattern!r} did not appear in {self.log_path} within "
                    f"{timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own; its exit code."""
        assert self._popen is not None, "not started"
        try:
            code = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{self.name} still running after {timeout:.0f} s") from None
        self._reap_group()
        return code

    def wait_https_ready(self, url: str, ca_cert: Path | None, timeout: float) -> None:
        """Wait until GET `url` answers 200 (verifying the server against `ca_cert`)."""
        context = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if not self.alive():
                raise self._early_exit(url)
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name} not ready at {url} within {timeout:.0f} s ({last}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault tests)."""
        if self._popen is None:
            return
        self._detached = _descendant_groups(self._popen.pid)
        _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen.wait()
        self._reap_group()

    def stop(self, grace: float = 10.0, second_grace: float = 5.0) -> int | None:
        """SIGTERM; after `grace` s a second SIGTERM (uvicorn's force quit); then SIGKILL.

        Whatever else is left in the process group (SuperExec, app processes) is then
        terminated too. Returns the exit code (None if it was never started).
        """
        if self._popen is None:
            return None
        popen = self._popen
        self._detached = _descendant_groups(popen.pid)
        for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGTERM, second_grace)):
            if popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(wait_s)
        if popen.poll() is None:
            log.warning("%s (pid %d) ignored SIGTERM twice; killing it", self.name, popen.pid)
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
        self._reap_group()
        log.debug("stopped %s (exit code %s)", self.name, popen.returncode)
        return popen.returncode

    def _reap_group(self, grace: float = 5.0) -> None:
        """Terminate what is left of the process group after the leader has exited, and of
        the groups its descendants moved to (the SuperLink starts its SuperExec detached)."""
        assert self._popen is not None
        groups = {self._popen.pid, *self._detached}
        alive = {g for g in groups if _group_alive(g)}
        for pgid in alive:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {g for g in alive if _group_alive(g)}
        for pgid in alive:
            _signal_group(pgid, signal.SIGKILL)
        self._detached = set()
        _RUNNING.pop(self._popen.pid, None)


def _descendant_groups(pid: int) -> set[int]:
    """Process groups (other than `pid`'s own) of `pid`'s living descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    pgids: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        child, ppid, pgid = int(entry.name), int(fields[1]), int(fields[2])
        children.setdefault(ppid, []).append(child)
        pgids[child] = pgid
    found: set[int] = set()
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.add(pgids[child])
        todo.extend(children.get(child, []))
    found.discard(pid)
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@atexit.register
def _kill_leftovers() -> None:
    """Last resort at interpreter exit: no managed process group outlives its parent."""
    for pgid in list(_RUNNING):
        _signal_group(pgid, signal.SIGKILL)
