"""Checkpoint folders: written by the ServerApp, read by the gateway. numpy + json only.

Layout under ``<checkpoint-dir>/<run-id>/``: ``round-NNNN/`` folders, relative symlinks
``latest`` and ``best``, and ``final/``. Each checkpoint folder holds ``weights.npz`` (named
arrays, see ``fedrec_app.core.scoring``; with user factors also each user's rated movie ids,
``fedrec_app.core.rated``), optionally ``model.keras``, ``items.csv`` (the catalogue)
and ``manifest.json`` (format version, model, round, metrics history, run config, catalogue
fingerprint, sha256 of every other file). A folder is written under a temporary name and renamed
into place, so a reader never sees half a checkpoint.

``manifest.sig`` signs the exact bytes of ``manifest.json`` with the federation's Ed25519 key
(``fedrec_app.core.signing``): since the manifest holds the sha256 of every other file, a verified
signature vouches for the whole folder. Folders are 0750 and files 0640 (they may hold user
factors): a gateway running as another user reads them as a member of the owner's group.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec_app.core.errors import FedrecError
from fedrec_app.core.files import check_sha256s, sha256_bytes, sha256_file
from fedrec_app.core.metrics import TRAIN_LOSS, metric_key
from fedrec_app.core.rated import rated_problem
from fedrec_app.core.scoring import GLOBAL_ARRAYS, ITEM_ARRAYS, USER_ARRAYS
from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv, write_catalogue_csv

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

FORMAT_VERSION = 1
WEIGHTS, MODEL, ITEMS, MANIFEST = "weights.npz", "model.keras", "items.csv", "manifest.json"
SIGNATURE = "manifest.sig"
FOLDER_MODE, FILE_MODE = 0o750, 0o640  # owner writes, its group (the gateway's user) reads
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
    signing_key: Ed25519PrivateKey | None = None,
) -> Path:
    """Write a complete checkpoint folder atomically; an existing ``folder`` is replaced.

    ``manifest`` holds the caller's fields (run_id, round, model, metrics, history, run_config);
    this function adds format_version, created, catalogue, has_user_factors and files.
    ``write_model(path)``, when given, saves the Keras model to ``path`` (model.keras).
    ``signing_key``, when given, signs manifest.json into manifest.sig; without it the folder is
    unsigned and a gateway serves it only with ``--allow-unsigned``.
    """
    from fedrec_app.core.signing import sign

    folder = Path(folder)
    _check_arrays(arrays, catalogue, where=str(folder))
    if not folder.parent.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.parent.chmod(FOLDER_MODE)  # the run folder: no more open than the checkpoints
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(FOLDER_MODE)  # mkdtemp makes it 0700: the gateway's group must read it
    try:
        arrays_np = {name: np.asarray(value) for name, value in arrays.items()}
        np.savez(tmp / WEIGHTS, allow_pickle=False, **arrays_np)
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
        manifest_bytes = (json.dumps(full_manifest, indent=2, sort_keys=True) + "\n").encode()
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        if signing_key is not None:
            (tmp / SIGNATURE).write_bytes(sign(signing_key, manifest_bytes))
        for path in tmp.iterdir():
            path.chmod(FILE_MODE if path.is_file() else FOLDER_MODE)
        _fsync_dir(tmp)
        replace_dir(tmp, folder)
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
    return _parse_manifest(path, _read_manifest_bytes(path))


def _read_manifest_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (not a checkpoint folder)") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable manifest: {exc}") from exc


def _parse_manifest(path: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    if not isinstance(manifest["files"], dict):
        raise CheckpointError(f"{path}: 'files' is not a JSON object")
    return _with_current_metric_keys(manifest)


# Metric keys before they were spelled one way (``fedrec_app.core.metrics.metric_key``): test
# figures plain (``rmse``), validation ones ``val_rmse``, ``train_loss``, ``node_seconds``; and a
# central checkpoint's history named its validation figures plain. Read as today's names.
_OLD_KEYS = {
    "train_loss": TRAIN_LOSS,
    "loss": TRAIN_LOSS,
    "node_seconds": "node.seconds",
    "node_eval_seconds": "node.eval-seconds",
    "node_train_seconds": "node.train-seconds",
}
_UNSPLIT_KEYS = ("round", "epoch", "seconds", "nodes", "failures")  # the round's own


def _current_key(key: str, plain_split: str) -> str:
    if "." in key or key in _UNSPLIT_KEYS:
        return key
    if key in _OLD_KEYS:
        return _OLD_KEYS[key]
    if key.startswith("val_"):
        return metric_key("val", key.removeprefix("val_"))
    return metric_key(plain_split, key)


def _with_current_metric_keys(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the metric keys of an older checkpoint renamed (``_OLD_KEYS``)."""
    run_config = manifest.get("run_config")
    central = isinstance(run_config, dict) and run_config.get("mode") == "central"
    if isinstance(manifest.get("metrics"), dict):
        manifest["metrics"] = {_current_key(k, "test"): v for k, v in manifest["metrics"].items()}
    if isinstance(manifest.get("history"), list):
        split = "val" if central else "test"
        manifest["history"] = [
            {_current_key(k, split): v for k, v in entry.items()}
            if isinstance(entry, dict)
            else entry
            for entry in manifest["history"]
        ]
    return manifest


