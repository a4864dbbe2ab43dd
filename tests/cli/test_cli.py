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


_NO_TENSORFLOW = """
import sys
from fedrec_app.cli import main
code = main(sys.argv[1:])
print("exit", code, "tensorflow loaded" if "tensorflow" in sys.modules else "no tensorflow")
"""


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--data", "{tmp}/missing"], "data folder {tmp}/missing not found"),
        (["--data", "{ml}", "--split", "u9"], "unknown split 'u9'"),
    ],
)
def test_train_central_checks_its_data_before_loading_tensorflow(
    tmp_path: Path, synthetic_ml: Path, extra: list[str], fragment: str
) -> None:
    """A missing data folder or a bad split is refused at once: TensorFlow (seconds to import)
    is never loaded for it."""
    args = [a.format(tmp=tmp_path, ml=synthetic_ml) for a in extra]
    result = subprocess.run(
        [sys.executable, "-c", _NO_TENSORFLOW, "train-central", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert fragment.format(tmp=tmp_path) in result.stderr, result.stderr
    assert result.stdout.split("\n")[-2] == "exit 2 no tensorflow", result.stdout
