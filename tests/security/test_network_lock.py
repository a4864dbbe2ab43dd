"""Who can reach what on the lab network (issue "Lock the federation"), tried against real hosts.

One federation in network namespaces: on `link`, the SuperLink on the namespace's loopback,
the Fleet proxy (nginx) on the lab address and sshd (the operator's way in); SuperNodes on `sn1`
and `sn2` dial the proxy; the operator sits on `cli` with an SSH key, and `gw` is any other lab
host. Everything an attacker tried in the probe is tried again from `gw` (no credential) and
from `sn1` (a SuperNode host holding a valid node key); the operator then does their job
through an SSH tunnel. Needs root, nginx and OpenSSH's server (`.ci/run` installs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns_helpers import Namespaces, NetnsCli, Stack, namespaces_up, stack_in, wait_superlink

from fedrec_app.ops.app_approval import app_hash, append_to_allowlist
from fedrec_app.ops.certs import CertPaths, make_certs, make_node_keys
from fedrec_app.ops.federation import NODE_READY, NOOP_APP_DIR
from fedrec_app.ops.flower import (
    COMPLETED,
    FlowerCliError,
    SuperLinkCommand,
    SuperNodeCommand,
)
from fedrec_app.ops.proxy import FLEET_PATHS, ProxyCommand, nginx_bin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINK_PORT, PROXY_PORT, SSH_PORT, TUNNEL_PORT = 18443, 9443, 2222, 19443
SSHD = Path("/usr/sbin/sshd")
# Run inside a namespace: POST an empty protobuf message to each URL (TLS verification skipped,
# no credential, as in the probe) and print {url: HTTP status or the connection error}.
PROBE = """
import json, ssl, sys, urllib.error, urllib.request
context = ssl._create_unverified_context()
answers = {}
for url in sys.argv[2:]:
    request = urllib.request.Request(url, data=b"", method="POST",
                                     headers={"Content-Type": sys.argv[1]})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            answers[url] = response.status
    except urllib.error.HTTPError as exc:
        answers[url] = exc.code
    except OSError as exc:
        answers[url] = type(getattr(exc, "reason", exc)).__name__
print(json.dumps(answers))
"""


@dataclass
class Lab:
    ns: Namespaces
    stack: Stack
    work: Path
    certs: CertPaths
    link_ip: str
    operator: NetnsCli  # through the SSH tunnel
    node_ids: dict[str, str]

    def outsider(self, role: str) -> NetnsCli:
        """A `flwr` CLI on `role`'s host dialling the lab address, with the real CA."""
        cli = NetnsCli(self.work / f"cli-{role}", self.ns, role)
        cli.configure(f"{self.link_ip}:{PROXY_PORT}", self.certs.ca_cert)
        return cli

    def probe(self, role: str, urls: list[str]) -> dict[str, object]:
        from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE

        result = self.ns.run(
            role, [sys.executable, "-c", PROBE, PROTOBUF_MEDIA_TYPE, *urls], timeout=120
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _ssh_keys(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for name in ("host", "operator"):
        key = folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], check=True
        )
        keys.append(key)
    return keys[0], keys[1]


