"""`download`: local archives, a real HTTP server, and broken archives that must leave nothing."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrec_app.core.errors import FedrecError
from fedrec_app.data.download import OFFICIAL_MD5, download
from fedrec_app.data.movielens import MARKER, verify_movielens_folder

SHARED_ZIP_MD5 = "035322ae665f3e4c6af0fa0c00bc3600"  # ../shared/data/README.md


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_nothing_left(dest: Path) -> None:
    """``dest`` existed before: nothing was left in it."""
    assert not dest.exists() or list(dest.iterdir()) == []


def assert_not_created(dest: Path) -> None:
    """``dest`` did not exist: a failed download leaves no (empty) folder behind."""
    assert not dest.exists(), sorted(dest.rglob("*"))


def assert_same_files(folder: Path, source: Path) -> None:
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in folder.iterdir() if p.name != MARKER) == names
    for name in names:
        assert (folder / name).read_bytes() == (source / name).read_bytes(), name


def test_local_zip_extracts_then_reports_present(
    synthetic_zip: Path, synthetic_ml: Path, tmp_path: Path
) -> None:
    result = download(tmp_path / "data", md5=md5(synthetic_zip), zip_path=synthetic_zip)
    assert not result.already_present
    assert result.folder == tmp_path / "data" / "ml-100k"
    assert_same_files(result.folder, synthetic_ml)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ml-100k"]  # no temp left
    mtime = (result.folder / "u.data").stat().st_mtime_ns
    again = download(tmp_path / "data", md5=md5(synthetic_zip), zip_path=synthetic_zip)
    assert again.already_present
    assert again.counts == result.counts
    assert (result.folder / "u.data").stat().st_mtime_ns == mtime


def test_shared_repack(ml100k_zip: Path, ml100k_dir: Path, tmp_path: Path) -> None:
    result = download(tmp_path, md5=SHARED_ZIP_MD5, zip_path=ml100k_zip)
    assert (result.counts.users, result.counts.items, result.counts.ratings) == (943, 1682, 100000)
    assert_same_files(result.folder, ml100k_dir)


def test_shared_repack_refused_with_official_md5(ml100k_zip: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match=f"does not match the expected {OFFICIAL_MD5}.*--md5"):
        download(tmp_path / "data", zip_path=ml100k_zip)
    assert_not_created(tmp_path / "data")


def test_truncated_archive(synthetic_zip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.zip"
    cut.write_bytes(synthetic_zip.read_bytes()[: synthetic_zip.stat().st_size // 2])
    with pytest.raises(FedrecError, match="md5"):
        download(tmp_path / "a", md5=md5(synthetic_zip), zip_path=cut)
    assert_not_created(tmp_path / "a")
    # Even when the md5 given is the truncated file's own, the archive itself is refused.
    with pytest.raises(FedrecError, match="corrupt zip archive"):
        download(tmp_path / "b", md5=md5(cut), zip_path=cut)
    assert_not_created(tmp_path / "b")


def test_tampered_archive(synthetic_zip: Path, tmp_path: Path) -> None:
    data = bytearray(synthetic_zip.read_bytes())
    with zipfile.ZipFile(synthetic_zip) as zf:
        info = zf.getinfo("ml-100k/u.data")
    # Flip a byte inside u.data's compressed stream (after its 30-byte local header + name).
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(FedrecError, match="md5"):
        download(tmp_path / "a", md5=md5(synthetic_zip), zip_path=bad)
    with pytest.raises(FedrecError, match="corrupt zip archive"):
        download(tmp_path / "b", md5=md5(bad), zip_path=bad)
    assert_not_created(tmp_path / "a")
    assert_not_created(tmp_path / "b")


def test_archive_with_foreign_layout(synthetic_ml: Path, tmp_path: Path) -> None:
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(synthetic_ml / "u.data", "u.data")
    with pytest.raises(FedrecError, match="unexpected entry 'u.data'"):
        download(tmp_path / "data", md5=md5(archive), zip_path=archive)
    assert_not_created(tmp_path / "data")


def test_archive_missing_files(synthetic_ml: Path, tmp_path: Path) -> None:
    archive = tmp_path / "half.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(synthetic_ml.iterdir())[:8]:
            zf.write(path, f"ml-100k/{path.name}")
    with pytest.raises(FedrecError, match="incomplete data folder"):
        download(tmp_path / "data", md5=md5(archive), zip_path=archive)
    assert_not_created(tmp_path / "data")


def test_existing_invalid_folder_is_refused(
    synthetic_zip: Path, ml_copy: Path, tmp_path: Path
) -> None:
    (ml_copy / "u2.base").unlink()
    with pytest.raises(FedrecError, match="already exists but is not a valid"):
        download(ml_copy.parent, md5=md5(synthetic_zip), zip_path=synthetic_zip)
    assert not (ml_copy / "u2.base").exists()  # left as it was, not replaced


def test_altered_file_after_download(synthetic_zip: Path, tmp_path: Path) -> None:
    folder = download(tmp_path, md5=md5(synthetic_zip), zip_path=synthetic_zip).folder
    path = folder / "u.data"
    data = bytearray(path.read_bytes())
    data[5] = ord("9") if data[5] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    with pytest.raises(FedrecError, match=r"u\.data: sha256 does not match \.fedrec-source\.json"):
        verify_movielens_folder(folder)


def test_missing_local_archive(tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="archive not found"):
        download(tmp_path / "data", zip_path=tmp_path / "nope.zip")
    assert_not_created(tmp_path / "data")


def test_unwritable_destination_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FedrecError, match=r"--data .*a-file/data: cannot create the data folder"):
        download(tmp_path / "a-file" / "data", url="http://127.0.0.1:1/ml-100k.zip")


def test_offline_download_suggests_zip_and_leaves_no_folder(tmp_path: Path) -> None:
    """No network (nothing listens on port 1): the error names --zip, and the folders the
    download made (here two levels) are gone again."""
    dest = tmp_path / "new" / "data"
    with pytest.raises(FedrecError, match=r"127\.0\.0\.1:1/ml-100k\.zip failed: .*--zip"):
        download(dest, url="http://127.0.0.1:1/ml-100k.zip")
    assert_not_created(tmp_path / "new")


# ----------------------------------------------------------------------------- over HTTP


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, int]] = {}  # path -> (body, declared length)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, length = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(synthetic_zip: Path) -> Iterator[str]:
    body = synthetic_zip.read_bytes()
    _Handler.routes = {
        "/ml-100k.zip": (body, len(body)),
        "/short.zip": (body[: len(body) // 3], len(body)),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_download(
    http_server: str, synthetic_zip: Path, synthetic_ml: Path, tmp_path: Path
) -> None:
    result = download(tmp_path, url=f"{http_server}/ml-100k.zip", md5=md5(synthetic_zip))
    assert_same_files(result.folder, synthetic_ml)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]


def test_http_wrong_md5(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="does not match the expected"):
        download(tmp_path, url=f"{http_server}/ml-100k.zip", md5="0" * 32)
    assert_nothing_left(tmp_path)


def test_http_truncated(http_server: str, synthetic_zip: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="download of .*short.zip"):
        download(tmp_path, url=f"{http_server}/short.zip", md5=md5(synthetic_zip))
    assert_nothing_left(tmp_path)


def test_http_not_found(http_server: str, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="HTTP 404"):
        download(tmp_path, url=f"{http_server}/missing.zip")
    assert_nothing_left(tmp_path)
