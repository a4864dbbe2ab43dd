"""File helpers: atomic writes (temp file beside the target, fsync, rename), sha256 of bytes and
files, and the check of a folder's files against the sha256 digests a manifest lists."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrec_app.core.errors import FedrecError


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically with permission bits `mode` (set before any byte lands)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, value: Any, mode: int = 0o644) -> Path:
    """Write `value` as indented JSON (one trailing newline) to `path`, atomically."""
    return atomic_write(path, json.dumps(value, indent=2) + "\n", mode)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks; FedrecError naming it when unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def check_sha256s(
    folder: Path,
    expected: Mapping[str, str],
    listed_in: str,
    error: type[FedrecError] = FedrecError,
) -> None:
    """Check that each file ``expected`` names (a plain name in ``folder``) has that sha256;
    ``error`` names the first that is not a plain name, missing, unreadable or different.
    ``listed_in`` names the list in the messages ("the manifest")."""
    folder = Path(folder)
    for name, digest in expected.items():
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise error(f"{folder}: {listed_in} lists {name!r}, which is not a plain file name")
        path = folder / name
        if not path.is_file():
            raise error(f"{path}: missing (listed in {listed_in})")
        try:
            actual = sha256_file(path)
        except FedrecError as exc:
            raise error(str(exc)) from exc
        if actual != digest:
            raise error(f"{path}: sha256 does not match {listed_in} (altered or partial)")