def _sshd_config(folder: Path, host_key: Path, operator_key: Path, link_ip: str) -> Path:
    """The SuperLink host's sshd: the operator's key only, tunnels to the SuperLink port only."""
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{operator_key}.pub").read_text())
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress {link_ip}\nPort {SSH_PORT}\nHostKey {host_key}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        "StrictModes no\nX11Forwarding no\nAllowAgentForwarding no\nPermitTTY no\n"
        f"AllowTcpForwarding local\nPermitOpen 127.0.0.1:{LINK_PORT}\n"
    )
    return config


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for needed, what in ((nginx_bin(), "nginx"), (SSHD.is_file() or None, "sshd")):
        if needed is None and os.geteuid() == 0:
            pytest.fail(f"{what} is not installed (.ci/run installs it)")
    work = tmp_path_factory.mktemp("lab")
    with namespaces_up(2) as ns, stack_in(work) as stack:
        link_ip = ns.addr("link")
        certs = make_certs(work / "certs", [link_ip])
        keys = make_node_keys(work / "certs" / "nodes", ["sn1", "sn2", "spare"])
        link_home = work / "superlink"
        link = SuperLinkCommand(
            host="127.0.0.1",
            port=LINK_PORT,
            database=link_home / "state.db",
            ca_cert=certs.ca_cert,
            server_cert=certs.server_cert,
            server_key=certs.server_key,
        )
        superlink = stack.start("superlink", ns.exec("link", link.argv()), link_home)
        proxy = ProxyCommand(
            host=link_ip,
            port=PROXY_PORT,
            upstream_port=LINK_PORT,
            server_cert=certs.server_cert,
            server_key=certs.server_key,
            ca_cert=certs.ca_cert,
            folder=work / "proxy",
        )
        proxy.write()
        proxy.check(ns.exec("link", []))
        stack.start("proxy", ns.exec("link", proxy.argv()), work / "proxy")

        host_key, operator_key = _ssh_keys(work / "ssh")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        sshd_config = _sshd_config(work / "ssh", host_key, operator_key, link_ip)
        sshd = stack.start(
            "sshd", ns.exec("link", [SSHD, "-D", "-e", "-f", sshd_config]), work / "ssh"
        )
        sshd.wait_for_log(f"Server listening on {link_ip} port {SSH_PORT}", 30)
        known_hosts = work / "ssh" / "known_hosts"
        host_pub = Path(f"{host_key}.pub").read_text().split()[:2]
        known_hosts.write_text(f"[{link_ip}]:{SSH_PORT} {' '.join(host_pub)}\n")
        tunnel = [
            "ssh",
            "-F",
            "/dev/null",
            "-N",
            "-i",
            operator_key,
            "-p",
            str(SSH_PORT),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{TUNNEL_PORT}:127.0.0.1:{LINK_PORT}",
            f"root@{link_ip}",
        ]
        tunnel_process = stack.start("tunnel", ns.exec("cli", tunnel), work / "operator")
        operator = NetnsCli(work / "operator", ns, "cli")
        operator.configure(f"127.0.0.1:{TUNNEL_PORT}", certs.ca_cert)
        wait_superlink(operator, tunnel_process)  # fails at once if the tunnel exits
        assert superlink.alive()
        node_ids = {key.name: operator.register(key.public) for key in keys[:2]}

        approved = work / "approved-apps.txt"
        append_to_allowlist(approved, app_hash(NOOP_APP_DIR), "the no-op app")
        for key in keys[:2]:
            node = SuperNodeCommand(
                superlink=f"{link_ip}:{PROXY_PORT}",
                runtime_port=9094,
                ca_cert=certs.ca_cert,
                private_key=key.private,
                max_wait_time=60,
                approved_apps=approved,
            )
            stack.start(key.name, ns.exec(key.name, node.argv()), work / key.name)
        for process in stack.processes:
            if process.name in node_ids:
                assert process.wait_for_log(NODE_READY, 120).group(1) == node_ids[process.name]
        yield Lab(ns, stack, work, certs, link_ip, operator, node_ids)


def _refused(call: object, *args: object) -> str:
    with pytest.raises(FlowerCliError) as info:
        call(*args)  # type: ignore[operator]
    return str(info.value)


