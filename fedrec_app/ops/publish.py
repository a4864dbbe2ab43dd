"""`fedrec checkpoint publish SRC --to SERVE_DIR`: hand a checkpoint to a running gateway safely.

A checkpoint fetched onto the gateway host (into an incoming folder, never the served one) is
copied into ``SERVE_DIR/releases/<run-id>-round-NNNN-<sha>/`` under a temporary name, verified
there (the federation's signature over manifest.json, then the sha256 of every file), given the
checkpoint modes (folders 0750, files 0640) and renamed into place; only then is the symlink
``SERVE_DIR/current`` repointed, atomically (a new link under a temporary name, then rename).
A gateway started with ``--checkpoint SERVE_DIR/current --watch`` reloads when the link moves.
A checkpoint that does not verify is refused and ``current`` is left as it was. Older releases
beyond ``keep`` are removed, never the one ``current`` points at.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec_app.core.checkpoint import (
    FILE_MODE,
    FOLDER_MODE,
    MANIFEST,
    SIGNATURE,
    Checkpoint,
    CheckpointError,
    point,
    read_checkpoint,
    replace_dir,
    round_folder_name,
    verify_checkpoint,
)
from fedrec_app.core.files import sha256_bytes
from fedrec_app.core.signing import load_verify_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

CURRENT, RELEASES, LOCK = "current", "releases", ".publish.lock"
DEFAULT_KEEP = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Published:
    release: Path  # SERVE_DIR/releases/<name>
    current: Path  # SERVE_DIR/current, now pointing at release
    previous: Path | None  # what current pointed at before (None: nothing)
    removed: tuple[Path, ...]  # old releases pruned


def release_name(manifest: dict[str, Any], manifest_bytes: bytes) -> str:
    """``<run-id>-round-NNNN-<first 12 hex of sha256(manifest.json)>``: unique per content."""
    run_id = _UNSAFE.sub("_", str(manifest.get("run_id", "run"))).strip("._") or "run"
    digest = sha256_bytes(manifest_bytes)[:12]
    return f"{run_id}-{round_folder_name(int(manifest['round']))}-{digest}"


def current_release(serve_dir: Path) -> Path | None:
    """The release folder ``serve_dir/current`` points at (None when there is no link)."""
    link = Path(serve_dir) / CURRENT
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def publish(source: Path, serve_dir: Path, verify_key: Path, keep: int = DEFAULT_KEEP) -> Published:
    """Stage, verify and switch ``serve_dir/current`` to the checkpoint folder ``source``.

    Raises CheckpointError (naming the file) when ``source`` is not a complete checkpoint
    signed by ``verify_key``; ``current`` is then untouched.
    """
    if keep < 1:
        raise CheckpointError(f"keep {keep}: must be at least 1 (the current release)")
    source, serve_dir = Path(source), Path(serve_dir)
    key = load_verify_key(verify_key)
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such checkpoint folder")
    # The whole check on the source first, so a refusal names the file the operator copied.
    checkpoint = read_checkpoint(source, key)
    manifest_bytes = (checkpoint.path / MANIFEST).read_bytes()
    name = release_name(checkpoint.manifest, manifest_bytes)
    link = serve_dir / CURRENT
    if link.exists() and not link.is_symlink():
        raise CheckpointError(
            f"{link}: a folder, not the link publish switches: move it away "
            "(publish it from there) and publish again"
        )
    try:
        return _publish(checkpoint, name, serve_dir, key, keep)
    except OSError as exc:
        raise CheckpointError(f"{serve_dir}: cannot publish into it: {exc}") from None


def _publish(
    checkpoint: Checkpoint, name: str, serve_dir: Path, key: Ed25519PublicKey, keep: int
) -> Published:
    releases = serve_dir / RELEASES
    for folder in (serve_dir, releases):
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(FOLDER_MODE)
    with _locked(serve_dir):
        _remove_stale_temps(releases)
        release = releases / name
        if release.is_dir() and not release.is_symlink():
            try:  # published before: reuse it if it is still intact
                verify_checkpoint(release, key)
            except CheckpointError as exc:
                log.warning("%s: replacing a damaged copy (%s)", release, exc)
                _stage(checkpoint.path, checkpoint.manifest, release, key)
        else:
            _stage(checkpoint.path, checkpoint.manifest, release, key)
        os.utime(release)  # publish order, for pruning
        previous = current_release(serve_dir)
        link = point(serve_dir, CURRENT, release)
        _fsync(serve_dir)
        removed = prune(serve_dir, keep)
    log.info(
        "published %s (round %s of run %s); current was %s",
        release,
        checkpoint.manifest.get("round"),
        checkpoint.manifest.get("run_id"),
        previous,
    )
    return Published(release=release, current=link, previous=previous, removed=removed)


def prune(serve_dir: Path, keep: int = DEFAULT_KEEP) -> tuple[Path, ...]:
    """Remove all but the ``keep`` most recently published releases; never the current one."""
    releases = Path(serve_dir) / RELEASES
    current = current_release(serve_dir)
    folders = [
        p
        for p in releases.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    folders.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    kept = [p for p in folders if p.resolve() == current]
    removed = []
    for folder in folders:
        if folder.resolve() == current:
            continue
        if len(kept) < keep:
            kept.append(folder)
            continue
        shutil.rmtree(folder)
        removed.append(folder)
        log.info("removed old release %s", folder)
    return tuple(removed)


def _stage(source: Path, manifest: dict[str, Any], release: Path, key: Ed25519PublicKey) -> None:
    """Copy the manifest's files into a temporary folder beside ``release``, verify the copy,
    fix its modes and rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{release.name}.", suffix=".tmp", dir=release.parent))
    try:
        names = dict.fromkeys([MANIFEST, SIGNATURE, *manifest["files"]])
        for name in names:
            _copy_file(source / name, tmp / name)
        try:
            verify_checkpoint(tmp, key)
        except CheckpointError as exc:  # the source changed while it was copied
            raise CheckpointError(f"{source}: changed while it was copied ({exc})") from None
        tmp.chmod(FOLDER_MODE)
        _fsync(tmp)
        replace_dir(tmp, release)  # a damaged earlier copy is swapped out, then removed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy_file(src: Path, dest: Path) -> None:
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CheckpointError(f"{src}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as reader, open(dest, "xb") as writer:
        os.fchmod(writer.fileno(), FILE_MODE)
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _remove_stale_temps(releases: Path) -> None:
    """Temporary folders left by an interrupted publish (we hold the lock: none is in use)."""
    for path in releases.iterdir():
        if path.name.startswith(".") and path.name.endswith((".tmp", ".old")):
            shutil.rmtree(path, ignore_errors=True)


def _fsync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _locked:
    """An exclusive lock on ``serve_dir/.publish.lock``: one publish at a time."""

    def __init__(self, serve_dir: Path) -> None:
        self.path = serve_dir / LOCK

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
