"""Issue 11: the warm trainer's socket and the node state folders.

A probe planted a fake trainer socket in the guessable temp-dir state folder of another user's
node and got a command run as that user, because the trainer protocol unpickled. Here: the
planted folder is never used (and refused when named), nothing on the socket is unpickled, and a
stalled peer only costs the trainer its timeout.

The trainer side is the real ``Endpoint`` and serving loop (``serve_connections``) in a thread,
on a real Unix socket; the client side is the real ``trainer_client.ask``.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import RecordDict

from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.node import trainer_client, trainer_wire
from fedrec_app.node.private_dir import UnsafeFolderError
from fedrec_app.node.setup import KEY_FILE, SOCKET_FILE, NodeFailure, node_setup
from fedrec_app.node.trainer import Endpoint, serve_connections

RUN_CONFIG = parse_run_config(app_defaults())
NOBODY = 65534
AS_ROOT = os.getuid() == 0
HANDSHAKE_TIMEOUT = 0.5
IO_TIMEOUT = 1.5


class _Touch:
    """Unpickling this creates ``path`` (what a real attacker would make ``os.system``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def _pickle_bomb(path: Path) -> bytes:
    return pickle.dumps(_Touch(path))


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[Endpoint]:
    """A real Endpoint in tmp_path/state and its serving loop in a thread (short timeouts)."""
    endpoint = Endpoint(
        tmp_path / "state", handshake_timeout=HANDSHAKE_TIMEOUT, io_timeout=IO_TIMEOUT
    )
    thread = threading.Thread(target=serve_connections, args=(endpoint,), daemon=True)
    thread.start()
    yield endpoint
    endpoint.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the serving loop did not stop when its endpoint closed"


def _assert_serves(endpoint: Endpoint) -> None:
    """A valid client gets its answer (an unknown operation: refused by the trainer, by name)."""
    with pytest.raises(NodeFailure, match="bad-message: unknown operation 'no-such-op'"):
        trainer_client.ask(endpoint.sock.parent, "no-such-op", RecordDict(), {}, {}, 1, 9)


def _served(endpoint: Endpoint) -> str:
    """``_assert_serves`` for a thread: "served", or what went wrong."""
    try:
        _assert_serves(endpoint)
    except BaseException as exc:  # pytest's failure too
        return repr(exc)
    return "served"


def _handshaken(endpoint: Endpoint) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(endpoint.sock))
    trainer_wire.client_handshake(conn, endpoint.key, timeout=5)
    return conn


