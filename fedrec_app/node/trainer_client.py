"""The ClientApp's side of the warm trainer (``fedrec_app.node.trainer``): hand a message over, get
the reply back.

Imports Flower and the standard library only (no pandas, no TensorFlow): it runs in the
per-message ``flwr-clientapp`` process, whose start-up is paid every round.

The trainer listens on ``<state-dir>/trainer.sock`` (0600) with a random key in
``<state-dir>/trainer.key`` (0600). Before connecting, ``ask`` checks that the state dir is safe
(``fedrec_app.node.private_dir``) and that the socket and the key are this user's own (no group or
other bits), and after connecting that the listening process runs as this user; any of these
failing is a ``trainer-failed`` refusal, never a fallback. Then both sides prove that they hold
the key (``fedrec_app.node.trainer_wire``: a mutual HMAC-SHA256 challenge) and the request and the
reply each travel as one frame: a JSON header and the message in Flower's own protobuf wire
format (arrays as raw bytes). Nothing is pickled or unpickled.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedrec_app.node import trainer_wire
from fedrec_app.node.private_dir import UnsafeFolderError, check_dir, check_own_entry
from fedrec_app.node.setup import KEY_FILE, NodeFailure, socket_path

log = logging.getLogger(__name__)

OPERATIONS = ("train_round", "evaluate_round")  # the functions of fedrec_app.node.task it serves
HANDSHAKE_TIMEOUT = 10.0  # seconds for the handshake once the trainer has said hello
SEND_TIMEOUT = 60.0  # seconds to hand over a whole request
_fallback_logged = False


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

    Waits for a trainer that is still warming up, and for the reply without a limit (training
    takes as long as it takes). Raises NodeFailure when the trainer's socket, key or process is
    not this user's, when the handshake fails, or when the trainer fails the request or dies
    while serving it.
    """
    global _fallback_logged
    sock = socket_path(state_dir)
    try:
        key = _read_key(Path(state_dir))
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(sock))
        except OSError:
            conn.close()
            raise
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        if not _fallback_logged:
            log.info("no warm trainer at %s (%s): training in this process", sock, exc)
            _fallback_logged = True
        return None
    except UnsafeFolderError as exc:
        raise NodeFailure("trainer-failed", f"refusing to connect to {sock}: {exc}") from exc
    with conn:
        try:
            _check_listener(conn)
            trainer_wire.client_handshake(conn, key, HANDSHAKE_TIMEOUT)
        except trainer_wire.AuthError as exc:
            raise NodeFailure("trainer-failed", f"{sock}: key challenge failed: {exc}") from exc
        except (trainer_wire.WireError, OSError) as exc:
            raise NodeFailure("trainer-failed", f"{sock}: handshake failed: {exc}") from exc
        header = {
            "operation": operation,
            "run_config": dict(run_config),
            "node_config": dict(node_config),
            "node_id": node_id,
            "run_id": run_id,
        }
        try:
            trainer_wire.send_frame(conn, header, pack(content), time.monotonic() + SEND_TIMEOUT)
            reply, payload = trainer_wire.recv_frame(conn)
        except (trainer_wire.PeerClosed, ConnectionResetError, BrokenPipeError) as exc:
            raise NodeFailure("trainer-failed", f"{sock} died mid-request: {exc!r}") from exc
        except (trainer_wire.WireError, OSError) as exc:
            raise NodeFailure("trainer-failed", f"{sock}: {exc}") from exc
    status = reply.get("status")
    if status == "ok":
        return unpack(payload)
    code, detail = reply.get("code"), reply.get("detail")
    if status == "failure" and isinstance(code, str) and isinstance(detail, str):
        raise NodeFailure(code, detail)
    raise NodeFailure(
        "trainer-failed",
        f"{sock}: a reply header that is neither ok nor a failure: {sorted(reply)}",
    )


def _read_key(state_dir: Path) -> bytes:
    """The trainer's key, once the state dir, the socket and the key file have passed the checks
    (FileNotFoundError when there is no trainer; UnsafeFolderError when one is not safe)."""
    folder = check_dir(state_dir)
    sock = socket_path(folder)
    check_own_entry(os.lstat(sock), sock, "socket")
    key_file = folder / KEY_FILE
    fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        check_own_entry(os.fstat(fd), key_file, "file")
        return handle.read()


def _check_listener(conn: socket.socket) -> None:
    """Refuse a trainer process that runs as another user."""
    uid = trainer_wire.peer_uid(conn)
    if uid is not None and uid != os.getuid():
        raise trainer_wire.AuthError(f"the listening process runs as uid {uid}, not as this user")


def pack(content: RecordDict) -> bytes:
    """A RecordDict as Flower's own wire format (its arrays are raw bytes: no pickling)."""
    packed: bytes = recorddict_to_proto(content).SerializeToString()
    return packed


def unpack(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)
