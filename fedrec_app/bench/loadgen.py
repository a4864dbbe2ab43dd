"""A small, fast HTTP/1.1 keep-alive load generator (asyncio streams), run as its own process.

`python -m fedrec_app.bench.loadgen --port P --concurrency C --requests N --duration S PATH…`
(or ``--paths-file F``, one path a line) sends GET requests for the paths (cycled) over C
connections until N requests were sent or S seconds passed, then prints one JSON object:
requests (answered), failed (non-200, no answer within ``--timeout``, or no connection), sent,
ok (answered 200), seconds, rps, p50_ms, p99_ms (of the answered ones). ``--source A`` sends
from local address A (any of 127.0.0.0/8: a second "client" on one machine). Loopback only: it
speaks plain HTTP and refuses other hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class _Run:
    paths: itertools.cycle[str]
    remaining: int
    deadline: float
    timeout: float
    source: str | None = None
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    sent: int = 0
    ok: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status code and whether the server keeps the connection open."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by the server")
    status = int(status_line.split()[1])
    length, keep_alive = 0, True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this load generator")
    await reader.readexactly(length)
    return status, keep_alive


async def _connection(host: str, port: int, run: _Run) -> None:
    local = (run.source, 0) if run.source else None
    writer = None
    try:
        while run.remaining > 0 and time.perf_counter() < run.deadline:
            run.remaining -= 1
            run.sent += 1
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
                except OSError:  # refused: counts as a failed request
                    run.failed += 1
                    await asyncio.sleep(0.01)
                    continue
            request = f"GET {next(run.paths)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            start = time.perf_counter()
            try:
                async with asyncio.timeout(run.timeout):
                    writer.write(request)
                    status, keep_alive = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                run.failed += 1
                keep_alive = False
            else:
                run.latencies.append(time.perf_counter() - start)
                run.failed += status != 200
                run.ok += status == 200
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def measure(
    host: str,
    port: int,
    paths: list[str],
    concurrency: int,
    requests: int,
    duration: float,
    timeout: float = 30.0,
    source: str | None = None,
) -> dict[str, float | int | None]:
    """Run the load and summarise it."""
    if host not in LOOPBACK:
        raise ValueError(f"{host}: the load generator only targets loopback addresses")
    if source is not None and not (source == "::1" or source.startswith("127.")):
        raise ValueError(f"--source {source}: the load generator only sends from loopback")
    run = _Run(itertools.cycle(paths), requests, time.perf_counter() + duration, timeout, source)
    start = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, run) for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    lat = np.asarray(run.latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "failed": run.failed,
        "sent": run.sent,
        "ok": run.ok,
        "seconds": round(seconds, 3),
        "rps": round(len(lat) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--source", help="local address to send from (127.0.0.0/8 or ::1)")
    parser.add_argument("--paths-file", type=Path, help="more paths, one a line")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if args.paths_file:
        paths += [line for line in args.paths_file.read_text().splitlines() if line.strip()]
    if not paths:
        parser.error("no paths to request")
    try:
        import uvloop  # optional: a faster event loop (installed with uvicorn[standard])

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        measure(
            args.host,
            args.port,
            paths,
            args.concurrency,
            args.requests,
            args.duration,
            args.timeout,
            args.source,
        )
    )
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