def _closed_by_peer(conn: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the peer closes ``conn`` within ``timeout`` (whatever it sent before is read)."""
    conn.settimeout(timeout)
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# ------------------------------------------------------------------ (a) the planting attack


class FakeTrainer:
    """The attacker's listener on a planted ``trainer.sock``: it records every connection (the
    old client read the planted key, authenticated, and unpickled what it was sent)."""

    def __init__(self, sock_path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock_path))
        self.listener.listen(4)
        self.listener.settimeout(0.1)
        self.connections = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture(params=["owned-by-another-user", "world-writable"])
def planted(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """The old guessable folder of node 4242 (``<tmp>/fedrec-node-state/node-4242``), planted
    before the node first ran: a listening fake trainer, a key the attacker knows."""
    if request.param == "owned-by-another-user" and not AS_ROOT:
        pytest.skip("needs root to give the planted folder to another user")
    # The system temp dir, not tmp_path: under pytest-xdist tmp_path is long enough to push the
    # planted socket's path past AF_UNIX's 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="planted-"))
    temp.chmod(0o1777)  # like /tmp: everybody may create folders in it
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the old code looked
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home-state"))
    folder = Path(tempfile.gettempdir()) / "fedrec-node-state" / "node-4242"
    folder.mkdir(parents=True)
    fake = FakeTrainer(folder / SOCKET_FILE)
    (folder / KEY_FILE).write_bytes(b"the attacker knows this key")
    for path in (folder.parent, folder, folder / SOCKET_FILE, folder / KEY_FILE):
        if request.param == "owned-by-another-user":
            os.chown(path, NOBODY, NOBODY)
            path.chmod(0o755 if path.is_dir() else 0o644)
        else:
            path.chmod(0o777)
    try:
        yield folder
    finally:
        fake.stop()
        shutil.rmtree(temp, ignore_errors=True)
    assert fake.connections == 0, "a fedrec process connected to the planted socket"


def test_a_node_without_state_dir_keeps_its_state_in_a_private_folder_not_the_planted_one(
    planted: Path, tmp_path: Path
) -> None:
    setup = node_setup({"data-path": str(tmp_path / "p0")}, RUN_CONFIG, 4242)
    assert setup.state_dir == (tmp_path / "home-state" / "fedrec" / "node-4242").resolve()
    for folder in (setup.state_dir, setup.state_dir.parent):
        st = folder.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.getuid(), 0o700)
    # Its ClientApp finds no trainer there and trains in-process; the planted one is not asked.
    assert trainer_client.ask(setup.state_dir, "train_round", RecordDict(), {}, {}, 4242, 9) is None


def test_a_simulated_node_keeps_its_state_in_a_private_folder(
    planted: Path, tmp_path: Path
) -> None:
    sim = parse_run_config({**app_defaults(), "partition-set": str(tmp_path / "parts" / "u1-3")})
    setup = node_setup({"partition-id": 2, "num-partitions": 3}, sim, 4242)
    assert setup.state_dir == (tmp_path / "home-state" / "fedrec" / "sim-u1-3-2").resolve()
    assert stat.S_IMODE(setup.state_dir.stat().st_mode) == 0o700


def test_the_planted_folder_is_refused_by_node_trainer_and_client_app(planted: Path) -> None:
    why = "owned by uid 65534" if planted.stat().st_uid == NOBODY else "writable by group or"
    with pytest.raises(NodeFailure, match=f"bad-node-config: state-dir: {planted}.* {why}"):
        node_setup({"data-path": "/d", "state-dir": str(planted)}, RUN_CONFIG, 4242)
    with pytest.raises(UnsafeFolderError, match=f"{planted}.* {why}"):
        Endpoint(planted)
    with pytest.raises(NodeFailure, match=f"trainer-failed: refusing to connect .*{why}"):
        trainer_client.ask(planted, "train_round", RecordDict(), {}, {}, 4242, 9)


def test_a_state_dir_below_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could move the node's folder away and replace it
    with pytest.raises(NodeFailure, match=f"{shared}, above .* without the sticky bit"):
        node_setup({"data-path": "/d", "state-dir": str(shared / "node")}, RUN_CONFIG, 1)
    shared.chmod(0o1777)  # sticky, like /tmp: the node's own folder in it is safe
    setup = node_setup({"data-path": "/d", "state-dir": str(shared / "node")}, RUN_CONFIG, 1)
    assert stat.S_IMODE(setup.state_dir.stat().st_mode) == 0o700


@pytest.mark.skipif(not AS_ROOT, reason="needs root to give a file to another user")
def test_the_client_refuses_a_socket_or_key_that_is_not_its_users(trainer: Endpoint) -> None:
    os.chown(trainer.sock, NOBODY, NOBODY)
    with pytest.raises(NodeFailure, match=f"refusing to connect .*{SOCKET_FILE} is owned by uid"):
        trainer_client.ask(trainer.sock.parent, "no-such-op", RecordDict(), {}, {}, 1, 9)
    os.chown(trainer.sock, 0, 0)
    trainer.key_file.chmod(0o644)
    with pytest.raises(NodeFailure, match=f"refusing to connect .*{KEY_FILE} has mode 644"):
        trainer_client.ask(trainer.sock.parent, "no-such-op", RecordDict(), {}, {}, 1, 9)
    trainer.key_file.chmod(0o600)
    _assert_serves(trainer)


@pytest.mark.integration
@pytest.mark.skipif(not AS_ROOT, reason="needs root to run a listener as another user")
def test_the_client_refuses_a_listener_that_runs_as_another_user(tmp_path: Path) -> None:
    """Socket file and key pass as the user's own, but the process behind them is not."""
    theirs = Path(tempfile.mkdtemp())  # in the system temp dir, where uid 65534 can reach it
    theirs.chmod(0o755)
    (theirs / "own").mkdir()
    os.chown(theirs / "own", NOBODY, NOBODY)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: becomes uid 65534 and listens; never returns into pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(theirs / "own" / "s"))
            listener.listen()
            os.write(ready_w, b"up")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 2) == b"up"
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.rename(theirs / "own" / "s", state / SOCKET_FILE)  # root takes it in as its own
        os.chown(state / SOCKET_FILE, 0, 0)
        os.chmod(state / SOCKET_FILE, 0o600)
        (state / KEY_FILE).write_bytes(b"k" * 32)
        (state / KEY_FILE).chmod(0o600)
        with pytest.raises(NodeFailure, match=f"runs as uid {NOBODY}, not as this user"):
            trainer_client.ask(state, "no-such-op", RecordDict(), {}, {}, 1, 9)
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        shutil.rmtree(theirs)


# ------------------------------------------------------------------ (b) no pickle on the socket


def test_the_pickle_payload_is_live(tmp_path: Path) -> None:
    """The control: unpickling the bytes the next test sends does create the marker."""
    pickle.loads(_pickle_bomb(tmp_path / "control"))
    assert (tmp_path / "control").exists()


@pytest.mark.parametrize("framing", ["raw pickle", "multiprocessing.connection"])
def test_a_pickle_after_the_handshake_is_refused_unread(
    trainer: Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture, framing: str
) -> None:
    marker = tmp_path / "MARKER"
    bomb = _pickle_bomb(marker)
    if framing == "multiprocessing.connection":  # what Connection.send writes: length + pickle
        bomb = struct.pack("!i", len(bomb)) + bomb
    with (
        caplog.at_level(logging.WARNING, logger="fedrec_app.node.trainer"),
        _handshaken(trainer) as c,
    ):
        c.sendall(bomb)
        assert _closed_by_peer(c), "the trainer kept a connection that sent a pickle"
    assert not marker.exists()
    assert any("refused a connection: not a frame" in r.getMessage() for r in caplog.records)
    _assert_serves(trainer)
    assert not marker.exists()


