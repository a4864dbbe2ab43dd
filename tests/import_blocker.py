"""Run Python code in a subprocess where some packages cannot be imported, as on a host that
installed only one role's extra (pyproject.toml; deploy/README.md section 2)."""

from __future__ import annotations

import subprocess
import sys

# What the gateway's install (`pip install 'fedrec[gateway]'`) does not hold.
NOT_IN_GATEWAY = ("tensorflow", "keras", "flwr", "ray", "grpc", "pandas", "tqdm")

_PRELUDE = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


def run_without(
    blocked: tuple[str, ...], code: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``args`` as sys.argv[1:]) where every module under ``blocked`` raises
    ModuleNotFoundError on import, as if it were not installed."""
    source = _PRELUDE.format(blocked=sorted(blocked)) + code
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli_without(
    blocked: tuple[str, ...], *argv: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``fedrec ARGV…`` (as ``python -m fedrec_app``) with ``blocked`` made unimportable."""
    code = (
        "import runpy\nsys.argv[0] = 'fedrec'\n"
        "runpy.run_module('fedrec_app', run_name='__main__')\n"
    )
    return run_without(blocked, code, *argv, timeout=timeout)
