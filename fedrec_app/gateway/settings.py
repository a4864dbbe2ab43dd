"""Everything the gateway can be configured with, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GatewaySettings:
    """Gateway configuration (the CLI fills it from its flags)."""

    checkpoint: Path
    """A checkpoint folder, or a run folder (its ``final/``, else ``latest/``, is served)."""
    verify_key: Path | None = None
    """The federation's public key (federation-signing.pub): only checkpoints it verifies are
    served, at start and at every reload. Required unless ``allow_unsigned``."""
    allow_unsigned: bool = False
    """Serve checkpoints without checking any signature (insecure; logged as a WARNING)."""
    min_rating: float = 2.0
    """Only items with at least this predicted rating are recommended."""
    api_keys: frozenset[str] = frozenset()
    """Accepted ``Authorization: Bearer`` keys; empty means no authentication."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty means CORS is off."""
    max_body_bytes: int = 1 << 20
    watch: bool = False
    """Reload when the served folder (e.g. ``latest`` or ``final``) changes."""
    watch_interval: float = 2.0
    open_docs: bool = False
    """Serve /docs, /redoc and /openapi.json even with API keys on (without keys they are open)."""
