"""The warm trainer's wire protocol on its Unix socket: a mutual key handshake, then frames of
JSON and raw bytes. Nothing on this socket is ever unpickled.

Handshake (the trainer speaks first; ``key`` is the random secret in ``<state-dir>/trainer.key``):

1. trainer -> client: ``HELLO`` (``b"fedrec-trainer/1\\n"``) + 32 random bytes ``nt``
2. client -> trainer: 32 random bytes ``nc`` + HMAC-SHA256(key, ``b"client" + nt + nc``)
3. trainer -> client: HMAC-SHA256(key, ``b"trainer" + nt + nc``), sent only when the client's
   proof holds; otherwise the trainer closes the connection.

Each side compares with ``hmac.compare_digest``; neither side ever sends the key, and the labels
keep one side's proof from being replayed as the other's. So a client talks only to a process
that holds the key, and the trainer serves only clients that hold it.

Frame (each request and each reply is one): a 4-byte big-endian header length, the header (a
UTF-8 JSON object of at most ``MAX_HEADER`` bytes), an 8-byte big-endian payload length, the
payload (raw bytes of at most ``MAX_PAYLOAD``; the trainer carries a RecordDict in Flower's
protobuf wire format). Anything else (a pickle, say) is a ``FrameError``: the reader drops the
connection without interpreting the bytes. Reads take a deadline, so a stalled peer costs at most
that long.

Standard library only: the per-message ClientApp process imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
import time
from typing import Any

HELLO = b"fedrec-trainer/1\n"
NONCE_BYTES = 32
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 256 * 1024 * 1024
_HEADER_LEN = struct.Struct(">I")
_PAYLOAD_LEN = struct.Struct(">Q")
_DIGEST_BYTES = hashlib.sha256().digest_size


class WireError(Exception):
    """The peer broke the protocol, stalled past its deadline, or left."""


class PeerClosed(WireError):
    """The peer closed the connection before a whole handshake step or frame arrived."""


class AuthError(WireError):
    """The peer failed the key handshake."""


class FrameError(WireError):
    """Bytes that are not a valid frame (oversize, not JSON, not an object)."""


def accept_handshake(sock: socket.socket, key: bytes, deadline: float) -> None:
    """The trainer's side: challenge the client, check its proof, prove the key back. The whole
    handshake must be over by ``deadline`` (``time.monotonic()``)."""
    nt = secrets.token_bytes(NONCE_BYTES)
    _send(sock, HELLO + nt, deadline)
    answer = _recv_exact(sock, NONCE_BYTES + _DIGEST_BYTES, deadline, "the client's key proof")
    nc, proof = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    if not hmac.compare_digest(proof, _mac(key, b"client", nt, nc)):
        raise AuthError("the client's key proof is wrong")
    _send(sock, _mac(key, b"trainer", nt, nc), deadline)


def client_handshake(sock: socket.socket, key: bytes, timeout: float) -> None:
    """The client's side: wait for the trainer's hello without a limit (a trainer that is still
    warming up accepts once it is ready), then finish the handshake within ``timeout`` seconds.
    Raises AuthError when the trainer does not prove that it holds ``key``."""
    hello = _recv_exact(sock, len(HELLO) + NONCE_BYTES, None, "the trainer's hello")
    if not hello.startswith(HELLO):
        raise WireError(f"not a fedrec trainer of this version: it greeted with {hello[:20]!r}")
    deadline = time.monotonic() + timeout
    nt, nc = hello[len(HELLO) :], secrets.token_bytes(NONCE_BYTES)
    _send(sock, nc + _mac(key, b"client", nt, nc), deadline)
    try:
        proof = _recv_exact(sock, _DIGEST_BYTES, deadline, "the trainer's key proof")
    except PeerClosed as exc:
        raise AuthError(
            "the trainer refused this client's key proof (a stale or wrong key?)"
        ) from exc
    if not hmac.compare_digest(proof, _mac(key, b"trainer", nt, nc)):
        raise AuthError("the trainer's key proof is wrong: it does not hold the key")


def send_frame(
    sock: socket.socket, header: dict[str, Any], payload: bytes = b"", deadline: float | None = None
) -> None:
    """Send one frame; raises FrameError when it would exceed the limits."""
    head = json.dumps(header, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise FrameError(
            f"frame too large: header {len(head)} bytes (at most {MAX_HEADER}), "
            f"payload {len(payload)} bytes (at most {MAX_PAYLOAD})"
        )
    _send(sock, _HEADER_LEN.pack(len(head)) + head + _PAYLOAD_LEN.pack(len(payload)), deadline)
    if payload:
        _send(sock, payload, deadline)


def recv_frame(sock: socket.socket, deadline: float | None = None) -> tuple[dict[str, Any], bytes]:
    """Receive one frame: its header (a JSON object) and payload. Raises FrameError on anything
    that is not a valid frame, PeerClosed when the peer leaves, WireError past ``deadline``."""
    raw_len = _recv_exact(sock, _HEADER_LEN.size, deadline, "a frame")
    (head_len,) = _HEADER_LEN.unpack(raw_len)
    if not 0 < head_len <= MAX_HEADER:
        raise FrameError(
            f"not a frame: a header of {head_len} bytes (1 to {MAX_HEADER}); the "
            f"bytes begin {raw_len!r}"
        )
    head = _recv_exact(sock, head_len, deadline, "a frame header")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FrameError(
            f"not a frame: the header is not UTF-8 JSON; it begins {head[:16]!r}"
        ) from None
    if not isinstance(header, dict):
        raise FrameError(
            f"not a frame: the header is a JSON {type(header).__name__}, not an object"
        )
    (size,) = _PAYLOAD_LEN.unpack(_recv_exact(sock, _PAYLOAD_LEN.size, deadline, "a frame"))
    if size > MAX_PAYLOAD:
        raise FrameError(f"frame too large: a payload of {size} bytes (at most {MAX_PAYLOAD})")
    return header, _recv_exact(sock, size, deadline, "a frame payload")


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (the kernel's record of it), or
    None where the platform does not say."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _mac(key: bytes, label: bytes, nt: bytes, nc: bytes) -> bytes:
    return hmac.new(key, label + nt + nc, hashlib.sha256).digest()


def _timeout(deadline: float | None, what: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireError(f"timed out waiting for {what}")
    return left


def _send(sock: socket.socket, data: bytes, deadline: float | None) -> None:
    sock.settimeout(_timeout(deadline, "the peer to take the data"))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise WireError("timed out sending: the peer does not read") from None


def _recv_exact(sock: socket.socket, size: int, deadline: float | None, what: str) -> bytes:
    chunks, got = [], 0
    while got < size:
        sock.settimeout(_timeout(deadline, what))
        try:
            chunk = sock.recv(min(size - got, 1 << 20))
        except TimeoutError:
            raise WireError(f"timed out waiting for {what}") from None
        if not chunk:
            raise PeerClosed(
                f"the peer closed the connection during {what} ({got} of {size} bytes)"
            )
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
