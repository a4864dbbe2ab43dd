"""`fedrec deploy superlink|register|supernode` from a manifest, as real processes, to a run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launch_helpers import wait_for_output

from fedrec_app.data.catalogue import write_catalogue_csv
from fedrec_app.data.movielens import read_items
from fedrec_app.data.site import make_site_partition
from fedrec_app.ops.app_approval import app_hash, append_to_allowlist
from fedrec_app.ops.certs import make_certs, make_node_keys
from fedrec_app.ops.federation import NODE_READY, NOOP_APP_DIR, free_port
from fedrec_app.ops.flower import COMPLETED, FlwrCli
from fedrec_app.ops.manifest import load_manifest
from fedrec_app.ops.process import ManagedProcess
from fedrec_app.ops.trainer_command import TRAINER_READY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _deploy(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedrec_app", "deploy", *args]


def test_deploy_roles_run_a_federation(tmp_path: Path, synthetic_ml: Path) -> None:
    make_certs(tmp_path / "certs")
    make_node_keys(tmp_path / "certs" / "nodes", ["site1", "site2"])
    catalogue = tmp_path / "shared" / "items.csv"
    catalogue.parent.mkdir()
    write_catalogue_csv(read_items(synthetic_ml), catalogue)
    lines = (synthetic_ml / "u.data").read_text().splitlines(True)
    nodes = []
    for i, name in enumerate(("site1", "site2")):
        ratings = tmp_path / "shared" / f"{name}.tsv"  # each site's own ratings
        ratings.write_text("".join(lines[i * 300 : (i + 1) * 300]))
        make_site_partition(ratings, catalogue, tmp_path / "data" / name)
        append_to_allowlist(tmp_path / "approved" / f"{name}.txt", app_hash(NOOP_APP_DIR))
        nodes.append(
            {
                "name": name,
                "private-key": f"certs/nodes/{name}",
                "data-path": f"data/{name}",
                "state-dir": f"state/{name}",
                "runtime-port": free_port(),
                "max-wait-time": 60 + i,
                "approved-apps": f"approved/{name}.txt",
            }
        )
    config = tmp_path / "deploy" / "federation.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "root": "..",
                "superlink": {
                    "address": "127.0.0.1",
                    "port": free_port(),
                    "control-port": free_port(),
                    "ca-cert": "certs/ca.crt",
                    "server-cert": "certs/server.pem",
                    "server-key": "certs/server.key",
                    "database": "state/superlink/state.db",
                    "log-file": "state/superlink/superlink.log",
                },
                "supernodes": nodes,
            }
        )
    )
    manifest = load_manifest(config)
    env = dict(os.environ)
    logs = tmp_path / "logs"
    procs = [
        ManagedProcess(
            "superlink", _deploy("superlink", "-c", str(config)), env, logs / "superlink.log"
        )
    ]
    try:
        procs[0].start().wait_https_ready(
            f"https://{manifest.superlink.control_address}/health",
            manifest.superlink.ca_cert,
            timeout=90,
        )
        for expected in ("[0-9]+", "already registered"):
            result = subprocess.run(
                _deploy("register", "-c", str(config)),
                capture_output=True,
                text=True,
                check=False,
                env=env,
            )
            assert result.returncode == 0, result.stderr
            assert all(f"{n}: " in result.stdout for n in ("site1", "site2")), result.stdout
            assert len(re.findall(f": {expected}\n", result.stdout)) == 2, result.stdout
        for name in ("site1", "site2"):
            procs.append(
                ManagedProcess(
                    name, _deploy("supernode", name, "-c", str(config)), env, logs / f"{name}.log"
                ).start()
            )
        for proc in procs[1:]:
            proc.wait_for_log(NODE_READY, timeout=90)
        assert (tmp_path / "state" / "superlink" / "state.db").is_file()
        # the nodes came in through the Fleet proxy `deploy superlink` started beside it
        access = (tmp_path / "state" / "superlink" / "proxy" / "access.log").read_text()
        assert "POST /v1/fleet/activate-node" in access, access[-2000:]
        for name in ("site1", "site2"):  # each node's trainer started on its own folder
            trainer_log = tmp_path / "state" / name / "trainer.log"
            wait_for_output(trainer_log, TRAINER_READY, 180)
        assert "--max-wait-time 61" in " ".join(
            Path(f"/proc/{procs[2].pid}/cmdline").read_text().split("\0")
        )
        cli = FlwrCli(manifest.cli_home)
        run_id = cli.run(NOOP_APP_DIR, {"num-server-rounds": 1, "fraction-evaluate": 0.0})
        assert cli.wait(run_id, timeout=180)["status"] == COMPLETED
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert not any(p.alive() for p in procs)