def verify_signature(folder: Path, manifest_bytes: bytes, verify_key: Ed25519PublicKey) -> None:
    """Raise CheckpointError unless ``folder``'s manifest.sig signs ``manifest_bytes``."""
    from fedrec_app.core.signing import SignatureError, verify

    folder = Path(folder)
    try:
        signature = (folder / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder}: unsigned checkpoint (no {SIGNATURE}): refused, the signature is required"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{folder / SIGNATURE}: unreadable signature: {exc}") from None
    try:
        verify(verify_key, manifest_bytes, signature, where=str(folder / SIGNATURE))
    except SignatureError as exc:
        raise CheckpointError(f"{exc}; checkpoint {folder} refused") from None


def verify_checkpoint(folder: Path, verify_key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """Check the signature (when ``verify_key`` is given), then every file's sha256 against the
    manifest; return the manifest. The signature is checked over the very bytes parsed."""
    folder = Path(folder)
    path = folder / MANIFEST
    data = _read_manifest_bytes(path)
    if verify_key is not None:
        verify_signature(folder, data, verify_key)
    manifest = _parse_manifest(path, data)
    files = manifest["files"]
    for required in (WEIGHTS, ITEMS):
        if required not in files:
            raise CheckpointError(f"{folder / MANIFEST}: files lacks '{required}'")
    check_sha256s(folder, files, "the manifest", CheckpointError)
    return manifest


def read_checkpoint(folder: Path, verify_key: Ed25519PublicKey | None = None) -> Checkpoint:
    """Verify and load a checkpoint folder (symlinks such as ``latest`` are resolved).

    With ``verify_key`` the folder must carry a valid signature by that key (the gateway's
    rule); without it only the sha256 of every file is checked.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    folder = folder.resolve()
    manifest = verify_checkpoint(folder, verify_key)
    catalogue = read_catalogue_csv(folder / ITEMS)
    expected = manifest["catalogue"].get("fingerprint")
    if catalogue.fingerprint != expected:
        raise CheckpointError(f"{folder / ITEMS}: catalogue fingerprint differs from the manifest")
    # Read the weights once and check those very bytes: a file swapped after the check above
    # is never used.
    try:
        data = (folder / WEIGHTS).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{folder / WEIGHTS}: unreadable: {exc}") from exc
    if sha256_bytes(data) != manifest["files"][WEIGHTS]:
        raise CheckpointError(f"{folder / WEIGHTS}: changed while it was read (sha256 differs)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
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
    problem = rated_problem(arrays, catalogue.movie_ids)  # user_rated_offsets/_items
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    for name, value in arrays.items():
        if np.asarray(value).dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{where}: {name} holds NaN or infinite values")


def replace_dir(new: Path, dest: Path) -> None:
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
