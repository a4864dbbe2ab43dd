"""API keys: read from a file, checked in constant time against ``Authorization: Bearer``."""

from __future__ import annotations

import hmac
import logging
import stat
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fedrec_app.core.errors import FedrecError

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="API key (only when the gateway has keys)")


def load_api_keys(path: Path) -> frozenset[str]:
    """One key per line; blank lines and lines starting with ``#`` are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise FedrecError(f"{path}: cannot read API keys: {exc}") from exc
    keys = frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise FedrecError(f"{path}: no API keys in the file")
    short = sorted(k for k in keys if len(k) < 16)
    if short:
        raise FedrecError(f"{path}: API keys must be at least 16 characters ({len(short)} shorter)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: API key file is readable by others; chmod 600 it", path)
    return keys


def key_matches(candidate: str, keys: frozenset[str]) -> bool:
    """Constant-time comparison against every key (no early exit)."""
    given = candidate.encode("utf-8")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """401 unless the gateway has no keys or the request carries one of them."""
    keys: frozenset[str] = request.app.state.settings.api_keys
    if keys and (credentials is None or not key_matches(credentials.credentials, keys)):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (send 'Authorization: Bearer <key>')",
            headers={"WWW-Authenticate": "Bearer"},
        )
