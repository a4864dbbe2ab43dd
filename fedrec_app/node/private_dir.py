"""Folders that no other local user can plant into: a node's state dir and the warm trainer's
socket live in one.

A folder is *safe* when only this user (and root) can change what it holds: it is owned by this
user and not writable by group or others, and every folder above it is owned by root or this user
and is not writable by group or others unless it is sticky (like ``/tmp``, where nobody can
rename or remove an entry that is not theirs). A *private* folder is safe and has no group or
other bits at all (0700). Missing folders are created 0700. A folder that fails is refused with a
message naming it; it is never repaired behind the admin's back.

The default home of node state (a node-config without ``state-dir``, and every simulated node) is
a private folder under this user's own ``$XDG_STATE_HOME/fedrec`` (default
``~/.local/state/fedrec``), never a guessable path in the shared temp dir.

Standard library only: the per-message ClientApp process imports it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fedrec_app.core.errors import FedrecError

STATE_HOME_ENV = "XDG_STATE_HOME"


class UnsafeFolderError(FedrecError):
    """A folder (or a file in it) that another local user could have planted or could change,
    or one that cannot be created."""


def default_state_base() -> Path:
    """``$XDG_STATE_HOME/fedrec`` when that is set to an absolute path, else
    ``~/.local/state/fedrec``: this user's own, never the shared temp dir."""
    xdg = os.environ.get(STATE_HOME_ENV, "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fedrec"
    try:
        home = Path.home()
    except RuntimeError as exc:  # no HOME and no passwd entry
        raise UnsafeFolderError(
            f"no home folder for node state ({exc}): set {STATE_HOME_ENV} "
            "or give the node a state-dir"
        ) from exc
    return home / ".local" / "state" / "fedrec"


def ensure_dir(path: Path, private: bool = False) -> Path:
    """``path`` resolved, created 0700 (with its missing parents) if absent, once it passes the
    checks of ``check_dir``. Raises UnsafeFolderError naming the folder otherwise."""
    folder = Path(path).expanduser().resolve()
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for part in reversed(missing):
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile: the checks below decide
        except OSError as exc:
            raise UnsafeFolderError(f"cannot create {part}: {exc.strerror or exc}") from exc
    return check_dir(folder, private)


def check_dir(path: Path, private: bool = False) -> Path:
    """``path`` resolved, after checking that it is safe (``private``: also no group or other
    bits). Raises FileNotFoundError when it does not exist, UnsafeFolderError when it fails."""
    folder = Path(path).expanduser().resolve()
    uid = os.getuid()
    st = os.lstat(folder)  # resolved: a link here now was swapped in since
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolderError(f"{folder} is not a folder")
    if st.st_uid != uid:
        raise UnsafeFolderError(
            f"{folder} is owned by uid {st.st_uid}, not by this user "
            f"(uid {uid}): another user may have planted it; refusing "
            "it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if private and mode & 0o077:
        raise UnsafeFolderError(
            f"{folder} has mode {mode:o}; it must be private to its owner (chmod 700 it)"
        )
    if mode & 0o022:
        raise UnsafeFolderError(
            f"{folder} is writable by group or others (mode {mode:o}); refusing it (chmod go-w it)"
        )
    for parent in folder.parents:
        pst = os.stat(parent)
        if pst.st_uid not in (0, uid):
            raise UnsafeFolderError(
                f"{parent}, above {folder}, is owned by uid {pst.st_uid}: "
                "that user could swap the folder; refusing it"
            )
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            raise UnsafeFolderError(
                f"{parent}, above {folder}, is writable by group or others "
                f"(mode {stat.S_IMODE(pst.st_mode):o}) without the sticky "
                "bit: they could swap the folder; refusing it"
            )
    return folder


def check_own_entry(st: os.stat_result, path: Path, kind: str) -> None:
    """Refuse ``path`` (stat ``st``, taken without following a link) unless it is a ``kind``
    ("socket" or "file") owned by this user with no group or other bits."""
    is_kind = stat.S_ISSOCK(st.st_mode) if kind == "socket" else stat.S_ISREG(st.st_mode)
    if not is_kind:
        raise UnsafeFolderError(f"{path} is not a {kind}; refusing it")
    if st.st_uid != os.getuid():
        raise UnsafeFolderError(
            f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()}); refusing it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UnsafeFolderError(f"{path} has mode {mode:o}, not private to its owner; refusing it")
