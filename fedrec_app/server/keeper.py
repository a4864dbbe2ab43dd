"""The ServerApp's checkpoints of one run: ``round-NNNN``, ``latest``, ``best``, ``final/``; resume.

A round's checkpoint is written once its model has been scored (its metrics arrive with the next
round's replies or the final evaluation), so every folder's manifest holds its own metrics.
``best`` follows the validation metric ``best-metric``, never the test figures.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec_app.core.checkpoint import point, read_checkpoint, round_folder_name, write_checkpoint
from fedrec_app.core.config import BEST_METRICS, ConfigError, RunConfig
from fedrec_app.core.metrics import metric_key
from fedrec_app.core.rated import RATED_ARRAYS
from fedrec_app.core.scoring import USER_ARRAYS
from fedrec_app.core.training import (
    IMPLICIT_ARRAY,
    MODEL_TYPE,
    SHARED_ARRAYS,
    TrainConfig,
    model_shape,
)
from fedrec_app.data.catalogue import Catalogue

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

log = logging.getLogger(__name__)

FINAL = "final"

# A trained round waiting for its scores: shared arrays, user arrays (or None), round metrics.
_Pending = tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, float]]


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: round 0 with fresh arrays, or a saved round."""

    round: int
    shared: dict[str, np.ndarray]
    users: dict[str, np.ndarray] | None
    history: list[dict[str, Any]]
    state_key: str
    source: str = ""


def resume_point(
    cfg: RunConfig, catalogue: Catalogue, verify_key: Ed25519PublicKey | None = None
) -> ResumePoint | None:
    """The checkpoint named by ``resume-from`` checked against this run, or None.

    With ``verify_key`` it must be signed by that key (the federation's): a run never continues
    from a checkpoint the federation did not write.
    """
    if not cfg.resume_from:
        return None
    ckpt = read_checkpoint(Path(cfg.resume_from), verify_key)
    where = f"run-config 'resume-from' ({cfg.resume_from})"
    if ckpt.catalogue.fingerprint != catalogue.fingerprint:
        raise ConfigError(f"{where}: its catalogue differs from this run's")
    if ckpt.arrays["item_embedding"].shape[1] != cfg.embedding_dim:
        raise ConfigError(f"{where}: embedding size differs from embedding-dim")
    if ckpt.arrays["item_rank_embedding"].shape[1] != cfg.rank_dim:
        raise ConfigError(f"{where}: ranking size differs from rank-dim")
    if ckpt.round >= cfg.num_server_rounds:
        raise ConfigError(
            f"{where}: it is round {ckpt.round}; num-server-rounds must be larger to continue"
        )
    users = None
    if ckpt.has_user_factors:
        names = ("user_ids", *USER_ARRAYS, *RATED_ARRAYS)
        users = {name: ckpt.arrays[name] for name in names if name in ckpt.arrays}
    names = SHARED_ARRAYS  # and item_implicit, if this run has the term and the checkpoint too
    if cfg.implicit and IMPLICIT_ARRAY in ckpt.arrays:
        names += (IMPLICIT_ARRAY,)
    return ResumePoint(
        round=ckpt.round,
        shared={name: ckpt.arrays[name] for name in names},
        users=users,
        history=list(ckpt.manifest.get("history", [])),
        state_key=str(ckpt.manifest.get("state_key") or ckpt.manifest.get("run_id")),
        source=str(ckpt.path),
    )


