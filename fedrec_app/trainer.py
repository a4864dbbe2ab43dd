"""The warm trainer: one long-lived process per SuperNode that keeps TensorFlow imported.

Flower starts a new ``flwr-clientapp`` process for every message, so a ClientApp that trains
in-process pays the TensorFlow import (seconds) on every round on every node. The trainer pays
it once: at start it listens on a Unix socket in the node's ``state-dir`` (ClientApps that
connect now wait), imports TensorFlow, configures the device, loads the node's partition and
traces the model's train step on it (a throw-away epoch with the app's default hyperparameters),
then serves the node's messages. The ClientApp is
a thin adapter (``fedrec_app.trainer_client.ask``) that hands over the message and returns the
trainer's reply.

Security: the socket is created mode 0600 inside the state dir, and every connection must pass
the HMAC challenge of ``multiprocessing.connection`` with a random key stored beside it in
``trainer.key`` (0600). It is never reachable over the network.

Faults: no trainer (no socket, or nobody listening) means ``ask`` returns None and the
ClientApp trains in-process, as before. A trainer that dies mid-request is an error reply for
that message (``trainer-failed``); the next message finds no trainer and trains in-process,
or finds the restarted one (in a group, ``fedrec_app.trainer_group``, the parent keeps the
socket open and forks the trainer again, so the next message waits for it). Requests are
served one at a time, and each carries its run id: node state is kept per run, and the trainer
logs when it switches runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from fedrec_app import node
from fedrec_app.config import ConfigError, app_defaults, parse_run_config
from fedrec_app.errors import FedrecError
from fedrec_app.files import atomic_write
from fedrec_app.node_setup import KEY_FILE, NodeFailure, node_setup, socket_path
from fedrec_app.trainer_client import OPERATIONS, pack, unpack

log = logging.getLogger(__name__)


class Endpoint:
    """The trainer's listening socket and its key, in the node's state-dir; ``close`` removes
    both. Whoever listens closes: the trainer, or the group that forked it."""

    def __init__(self, state_dir: Path) -> None:
        state_dir = Path(state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key_file, self.sock = state_dir / KEY_FILE, socket_path(state_dir)
        if _in_use(self.sock):
            raise FedrecError(f"a warm trainer already serves {self.sock}: not starting a second "
                              "one")  # fmt: skip
        key = secrets.token_bytes(32)
        atomic_write(self.key_file, key, mode=0o600)
        self.sock.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            self.listener = Listener(str(self.sock), family="AF_UNIX", authkey=key)
        finally:
            os.umask(old_umask)
        # From here a ClientApp that connects waits for the warm-up instead of training itself.
        log.info("warm trainer listening on %s", self.sock)

    def close(self) -> None:
        self.listener.close()
        self.sock.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)


def run_trainer(
    state_dir: Path,
    data_path: Path | None = None,
    gpu_index: int | None = None,
    threads: int | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """One node's trainer (`fedrec trainer`): listen, serve until SIGTERM/SIGINT, clean up."""
    endpoint = Endpoint(state_dir)
    try:
        serve(endpoint, data_path, gpu_index, threads, on_ready)
    finally:
        endpoint.close()


def serve(
    endpoint: Endpoint,
    data_path: Path | None = None,
    gpu_index: int | None = None,
    threads: int | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Import TensorFlow, set up the device, verify the partition and trace the train step; call
    ``on_ready`` (e.g. to set the CPU priority back); then serve requests one at a time until
    SIGTERM/SIGINT."""
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        from fedrec_app.model import configure_device  # TensorFlow: imported here, once

        device = configure_device(gpu_index, threads)
        if data_path is not None:
            partition_dir = Path(data_path).resolve()
            try:
                node.cached_partition(partition_dir)
            except NodeFailure as exc:
                raise FedrecError(f"--data-path {data_path}: {exc}") from exc
            _warm_up(partition_dir)
        on_ready()
        log.info("warm trainer ready on %s (device %s) after %.1f s",
                 endpoint.sock, device, time.perf_counter() - started)  # fmt: skip
        current_run: int | None = None
        while True:
            try:
                conn = endpoint.listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:
                log.warning("refused a connection: %r", exc)
                continue
            with conn:
                current_run = _serve_one(conn, current_run)
    except KeyboardInterrupt:
        log.info("warm trainer stopping")


def _in_use(sock: Path) -> bool:
    """Whether a process listens on ``sock`` (a live trainer; a dead one's file refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


def _warm_up(partition_dir: Path) -> None:
    """Trace the train step on the partition for the app's default hyperparameters (a run
    with other model sizes traces its own in its first round)."""
    try:
        run_cfg = parse_run_config(app_defaults())
    except (OSError, KeyError, ConfigError) as exc:
        log.info("no app defaults to warm up with (%s): the first round traces the model", exc)
        return
    try:
        log.info("train step traced in %.1f s", node.warm_up(partition_dir, run_cfg))
    except Exception:  # only an optimisation: the first round traces the model instead
        log.exception("warm-up failed; serving anyway")


def _serve_one(conn: Connection, current_run: int | None) -> int | None:
    """Receive one request, run it, send the reply; returns the run id now being served."""
    try:
        request = conn.recv()
    except (EOFError, OSError) as exc:
        log.warning("dropped a request: %r", exc)
        return current_run
    run_id = int(request["run_id"])
    if run_id != current_run:
        log.info("serving run %s (previous: %s)", run_id, current_run)
    try:
        if request["operation"] not in OPERATIONS:
            raise NodeFailure("bad-message", f"unknown operation {request['operation']!r}")
        work = getattr(node, request["operation"])
        run_cfg = parse_run_config(request["run_config"])
        setup = node_setup(request["node_config"], run_cfg, request["node_id"])
        reply = ("ok", pack(work(unpack(request["content"]), run_cfg, setup, run_id)))
    except NodeFailure as exc:
        level = logging.INFO if exc.code == "stale" else logging.ERROR
        log.log(level, "run %s: %s", run_id, exc, exc_info=exc.code != "stale")
        reply = ("failure", (exc.code, str(exc).removeprefix(f"{exc.code}: ")))
    except Exception as exc:
        log.exception("run %s: %s failed", run_id, request["operation"])
        reply = ("failure", ("internal", f"{type(exc).__name__} in the warm trainer"))
    try:
        conn.send(reply)
    except (OSError, EOFError) as exc:
        log.warning("run %s: the ClientApp left before the reply: %r", run_id, exc)
    return run_id


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
