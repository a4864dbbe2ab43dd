"""The warm trainer: one long-lived process per SuperNode that keeps TensorFlow imported.

Flower starts a new ``flwr-clientapp`` process for every message, so a ClientApp that trains
in-process pays the TensorFlow import (seconds) on every round on every node. The trainer pays
it once: at start it listens on a Unix socket in the node's ``state-dir`` (ClientApps that
connect now wait), imports TensorFlow, configures the device, loads the node's partition and
traces the model's train step on it (a throw-away epoch with the app's default hyperparameters),
then serves the node's messages. The ClientApp is
a thin adapter (``fedrec_app.node.trainer_client.ask``) that hands over the message and returns the
trainer's reply.

Security: the state dir must be safe (``fedrec_app.node.private_dir``: owned by this user, not
writable by group or others, nor swappable through a folder above it; created 0700 when missing),
or the trainer refuses to start. The socket is created mode 0600 in it, with a random key beside
it in ``trainer.key`` (0600). A connection must be this user's (the kernel's peer credentials),
then pass a mutual HMAC-SHA256 challenge on that key (``fedrec_app.node.trainer_wire``) within
``handshake_timeout`` (10 s), then send one request frame (a JSON header and the message in
Flower's protobuf wire format) within ``io_timeout``; anything else, a pickle included, is logged
and the connection closed, and the trainer goes on with the next one. Nothing is unpickled. The
socket is never reachable over the network.

Faults: no trainer (no socket, or nobody listening) means ``ask`` returns None and the
ClientApp trains in-process, as before. A trainer that dies mid-request is an error reply for
that message (``trainer-failed``); the next message finds no trainer and trains in-process,
or finds the restarted one (in a group, ``fedrec_app.node.trainer_group``, the parent keeps the
socket open and forks the trainer again, so the next message waits for it). Requests are
served one at a time (a stalled connection holds the next ones up for its timeout at most), and
each carries its run id: node state is kept per run, and the trainer logs when it switches runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrec_app.core.config import ConfigError, app_defaults, parse_run_config
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write
from fedrec_app.node import task, trainer_wire
from fedrec_app.node.private_dir import ensure_dir
from fedrec_app.node.setup import KEY_FILE, NodeFailure, node_setup, socket_path
from fedrec_app.node.trainer_client import OPERATIONS, pack, unpack

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a connection has to pass the key handshake
IO_TIMEOUT = 60.0  # seconds to receive a whole request, and to send a whole reply
_REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "operation": str,
    "run_config": dict,
    "node_config": dict,
    "node_id": int,
    "run_id": int,
}


class Endpoint:
    """The trainer's listening socket and its key, in the node's state-dir (refused unless safe,
    see ``fedrec_app.node.private_dir``); ``close`` removes both. Whoever listens closes: the
    trainer, or the group that forked it."""

    def __init__(
        self,
        state_dir: Path,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
    ) -> None:
        state_dir = ensure_dir(state_dir)  # UnsafeFolderError (a FedrecError) names the folder
        self.key_file, self.sock = state_dir / KEY_FILE, socket_path(state_dir)
        self.handshake_timeout, self.io_timeout = handshake_timeout, io_timeout
        self.closed = False
        if _in_use(self.sock):
            raise FedrecError(
                f"a warm trainer already serves {self.sock}: not starting a second one"
            )
        self.key = secrets.token_bytes(32)
        atomic_write(self.key_file, self.key, mode=0o600)
        self.sock.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            self.listener.bind(str(self.sock))
        finally:
            os.umask(old_umask)
        self.listener.listen(8)
        # From here a ClientApp that connects waits for the warm-up instead of training itself.
        log.info("warm trainer listening on %s", self.sock)

    def close(self) -> None:
        """Stop listening (a thread blocked in accept wakes up and returns) and remove the
        socket and the key."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
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
    on_ready: Callable[[], object] = lambda: None,
) -> None:
    """Import TensorFlow, set up the device, verify the partition and trace the train step; call
    ``on_ready`` (e.g. to set the CPU priority back); then serve requests one at a time until
    SIGTERM/SIGINT."""
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        from fedrec_app.core.model import configure_device  # TensorFlow: imported here, once

        device = configure_device(gpu_index, threads)
        if data_path is not None:
            partition_dir = Path(data_path).resolve()
            try:
                task.cached_partition(partition_dir)
            except NodeFailure as exc:
                raise FedrecError(f"--data-path {data_path}: {exc}") from exc
            _warm_up(partition_dir)
        on_ready()
        log.info(
            "warm trainer ready on %s (device %s) after %.1f s",
            endpoint.sock,
            device,
            time.perf_counter() - started,
        )
        serve_connections(endpoint)
    except KeyboardInterrupt:
        log.info("warm trainer stopping")


