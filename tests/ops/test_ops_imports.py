"""fedrec_app.ops starts processes and never imports training code, TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import fedrec_app.ops as ops
names = [m.name for m in pkgutil.iter_modules(ops.__path__, "fedrec_app.ops.")]
for name in names:
    importlib.import_module(name)
import fedrec_app.cli.ops
banned = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")
          or m in ("fedrec_app.core.model", "fedrec_app.core.training", "fedrec_app.client_app",
                   "fedrec_app.server_app")]
print(len(names), banned)
"""


def test_ops_modules_import_no_training_code() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    count, banned = result.stdout.strip().split(" ", 1)
    assert int(count) >= 6
    assert banned == "[]", banned
