"""ConnectionGuard's bookkeeping (the real gateway is flooded in tests/security)."""

from __future__ import annotations

import logging

from fedrec_app.gateway.connections import ConnectionGuard


def test_per_client_cap_counts_and_logs_once_per_burst(caplog) -> None:
    guard = ConnectionGuard(max_per_client=2, max_total=10)
    with caplog.at_level(logging.WARNING, logger="fedrec_app.gateway.connections"):
        assert guard.admit("10.0.0.1") and guard.admit("10.0.0.1")
        assert not guard.admit("10.0.0.1") and not guard.admit("10.0.0.1")
        assert guard.admit("10.0.0.2")  # another address is not affected
        assert guard.admit(None)  # a Unix socket has no address to count by
    assert guard.open == {"10.0.0.1": 2, "10.0.0.2": 1} and guard.total == 4
    assert guard.refused_per_client == 2
    assert [r.getMessage() for r in caplog.records] == [
        "10.0.0.1 holds 2 connections: refusing more from it (--max-connections-per-client)"
    ]
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.1")  # a slot came free
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedrec_app.gateway.connections"):
        assert not guard.admit("10.0.0.1")  # a new burst is logged again
    assert len(caplog.records) == 1
    for peer in ("10.0.0.1", "10.0.0.1", "10.0.0.2", None):
        guard.release(peer)
    assert guard.open == {} and guard.total == 0


def test_total_cap_and_zero_turns_limits_off() -> None:
    guard = ConnectionGuard(max_per_client=0, max_total=3)
    assert all(guard.admit("10.0.0.1") for _ in range(3))
    assert not guard.admit("10.0.0.9") and guard.refused_total == 1
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.9")
    unlimited = ConnectionGuard(max_per_client=0, max_total=0)
    assert all(unlimited.admit("10.0.0.1") for _ in range(5000))
    assert unlimited.total == 5000 and unlimited.refused_per_client == 0
