"""The `fedrec` command line as a user meets it: real subprocesses, clear errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def fedrec(
    *args: object, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=timeout,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_cli_help_lists_commands() -> None:
    result = fedrec("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: fedrec" in result.stdout
    assert "federated movie recommender" in result.stdout
    assert "fedrec up" in result.stdout
    # the developer's note of the cli package (its docstring) is not the user's help
    assert "no logic here" not in result.stdout and "parses arguments" not in result.stdout


@pytest.mark.parametrize("command", [["certs"], ["certs", "--signing-key"], ["keys", "sn1"]])
def test_certs_and_keys_refuse_a_bad_out_folder(tmp_path: Path, command: list[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    under = fedrec(*command, "--out", a_file / "certs")
    assert_user_error(under, f"--out {a_file / 'certs'}: {a_file} is a file, not a folder")
    itself = fedrec(*command, "--out", a_file)
    assert_user_error(itself, f"--out {a_file}: exists and is not a folder")
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_certs_refuse_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = fedrec("certs", "--out", locked / "certs")
    assert_user_error(result, f"--out {locked / 'certs'}: cannot write certificates or keys")
    assert list(locked.iterdir()) == []
