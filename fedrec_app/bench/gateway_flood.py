"""`fedrec bench gateway --flood N`: other clients' success and latency during a flood of idle
connections, with the gateway's connection limits and (``--unguarded``) without them.

The gateway, the flooder (``fedrec_app.bench.flood``) and the other clients' load generator each
run as their own process, on different loopback source addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from fedrec_app.bench.gateway import (
    free_port,
    gateway_command,
    gateway_server,
    log,
    machine_facts,
    process_cpu_seconds,
    run_load,
    synthetic_checkpoint,
    write_results,
)
from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.errors import FedrecError

FLOODER, CLIENTS, OBSERVER = "127.0.0.1", "127.0.0.2", "127.0.0.3"  # all loopback on Linux
DEFAULT_LIMITS: tuple[str, ...] = ()
# The limits before the connection guard: uvicorn's one total of 2,048 (it answered 503 past it),
# no per-client cap, no header deadline.
UNGUARDED_LIMITS = (
    "--max-connections-per-client",
    "0",
    "--max-connections",
    "2048",
    "--header-timeout",
    "0",
)


@dataclass(frozen=True)
class FloodBenchConfig:
    checkpoint: Path | None = None
    connections: int = 2100
    """Connections the flooder holds open from ``FLOODER``."""
    mode: str = "mixed"
    """idle | slow | mixed (see ``fedrec_app.bench.flood``)."""
    clients: int = 16
    """Concurrent connections of the other clients (from ``CLIENTS``)."""
    requests: int = 20_000
    duration: float = 10.0
    """Seconds of load per phase (without, then during the flood)."""
    unguarded: bool = True
    """Also flood a gateway run with ``UNGUARDED_LIMITS`` (shows what the limits prevent)."""
    n: int = 10


def _server_counts(port: int) -> dict[str, int] | None:
    """The gateway's own connection counts (its /metrics), asked from a third address: open
    now, and refused or closed by each limit so far. None when it cannot be asked."""
    transport = httpx.HTTPTransport(local_address=OBSERVER)
    try:
        with httpx.Client(transport=transport, timeout=5) as client:
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return None
    counts = {}
    for line in text.splitlines():
        if line.startswith("fedrec_gateway_open_connections "):
            counts["open"] = int(float(line.split()[1]))
        elif line.startswith("fedrec_gateway_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = int(float(line.split()[-1]))
    return counts


@contextmanager
def _flooder(port: int, cfg: FloodBenchConfig, work: Path) -> Iterator[dict[str, Any]]:
    """Run the flood process until the block ends; yields a dict that then holds its summary."""
    err_path = work / f"flood-{port}.err"
    with open(err_path, "wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedrec_app.bench.flood",
                "--port",
                str(port),
                "--source",
                FLOODER,
                "--connections",
                str(cfg.connections),
                "--mode",
                cfg.mode,
                "--duration",
                str(cfg.duration + 600),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    summary: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while b"flooding" not in err_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise FedrecError(f"the flood did not start: {err_path.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(2.0)  # the refused ones were reset and wait to try again
        yield summary
    finally:
        process.terminate()
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    if process.returncode != 0 or not out.strip():
        raise FedrecError(
            f"the flood failed ({process.returncode}): {err_path.read_text()[-2000:]}"
        )
    summary.update(json.loads(out))


def _phase(pid: int, port: int, paths: Path, cfg: FloodBenchConfig) -> dict[str, Any]:
    """The other clients' load from ``CLIENTS``, with the server's CPU per answered request."""
    cpu_before = process_cpu_seconds(pid)
    result = run_load(port, paths, cfg.clients, cfg.requests, cfg.duration, source=CLIENTS)
    cpu = process_cpu_seconds(pid) - cpu_before
    result["server_cpu_ms_per_request"] = (
        round(1000 * cpu / result["ok"], 3) if result.get("ok") else None
    )
    result["success"] = round(result["ok"] / result["sent"], 4) if result["sent"] else None
    result["ok_per_s"] = round(result["ok"] / result["seconds"], 1) if result["seconds"] else 0.0
    result["server_connections"] = _server_counts(port)
    return result


def _ratio(during: float | None, before: float | None) -> float | None:
    return round(during / before, 2) if during is not None and before else None


def run_flood_bench(cfg: FloodBenchConfig, work: Path) -> dict[str, Any]:
    """Other clients' success and latency without and during a flood, per gateway setting."""
    load_before = os.getloadavg()[0]
    checkpoint = cfg.checkpoint or synthetic_checkpoint(work / "final", keras=False)
    ckpt = read_checkpoint(checkpoint)
    if not ckpt.has_user_factors:
        raise FedrecError(f"{checkpoint}: no user factors; GET /recommend needs them")
    paths = work / "paths.txt"
    paths.write_text(
        "".join(f"/recommend?user_id={int(u)}&n={cfg.n}\n" for u in ckpt.arrays["user_ids"])
    )
    settings = [("default limits", DEFAULT_LIMITS)]
    if cfg.unguarded:
        settings.append(
            ("before: 2,048 in all, no per-client cap, no header timeout", UNGUARDED_LIMITS)
        )
    rows = []
    for label, limits in settings:
        port = free_port()
        command = gateway_command(ckpt.path, port, *limits)
        with gateway_server(command, port, work / f"gateway-{port}.log", timeout=60) as pid:
            run_load(port, paths, 4, 200, 2.0, source=CLIENTS)  # warm-up
            baseline = _phase(pid, port, paths, cfg)
            with _flooder(port, cfg, work) as flood:
                during = _phase(pid, port, paths, cfg)
        log.info("%s: without %s, during %s, flood %s", label, baseline, during, flood)
        rows.append(
            {
                "gateway": label,
                "limits": list(limits),
                "without_flood": baseline,
                "during_flood": during,
                "flood": flood,
                "ratios": {
                    key: _ratio(during.get(key), baseline.get(key))
                    for key in ("success", "p50_ms", "p99_ms", "ok_per_s")
                },
            }
        )
    return {
        "benchmark": "gateway GET /recommend during a connection flood",
        "checkpoint": "synthetic (ML-100k size)" if cfg.checkpoint is None else str(ckpt.path),
        "flooder": FLOODER,
        "clients": CLIENTS,
        "machine": machine_facts(load_before),
        "config": {**asdict(cfg), "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None},
        "results": rows,
    }


def flood_markdown(result: dict[str, Any]) -> str:
    """The flood results as a Markdown table plus one line of ratios per gateway setting."""
    cfg = result["config"]
    lines = [
        f"{cfg['connections']:,} {cfg['mode']} connections (idle / slow-header) held from "
        f"{result['flooder']} while {cfg['clients']} connections from {result['clients']} send "
        f"GET /recommend (n={cfg['n']}) for {cfg['duration']:g} s; {result['checkpoint']}; "
        f"{result['machine']['cpus']} CPUs, 1-minute load average "
        f"{' → '.join(str(x) for x in result['machine']['load_average_1m'])} (before → after).",
        "",
        "| gateway | flood | other clients ok / sent | success | p50 / p99 ms | ok/s "
        "| server CPU ms per answer | server: open / refused per client / header timeouts "
        "| flooder: connects / open in its view |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["results"]:
        flood = row["flood"]
        for name, phase in (("no", row["without_flood"]), ("yes", row["during_flood"])):
            server = phase["server_connections"]
            counts = (
                "- (no answer)"
                if server is None
                else f"{server.get('open', 0):,} / {server.get('per_client', 0):,} / "
                f"{server.get('header_timeout', 0):,}"
            )
            flooder = f"{flood['connects']:,} / {flood['held_end']:,}" if name == "yes" else ""
            success = f"{100 * phase['success']:.2f}%" if phase["success"] is not None else "-"
            lines.append(
                f"| {row['gateway']} | {name} | {phase['ok']:,} / {phase['sent']:,} | {success} "
                f"| {_shown(phase['p50_ms'])} / {_shown(phase['p99_ms'])} "
                f"| {phase['ok_per_s']:,.0f} | {_shown(phase['server_cpu_ms_per_request'])} "
                f"| {counts} | {flooder} |"
            )
    lines.append("")
    for row in result["results"]:
        r = row["ratios"]
        lines.append(
            f"- {row['gateway']}: during / without the flood: success {_shown(r['success'])}x, "
            f"p50 {_shown(r['p50_ms'])}x, p99 {_shown(r['p99_ms'])}x, "
            f"answered 200 per second {_shown(r['ok_per_s'])}x."
        )
    return "\n".join(lines) + "\n"


def _shown(value: float | int | None) -> str:
    return "-" if value is None else str(value)


def run_and_write_flood(
    cfg: FloodBenchConfig, json_path: Path, work_dir: Path | None = None
) -> str:
    """Run the flood benchmark, write JSON + Markdown (``.md``), return the Markdown."""
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-flood-") as tmp:
        work = work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_flood_bench(cfg, work)
    table = flood_markdown(result)
    write_results(result, json_path, table)
    return table