@pytest.mark.parametrize("role", ["gw", "sn1"])
def test_lab_hosts_cannot_use_the_control_api(lab: Lab, role: str) -> None:
    """Another lab host, and a SuperNode host with a valid node key: list, submit, stop,
    register and unregister are all refused."""
    cli = lab.outsider(role)
    spare = lab.work / "certs" / "nodes" / "spare.pub"
    node_id = lab.node_ids["sn2"]
    runs_before = lab.operator._call("ls", lab.operator.connection)["runs"]
    _refused(cli.nodes)
    _refused(cli.status, "1")
    _refused(cli.run, NOOP_APP_DIR, {"num-server-rounds": 1})
    _refused(cli.stop, "1")
    _refused(cli.register, spare)
    _refused(cli._call, "supernode", "unregister", node_id, cli.connection)
    # nothing of it happened: the operator sees both nodes online, no run, no spare key
    nodes = {n["node-id"]: n["status"] for n in lab.operator.nodes()}
    assert nodes == {i: "online" for i in lab.node_ids.values()}
    assert lab.operator._call("ls", lab.operator.connection)["runs"] == runs_before
    # and the operator can see the attempts: the proxy logged each refusal with its source
    source = lab.ns.addr(role)
    refused = [
        line
        for line in (lab.work / "proxy" / "access.log").read_text().splitlines()
        if line.startswith(f"{source} ") and "/v1/control/" in line and '" 404 ' in line
    ]
    assert len(refused) >= 6, refused


@pytest.mark.parametrize("role", ["gw", "sn1"])
def test_only_fleet_paths_pass_the_proxy(lab: Lab, role: str) -> None:
    """Every Control and runtime path of Flower's route table is answered 404 by the proxy,
    the SuperLink's own port is closed to the network, and a Fleet call does reach the
    SuperLink, which refuses it without a node signature (401)."""
    from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

    base = f"https://{lab.link_ip}:{PROXY_PORT}"
    closed = [path for _, path in PROTOBUF_REQUEST_TYPES if not path.startswith("/v1/fleet/")]
    assert any(p.startswith("/v1/runtime/") for p in closed)
    assert any(p.startswith("/v1/control/") for p in closed)
    urls = [base + p for p in [*closed, "/health", "/docs", "/openapi.json"]]
    direct = f"https://{lab.link_ip}:{LINK_PORT}/v1/control/list-runs"
    fleet = base + FLEET_PATHS[FLEET_PATHS.index("/v1/fleet/get-run")]
    answers = lab.probe(role, [*urls, direct, fleet])
    assert {url: answers[url] for url in urls} == {url: 404 for url in urls}
    assert answers[direct] == "ConnectionRefusedError", answers[direct]
    assert answers[fleet] == 401, answers[fleet]


def test_operator_works_through_ssh(lab: Lab) -> None:
    """With the documented credential (an SSH tunnel to the SuperLink host) the operator runs
    `flwr run`, `flwr ls`, `flwr log`, `flwr stop` and node registration as before."""
    op = lab.operator
    run_id = op.run(NOOP_APP_DIR, {"num-server-rounds": 1, "fraction-evaluate": 0.0})
    record = op.wait(run_id, timeout=240)
    assert record["status"] == COMPLETED, (record, op.log(run_id)[-2000:])
    assert "ROUND 1/1" in op.log(run_id)
    assert run_id in {str(r["run-id"]) for r in op._call("ls", op.connection)["runs"]}

    stuck = op.run(NOOP_APP_DIR, {"num-server-rounds": 1, "min-nodes": 3})  # waits for a 3rd
    deadline = time.monotonic() + 120
    while op.status(stuck)["status"] not in ("running", "starting") and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    op.stop(stuck)
    assert op.wait(stuck, timeout=120)["status"] == "finished:stopped"

    spare_id = op.register(lab.work / "certs" / "nodes" / "spare.pub")
    listed = {
        n["node-id"]: n["status"]
        for n in op._call("supernode", "list", op.connection, "-v")["nodes"]
    }
    assert listed[spare_id] == "registered"
    op._call("supernode", "unregister", spare_id, op.connection)
    listed = {
        n["node-id"]: n["status"]
        for n in op._call("supernode", "list", op.connection, "-v")["nodes"]
    }
    assert listed[spare_id] == "unregistered"
