"""A connection flood from one loopback address, run as its own process (`fedrec bench gateway`).

`python -m fedrec_app.bench.flood --port P --connections N --duration S [--mode M] [--source A]`
keeps N connections from source address A (default 127.0.0.1) open to 127.0.0.1:P for S seconds,
as an attacker would: ``idle`` ones send nothing, ``slow`` ones send a request line and then one
header line every ``--trickle`` seconds, never ending the header; ``mixed`` alternates the two.
A connection the server closes (or refuses at once) is opened again after ``--retry`` seconds.
SIGTERM or SIGINT ends it early. Prints "flooding" on stderr once every connection was tried,
then, at the end, one JSON object on stdout:
connects, connect_errors, held_end (open just before the end), closed_by_server,
closed_at_once (closed within 0.5 s of opening: refused), lifetime_p50_s (of the others).
Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

AT_ONCE = 0.5  # seconds: a connection closed this soon after it opened was refused


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (the whole 127.0.0.0/8 is loopback on Linux)."""
    return address in ("localhost", "::1") or address.startswith("127.")


@dataclass
class _Flood:
    host: str
    port: int
    source: str
    deadline: float
    trickle: float
    retry: float
    connects: int = 0
    connect_errors: int = 0
    held: int = 0
    closed_by_server: int = 0
    closed_at_once: int = 0
    lifetimes: list[float] = field(default_factory=list)

    def stop(self) -> None:
        self.deadline = min(self.deadline, time.monotonic())


async def _hold(flood: _Flood, slow: bool, tried: asyncio.Event | None) -> None:
    """One slot: open, hold until the server closes or the flood ends, open again."""
    while time.monotonic() < flood.deadline:
        try:
            reader, writer = await asyncio.open_connection(
                flood.host, flood.port, local_addr=(flood.source, 0)
            )
        except OSError:
            flood.connect_errors += 1
            if tried is not None:
                tried.set()
                tried = None
            await asyncio.sleep(flood.retry)
            continue
        if tried is not None:
            tried.set()
            tried = None
        flood.connects += 1
        flood.held += 1
        opened = time.monotonic()
        closed = False
        try:
            if slow:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while not closed and time.monotonic() < flood.deadline:
                wait = min(flood.trickle, flood.deadline - time.monotonic())
                try:
                    closed = await asyncio.wait_for(reader.read(1), max(wait, 0.01)) == b""
                except TimeoutError:
                    if slow:
                        writer.write(b"X-Slow: 1\r\n")
        except OSError:  # reset by the server
            closed = True
        finally:
            flood.held -= 1
            writer.close()
        if closed:
            lifetime = time.monotonic() - opened
            flood.closed_by_server += 1
            if lifetime < AT_ONCE:
                flood.closed_at_once += 1
            else:
                flood.lifetimes.append(lifetime)
            await asyncio.sleep(flood.retry)


async def flood(
    port: int,
    connections: int,
    duration: float,
    mode: str = "mixed",
    source: str = "127.0.0.1",
    host: str = "127.0.0.1",
    trickle: float = 1.0,
    retry: float = 1.0,
) -> dict[str, str | float | int | None]:
    """Run the flood for ``duration`` seconds and summarise it."""
    if not (is_loopback(host) and is_loopback(source)):
        raise ValueError(f"{host} from {source}: the flood only runs over loopback")
    start = time.monotonic()
    run = _Flood(host, port, source, start + duration, trickle, retry)
    tried = [asyncio.Event() for _ in range(connections)]
    slots = [
        asyncio.create_task(_hold(run, mode == "slow" or (mode == "mixed" and k % 2 == 1), event))
        for k, event in enumerate(tried)
    ]
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, run.stop)
    await asyncio.gather(*(event.wait() for event in tried))
    sys.stderr.write(f"flooding: {run.held} of {connections} connections open\n")
    sys.stderr.flush()
    held_end = run.held
    while not all(slot.done() for slot in slots):
        if time.monotonic() < run.deadline:
            held_end = run.held  # the last count before the slots see the deadline
        await asyncio.sleep(0.1)
    await asyncio.gather(*slots)
    return {
        "connections": connections,
        "mode": mode,
        "source": source,
        "seconds": round(run.deadline - start, 2),  # shorter when stopped early
        "connects": run.connects,
        "connect_errors": run.connect_errors,
        "held_end": held_end,
        "closed_by_server": run.closed_by_server,
        "closed_at_once": run.closed_at_once,
        "lifetime_p50_s": round(float(np.median(run.lifetimes)), 2) if run.lifetimes else None,
    }


def _raise_open_files_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (need if hard == resource.RLIM_INFINITY else min(need, hard), hard),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1", help="local address to flood from")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--mode", choices=("idle", "slow", "mixed"), default="mixed")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between header lines")
    parser.add_argument("--retry", type=float, default=1.0, help="seconds before reopening")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0:
        parser.error("--connections and --duration must be positive")
    if not (is_loopback(args.host) and is_loopback(args.source)):
        parser.error(f"{args.host} from {args.source}: the flood only runs over loopback")
    _raise_open_files_limit(args.connections + 64)
    result = asyncio.run(
        flood(
            args.port,
            args.connections,
            args.duration,
            args.mode,
            args.source,
            args.host,
            args.trickle,
            args.retry,
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
