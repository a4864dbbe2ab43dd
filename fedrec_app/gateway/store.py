"""The loaded model and its safe replacement: verify first, then swap atomically, else keep.

Verifying means the federation's signature (``verify_key``) over the manifest, then the sha256
of every file: a forged checkpoint is refused at start (CheckpointError) and at reload (logged,
counted; the old model keeps serving).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from fedrec_app.core.checkpoint import MANIFEST, CheckpointError
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.signing import load_verify_key
from fedrec_app.gateway.recommender import Recommender

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

RUN_POINTERS = ("final", "latest")


def resolve_checkpoint(source: Path) -> Path:
    """``source`` if a checkpoint folder, else its ``final/`` or ``latest/`` (a run folder)."""
    if (source / MANIFEST).is_file():
        return source
    for name in RUN_POINTERS:
        if (source / name / MANIFEST).is_file():
            return source / name
    raise CheckpointError(
        f"{source}: neither a checkpoint folder (no {MANIFEST}) nor a run folder with "
        f"{' or '.join(RUN_POINTERS)}/"
    )


def load_source(source: Path, verify_key: Ed25519PublicKey | None) -> Recommender:
    """Verify and load what the gateway serves from ``source`` (a checkpoint folder, a run
    folder or a link such as ``current``), as at start; CheckpointError names the folder."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source}: no such checkpoint folder (nothing to serve)")
    return Recommender.load(resolve_checkpoint(source), verify_key)


def _signature(source: Path) -> tuple[str, int, int] | None:
    """What identifies the checkpoint ``source`` points at now (None when there is none)."""
    try:
        folder = resolve_checkpoint(source)
        stat = os.stat(folder / MANIFEST)
    except (OSError, CheckpointError):
        return None
    return os.path.realpath(folder), stat.st_ino, stat.st_mtime_ns


class ModelStore:
    """Holds the current :class:`Recommender`; reads of ``current`` never see a partial model."""

    def __init__(
        self, source: Path, verify_key: Path | None = None, allow_unsigned: bool = False
    ) -> None:
        self.source = Path(source)
        if verify_key is None and not allow_unsigned:
            raise FedrecError(
                f"{self.source}: no verify key: give the federation's public key "
                "(federation-signing.pub) to check checkpoint signatures, or allow unsigned "
                "checkpoints explicitly (insecure)"
            )
        self.verify_key = load_verify_key(verify_key) if verify_key is not None else None
        if self.verify_key is None:
            log.warning(
                "serving UNSIGNED checkpoints: no signature is checked (--allow-unsigned); "
                "anyone who can write %s can change the answers",
                self.source,
            )
        self._lock = threading.Lock()
        self._signature = _signature(self.source)
        self.current: Recommender = load_source(self.source, self.verify_key)
        self.reloads = {"ok": 0, "refused": 0}
        self.last_refusal: str | None = None
        log.info("serving %s", describe(self.current))
        warn_without_rated_movies(self.current)

    def reload(self, force: bool = False) -> bool:
        """Load the checkpoint ``source`` points at if it changed (or ``force``); True if swapped.

        An invalid checkpoint is refused and logged; the current one keeps serving.
        """
        with self._lock:
            signature = _signature(self.source)
            if not force and signature in (self._signature, None):
                return False  # unchanged, or mid-replacement (nothing there): look again later
            self._signature = signature
            try:
                new = Recommender.load(resolve_checkpoint(self.source), self.verify_key)
            except Exception as exc:  # whatever is wrong with it, the new checkpoint is refused
                self.reloads["refused"] += 1
                reason = exc if isinstance(exc, FedrecError) else f"{type(exc).__name__}: {exc}"
                self.last_refusal = str(reason)
                log.error("reload refused: %s; still serving %s", reason, describe(self.current))
                return False
            self.current = new
            self.reloads["ok"] += 1
            log.info("reloaded: now serving %s", describe(new))
            warn_without_rated_movies(new)
            return True


def describe(recommender: Recommender) -> str:
    manifest = recommender.manifest
    return (
        f"run {manifest.get('run_id', '?')} round {manifest.get('round')} "
        f"({recommender.checkpoint.path})"
    )


def warn_without_rated_movies(recommender: Recommender) -> None:
    """A WARNING when a checkpoint has user factors but not the movies each user rated (one
    written before nodes shared them): GET /recommend may then list movies a user rated."""
    if recommender.has_user_factors and not recommender.has_rated_movies:
        log.warning(
            "%s holds user factors but not the movies each user rated (written by an older "
            "fedrec): GET /recommend may list movies a user already rated",
            recommender.checkpoint.path,
        )


async def watch(store: ModelStore, interval: float) -> None:
    """Poll the served path every ``interval`` seconds and reload when it changes."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(store.reload)
        except Exception:  # a watcher that dies silently would be worse than a logged error
            log.exception("checkpoint watcher: unexpected error")
