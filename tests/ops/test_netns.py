"""deploy/netns.sh: `down` deletes exactly what its `up` made. The federation across the
namespaces (SuperLink, SuperNodes, operator, gateway, each in its own) is tested by following
the runbook: tests/deploy/test_runbook.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_netns_down_deletes_only_what_up_made(tmp_path: Path) -> None:
    """`down` deletes the namespaces its `up` recorded: not a stray namespace with the same
    prefix, not another prefix's; `down` without `up` deletes nothing."""
    import os
    import shutil

    from netns_helpers import NETNS, _namespaces

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    prefix = f"fz{os.getpid() % 100000:05d}"
    env = {
        **os.environ,
        "FEDREC_NETNS_PREFIX": prefix,
        "FEDREC_NETNS_SUBNET": "10.251.7",
        "FEDREC_NETNS_STATE": str(tmp_path / "state"),
    }
    stray = f"{prefix}sn9"  # matches the prefix's role pattern, but `up` did not make it
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        empty = subprocess.run([str(NETNS), "down"], env=env, capture_output=True, text=True)
        assert empty.returncode == 0 and "nothing to delete" in empty.stderr
        assert stray in _namespaces()
        subprocess.run([str(NETNS), "up", "1"], env=env, check=True, capture_output=True)
        made = {f"{prefix}{role}" for role in ("br", "link", "cli", "gw", "sn1")}
        assert made <= set(_namespaces())
        assert set((tmp_path / "state" / f"{prefix}.list").read_text().split()) == made
        again = subprocess.run([str(NETNS), "up", "1"], env=env, capture_output=True, text=True)
        assert again.returncode == 1 and "already exist" in again.stderr
        subprocess.run([str(NETNS), "down"], env=env, check=True)
        left = set(_namespaces())
        assert not made & left, f"left behind: {made & left}"
        assert stray in left
        assert not (tmp_path / "state" / f"{prefix}.list").exists()
        # a namespace `up` would make exists already: refused before anything is made
        clash = subprocess.run([str(NETNS), "up", "9"], env=env, capture_output=True, text=True)
        assert clash.returncode == 1 and f"{stray} already exist" in clash.stderr
        assert not made & set(_namespaces()) and stray in _namespaces()
        # `up` failing half-way (a veth name taken) deletes what it made, and only that
        subprocess.run(
            ["ip", "link", "add", f"v{prefix}cli", "type", "veth", "peer", "name", f"v{prefix}x"],
            check=True,
        )
        try:
            half = subprocess.run([str(NETNS), "up", "1"], env=env, capture_output=True)
            assert half.returncode != 0
        finally:
            subprocess.run(["ip", "link", "del", f"v{prefix}cli"], check=False)
        assert not made & set(_namespaces()) and stray in _namespaces()
        assert not (tmp_path / "state" / f"{prefix}.list").exists()
    finally:
        subprocess.run([str(NETNS), "down"], env=env, check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", stray], check=False)
