"""Names inside a partition folder, and the check a node runs on its own folder.

A partition folder (``partition-<k>`` of a demo set, or a site's own folder) is self-contained:
``train.csv``, ``val.csv``, ``test.csv``, ``items.csv`` (a copy of the shared catalogue) and its
own ``manifest.yaml`` (sha256, bytes and rows of each file, the catalogue's fingerprint, how the
folder was made) that says nothing about any other partition.

Imports nothing heavy (yaml and hashlib): the ClientApp resolves a node's partition folder with
it and ``fedrec deploy supernode --dry-run`` verifies the folder with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import check_sha256s

PARTITION_MANIFEST = "manifest.yaml"
ITEMS = "items.csv"
PART_FILES: tuple[str, ...] = ("train.csv", "val.csv", "test.csv")
PARTITION_KIND = "partition"
PARTITION_FORMAT = 1


def partition_dir_name(index: int) -> str:
    return f"partition-{index}"


def load_manifest_yaml(path: Path) -> Any:
    """The parsed YAML of a partition manifest; FedrecError naming the file if unreadable."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read partition manifest: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FedrecError(f"{path}: malformed partition manifest ({exc})") from exc


def existing_output(out: Path, what: str) -> bool:
    """Whether ``out`` holds a manifest (then the caller checks it is the same thing); False
    when ``out`` is free (missing or empty); FedrecError when it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise FedrecError(f"{out} exists and is not a folder; nothing overwritten")
    if (out / PARTITION_MANIFEST).is_file():
        return True
    if any(out.iterdir()):
        raise FedrecError(
            f"{out} exists and is not a {what} (no {PARTITION_MANIFEST}); nothing overwritten"
        )
    return False


def read_partition_manifest(folder: Path) -> dict[str, Any]:
    """The parsed own ``manifest.yaml`` of a partition folder; FedrecError naming the file."""
    folder = Path(folder)
    path = folder / PARTITION_MANIFEST
    if not folder.is_dir():
        raise FedrecError(f"partition folder {folder} not found")
    if not path.exists():
        old = (folder.parent / PARTITION_MANIFEST).is_file()
        hint = (
            " (this folder was made before partition folders carried their own manifest: remake "
            "it with `fedrec partition`, or `fedrec partition site` for a site's own ratings)"
            if old
            else " (make the folder with `fedrec partition site`, see docs/data.md)"
        )
        raise FedrecError(f"{path}: missing: not a partition folder{hint}")
    manifest = load_manifest_yaml(path)
    if (
        not isinstance(manifest, dict)
        or manifest.get("kind") != PARTITION_KIND
        or manifest.get("format_version") != PARTITION_FORMAT
        or not isinstance(manifest.get("files"), dict)
        or not isinstance(manifest.get("catalogue"), dict)
        or isinstance(manifest.get("index"), bool)
        or not isinstance(manifest.get("index"), int)
    ):
        raise FedrecError(f"{path}: not a format-{PARTITION_FORMAT} partition manifest")
    missing = [name for name in (ITEMS, *PART_FILES) if name not in manifest["files"]]
    if missing:
        raise FedrecError(f"{path}: files: {', '.join(missing)} not listed")
    fingerprint = manifest["catalogue"].get("fingerprint")
    if fingerprint != "sha256:" + str(manifest["files"][ITEMS].get("sha256")):
        raise FedrecError(
            f"{path}: catalogue.fingerprint {fingerprint!r} is not the sha256 of {ITEMS}"
        )
    return manifest


def verify_files(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Check each listed file's size, then its sha256; FedrecError naming the first that is off."""
    folder = Path(folder)
    for name, record in files.items():
        path = folder / str(name)
        if path.is_file() and path.stat().st_size != record.get("bytes"):
            raise FedrecError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {record.get('bytes')} "
                "(truncated or altered)"
            )
    digests = {name: str(record.get("sha256")) for name, record in files.items()}
    check_sha256s(folder, digests, "the partition manifest")


def verify_partition_folder(folder: Path) -> dict[str, Any]:
    """Check every file of a partition folder against its own manifest; return the manifest."""
    manifest = read_partition_manifest(folder)
    verify_files(folder, manifest["files"])
    return manifest
