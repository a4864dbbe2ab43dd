"""`fedrec bench gateway`: GET /recommend throughput and latency, gateway vs the seed's approach.

Both servers run as their own processes with one uvicorn worker on a loopback port; the load
generator (``fedrec_app.bench.loadgen``) is a third process, so it never shares the server's
interpreter. Each concurrency level is bounded by a request count and a time limit. Without
``--checkpoint`` a synthetic checkpoint of MovieLens-100k size (943 users, 1,682 items, the
training defaults' factor sizes, with ``model.keras``) is made in a temporary folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fedrec_app.core.checkpoint import MODEL, read_checkpoint, write_checkpoint
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write, write_json_atomic
from fedrec_app.data.catalogue import GENRES, Catalogue

log = logging.getLogger(__name__)

ML100K_USERS, ML100K_ITEMS = 943, 1682


@dataclass(frozen=True)
class GatewayBenchConfig:
    checkpoint: Path | None = None
    concurrency: tuple[int, ...] = (1, 16, 64)
    requests: int = 20_000
    duration: float = 10.0
    reference_requests: int = 400
    reference_duration: float = 20.0
    n: int = 10


def synthetic_checkpoint(folder: Path, seed: int = 0, keras: bool = True) -> Path:
    """A checkpoint of MovieLens-100k size with random factors and, with ``keras``, a
    model.keras (imports Keras)."""
    from fedrec_app.core.training import TrainConfig, model_shape

    cfg = TrainConfig()
    rng = np.random.default_rng(seed)
    ids = np.arange(1, ML100K_ITEMS + 1)
    catalogue = Catalogue(
        ids,
        tuple(f"Synthetic Movie {m} ({1930 + m % 68})" for m in ids),
        tuple(1930 + int(m) % 68 for m in ids),
        tuple((GENRES[1 + m % 18],) for m in ids),
    )

    def normal(*shape: int, scale: float = 0.1) -> np.ndarray:
        return rng.normal(0.0, scale, shape).astype(np.float32)

    arrays: dict[str, np.ndarray] = {
        "item_ids": ids,
        "user_ids": np.arange(1, ML100K_USERS + 1),
        "item_embedding": normal(ML100K_ITEMS, cfg.embedding_dim),
        "item_bias": normal(ML100K_ITEMS, scale=0.3),
        "item_rank_embedding": normal(ML100K_ITEMS, cfg.rank_dim, scale=0.3),
        "item_rank_bias": normal(ML100K_ITEMS, scale=0.3),
        "global_bias": np.asarray(3.5, np.float32),
        "user_embedding": normal(ML100K_USERS, cfg.embedding_dim),
        "user_bias": normal(ML100K_USERS, scale=0.2),
        "user_rank_embedding": normal(ML100K_USERS, cfg.rank_dim, scale=0.3),
    }
    manifest = {
        "run_id": "bench-synthetic",
        "round": 1,
        "model": {"type": "synthetic", "hyperparameters": cfg.to_dict()},
        "metrics": {},
        "history": [],
        "run_config": {},
    }
    if not keras:
        return write_checkpoint(folder, arrays, catalogue, manifest)
    from fedrec_app.core.model import save_model_file

    shape = model_shape(cfg, ML100K_USERS, ML100K_ITEMS)
    return write_checkpoint(
        folder, arrays, catalogue, manifest, lambda path: save_model_file(arrays, shape, path)
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_command(checkpoint: Path, port: int, *flags: str) -> list[str]:
    """`fedrec gateway` on a loopback port for a bench. Signatures are checked once at start,
    never per request: a bench serves its own (synthetic or given) checkpoint without one."""
    return [
        sys.executable, "-m", "fedrec_app", "gateway", "--checkpoint", str(checkpoint),
        "--port", str(port), "--allow-unsigned", *flags,
    ]  # fmt: skip


@contextmanager
def gateway_server(
    command: Sequence[str], port: int, log_path: Path, timeout: float
) -> Iterator[int]:
    """Start a server process, wait for /healthz, yield its pid, stop it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise FedrecError(f"{command[2]} exited with {process.returncode}:\n{tail}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise FedrecError(f"{' '.join(command[:3])}: no /healthz after {timeout:.0f} s")
            time.sleep(0.2)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


REQUEST_TIMEOUT = 30.0  # seconds; a request not answered by then counts as failed


def run_load(
    port: int,
    paths: Path,
    concurrency: int,
    requests: int,
    duration: float,
    source: str | None = None,
) -> dict[str, Any]:
    """One load-generator process run over the paths in the file ``paths``; its JSON summary."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app.bench.loadgen",
            "--port",
            str(port),
            "--concurrency",
            str(concurrency),
            "--requests",
            str(requests),
            "--duration",
            str(duration),
            "--timeout",
            str(REQUEST_TIMEOUT),
            "--paths-file",
            str(paths),
            *(["--source", source] if source else []),
        ],
        capture_output=True,
        text=True,
        timeout=duration + REQUEST_TIMEOUT + 60,
        check=False,
    )
    if result.returncode != 0:
        raise FedrecError(f"load generator failed: {result.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def _measure(
    pid: int,
    port: int,
    paths: Path,
    levels: Sequence[int],
    requests: int,
    duration: float,
) -> list[dict[str, Any]]:
    """Each level's load summary plus the server's CPU milliseconds per answered request.

    CPU per request does not depend on what else runs on the machine: 1000 / it is the
    requests per second one dedicated core could serve.
    """
    run_load(port, paths, 4, max(20, requests // 20), duration / 2)  # warm-up
    results = []
    for concurrency in levels:
        cpu_before = process_cpu_seconds(pid)
        result = run_load(port, paths, concurrency, requests, duration)
        cpu = process_cpu_seconds(pid) - cpu_before
        result["server_cpu_ms_per_request"] = (
            round(1000 * cpu / result["requests"], 3) if result["requests"] else None
        )
        log.info("concurrency %d: %s", concurrency, result)
        results.append(result)
    return results


def run_gateway_bench(cfg: GatewayBenchConfig, work: Path) -> dict[str, Any]:
    """Measure the gateway, then the seed-style reference, on the same checkpoint and paths."""
    load_before = os.getloadavg()[0]
    checkpoint = cfg.checkpoint or synthetic_checkpoint(work / "final")
    ckpt = read_checkpoint(checkpoint)
    if not ckpt.has_user_factors:
        raise FedrecError(f"{checkpoint}: no user factors; GET /recommend needs them")
    if not (ckpt.path / MODEL).is_file():
        raise FedrecError(f"{ckpt.path / MODEL}: missing; the seed-style reference needs it")
    paths = work / "paths.txt"
    paths.write_text(
        "".join(f"/recommend?user_id={int(u)}&n={cfg.n}\n" for u in ckpt.arrays["user_ids"])
    )
    python = sys.executable
    port = free_port()
    gateway_cmd = gateway_command(ckpt.path, port)
    with gateway_server(gateway_cmd, port, work / "gateway.log", timeout=60) as pid:
        gateway = _measure(pid, port, paths, cfg.concurrency, cfg.requests, cfg.duration)
    port = free_port()
    reference_cmd = [
        python,
        "-m",
        "fedrec_app.bench.reference",
        "--checkpoint",
        str(ckpt.path),
        "--port",
        str(port),
    ]
    with gateway_server(reference_cmd, port, work / "reference.log", timeout=180) as pid:
        reference = _measure(
            pid, port, paths, cfg.concurrency, cfg.reference_requests, cfg.reference_duration
        )
    rows = []
    for g, r in zip(gateway, reference, strict=True):
        rows.append(
            {
                "concurrency": g["concurrency"],
                "gateway": g,
                "reference": r,
                "speedup": round(g["rps"] / r["rps"], 1) if r["rps"] else None,
            }
        )
    return {
        "benchmark": "gateway GET /recommend",
        "checkpoint": "synthetic (ML-100k size)" if cfg.checkpoint is None else str(ckpt.path),
        "num_users": len(ckpt.arrays["user_ids"]),
        "num_items": len(ckpt.catalogue),
        "machine": machine_facts(load_before),
        "config": {**asdict(cfg), "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None},
        "results": rows,
    }


def machine_facts(load_before: float) -> dict[str, Any]:
    """Where a bench ran: cores, Python, platform, 1-minute load before and after."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"GET /recommend (n={result['config']['n']}), {result['checkpoint']}: "
        f"{result['num_users']} users, {result['num_items']} items; "
        f"{result['machine']['cpus']} CPUs, 1-minute load average "
        f"{' → '.join(str(x) for x in result['machine']['load_average_1m'])} (before → after).",
        "",
        "| concurrency | gateway req/s | gateway p50 / p99 ms | reference req/s "
        "| reference p50 / p99 ms | speed-up | server CPU ms/request (gw / ref) "
        "| failed (gw / ref) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["results"]:
        g, r = row["gateway"], row["reference"]
        lines.append(
            f"| {row['concurrency']} | {g['rps']:,.0f} | {g['p50_ms']} / {g['p99_ms']} "
            f"| {r['rps']:,.1f} | {r['p50_ms']} / {r['p99_ms']} | {row['speedup']}x "
            f"| {g.get('server_cpu_ms_per_request')} / {r.get('server_cpu_ms_per_request')} "
            f"| {g['failed']} / {r['failed']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], json_path: Path, table: str | None = None) -> Path:
    """Write ``json_path`` and the Markdown table next to it (``.md``), atomically; returns it."""
    md_path = json_path.with_suffix(".md")
    write_json_atomic(json_path, result)
    atomic_write(md_path, markdown(result) if table is None else table)
    return md_path


def run_and_write(cfg: GatewayBenchConfig, json_path: Path, work_dir: Path | None = None) -> str:
    """Run the benchmark, write JSON + Markdown, return the Markdown table."""
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-gateway-") as tmp:
        work = work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_gateway_bench(cfg, work)
    write_results(result, json_path)
    return markdown(result)
