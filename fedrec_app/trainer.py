"""The warm trainer: one long-lived process per SuperNode that keeps TensorFlow imported.

Flower starts a new ``flwr-clientapp`` process for every message, so a ClientApp that trains
in-process pays the TensorFlow import (seconds) on every round on every node. The trainer pays
it once: it imports TensorFlow, configures the device and loads the node's partition at start,
then serves the node's messages over a Unix socket in the node's ``state-dir``. The ClientApp
becomes a thin adapter (``ask``) that hands over the message and returns the trainer's reply.

Security: the socket is created mode 0600 inside the state dir, and every connection must pass
the HMAC challenge of ``multiprocessing.connection`` with a random key stored beside it in
``trainer.key`` (0600). It is never reachable over the network.

Faults: no trainer (no socket, or nobody listening) means ``ask`` returns None and the
ClientApp trains in-process, as before. A trainer that dies mid-request is an error reply for
that message (``trainer-failed``); the next message finds no trainer and trains in-process,
or finds the restarted one. Requests are served one at a time, and each carries its run id:
node state is kept per run, and the trainer logs when it switches runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedrec_app import node
from fedrec_app.config import parse_run_config
from fedrec_app.files import atomic_write
from fedrec_app.node import NodeFailure

log = logging.getLogger(__name__)

SOCKET_FILE = "trainer.sock"
KEY_FILE = "trainer.key"
OPERATIONS = ("train_round", "evaluate_round")
_fallback_logged = False


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_FILE


def ask(
    state_dir: Path,
    operation: str,
    content: RecordDict,
    run_config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    node_id: int,
    run_id: int,
) -> RecordDict | None:
    """The warm trainer's reply to one message, or None when no trainer runs for ``state_dir``.

    Raises NodeFailure when the trainer fails the request or dies while serving it.
    """
    global _fallback_logged
    sock, key_file = socket_path(state_dir), Path(state_dir) / KEY_FILE
    try:
        key = key_file.read_bytes()
        conn = Client(str(sock), family="AF_UNIX", authkey=key)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        if not _fallback_logged:
            log.info("no warm trainer at %s (%s): training in this process", sock, exc)
            _fallback_logged = True
        return None
    except AuthenticationError as exc:
        raise NodeFailure("trainer-failed", f"{sock}: key challenge failed: {exc}") from exc
    request = {
        "operation": operation,
        "content": _pack(content),
        "run_config": dict(run_config),
        "node_config": dict(node_config),
        "node_id": node_id,
        "run_id": run_id,
    }
    try:
        with conn:
            conn.send(request)
            status, payload = conn.recv()
    except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
        raise NodeFailure("trainer-failed", f"{sock} died mid-request: {exc!r}") from exc
    if status == "ok":
        return _unpack(payload)
    raise NodeFailure(*payload)


def serve(
    state_dir: Path,
    data_path: Path | None = None,
    gpu_index: int | None = None,
    threads: int | None = None,
) -> None:
    """Warm up (TensorFlow, device, partition), then serve requests until SIGTERM/SIGINT."""
    from fedrec_app.model import configure_device  # TensorFlow: imported here, once

    started = time.perf_counter()
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    device = configure_device(gpu_index, threads)
    if data_path is not None:
        node.cached_partition(Path(data_path).resolve())
    key = secrets.token_bytes(32)
    key_file, sock = state_dir / KEY_FILE, socket_path(state_dir)
    atomic_write(key_file, key, mode=0o600)
    sock.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # the socket file is created 0600
    try:
        listener = Listener(str(sock), family="AF_UNIX", authkey=key)
    finally:
        os.umask(old_umask)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    log.info(
        "warm trainer ready on %s (device %s) after %.1f s",
        sock,
        device,
        time.perf_counter() - started,
    )
    current_run: int | None = None
    try:
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:
                log.warning("refused a connection: %r", exc)
                continue
            with conn:
                current_run = _serve_one(conn, current_run)
    except KeyboardInterrupt:
        log.info("warm trainer stopping")
    finally:
        listener.close()
        sock.unlink(missing_ok=True)
        key_file.unlink(missing_ok=True)


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
        setup = node.node_setup(request["node_config"], run_cfg, request["node_id"])
        reply = ("ok", _pack(work(_unpack(request["content"]), run_cfg, setup, run_id)))
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


def _pack(content: RecordDict) -> bytes:
    """A RecordDict as Flower's own wire format (its arrays are memoryviews: no pickling)."""
    return recorddict_to_proto(content).SerializeToString()


def _unpack(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