@dataclass
class CheckpointKeeper:
    """Writes the run's checkpoint folders as rounds are trained and scored, each signed with
    ``signing_key`` (the federation's)."""

    run_dir: Path
    run_id: int
    cfg: RunConfig
    catalogue: Catalogue
    state_key: str
    signing_key: Ed25519PrivateKey
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str = ""
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _best: float | None = None
    _last: int | None = None

    def trained(
        self,
        server_round: int,
        shared: dict[str, np.ndarray],
        users: dict[str, np.ndarray] | None,
        round_metrics: dict[str, float],
    ) -> None:
        """Hold round ``server_round`` until scored; earlier unscored rounds are written now."""
        for earlier in sorted(r for r in self._pending if r < server_round):
            self._write(earlier, {})
        self._pending[server_round] = (dict(shared), users, dict(round_metrics))
        if server_round == self.cfg.num_server_rounds:
            load_keras_in_background()

    def evaluated(self, server_round: int, metrics: dict[str, float]) -> None:
        if server_round in self._pending:
            self._write(server_round, metrics)

    def finish(self) -> Path | None:
        """Write what is still pending, then ``final/`` (with model.keras); returns ``final/``."""
        for pending in sorted(self._pending):
            self._write(pending, {})
        if self._last is None:
            return None
        source = read_checkpoint(
            self.run_dir / round_folder_name(self._last), self.signing_key.public_key()
        )
        manifest = {k: v for k, v in source.manifest.items() if k in _CALLER_FIELDS}
        final = write_checkpoint(
            self.run_dir / FINAL,
            source.arrays,
            self.catalogue,
            manifest,
            write_model=lambda path: write_keras(path, source.arrays, self.cfg.train_config()),
            signing_key=self.signing_key,
        )
        log.info("final checkpoint: %s (round %d)", final, self._last)
        return final

    def _write(self, server_round: int, metrics: dict[str, float]) -> None:
        shared, users, round_metrics = self._pending.pop(server_round)
        entry = {"round": server_round, **round_metrics, **metrics}
        self.history.append(entry)
        arrays = {"item_ids": self.catalogue.movie_ids, **shared}
        if users is not None:
            arrays.update(users)
        manifest = {
            "run_id": str(self.run_id),
            "round": server_round,
            "state_key": self.state_key,
            "resumed_from": self.resumed_from,
            "model": {"type": MODEL_TYPE, "hyperparameters": self.cfg.train_config().to_dict()},
            "metrics": entry,
            "history": list(self.history),
            "run_config": self.cfg.to_dict(),
        }
        writer = None
        if self.cfg.keras_every_round:
            tcfg = self.cfg.train_config()

            def writer(path: Path) -> None:
                write_keras(path, arrays, tcfg)

        folder = write_checkpoint(
            self.run_dir / round_folder_name(server_round),
            arrays,
            self.catalogue,
            manifest,
            writer,
            signing_key=self.signing_key,
        )
        if self._last is None or server_round > self._last:
            point(self.run_dir, "latest", folder)
            self._last = server_round
        value = metrics.get(metric_key("val", self.cfg.best_metric))
        if value is not None and is_better(self.cfg.best_metric, value, self._best):
            self._best = value
            point(self.run_dir, "best", folder)
        log.debug("checkpoint %s", folder)  # the round's one INFO line is the strategy's


_CALLER_FIELDS = (
    "run_id",
    "round",
    "state_key",
    "resumed_from",
    "model",
    "metrics",
    "history",
    "run_config",
)


def load_keras_in_background() -> None:
    """Import Keras (seconds of CPU) in a thread, so that ``final/model.keras`` does not wait for
    it: started once the last round is trained, it loads while the final evaluation runs."""
    threading.Thread(
        target=importlib.import_module,
        args=("fedrec_app.core.model",),
        name="load-keras",
        daemon=True,
    ).start()


def write_keras(path: Path, arrays: dict[str, np.ndarray], tcfg: TrainConfig) -> None:
    """Save the Keras model holding ``arrays`` (zero user rows when user factors are not shared)."""
    from fedrec_app.core.model import save_model_file

    users = {
        "user_embedding": np.zeros((0, tcfg.embedding_dim), np.float32),
        "user_bias": np.zeros(0, np.float32),
        "user_rank_embedding": np.zeros((0, tcfg.rank_dim), np.float32),
    }
    users.update({name: arrays[name] for name in USER_ARRAYS if name in arrays})
    shape = model_shape(tcfg, len(users["user_bias"]), len(arrays["item_bias"]))
    save_model_file({**{name: arrays[name] for name in SHARED_ARRAYS}, **users}, shape, path)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether validation ``value`` beats ``best`` for ``metric`` (see config.BEST_METRICS)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if BEST_METRICS[metric] else value > best
