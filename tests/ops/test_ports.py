"""`federation.port_free`, `fedrec up`'s check of the gateway port: a port left in TIME_WAIT by
a stopped server is free (the gateway binds it), a listening one is not."""

from __future__ import annotations

import socket

from fedrec_app.ops.federation import port_free


def _listen(port: int = 0, reuse: bool = True) -> socket.socket:
    server = socket.socket()
    if reuse:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


def _plain_bind_fails(port: int) -> bool:
    """What the old check did: bind without SO_REUSEADDR."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_a_port_in_time_wait_is_free_a_listening_one_is_not() -> None:
    # A gateway with a client connected; Ctrl+C: the server side closes first, so its end of
    # the connection stays in TIME_WAIT on the gateway's port for a minute.
    server = _listen()
    port = server.getsockname()[1]
    assert not port_free("127.0.0.1", port)  # truly listening: in use
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()
    server.close()
    client.recv(1)  # the server's FIN
    client.close()
    assert _plain_bind_fails(port)  # TIME_WAIT is there: the old check refused the port
    assert port_free("127.0.0.1", port)  # as uvicorn binds: the gateway can listen again
    again = _listen(port)  # and it can
    try:
        assert not port_free("127.0.0.1", port)
    finally:
        again.close()


def test_a_listener_without_reuseaddr_still_counts() -> None:
    server = _listen(reuse=False)
    try:
        assert not port_free("127.0.0.1", server.getsockname()[1])
    finally:
        server.close()
