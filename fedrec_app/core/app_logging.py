"""Logging inside the Flower app processes (flwr-serverapp, flwr-clientapp, simulation actors)."""

from __future__ import annotations

import logging


def log_to_stderr() -> None:
    """Show this package's INFO logs (Flower configures only its own logger); idempotent."""
    package = logging.getLogger("fedrec_app")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
