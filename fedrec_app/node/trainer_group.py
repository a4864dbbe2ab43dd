"""Warm trainers of several SuperNodes on one host, forked from one TensorFlow import.

`fedrec up` runs every SuperNode on one machine. Each warm trainer's start-up is mostly the
TensorFlow import (about 2.5 CPU-seconds) and the first trace of the train step; three trainers
importing TensorFlow side by side spend the CPU that the SuperLink and the SuperNodes need while
they start. This parent opens every node's socket first (ClientApps that connect from then on
wait), imports TensorFlow once, before the TensorFlow runtime exists (no threads, no device),
then forks one trainer per node (``fedrec_app.node.trainer.serve`` on that node's socket: its own
partition, device setup and trace). A trainer that exits after it was ready is forked again,
warm, on the same socket; one that fails before it is ready is not, and its socket is removed
(its ClientApps train in-process). SIGTERM/SIGINT stops them all; the parent removes the sockets
and keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedrec_app.core.errors import FedrecError

if TYPE_CHECKING:
    from fedrec_app.node.trainer import Endpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupMember:
    """One node's trainer in the group."""

    state_dir: Path
    data_path: Path | None = None


def serve_group(
    members: Sequence[GroupMember],
    threads: int | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> int:
    """Import TensorFlow, fork one trainer per member, keep them running until SIGTERM/SIGINT;
    ``on_ready`` runs once every member is warm. Returns the exit code (1: none left)."""
    if not members:
        raise FedrecError("a trainer group needs at least one node")
    dirs = [Path(m.state_dir).resolve() for m in members]
    if len(set(dirs)) != len(dirs):
        raise FedrecError("two trainers of the group share a state-dir")
    from fedrec_app.node.trainer import Endpoint

    endpoints: list[Endpoint] = []
    try:
        for state_dir in dirs:
            endpoints.append(Endpoint(state_dir))
        import fedrec_app.core.model  # noqa: F401  TensorFlow: imported here, once, for every child

        return _serve(_Group(members, endpoints, threads), on_ready)
    finally:
        for endpoint in endpoints:
            endpoint.close()


def _serve(group: _Group, on_ready: Callable[[], None]) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(len(group.members)):
        group.fork(index)
    ready_reported = False
    while not stopping and group.children:
        group.collect(timeout=0.5)
        if not ready_reported and len(group.warm) == len(group.members):
            ready_reported = True
            on_ready()
            log.info("all %d warm trainers of the group are ready", len(group.members))
    group.stop_all()
    return 0 if stopping else 1


class _Group:
    """The forked trainers: which pid is which member, which have been ready, the ready pipe."""

    def __init__(
        self, members: Sequence[GroupMember], endpoints: Sequence[Endpoint], threads: int | None
    ) -> None:
        self.members = list(members)
        self.endpoints = list(endpoints)
        self.threads = threads
        self.children: dict[int, int] = {}  # pid -> member index
        self.warm: set[int] = set()  # member indexes that reported ready at least once
        self.ready_r, self.ready_w = os.pipe()

    def fork(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's loop
            code = 1
            try:
                code = self._child(index)
            except BaseException:
                log.exception("warm trainer for %s failed", self.members[index].state_dir)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        log.info("forked the warm trainer for %s (pid %d)", self.members[index].state_dir, pid)

    def _child(self, index: int) -> int:
        from fedrec_app.node.trainer import serve

        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # serve() installs its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(self.ready_r)
        serve(
            self.endpoints[index],
            self.members[index].data_path,
            threads=self.threads,
            on_ready=lambda: os.write(self.ready_w, bytes([index])),
        )
        return 0  # the parent closes the endpoint: a trainer forked again serves on it

    def collect(self, timeout: float) -> None:
        """Note trainers that became ready; fork again those that died after being ready."""
        readable, _, _ = select.select([self.ready_r], [], [], timeout)
        if readable:
            self.warm.update(os.read(self.ready_r, 64))
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            index = self.children.pop(pid)
            member, code = self.members[index].state_dir, os.waitstatus_to_exitcode(status)
            if index in self.warm:
                log.warning(
                    "the warm trainer for %s exited (code %d); forking it again", member, code
                )
                self.fork(index)
            else:
                log.error(
                    "the warm trainer for %s exited before it was ready (code %d); its "
                    "ClientApps train in-process",
                    member,
                    code,
                )
                self.endpoints[index].close()

    def stop_all(self) -> None:
        """SIGTERM every trainer and wait for it (the caller then closes the endpoints)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.children):
            os.waitpid(pid, 0)
            self.children.pop(pid)
