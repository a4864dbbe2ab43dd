"""Gateway settings: FEDREC_GATEWAY_* variables, flags over them, every bad value named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from signing_keys import verify_key_file

from fedrec_app.gateway.settings import (
    ENV_PREFIX,
    GatewaySettings,
    SettingsError,
    env_var,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
KEY = "k" * 24


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean FEDREC_GATEWAY_* environment with the two settings every start needs."""
    for name in GatewaySettings.model_fields:
        monkeypatch.delenv(env_var(name), raising=False)
    monkeypatch.setenv("FEDREC_GATEWAY_CHECKPOINT", "/srv/serving/current")
    monkeypatch.setenv("FEDREC_GATEWAY_VERIFY_KEY", str(verify_key_file()))
    return monkeypatch


def test_environment_variables_are_honoured(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"# the lab's key\n{KEY}\n")
    keys.chmod(0o600)
    environ.setenv("FEDREC_GATEWAY_PORT", "8443")
    environ.setenv("FEDREC_GATEWAY_WATCH", "true")
    environ.setenv("FEDREC_GATEWAY_MIN_RATING", "3.5")
    environ.setenv("FEDREC_GATEWAY_CORS_ORIGINS", '["https://lab.example"]')
    environ.setenv("FEDREC_GATEWAY_API_KEY_FILE", str(keys))
    environ.setenv("FEDREC_GATEWAY_HOST", "")  # `Environment=FEDREC_GATEWAY_HOST=`: the default
    settings = load_settings({})
    assert settings.checkpoint == Path("/srv/serving/current")
    assert settings.verify_key == verify_key_file()
    assert (settings.port, settings.watch, settings.min_rating) == (8443, True, 3.5)
    assert settings.cors_origins == ("https://lab.example",)
    assert settings.api_keys == frozenset({KEY})
    assert settings.host == "127.0.0.1"


def test_flags_override_the_environment(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("FEDREC_GATEWAY_PORT", "8443")
    environ.setenv("FEDREC_GATEWAY_WATCH", "true")
    settings = load_settings({"port": 9000, "watch": False, "checkpoint": Path("/srv/other")})
    assert (settings.port, settings.watch, settings.checkpoint) == (9000, False, Path("/srv/other"))


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FEDREC_GATEWAY_PORT", "eighty", "FEDREC_GATEWAY_PORT 'eighty': Input should be a valid"),
        ("FEDREC_GATEWAY_PORT", "70000", "FEDREC_GATEWAY_PORT '70000': Input should be less"),
        ("FEDREC_GATEWAY_WATCH", "maybe", "FEDREC_GATEWAY_WATCH 'maybe': Input should be a valid"),
        ("FEDREC_GATEWAY_MIN_RATING", "9", "FEDREC_GATEWAY_MIN_RATING '9': "),
        ("FEDREC_GATEWAY_API_KEY_FILE", "/no/such/keys", "FEDREC_GATEWAY_API_KEY_FILE: /no/such"),
        ("FEDREC_GATEWAY_CHEKPOINT", "/x", "did you mean FEDREC_GATEWAY_CHECKPOINT?"),
        ("FEDREC_GATEWAY_ALLOW_UNSIGNED", "1", "exclude each other"),
    ],
)
def test_a_bad_environment_value_is_named(
    environ: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    environ.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings({})
    assert says in str(err.value)


def test_bad_flags_and_missing_settings_are_named(environ: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=r"^--port 0: Input should be greater than or equal"):
        load_settings({"port": 0})
    environ.delenv("FEDREC_GATEWAY_CHECKPOINT")
    environ.delenv("FEDREC_GATEWAY_VERIFY_KEY")
    with pytest.raises(SettingsError) as err:
        load_settings({"header_timeout": -1.0})
    problems = str(err.value).split("; ")
    assert problems[0] == "--checkpoint / FEDREC_GATEWAY_CHECKPOINT: required"
    assert problems[1].startswith("--header-timeout -1.0: Input should be greater than or equal")


def test_without_a_verify_key_unsigned_must_be_asked_for(environ: pytest.MonkeyPatch) -> None:
    environ.delenv("FEDREC_GATEWAY_VERIFY_KEY")
    with pytest.raises(SettingsError, match="--verify-key PUBFILE is required"):
        load_settings({})
    assert load_settings({"allow_unsigned": True}).verify_key is None


def test_docs_list_every_environment_variable() -> None:
    documented = set(
        re.findall(rf"`({ENV_PREFIX}[A-Z_]+)`", (REPO / "docs/gateway.md").read_text())
    )
    assert documented == {env_var(name) for name in GatewaySettings.model_fields}
