"""The ClientApp's side of the warm trainer (``fedrec_app.trainer``): hand a message over, get
the reply back.

Imports Flower and the standard library only (no pandas, no TensorFlow): it runs in the
per-message ``flwr-clientapp`` process, whose start-up is paid every round.

The trainer listens on ``<state-dir>/trainer.sock`` (0600); a connection must pass the HMAC
challenge of ``multiprocessing.connection`` with the random key in ``<state-dir>/trainer.key``
(0600). A message travels in Flower's own protobuf wire format (arrays as raw bytes, no pickle).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedrec_app.node_setup import KEY_FILE, NodeFailure, socket_path

log = logging.getLogger(__name__)

OPERATIONS = ("train_round", "evaluate_round")  # the functions of fedrec_app.node it serves
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
        "content": pack(content),
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
        return unpack(payload)
    raise NodeFailure(*payload)


def pack(content: RecordDict) -> bytes:
    """A RecordDict as Flower's own wire format (its arrays are raw bytes: no pickling)."""
    return recorddict_to_proto(content).SerializeToString()


def unpack(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)
