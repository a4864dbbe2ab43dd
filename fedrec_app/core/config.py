"""The Flower app's run-config (`[tool.flwr.app.config]`), parsed once into a typed, frozen object.

Every knob is a kebab-case key in ``pyproject.toml``; ``flwr run --run-config`` may override any
of them. ``parse_run_config`` checks a whole run-config (the ServerApp's and ClientApp's
``context.run_config``); ``config_args`` parses ``--run-config KEY=VALUE`` items of ``fedrec up``
and ``fedrec bench`` with Flower's own parser and checks each override before anything starts.
Every error names the offending key, an unknown key with the closest known one.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedrec_app.core.errors import FedrecError

if TYPE_CHECKING:
    from fedrec_app.core.training import TrainConfig


# The project root: the Flower app's pyproject.toml (a source tree or an editable install).
APP_DIR = Path(__file__).resolve().parents[2]


class ConfigError(FedrecError):
    """A run-config value has the wrong type or lies outside its range."""


@dataclass(frozen=True)
class RunConfig:
    """All run-config keys; the field ``x_y`` is the key ``x-y``."""

    num_server_rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    lr_decay: float
    keep_optimizer: bool
    server_lr: float
    embedding_dim: int
    rank_dim: int
    l2_rating: float
    l2_bias: float
    l2_count_power: float
    l2_ranking: float
    negatives: int
    low_rating: float
    implicit: bool
    fraction_train: float
    min_nodes: int
    node_wait_timeout: float
    round_timeout: float
    checkpoint_dir: str
    signing_key: str
    resume_from: str
    share_user_factors: bool
    partition_set: str
    catalogue: str
    best_metric: str
    keras_every_round: bool
    final_evaluate: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The config as run-config keys (kebab-case), e.g. for a checkpoint manifest."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    def train_config(self, server_round: int = 1) -> TrainConfig:
        """The model/local-training hyperparameters of this run, at ``server_round``
        (the learning rate is ``learning-rate * lr-decay ** (round - 1)``)."""
        from fedrec_app.core.training import TrainConfig

        return TrainConfig(
            embedding_dim=self.embedding_dim,
            rank_dim=self.rank_dim,
            l2_rating=self.l2_rating,
            l2_bias=self.l2_bias,
            l2_count_power=self.l2_count_power,
            l2_ranking=self.l2_ranking,
            negatives=self.negatives,
            low_rating=self.low_rating,
            implicit=int(self.implicit),
            learning_rate=self.learning_rate * self.lr_decay ** (server_round - 1),
            batch_size=self.batch_size,
            local_epochs=self.local_epochs,
            seed=self.seed,
        )

    def catalogue_path(self) -> Path | None:
        """The items.csv the ServerApp reads: ``catalogue``, else ``<partition-set>/items.csv``."""
        if self.catalogue:
            return Path(self.catalogue)
        if self.partition_set:
            return Path(self.partition_set) / "items.csv"
        return None


# Which validation metrics may pick the `best` checkpoint, and whether lower is better.
BEST_METRICS: dict[str, bool] = {"rmse": True, "mae": True, "ndcg@10": False, "hr@10": False}

_POSITIVE_INT = (
    "num_server_rounds",
    "local_epochs",
    "batch_size",
    "embedding_dim",
    "rank_dim",
    "negatives",
    "min_nodes",
)
_POSITIVE_FLOAT = ("learning_rate", "server_lr", "node_wait_timeout", "round_timeout")
_NON_NEGATIVE_FLOAT = ("l2_rating", "l2_bias", "l2_count_power", "l2_ranking", "low_rating")


def app_defaults(app_dir: Path = APP_DIR) -> dict[str, Any]:
    """The app's ``[tool.flwr.app.config]`` defaults from its pyproject.toml."""
    with open(Path(app_dir) / "pyproject.toml", "rb") as handle:
        return dict(tomllib.load(handle)["tool"]["flwr"]["app"]["config"])


