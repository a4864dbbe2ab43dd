"""The gateway's import path stays free of TensorFlow, Keras, Flower and pandas."""

from __future__ import annotations

import json
import subprocess
import sys

from import_blocker import NOT_IN_GATEWAY, run_without
from signing_keys import verify_key_file

PROBE = """
import json, sys
from pathlib import Path
from fedrec_app.cli import build_parser
build_parser()  # imports every command module, as `fedrec gateway` does
from fedrec_app.gateway.main import create_app
from fedrec_app.gateway.settings import GatewaySettings
create_app(GatewaySettings(checkpoint=Path(sys.argv[1]), verify_key=Path(sys.argv[2])))
heavy = {"tensorflow", "keras", "flwr", "pandas", "ray", "grpc"}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_gateway_imports_nothing_heavy(checkpoint_dir) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(checkpoint_dir), str(verify_key_file())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_gateway_starts_without_the_packages_its_install_lacks(checkpoint_dir) -> None:
    # As on a host with only `pip install 'fedrec[gateway]'`: TensorFlow, Keras, Flower, Ray and
    # pandas cannot be imported at all, and the app is still built from a signed checkpoint.
    result = run_without(NOT_IN_GATEWAY, PROBE, str(checkpoint_dir), str(verify_key_file()))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
