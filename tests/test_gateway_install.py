"""The gateway host's install, made for real: a fresh venv with `pip install '.[gateway]'`.

Needs PyPI (or a pip cache); .ci/run installs from PyPI anyway. Slow (about a minute with a warm
pip cache): it builds the wheel from this checkout and installs its dependencies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 300
NEVER = {"tensorflow", "tensorflow-cpu", "keras", "ray", "flwr", "pandas"}

# pip alone may take up to its 900 s below: more than the suite's 600 s per test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def folder_mb(folder: Path) -> float:
    return (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    )


def test_gateway_extra_installs_small_and_without_training_stacks(tmp_path: Path) -> None:
    env_dir = tmp_path / "gateway-venv"
    venv.create(env_dir, with_pip=True, symlinks=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{REPO}[gateway]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert "fedrec" in installed and "fastapi" in installed
    assert installed & NEVER == set()
    size = folder_mb(env_dir)
    print(f"gateway venv: {size:.0f} MB, {len(installed)} distributions", file=sys.stderr)
    assert size < LIMIT_MB
    # It runs: the gateway's CLI answers with this extra alone.
    help_run = subprocess.run(
        [env_dir / "bin" / "fedrec", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_run.returncode == 0, help_run.stderr
