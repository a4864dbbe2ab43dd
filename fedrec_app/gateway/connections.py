"""Connection limits for uvicorn: per-client-address cap, total cap, request-header deadline.

uvicorn bounds only the total (``limit_concurrency``, answered with 503 once reached), so one
client holding that many idle connections shuts every other client out. ``guarded_protocol``
wraps uvicorn's HTTP protocol class (httptools, else h11) and, per connection:

- refuses it at once (TCP reset, before a byte is read) when its peer address already holds
  ``max_per_client`` connections, or the server holds ``max_total``;
- closes it when a request's header is not complete ``header_timeout`` seconds after the
  connection opened or after the first byte of a later request on it (slow-header and idle
  connections alike; the deadline is not pushed back by trickled bytes).

Idle keep-alive connections between requests stay bounded by uvicorn's ``timeout_keep_alive``.
Counts are per process; everything runs on the server's event loop (no locks). The fast path
costs a few attribute reads per ``data_received`` and one timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass
class ConnectionGuard:
    """The limits (0 turns one off) and the live counts of one server."""

    max_per_client: int = 64
    max_total: int = 4096
    header_timeout: float = 10.0
    open: dict[str, int] = field(default_factory=dict)
    """Open connections per peer address."""
    total: int = 0
    refused_per_client: int = 0
    refused_total: int = 0
    header_timeouts: int = 0
    _capped: set[str] = field(default_factory=set)  # peers at their cap, already logged
    _full: bool = False  # at max_total, already logged

    def admit(self, peer: str | None) -> bool:
        """Count a new connection from ``peer`` in, or say it must be refused."""
        if self.max_total and self.total >= self.max_total:
            if not self._full:  # once per episode, not once per refusal
                self._full = True
                log.warning(
                    "%d connections open: refusing new ones (--max-connections)", self.total
                )
            self.refused_total += 1
            return False
        if peer is not None:
            held = self.open.get(peer, 0)
            if self.max_per_client and held >= self.max_per_client:
                if peer not in self._capped:
                    self._capped.add(peer)
                    log.warning(
                        "%s holds %d connections: refusing more from it "
                        "(--max-connections-per-client)",
                        peer,
                        held,
                    )
                self.refused_per_client += 1
                return False
            self.open[peer] = held + 1
        self.total += 1
        return True

    def release(self, peer: str | None) -> None:
        """A connection counted in by ``admit`` is gone."""
        self.total -= 1
        self._full = False
        if peer is None:
            return
        held = self.open.pop(peer, 1) - 1
        if held:
            self.open[peer] = held
        self._capped.discard(peer)


def _peer(transport: asyncio.BaseTransport) -> str | None:
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple | list) and address:
        return str(address[0])
    return None  # a Unix socket: no address to count by


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (as ``http="auto"`` picks it) with ``guard``'s limits."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    # uvicorn types AutoHTTPProtocol as a bare asyncio.Protocol, without the attributes of the
    # class it picks (cycle, loop, transport) that this subclass uses
    class GuardedHTTPProtocol(base):  # type: ignore[misc]
        _refused = False
        _peer_address: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            peer = _peer(transport)
            if not guard.admit(peer):
                self._refused = True
                transport.abort()  # no request read, no response written, no TIME_WAIT here
                return
            self._peer_address = peer
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._cancel_header_timer()
            guard.release(self._peer_address)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if self._header_timer is not None:  # a header completed: a request runs
                    self._cancel_header_timer()
            elif self._header_timer is None and not self.transport.is_closing():
                self._arm_header_timer()  # the first bytes of a next request: header pending

        def _arm_header_timer(self) -> None:
            if guard.header_timeout:
                self._header_timer = self.loop.call_later(
                    guard.header_timeout, self._header_timed_out
                )

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                guard.header_timeouts += 1
                self.transport.close()

    return GuardedHTTPProtocol


class ConnectionCollector(Collector):
    """Prometheus view of a guard: open connections, refusals and header timeouts."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        gauge = GaugeMetricFamily("fedrec_gateway_open_connections", "Open client connections")
        gauge.add_metric([], guard.total)
        yield gauge
        closed = CounterMetricFamily(
            "fedrec_gateway_connections_closed",
            "Connections refused or closed by a limit (reason: per_client, total, header_timeout)",
            labels=["reason"],
        )
        closed.add_metric(["per_client"], guard.refused_per_client)
        closed.add_metric(["total"], guard.refused_total)
        closed.add_metric(["header_timeout"], guard.header_timeouts)
        yield closed
