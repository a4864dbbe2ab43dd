"""A multi-host federation on one machine (deploy/netns.sh): the SuperLink, 2 SuperNodes, the
`flwr` CLI, the gateway and its client each in their own network namespace.

All traffic stays inside the namespaces: every client runs with `ip netns exec`. The fixtures
stop every process before the namespaces are deleted, also when the test fails. Needs root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_helpers import processes_mentioning
from netns_helpers import (
    REPO,
    Namespaces,
    NetnsCli,
    Stack,
    namespaces_up,
    stack_in,
    wait_superlink,
)

from fedrec_app.data.catalogue import read_catalogue_csv
from fedrec_app.data.layout import partition_dir_name
from fedrec_app.data.partition import make_partitions
from fedrec_app.ops.app_approval import app_hash, append_to_allowlist
from fedrec_app.ops.certs import certificate_sans, make_certs, make_node_keys
from fedrec_app.ops.federation import NODE_READY
from fedrec_app.ops.flower import COMPLETED, SuperLinkCommand, SuperNodeCommand

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINK_PORT, GATEWAY_PORT = 18443, 18080  # inside the namespaces: nothing else listens there
CLIENT = """
import json, sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            print(json.dumps(json.load(response)))
            break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {sys.argv[1]}: {exc}")
        time.sleep(0.5)
"""


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Namespaces for link, cli, gw, sn1, sn2 on a private bridge; deleted afterwards."""
    with namespaces_up(2) as made:
        yield made


@pytest.fixture
def stack(namespaces: Namespaces, tmp_path: Path) -> Iterator[Stack]:
    """Depends on `namespaces`, so its teardown (stop processes) runs before theirs."""
    with stack_in(tmp_path) as started:
        yield started


def test_federation_and_gateway_across_namespaces(
    namespaces: Namespaces, stack: Stack, tmp_path: Path, synthetic_ml: Path
) -> None:
    ns = namespaces
    link_ip, gw_ip = ns.addr("link"), ns.addr("gw")
    certs = make_certs(tmp_path / "certs", [link_ip])
    assert link_ip in certificate_sans(certs.server_cert)
    names = ["sn1", "sn2"]
    keys = make_node_keys(tmp_path / "certs" / "nodes", names)
    set_dir = make_partitions(synthetic_ml, tmp_path / "partitions", len(names)).out

    link_home = tmp_path / "superlink"
    link = SuperLinkCommand(
        host=link_ip,
        port=LINK_PORT,
        database=link_home / "state.db",
        ca_cert=certs.ca_cert,
        server_cert=certs.server_cert,
        server_key=certs.server_key,
    )
    superlink = stack.start("superlink", ns.exec("link", link.argv()), link_home)
    cli = NetnsCli(tmp_path / "cli", ns)
    cli.configure(f"{link_ip}:{LINK_PORT}", certs.ca_cert)
    wait_superlink(cli, superlink)
    node_ids = {key.name: cli.register(key.public) for key in keys}

    approved = tmp_path / "approved-apps.txt"  # the sites' admins approved this checkout
    append_to_allowlist(approved, app_hash(REPO))
    for k, key in enumerate(keys):
        node = SuperNodeCommand(
            superlink=f"{link_ip}:{LINK_PORT}",
            runtime_port=9094,
            ca_cert=certs.ca_cert,
            private_key=key.private,
            max_wait_time=60,
            approved_apps=approved,
            node_config={
                "data-path": set_dir / partition_dir_name(k),
                "state-dir": tmp_path / "nodes" / key.name / "state",
            },
        )  # own namespace, own loopback: both may use Runtime API port 9094
        stack.start(key.name, ns.exec(key.name, node.argv()), tmp_path / "nodes" / key.name)
    for process in stack.processes[1:]:
        assert process.wait_for_log(NODE_READY, 120).group(1) == node_ids[process.name]

    run_id = cli.run(
        REPO,
        {
            "num-server-rounds": 1,
            "local-epochs": 1,
            "min-nodes": len(names),
            "checkpoint-dir": tmp_path / "checkpoints",
            "signing-key": certs.signing_key,
            "partition-set": set_dir,
            "share-user-factors": True,
        },
    )
    record = cli.wait(run_id, timeout=600)
    assert record["status"] == COMPLETED, (record, cli.log(run_id)[-3000:])
    final = tmp_path / "checkpoints" / run_id / "final"
    assert (final / "manifest.json").is_file()

    gateway = [
        sys.executable,
        "-m",
        "fedrec_app",
        "gateway",
        "--checkpoint",
        final,
        "--host",
        gw_ip,
        "--port",
        GATEWAY_PORT,
        "--verify-key",
        certs.signing_pub,
    ]
    stack.start("gateway", ns.exec("gw", gateway), tmp_path / "gateway")
    url = f"http://{gw_ip}:{GATEWAY_PORT}/recommend?user_id=4&n=5"
    answer = subprocess.run(
        ns.exec("cli", [sys.executable, "-c", CLIENT, url, "60"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr + stack.processes[-1].log_tail()
    recs = json.loads(answer.stdout)["recommendations"]
    catalogue = read_catalogue_csv(set_dir / "items.csv")
    assert len(recs) == 5
    for rec in recs:
        assert rec["movie_title"] == catalogue.titles[catalogue.index_of(rec["movie_id"])]
    assert processes_mentioning(str(tmp_path))  # still running here; the fixture stops them


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
