"""Which app code a SuperNode runs: FAB hashes its admin approved, in an allowlist file.

An app is identified by the sha256 of its FAB, the zip that ``flwr run APP_DIR`` builds and sends
(Flower builds it deterministically: sorted files, fixed zip dates), so ``app_hash(app_dir)`` on
the reviewed checkout is the hash every node sees for a run of that checkout, and any change to
a file the FAB carries changes it.

The allowlist is a text file, one sha256 hex digest per line; ``#`` starts a comment (also after
a digest), blank lines are ignored. It is not secret (0644 is fine) but it decides what runs, so
it must be owned by the node's user or root and not writable by group or others, and its folder
must not be writable by others: otherwise it is refused (``check_file``). ``AppGate`` reads it
again for every new run, so an admin approves a new hash without restarting the node; a file it
cannot read or parse approves nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import atomic_write

DIGEST = re.compile(r"^[0-9a-f]{64}$")
HEADER = "# sha256 of each FAB this node may run (`fedrec app hash APP_DIR`)\n"


class ApprovalError(FedrecError):
    """A bad allowlist (named with file and line) or an app that cannot be built into a FAB."""


def fab_hash(content: bytes) -> str:
    """The sha256 hex digest of a FAB's bytes (what Flower calls the FAB hash)."""
    return hashlib.sha256(content).hexdigest()


def app_hash(app_dir: Path) -> str:
    """The sha256 hex of the FAB that ``flwr run <app_dir>`` would submit."""
    from flwr.cli.build import build_fab_from_disk

    app_dir = Path(app_dir)
    if not (app_dir / "pyproject.toml").is_file():
        raise ApprovalError(f"{app_dir}: no pyproject.toml (not a Flower app folder)")
    try:
        return fab_hash(build_fab_from_disk(app_dir))
    except Exception as exc:  # Flower raises ValueError, OSError or its own click errors
        raise ApprovalError(f"{app_dir}: cannot build its FAB: {exc}") from None


def app_label(app_dir: Path) -> str:
    """``@publisher/name==version`` from the app's pyproject.toml ('' when unreadable)."""
    try:
        config = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
        project = config["project"]
        publisher = config["tool"]["flwr"]["app"]["publisher"]
        return f"@{publisher}/{project['name']}=={project['version']}"
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return ""


def check_file(path: Path) -> None:
    """Refuse an allowlist that someone other than the node's admin could change."""
    path = Path(path)
    try:
        info = path.stat()
        # the folder of the name given and, for a symlink, the folder of the file it points to
        folders = [p.stat() for p in {path.absolute().parent, path.resolve().parent}]
    except OSError as exc:
        raise ApprovalError(f"{path}: cannot read the allowlist ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ApprovalError(f"{path}: the allowlist is not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise ApprovalError(
            f"{path}: the allowlist is owned by uid {info.st_uid}, not by this "
            f"node's user (uid {os.geteuid()}) or root"
        )
    if info.st_mode & 0o022:
        raise ApprovalError(
            f"{path}: the allowlist is writable by group or others "
            f"(mode {info.st_mode & 0o777:o}); chmod go-w it"
        )
    if any(f.st_mode & 0o002 and not f.st_mode & stat.S_ISVTX for f in folders):
        raise ApprovalError(f"{path}: its folder is writable by others, who could replace it")


def parse_allowlist(text: str, source: str = "<allowlist>") -> frozenset[str]:
    """The digests in an allowlist's text (lower case); ApprovalError naming ``source:line``."""
    digests = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not DIGEST.match(entry.lower()):
            raise ApprovalError(
                f"{source}:{number}: {entry[:80]!r} is not a sha256 hex digest "
                "(64 hex characters, e.g. from `fedrec app hash`)"
            )
        digests.add(entry.lower())
    return frozenset(digests)


def read_allowlist(path: Path) -> frozenset[str]:
    """The approved digests in ``path``, after ``check_file``; ApprovalError otherwise."""
    path = Path(path)
    check_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApprovalError(f"{path}: cannot read the allowlist ({exc})") from None
    return parse_allowlist(text, str(path))


def append_to_allowlist(path: Path, digest: str, comment: str = "") -> bool:
    """Add ``digest`` (with an optional comment) to the allowlist, atomically; False when it was
    there already. A new file is created 0644; an existing one must pass ``read_allowlist``."""
    path = Path(path)
    digest = digest.strip().lower()
    if not DIGEST.match(digest):
        raise ApprovalError(f"{digest[:80]!r} is not a sha256 hex digest (64 hex characters)")
    if "\n" in comment or "\r" in comment:
        raise ApprovalError("the comment must be one line")
    text = ""
    if path.exists():
        if digest in read_allowlist(path):
            return False
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text += "\n"
    else:
        text = HEADER
    text += f"{digest}  # {comment}\n" if comment else f"{digest}\n"
    atomic_write(path, text, 0o644)
    return True


def create_allowlist(path: Path) -> Path:
    """An allowlist that approves nothing yet (0644), unless ``path`` exists already."""
    path = Path(path)
    if not path.exists():
        atomic_write(path, HEADER, 0o644)
    return path


@dataclass(frozen=True)
class Verdict:
    """What the gate decided for one FAB: its real hash, whether it may run, and why (for the
    node's log only: e.g. why the allowlist was unusable)."""

    digest: str
    approved: bool
    detail: str


class AppGate:
    """Decides whether a fetched FAB may run here: its content's sha256 (never the hash the
    SuperLink claims) must be in the allowlist, read again for every decision."""

    def __init__(self, allowlist: Path) -> None:
        self.allowlist = Path(allowlist)

    def check(self, content: bytes, claimed: tuple[str, ...] = ()) -> Verdict:
        """Approve ``content`` if its hash is on the list and equals every ``claimed`` hash."""
        digest = fab_hash(content)
        mismatched = [c for c in claimed if c.lower() != digest]
        if mismatched:
            return Verdict(digest, False, f"its claimed hash {mismatched[0]!r} differs")
        try:
            approved = read_allowlist(self.allowlist)
        except ApprovalError as exc:
            return Verdict(digest, False, f"allowlist unusable, so nothing is approved: {exc}")
        if digest not in approved:
            return Verdict(digest, False, f"not in {self.allowlist} ({len(approved)} entries)")
        return Verdict(digest, True, f"in {self.allowlist}")
