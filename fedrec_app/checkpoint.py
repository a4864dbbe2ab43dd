"""Checkpoint folders: written by the ServerApp, read by the gateway. numpy + json only.

Layout under ``<checkpoint-dir>/<run-id>/``: ``round-NNNN/`` folders, relative symlinks
``latest`` and ``best``, and ``final/``. Each checkpoint folder holds ``weights.npz`` (named
arrays, see ``fedrec_app.scoring``), optionally ``model.keras``, ``items.csv`` (the catalogue)
and ``manifest.json`` (format version, model, round, metrics history, run config, catalogue
fingerprint, sha256 of every other file). A folder is written under a temporary name and renamed
into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv, write_catalogue_csv
from fedrec_app.errors import FedrecError
from fedrec_app.files import sha256_file
from fedrec_app.scoring import GLOBAL_ARRAYS, ITEM_ARRAYS, USER_ARRAYS

FORMAT_VERSION = 1
WEIGHTS, MODEL, ITEMS, MANIFEST = "weights.npz", "model.keras", "items.csv", "manifest.json"
REQUIRED_ARRAYS = ("item_ids", *ITEM_ARRAYS, *GLOBAL_ARRAYS)
USER_FACTOR_ARRAYS = ("user_ids", *USER_ARRAYS)


class CheckpointError(FedrecError):
    """A checkpoint folder is missing, incomplete, altered or inconsistent."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    catalogue: Catalogue

    @property
    def has_user_factors(self) -> bool:
        return "user_ids" in self.arrays

    @property
    def round(self) -> int:
        return int(self.manifest["round"])


def round_folder_name(server_round: int) -> str:
    return f"round-{server_round:04d}"


def write_checkpoint(
    folder: Path,
    arrays: Mapping[str, np.ndarray],
    catalogue: Catalogue,
    manifest: Mapping[str, Any],
    write_model: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint folder atomically; an existing ``folder`` is replaced.

    ``manifest`` holds the caller's fields (run_id, round, model, metrics, history, run_config);
    this function adds format_version, created, catalogue, has_user_factors and files.
    ``write_model(path)``, when given, saves the Keras model to ``path`` (model.keras).
    """
    folder = Path(folder)
    _check_arrays(arrays, catalogue, where=str(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700: a gateway running as another user must read it
    try:
        np.savez(tmp / WEIGHTS, **{name: np.asarray(value) for name, value in arrays.items()})
        write_catalogue_csv(catalogue, tmp / ITEMS)
        if write_model is not None:
            write_model(tmp / MODEL)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        full_manifest = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **manifest,
            "catalogue": {"fingerprint": catalogue.fingerprint, "num_items": len(catalogue)},
            "has_user_factors": "user_ids" in arrays,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(full_manifest, indent=2, sort_keys=True) + "\n")
        _fsync_dir(tmp)
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def point(run_dir: Path, name: str, target: Path) -> Path:
    """Make ``run_dir/name`` a relative symlink to ``target`` (a folder in run_dir), atomically."""
    run_dir, target = Path(run_dir), Path(target)
    link = run_dir / name
    tmp = run_dir / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, run_dir), tmp)
    os.replace(tmp, link)
    return link


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder, not yet verified against the files."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (not a checkpoint folder)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: manifest is not a JSON object")
    for key in ("format_version", "round", "catalogue", "files"):
        if key not in manifest:
            raise CheckpointError(f"{path}: manifest lacks the field '{key}'")
    if manifest["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {manifest['format_version']!r} is not {FORMAT_VERSION}"
        )
    return manifest


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """Check every file's sha256 against the manifest; return the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest["files"]
    for required in (WEIGHTS, ITEMS):
        if required not in files:
            raise CheckpointError(f"{folder / MANIFEST}: files lacks '{required}'")
    for name, expected in files.items():
        path = folder / name
        if Path(name).name != name:
            raise CheckpointError(f"{folder / MANIFEST}: file name {name!r} is not a plain name")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in the manifest)")
        if sha256_file(path) != expected:
            raise CheckpointError(
                f"{path}: sha256 does not match the manifest (altered or partial)"
            )
    return manifest


def read_checkpoint(folder: Path) -> Checkpoint:
    """Verify and load a checkpoint folder (symlinks such as ``latest`` are resolved)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    folder = folder.resolve()
    manifest = verify_checkpoint(folder)
    catalogue = read_catalogue_csv(folder / ITEMS)
    expected = manifest["catalogue"].get("fingerprint")
    if catalogue.fingerprint != expected:
        raise CheckpointError(f"{folder / ITEMS}: catalogue fingerprint differs from the manifest")
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS}: unreadable: {exc}") from exc
    _check_arrays(arrays, catalogue, where=str(folder / WEIGHTS))
    return Checkpoint(path=folder, manifest=manifest, arrays=arrays, catalogue=catalogue)


def _check_arrays(arrays: Mapping[str, np.ndarray], catalogue: Catalogue, where: str) -> None:
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise CheckpointError(f"{where}: missing arrays {missing}")
    if not np.array_equal(np.asarray(arrays["item_ids"]), catalogue.movie_ids):
        raise CheckpointError(f"{where}: item_ids differ from the catalogue's movie ids")
    num_items = len(catalogue)
    for name in ITEM_ARRAYS:
        if np.shape(arrays[name])[:1] != (num_items,):
            raise CheckpointError(
                f"{where}: {name} has {np.shape(arrays[name])} rows, expected {num_items}"
            )
    if (
        np.shape(arrays["item_embedding"])[1:] == ()
        or np.shape(arrays["item_rank_embedding"])[1:] == ()
    ):
        raise CheckpointError(f"{where}: item embeddings must be 2-D")
    user_present = [name for name in USER_FACTOR_ARRAYS if name in arrays]
    if user_present and len(user_present) != len(USER_FACTOR_ARRAYS):
        raise CheckpointError(
            f"{where}: user factors incomplete: has {user_present}, "
            f"needs {list(USER_FACTOR_ARRAYS)}"
        )
    if user_present:
        num_users = len(arrays["user_ids"])
        for name in USER_ARRAYS:
            if np.shape(arrays[name])[:1] != (num_users,):
                raise CheckpointError(f"{where}: {name} rows differ from user_ids ({num_users})")
    for name, value in arrays.items():
        if np.asarray(value).dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{where}: {name} holds NaN or infinite values")


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename ``new`` to ``dest``; an existing ``dest`` is swapped out first, then removed."""
    if dest.exists() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def _fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
