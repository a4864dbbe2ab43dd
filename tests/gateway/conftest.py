"""Gateway fixtures: small checkpoints in the real format, and real gateway processes.

Checkpoints are signed with the test process's federation key (`signing_keys`) and gateways
verify them with its public half, as in production.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from signing_keys import signing_key, verify_key_file

from fedrec_app.core.checkpoint import write_checkpoint
from fedrec_app.core.rated import from_lists
from fedrec_app.data.catalogue import GENRES, Catalogue

HISTORY_ROUNDS = 4


def small_catalogue(num_items: int) -> Catalogue:
    """Movies 1, 3, 5, … (ids with gaps, as real catalogues may have), a few genres each."""
    ids = np.arange(1, 2 * num_items, 2)
    return Catalogue(
        ids,
        tuple(f"Test Movie {m} ({1970 + m % 30})" for m in ids),
        tuple(None if m == 3 else 1970 + int(m) % 30 for m in ids),
        tuple((GENRES[1 + m % 5],) + ((GENRES[8],) if m % 3 == 0 else ()) for m in ids),
    )


def make_checkpoint(
    folder: Path,
    *,
    seed: int = 0,
    num_users: int = 25,
    num_items: int = 40,
    dim: int = 4,
    rank_dim: int = 3,
    user_factors: bool = True,
    round_: int = HISTORY_ROUNDS,
    run_id: str = "test-run",
    signed: bool = True,
    key: Ed25519PrivateKey | None = None,
    rated: bool = True,
    hyperparameters: dict | None = None,
) -> Path:
    """Write a checkpoint with random arrays (user ids 1..num_users) via the real writer,
    signed with ``key`` (default: the test federation's key) unless not ``signed``.

    With user factors and ``rated``, each user has rated movies (``user_rated_*``): the two
    movies their ranking head scores highest plus two at random, so that a list that did not
    leave them out would show them."""
    rng = np.random.default_rng(seed)
    catalogue = small_catalogue(num_items)

    def normal(*shape: int, scale: float = 0.5) -> np.ndarray:
        return rng.normal(0.0, scale, shape).astype(np.float32)

    arrays: dict[str, np.ndarray] = {
        "item_ids": catalogue.movie_ids,
        "item_embedding": normal(num_items, dim),
        "item_bias": normal(num_items),
        "item_rank_embedding": normal(num_items, rank_dim, scale=1.0),
        "item_rank_bias": normal(num_items),
        "global_bias": np.float32(3.3),
    }
    if user_factors:
        arrays |= {
            "user_ids": np.arange(1, num_users + 1, dtype=np.int64),
            "user_embedding": normal(num_users, dim),
            "user_bias": normal(num_users, scale=0.3),
            "user_rank_embedding": normal(num_users, rank_dim, scale=1.0),
        }
        if rated:
            scores = arrays["user_rank_embedding"] @ arrays["item_rank_embedding"].T
            lists = [
                catalogue.movie_ids[
                    np.union1d(np.argsort(-row)[:2], rng.choice(num_items, 2, replace=False))
                ]
                for row in scores + arrays["item_rank_bias"]
            ]
            arrays |= from_lists(lists)
    history = [
        {"round": r, "rmse": 1.2 - 0.05 * r, "ndcg@10": 0.1 + 0.04 * r}
        for r in range(1, round_ + 1)
    ]
    manifest = {
        "run_id": run_id,
        "round": round_,
        "model": {
            "type": "fedrec-mf",
            "hyperparameters": {"embedding_dim": dim, **(hyperparameters or {})},
        },
        "metrics": history[-1] if history else {},
        "history": history,
        "run_config": {},
    }
    key = (key or signing_key()) if signed else None
    return write_checkpoint(folder, arrays, catalogue, manifest, signing_key=key)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with user factors (module-scoped: read-only for the tests)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "round-0004")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gateway:
    process: subprocess.Popen
    url: str
    log: Path
    verify: ssl.SSLContext | bool = True

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.verify, timeout=10, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    checkpoint: Path, log_dir: Path, *args: str, tls_ca: Path | None = None
) -> Gateway:
    """`fedrec gateway` in a subprocess on a free port; returns once /healthz answers.

    It verifies checkpoints with the test federation's key unless ``args`` name another
    ``--verify-key`` or ``--allow-unsigned``."""
    if "--verify-key" not in args and "--allow-unsigned" not in args:
        args = ("--verify-key", str(verify_key_file()), *args)
    port = free_port()
    log = log_dir / f"gateway-{port}.log"
    scheme = "https" if tls_ca else "http"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedrec_app",
                "gateway",
                "--checkpoint",
                str(checkpoint),
                "--port",
                str(port),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    verify = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
    gateway = Gateway(process, f"{scheme}://127.0.0.1:{port}", log, verify)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.log_text()}")
        try:
            with gateway.client() as client:
                if client.get("/healthz").status_code == 200:
                    return gateway
        except httpx.TransportError:
            time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not answer /healthz in 30 s:\n{gateway.log_text()}")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways for one test; all are stopped at its end."""
    started: list[Gateway] = []

    def start(checkpoint: Path, *args: str, tls_ca: Path | None = None) -> Gateway:
        started.append(start_gateway(checkpoint, tmp_path, *args, tls_ca=tls_ca))
        return started[-1]

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One plain-HTTP gateway on ``checkpoint_dir`` shared by a module's contract tests."""
    started = start_gateway(checkpoint_dir, tmp_path_factory.mktemp("gwlog"))
    yield started
    started.stop()


@pytest.fixture
def checkpoint_factory() -> Callable[..., Path]:
    """``make_checkpoint`` for tests that need their own checkpoints."""
    return make_checkpoint


def reloads(client, result: str) -> int:
    """The gateway's ``reloads_total{result=…}`` counter, read from its /metrics."""
    text = client.get("/metrics").text
    match = re.search(rf'fedrec_gateway_reloads_total{{result="{result}"}} (\S+)', text)
    return int(float(match.group(1))) if match else 0