# Each key's field type ("int", "float", "bool", "str"), by kebab-case key.
_KINDS: dict[str, str] = {
    field.name.replace("_", "-"): field.type if isinstance(field.type, str) else field.type.__name__
    for field in fields(RunConfig)
}
# One `--run-config` item's KEY=VALUE pairs: a value may be quoted, with spaces inside.
_PAIR = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Check and convert ``context.run_config``; raise ConfigError naming the bad key."""
    _refuse_unknown(raw)
    values: dict[str, Any] = {}
    for key in _KINDS:
        if key not in raw:
            raise ConfigError(f"run-config: missing key '{key}'")
        values[key.replace("-", "_")] = _checked(key, raw[key])
    if values["checkpoint_dir"]:  # checkpoints are never written unsigned
        key = values["signing_key"]
        _require(
            bool(key),
            "signing_key",
            key,
            "required with 'checkpoint-dir': the absolute path of the federation's Ed25519 "
            "signing key on the SuperLink host (`fedrec certs` writes federation-signing.key)",
        )
        _require(Path(key).is_absolute(), "signing_key", key, "must be an absolute path")
    return RunConfig(**values)


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Check each key and value of a partial run-config; raise ConfigError naming the bad key."""
    _refuse_unknown(overrides)
    for key, value in overrides.items():
        _checked(key, value)


def config_args(items: list[str]) -> dict[str, Any]:
    """``--run-config`` items (``["a=1 b='x y'", "c=true"]``, or one ``.toml`` file), parsed by
    Flower's ``parse_config_args`` as ``flwr run`` does, then checked by ``check_overrides``;
    raise ConfigError naming the bad item or key."""
    import click
    from flwr.common.config import parse_config_args

    if len(items) == 1 and items[0].endswith(".toml"):
        try:
            overrides = parse_config_args(items)
        except (OSError, ValueError) as exc:  # tomli's decode error is a ValueError
            raise ConfigError(f"--run-config {items[0]}: {exc}") from None
    else:
        overrides = {}
        for item in items:
            for pair in _PAIR.findall(item):
                key, sep, value = pair.partition("=")
                if not (key and sep and value):
                    raise ConfigError(f"--run-config {pair!r}: expected KEY=VALUE")
                try:
                    overrides.update(parse_config_args([pair]))
                except (ValueError, click.ClickException):
                    quoted = "" if "'" in value or '"' in value else f": {key}='{value}'"
                    raise ConfigError(
                        f"--run-config {pair!r}: the value must be an integer, a float, "
                        f"true/false or a quoted string{quoted}"
                    ) from None
    check_overrides(overrides)
    return overrides


def _refuse_unknown(raw: Mapping[str, Any]) -> None:
    for key in raw:
        if key not in _KINDS:
            close = difflib.get_close_matches(key, _KINDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "see docs/flower-app.md"
            raise ConfigError(f"run-config: unknown key '{key}' ({hint})")


def _checked(key: str, value: Any) -> Any:
    """``value`` of ``key`` converted to its field type and checked against its range."""
    value = _convert(key, value, _KINDS[key])
    name = key.replace("-", "_")
    if name in _POSITIVE_INT:
        _require(value >= 1, name, value, "must be >= 1")
    elif name in _POSITIVE_FLOAT:
        _require(value > 0, name, value, "must be > 0")
    elif name in _NON_NEGATIVE_FLOAT:
        _require(value >= 0, name, value, "must be >= 0")
    elif key in ("lr-decay", "fraction-train"):
        _require(0 < value <= 1, name, value, "must lie in (0, 1]")
    elif key == "best-metric":
        _require(value in BEST_METRICS, name, value, f"must be one of {sorted(BEST_METRICS)}")
    return value


def _convert(key: str, value: Any, kind: str) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"run-config '{key}': expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"run-config '{key}': expected an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"run-config '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"run-config '{key}': expected a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"run-config '{key}': expected a string, got {value!r}")
    return value


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"run-config '{name.replace('_', '-')}': {what}, got {value!r}")
