"""Run-config parsing: the app's defaults are valid; every bad value names its key."""

from __future__ import annotations

import pytest

from fedrec_app.core.config import ConfigError, app_defaults, parse_run_config


@pytest.fixture
def defaults() -> dict:
    return app_defaults()


def test_defaults_parse_and_round_trip(defaults: dict) -> None:
    cfg = parse_run_config(defaults)
    assert cfg.to_dict() == defaults
    assert parse_run_config(cfg.to_dict()) == cfg
    tcfg = cfg.train_config()
    assert (tcfg.embedding_dim, tcfg.rank_dim, tcfg.negatives) == (
        defaults["embedding-dim"],
        defaults["rank-dim"],
        defaults["negatives"],
    )


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("num-server-rounds", "3", "expected an integer"),
        ("num-server-rounds", 0, "must be >= 1"),
        ("local-epochs", True, "expected an integer"),
        ("learning-rate", -0.1, "must be > 0"),
        ("learning-rate", float("nan"), "finite"),
        ("fraction-train", 1.5, "(0, 1]"),
        ("min-nodes", 0, "must be >= 1"),
        ("share-user-factors", 1, "true or false"),
        ("checkpoint-dir", 5, "expected a string"),
        ("best-metric", "auc", "must be one of"),
        ("l2-rating", -1.0, "must be >= 0"),
    ],
)
def test_bad_values_name_the_key(defaults: dict, key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({**defaults, key: value})
    assert f"'{key}'" in str(err.value)
    assert says in str(err.value)


def test_missing_key_is_named(defaults: dict) -> None:
    del defaults["round-timeout"]
    with pytest.raises(ConfigError, match="missing key 'round-timeout'"):
        parse_run_config(defaults)


def test_checkpoint_dir_needs_an_absolute_signing_key(defaults: dict) -> None:
    with_dir = {**defaults, "checkpoint-dir": "/srv/ckpt"}
    with pytest.raises(ConfigError, match="'signing-key': required with 'checkpoint-dir'"):
        parse_run_config(with_dir)
    with pytest.raises(ConfigError, match="'signing-key': must be an absolute path"):
        parse_run_config({**with_dir, "signing-key": "certs/federation-signing.key"})
    with pytest.raises(ConfigError, match="'signing-key': expected a string"):
        parse_run_config({**with_dir, "signing-key": 1})
    cfg = parse_run_config({**with_dir, "signing-key": "/srv/certs/federation-signing.key"})
    assert cfg.signing_key == "/srv/certs/federation-signing.key"
