"""Run-config parsing: the app's defaults are valid; every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec_app.core.config import (
    ConfigError,
    app_defaults,
    check_overrides,
    config_args,
    parse_run_config,
)


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


def test_unknown_key_is_named_with_the_closest_known_one(defaults: dict) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({**defaults, "num-server-round": 3})
    assert "unknown key 'num-server-round'" in str(err.value)
    assert "did you mean 'num-server-rounds'?" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'zzz' \\(see docs/flower-app.md\\)"):
        check_overrides({"zzz": 1})


def test_overrides_are_checked_key_by_key() -> None:
    check_overrides({"local-epochs": 2, "checkpoint-dir": "/srv/ckpt"})  # no signing-key: fine
    with pytest.raises(ConfigError, match="'local-epochs': must be >= 1, got 0"):
        check_overrides({"local-epochs": 0})
    with pytest.raises(ConfigError, match="'best-metric': must be one of"):
        check_overrides({"best-metric": "auc"})


def test_config_args_parse_as_flower_does() -> None:
    parsed = config_args(
        [
            "num-server-rounds=3 share-user-factors=false",
            "catalogue='/srv/my data/items.csv' best-metric=\"ndcg@10\"",
            "learning-rate=0.01",
            "lr-decay=1",
        ]
    )
    assert parsed == {
        "num-server-rounds": 3,
        "share-user-factors": False,
        "catalogue": "/srv/my data/items.csv",
        "best-metric": "ndcg@10",
        "learning-rate": 0.01,
        "lr-decay": 1,
    }
    assert config_args([]) == {}


def test_config_args_read_a_toml_file_as_flower_does(tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text('local-epochs = 2\ncatalogue = "/srv/items.csv"\n')
    assert config_args([str(path)]) == {"local-epochs": 2, "catalogue": "/srv/items.csv"}
    with pytest.raises(ConfigError, match="--run-config .*missing.toml"):
        config_args([str(tmp_path / "missing.toml")])
    path.write_text("local-epochs = \n")
    with pytest.raises(ConfigError, match="overrides.toml"):
        config_args([str(path)])


@pytest.mark.parametrize(
    ("items", "says"),
    [
        (["num-server-rounds=3 rounds"], "--run-config 'rounds': expected KEY=VALUE"),
        (["=3"], "--run-config '=3': expected KEY=VALUE"),
        (["catalogue=/srv/items.csv"], "quoted string: catalogue='/srv/items.csv'"),
        (["local-epochs=[1,2]"], "--run-config 'local-epochs=[1,2]': the value must be"),
        (["num-server-round=3"], "unknown key 'num-server-round' (did you mean"),
        (["local-epochs='2'"], "'local-epochs': expected an integer, got '2'"),
        (["fraction-train=1.5"], "'fraction-train': must lie in (0, 1]"),
    ],
)
def test_bad_config_args_name_the_item_or_key(items: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_args(items)
    assert says in str(err.value)