def test_a_pickle_as_the_payload_of_a_valid_frame_is_a_bad_message(
    trainer: Endpoint, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    header = {
        "operation": "train_round",
        "run_config": app_defaults(),
        "node_config": {"data-path": str(tmp_path / "p0"), "state-dir": str(trainer.sock.parent)},
        "node_id": 1,
        "run_id": 9,
    }
    with _handshaken(trainer) as conn:
        trainer_wire.send_frame(conn, header, _pickle_bomb(marker), time.monotonic() + 5)
        reply, payload = trainer_wire.recv_frame(conn, time.monotonic() + 30)
    assert reply["status"] == "failure" and reply["code"] == "bad-message", reply
    assert "not a RecordDict in Flower's wire format" in reply["detail"]
    assert payload == b""
    assert not marker.exists()


@pytest.mark.parametrize(
    "header",
    [
        {"operation": "train_round"},
        {"operation": 1, "run_config": {}, "node_config": {}, "node_id": 1, "run_id": True},
    ],
    ids=["missing-fields", "wrong-types"],
)
def test_a_request_header_of_the_wrong_shape_is_refused(
    trainer: Endpoint, caplog: pytest.LogCaptureFixture, header: dict
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="fedrec_app.node.trainer"),
        _handshaken(trainer) as c,
    ):
        trainer_wire.send_frame(c, header, b"", time.monotonic() + 5)
        assert _closed_by_peer(c)
    assert any(
        "refused a connection: request" in r.getMessage()
        or "refused a connection: a request header" in r.getMessage()
        for r in caplog.records
    )
    _assert_serves(trainer)


def test_an_oversize_frame_is_refused_before_it_is_read(
    trainer: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="fedrec_app.node.trainer"),
        _handshaken(trainer) as c,
    ):
        c.sendall(struct.pack(">I", trainer_wire.MAX_HEADER + 1))
        assert _closed_by_peer(c)
    assert any(
        f"a header of {trainer_wire.MAX_HEADER + 1} bytes" in r.getMessage() for r in caplog.records
    )
    _assert_serves(trainer)


def test_a_client_with_the_wrong_key_is_refused(
    trainer: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    trainer.key_file.write_bytes(b"not the key")  # the client reads this one; the trainer its own
    with (
        caplog.at_level(logging.WARNING, logger="fedrec_app.node.trainer"),
        pytest.raises(NodeFailure, match="trainer-failed: .*key challenge failed"),
    ):
        trainer_client.ask(trainer.sock.parent, "no-such-op", RecordDict(), {}, {}, 1, 9)
    assert any("the client's key proof is wrong" in r.getMessage() for r in caplog.records)
    trainer.key_file.write_bytes(trainer.key)
    _assert_serves(trainer)


@pytest.mark.parametrize("answer", ["random bytes", "the client's own proof"])
def test_a_listener_without_the_key_cannot_pass_as_the_trainer(answer: str) -> None:
    """The handshake is mutual: a fake trainer that says hello but lacks the key is caught, even
    when it reflects the client's own proof back."""
    client, fake = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def pretend() -> None:
        fake.sendall(trainer_wire.HELLO + os.urandom(trainer_wire.NONCE_BYTES))
        proof = fake.recv(64, socket.MSG_WAITALL)[trainer_wire.NONCE_BYTES :]
        fake.sendall(os.urandom(32) if answer == "random bytes" else proof)

    thread = threading.Thread(target=pretend)
    thread.start()
    with client, fake, pytest.raises(trainer_wire.AuthError, match="does not hold the key"):
        trainer_wire.client_handshake(client, os.urandom(32), timeout=5)
    thread.join()


# ------------------------------------------------------------------ (c) a stalled peer


@pytest.mark.parametrize("stall", ["before the handshake", "in the middle of a frame"])
def test_a_stalled_client_times_out_and_the_next_one_is_served(
    trainer: Endpoint, caplog: pytest.LogCaptureFixture, stall: str
) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if stall == "before the handshake":
        stalled.connect(str(trainer.sock))  # and says nothing
        limit = HANDSHAKE_TIMEOUT
    else:
        stalled = _handshaken(trainer)
        stalled.sendall(struct.pack(">I", 100) + b'{"operation":')  # and stops
        limit = IO_TIMEOUT
    with caplog.at_level(logging.WARNING, logger="fedrec_app.node.trainer"), stalled:
        started, outcome = time.monotonic(), []
        client = threading.Thread(target=lambda: outcome.append(_served(trainer)), daemon=True)
        client.start()  # waits behind the stalled one, for its timeout at most
        client.join(timeout=limit + 5)
        waited = time.monotonic() - started
        assert outcome == ["served"], f"after {waited:.1f} s the valid client has {outcome}"
        assert _closed_by_peer(stalled, timeout=1), "the trainer still holds the stalled client"
    assert limit * 0.8 < waited < limit + 5, waited
    assert any(
        "refused a connection: timed out waiting for" in r.getMessage() for r in caplog.records
    )