def serve_connections(endpoint: Endpoint) -> None:
    """Accept connections and serve them one at a time until the endpoint is closed. A
    connection that fails the handshake or sends no valid request in time is logged and closed;
    the next one is served."""
    current_run: int | None = None
    while True:
        try:
            conn, _ = endpoint.listener.accept()
        except OSError as exc:
            if endpoint.closed:
                return
            log.warning("accepting a connection failed: %r", exc)
            time.sleep(0.1)
            continue
        with conn:
            current_run = _serve_connection(endpoint, conn, current_run)


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
        log.info("train step traced in %.1f s", task.warm_up(partition_dir, run_cfg))
    except Exception:  # only an optimisation: the first round traces the model instead
        log.exception("warm-up failed; serving anyway")


def _serve_connection(
    endpoint: Endpoint, conn: socket.socket, current_run: int | None
) -> int | None:
    """Authenticate one connection, receive its request, run it, send the reply; returns the
    run id now being served."""
    try:
        _check_peer(conn)
        trainer_wire.accept_handshake(
            conn, endpoint.key, time.monotonic() + endpoint.handshake_timeout
        )
        header, payload = trainer_wire.recv_frame(conn, time.monotonic() + endpoint.io_timeout)
        request = _read_request(header)
    except (trainer_wire.WireError, OSError) as exc:
        log.warning("refused a connection: %s", exc)
        return current_run
    run_id: int = request["run_id"]  # an int: _read_request checked it
    if run_id != current_run:
        log.info("serving run %s (previous: %s)", run_id, current_run)
    reply, reply_payload = _run(request, payload)
    try:
        trainer_wire.send_frame(conn, reply, reply_payload, time.monotonic() + endpoint.io_timeout)
    except (trainer_wire.WireError, OSError) as exc:
        log.warning("run %s: the ClientApp left before the reply: %s", run_id, exc)
    return run_id


def _check_peer(conn: socket.socket) -> None:
    """Refuse a peer that runs as another user (the socket's 0600 already keeps them out)."""
    uid = trainer_wire.peer_uid(conn)
    if uid is not None and uid != os.getuid():
        raise trainer_wire.AuthError(f"the peer runs as uid {uid}, not as this user")


def _read_request(header: dict[str, Any]) -> dict[str, Any]:
    """The request header, checked field by field (a FrameError otherwise)."""
    if set(header) != set(_REQUEST_FIELDS):
        raise trainer_wire.FrameError(
            f"a request header has the fields {sorted(header)}, not {sorted(_REQUEST_FIELDS)}"
        )
    for name, kind in _REQUEST_FIELDS.items():
        value = header[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise trainer_wire.FrameError(f"request field {name!r} is a {type(value).__name__}")
    return header


def _run(request: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Run one request: the reply header and payload."""
    run_id, operation = request["run_id"], request["operation"]
    try:
        if operation not in OPERATIONS:
            raise NodeFailure("bad-message", f"unknown operation {operation!r}")
        work = getattr(task, operation)
        run_cfg = parse_run_config(request["run_config"])
        setup = node_setup(request["node_config"], run_cfg, request["node_id"])
        try:
            content = unpack(payload)
        except Exception as exc:  # protobuf's DecodeError and whatever its conversion raises
            raise NodeFailure(
                "bad-message",
                f"the payload is not a RecordDict in Flower's wire format ({type(exc).__name__})",
            ) from exc
        return {"status": "ok"}, pack(work(content, run_cfg, setup, run_id))
    except NodeFailure as exc:
        level = logging.INFO if exc.code == "stale" else logging.ERROR
        log.log(level, "run %s: %s", run_id, exc, exc_info=exc.code != "stale")
        detail = str(exc).removeprefix(f"{exc.code}: ")
        return {"status": "failure", "code": exc.code, "detail": detail}, b""
    except Exception as exc:
        log.exception("run %s: %s failed", run_id, operation)
        detail = f"{type(exc).__name__} in the warm trainer"
        return {"status": "failure", "code": "internal", "detail": detail}, b""


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
