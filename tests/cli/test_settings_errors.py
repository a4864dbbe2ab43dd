"""The real `fedrec` process: gateway settings from the environment and flags; bad settings and
run-config items refused with exit 2, named, no traceback, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gateway.conftest import make_checkpoint
from signing_keys import verify_key_file


def fedrec(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDREC_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def gateway_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A gateway configured by its environment alone, as from a systemd unit's Environment=."""
    checkpoint = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "final")
    return {
        "FEDREC_GATEWAY_CHECKPOINT": str(checkpoint),
        "FEDREC_GATEWAY_VERIFY_KEY": str(verify_key_file()),
        "FEDREC_GATEWAY_PORT": "8443",
        "FEDREC_GATEWAY_WATCH": "true",
    }


def test_gateway_runs_from_its_environment_and_flags_override_it(
    gateway_env: dict[str, str],
) -> None:
    result = fedrec("gateway", "--dry-run", env=gateway_env)
    assert result.returncode == 0, result.stderr
    assert "checkpoint ok (signature verified)" in result.stdout
    assert "would serve http://127.0.0.1:8443 (--watch)" in result.stdout
    result = fedrec("gateway", "--dry-run", "--port", "9001", "--no-watch", env=gateway_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("would serve http://127.0.0.1:9001")


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        ((), {"FEDREC_GATEWAY_PORT": "eighty"}, "FEDREC_GATEWAY_PORT 'eighty': Input should be"),
        (("--port", "0"), {}, "--port 0: Input should be greater than or equal to 1"),
        (
            ("--cert", "/nonexistent/gw.pem"),
            {"FEDREC_GATEWAY_TLS": "1"},
            "--cert / FEDREC_GATEWAY_CERT /nonexistent/gw.pem: no such file",
        ),
        ((), {"FEDREC_GATEWAY_VERIFY_KEY": ""}, "--verify-key PUBFILE is required"),
        ((), {"FEDREC_GATEWAY_WACH": "1"}, "did you mean FEDREC_GATEWAY_WATCH?"),
    ],
)
def test_a_bad_gateway_setting_exits_2_naming_it(
    gateway_env: dict[str, str], argv: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    result = fedrec("gateway", "--dry-run", *argv, env={**gateway_env, **env})
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def test_gateway_help_shows_each_variable_and_default() -> None:
    result = fedrec("gateway", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "TCP port (default: 8080; env FEDREC_GATEWAY_PORT)" in text
    assert "(required; env FEDREC_GATEWAY_CHECKPOINT)" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("up",), "unknown key 'num-server-round' (did you mean 'num-server-rounds'?)"),
        (
            ("bench", "quality", "--num-partitions", "2", "--data", "x", "--json", "x.json"),
            "unknown key 'num-server-round' (did you mean 'num-server-rounds'?)",
        ),
    ],
)
def test_a_bad_run_config_key_stops_before_anything_starts(
    tmp_path: Path, argv: tuple[str, ...], says: str
) -> None:
    work = tmp_path / "work"
    options = ("--work", str(work)) if argv[0] == "up" else ("--work-dir", str(work))
    result = fedrec(*argv, *options, "--run-config", "local-epochs=2 num-server-round=3")
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert not work.exists()


def test_a_run_config_value_flower_cannot_parse_is_named(tmp_path: Path) -> None:
    result = fedrec("up", "--work", str(tmp_path / "w"), "--run-config", "catalogue=/srv/items.csv")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--run-config 'catalogue=/srv/items.csv': the value must be" in result.stderr
    assert "catalogue='/srv/items.csv'" in result.stderr
