"""The `fedrec` command line as a user meets it: real subprocesses, clear errors, no tracebacks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def fedrec(
    *args: object,
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=timeout,
        env=env,
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


def test_certs_refuse_a_read_only_folder() -> None:
    """As root (CI), the command runs as nobody: root writes into a read-only folder."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root writes into a read-only folder, and setpriv is missing")
        as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    top = Path(tempfile.mkdtemp(prefix="fedrec-ro-"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        result = subprocess.run(
            [*as_user, sys.executable, "-m", "fedrec_app", "certs", "--out", str(locked / "c")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert_user_error(result, f"--out {locked / 'c'}: cannot write certificates or keys")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(top)


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


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--partitions", "foo"], "argument --partitions: invalid choice: 'foo'"),
        (["--split", "u9"], "argument --split: invalid choice: 'u9'"),
        (["--md5", "xyz"], "argument --md5: 'xyz' is not an md5"),
        (["--nodes", "0"], "--nodes 0: need at least 1 SuperNode"),
    ],
)
def test_up_refuses_bad_arguments_before_step_1(
    tmp_path: Path, extra: list[str], fragment: str
) -> None:
    work, data = tmp_path / "work", tmp_path / "data"
    result = fedrec("up", "--work", work, "--data", data, *extra, timeout=60)
    assert_user_error(result, fragment)
    assert "[1/" not in result.stdout  # no step started
    assert not work.exists() and not data.exists()


def test_download_md5_is_checked_before_fetching(tmp_path: Path) -> None:
    result = fedrec("data", "download", "--data", tmp_path / "d", "--md5", "abc")
    assert_user_error(result, "argument --md5: 'abc' is not an md5 (32 hex digits)")
    assert not (tmp_path / "d").exists()


def test_up_choices_are_what_partitioning_accepts() -> None:
    from fedrec_app.cli.up import SCHEMES, SPLITS
    from fedrec_app.data.movielens import HOLDOUT
    from fedrec_app.data.movielens import SPLITS as MOVIELENS_SPLITS
    from fedrec_app.data.partition import SCHEMES as PARTITION_SCHEMES

    assert SCHEMES == PARTITION_SCHEMES
    assert (*MOVIELENS_SPLITS, HOLDOUT) == SPLITS


def test_up_offline_suggests_zip_and_leaves_no_data_folder(tmp_path: Path) -> None:
    """Offline (every proxy variable points at a closed port, so GroupLens cannot be reached):
    step 1 fails naming --zip, and the data folder it would have made is not left behind."""
    offline = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        offline[name] = offline[name.lower()] = "http://127.0.0.1:1"
    work, data = tmp_path / "work", tmp_path / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fedrec("up", "--work", work, "--data", data, "--port", port, timeout=120, env=offline)
    assert_user_error(result, "download of https://", "--zip path/to/ml-100k.zip")
    assert not data.exists()
