"""MovieLens 100k from GroupLens (or a local zip): download, md5 check, atomic extraction.

Whatever it created is removed when it fails; offline, the error names ``--zip``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import sha256_file, write_json_atomic
from fedrec_app.data.movielens import (
    FOLDER_NAME,
    MARKER,
    DatasetCounts,
    verify_movielens_folder,
)

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
OFFICIAL_MD5 = "0e33842e24a9c977be4e0107933c0723"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadResult:
    folder: Path
    already_present: bool
    counts: DatasetCounts


def download(
    dest: Path,
    url: str = GROUPLENS_URL,
    md5: str = OFFICIAL_MD5,
    zip_path: Path | None = None,
) -> DownloadResult:
    """Fetch (or take ``zip_path``), check ``md5`` and extract into ``dest/ml-100k`` atomically.

    An existing valid folder is left alone; an existing invalid one is refused, never replaced.
    """
    dest = Path(dest)
    target = dest / FOLDER_NAME
    if target.exists():
        try:
            counts = verify_movielens_folder(target)
        except FedrecError as exc:
            raise FedrecError(
                f"{target} already exists but is not a valid MovieLens 100k folder ({exc}); "
                "remove it or choose another --data"
            ) from exc
        return DownloadResult(target, True, counts)
    md5 = md5.strip().lower()
    archive = None if zip_path is None else Path(zip_path)
    if archive is not None and not archive.is_file():
        raise FedrecError(f"{archive}: archive not found")
    created = _make_folder(dest)
    try:
        if archive is not None:
            _check_md5(archive, _file_md5(archive), md5)
            return DownloadResult(target, False, _extract(archive, target, md5, str(archive)))
        fd, tmp_name = tempfile.mkstemp(prefix=".ml-100k.", suffix=".zip.part", dir=dest)
        os.close(fd)
        tmp_zip = Path(tmp_name)
        try:
            _check_md5(tmp_zip, _fetch(url, tmp_zip), md5, source=url)
            return DownloadResult(target, False, _extract(tmp_zip, target, md5, url))
        finally:
            tmp_zip.unlink(missing_ok=True)
    except BaseException:
        _remove_empty(created)  # a failed download leaves no empty data folder behind
        raise


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and missing parents); the folders it created, deepest first."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise FedrecError(
            f"--data {folder}: cannot create the data folder ({exc.strerror or exc})"
        ) from exc
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, where they are empty (never anything else)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


_OFFLINE_HINT = (
    "no network? download ml-100k.zip on another machine and pass --zip path/to/ml-100k.zip "
    "(with --md5 HEX if it was repacked)"
)


def _fetch(url: str, out: Path) -> str:
    """Stream ``url`` into ``out`` with a progress bar; return the md5 of what arrived."""
    import httpx
    from tqdm import tqdm

    digest = hashlib.md5()
    received = 0
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as response:
            response.raise_for_status()
            length = response.headers.get("content-length", "")
            encoded = "content-encoding" in response.headers  # length counts encoded bytes then
            total = int(length) if length.isdigit() and not encoded else None
            with (
                out.open("wb") as handle,
                tqdm(total=total, unit="B", unit_scale=True, desc=FOLDER_NAME + ".zip") as bar,
            ):
                for chunk in response.iter_bytes(_CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPStatusError as exc:
        raise FedrecError(
            f"download of {url} failed: HTTP {exc.response.status_code}; {_OFFLINE_HINT}"
        ) from exc
    except httpx.HTTPError as exc:
        raise FedrecError(f"download of {url} failed: {exc}; {_OFFLINE_HINT}") from exc
    if total is not None and received != total:
        raise FedrecError(f"download of {url} truncated: got {received} of {total} bytes")
    log.info("downloaded %s (%d bytes)", url, received)
    return digest.hexdigest()


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path, actual: str, expected: str, source: str | None = None) -> None:
    if actual != expected:
        raise FedrecError(
            f"{source or path}: md5 {actual} does not match the expected {expected} "
            "(truncated or altered archive; for a repacked archive give its md5 with --md5)"
        )


def _extract(archive: Path, target: Path, md5: str, source: str) -> DatasetCounts:
    """Unpack ``ml-100k/`` from ``archive`` into a temp folder, verify it, rename to ``target``."""
    staging = Path(tempfile.mkdtemp(prefix=".ml-100k.", suffix=".tmp", dir=target.parent))
    try:
        folder = staging / FOLDER_NAME
        folder.mkdir()
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _extract_member(zf, info, folder, archive)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise FedrecError(f"{archive}: corrupt zip archive ({exc})") from exc
        counts = verify_movielens_folder(folder)
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
        marker = {"source": source, "archive_md5": md5, "files": files}
        write_json_atomic(folder / MARKER, marker)
        try:
            folder.rename(target)
        except OSError as exc:
            raise FedrecError(
                f"{target}: cannot move the extracted data into place: {exc}"
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %s into %s", source, target)
    return counts


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path, archive: Path
) -> None:
    name = info.filename
    if name == f"{FOLDER_NAME}/":
        return
    base = name.removeprefix(f"{FOLDER_NAME}/")
    if base == name or not base or "/" in base or "\\" in base or base.startswith("."):
        raise FedrecError(f"{archive}: unexpected entry {name!r} (expected ml-100k/<file>)")
    with zf.open(info) as src, (folder / base).open("wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
