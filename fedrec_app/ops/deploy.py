"""`fedrec deploy ROLE`: start one role of a manifest's federation on this host.

`superlink`, `proxy` (the SuperLink's Fleet proxy), `supernode NAME`, `trainer NAME` (the node's
warm trainer) and `gateway` replace this process (exec) with the role's process, so a supervisor
(systemd) manages it directly; `superlink` first starts its proxy, and `supernode NAME` its
trainer, in the background unless told not to (the systemd units run each as a unit of its own).
`register` registers every node key, from the SuperLink host (the Control API is on its loopback).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fedrec_app.ops.flower import (
    FlowerCliError,
    FlwrCli,
    SuperLinkCommand,
    SuperNodeCommand,
    flower_env,
)
from fedrec_app.ops.manifest import Manifest
from fedrec_app.ops.proxy import ProxyCommand
from fedrec_app.ops.trainer_command import TrainerCommand

log = logging.getLogger(__name__)

ALREADY_REGISTERED = "Public key already in use"
TRAINER_LOG = "trainer.log"  # in the node's state dir, when `deploy supernode` starts the trainer
PROXY_LOG = "proxy.log"  # in the proxy's folder, when `deploy superlink` starts the proxy


@dataclass(frozen=True)
class Launch:
    """What to exec: the command line, its environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    folders: tuple[Path, ...] = ()


def superlink_launch(manifest: Manifest) -> Launch:
    link = manifest.superlink
    cmd = SuperLinkCommand(  # loopback only: the network reaches the Fleet proxy, nothing else
        host="127.0.0.1",
        port=link.control_port,
        database=link.database,
        ca_cert=link.ca_cert,
        server_cert=link.server_cert,
        server_key=link.server_key,
        log_file=link.log_file,
    )
    # the ServerApp runs with the SuperLink's cwd: keep it in the SuperLink's state folder
    folders = (link.home, link.database.parent, *((link.log_file.parent,) if link.log_file else ()))
    return Launch(cmd.argv(), flower_env(link.home), link.home, folders)


def proxy_command(manifest: Manifest) -> ProxyCommand:
    link = manifest.superlink
    return ProxyCommand(
        host=link.bind,
        port=link.port,
        upstream_port=link.control_port,
        server_cert=link.server_cert,
        server_key=link.server_key,
        ca_cert=link.ca_cert,
        folder=link.proxy_dir,
    )


def proxy_launch(manifest: Manifest) -> Launch:
    """nginx on the manifest's proxy config (`write_proxy_config` writes it)."""
    proxy = proxy_command(manifest)
    return Launch(
        proxy.argv(),
        dict(os.environ),
        manifest.superlink.proxy_dir,
        (manifest.superlink.proxy_dir,),
    )


def write_proxy_config(manifest: Manifest) -> Path:
    """Write the proxy's nginx config from the manifest and have nginx check it."""
    proxy = proxy_command(manifest)
    path = proxy.write()
    proxy.check()
    return path


def supernode_launch(manifest: Manifest, name: str) -> Launch:
    node = manifest.node(name)
    cmd = SuperNodeCommand(
        superlink=node.superlink,
        runtime_port=node.runtime_port,
        ca_cert=node.ca_cert,
        private_key=node.private_key,
        node_config=node.node_config,
        max_wait_time=node.max_wait_time,
        approved_apps=node.approved_apps,
    )
    return Launch(cmd.argv(), flower_env(node.home), node.state_dir, (node.state_dir, node.home))


def trainer_launch(manifest: Manifest, name: str) -> Launch:
    node = manifest.node(name)
    argv = TrainerCommand.for_node(node.node_config).argv()
    return Launch(argv, dict(os.environ), node.state_dir, (node.state_dir,))


def gateway_launch(manifest: Manifest) -> Launch:
    gw = manifest.gateway
    assert gw is not None, "checked by Manifest.check('gateway')"
    argv = [
        sys.executable,
        "-m",
        "fedrec_app",
        "gateway",
        "--checkpoint",
        str(gw.checkpoint),
        "--host",
        gw.host,
        "--port",
        str(gw.port),
        "--verify-key",
        str(gw.verify_key),
        "--watch",
    ]  # `fedrec checkpoint publish` repoints SERVE_DIR/current: reload then
    if gw.tls:
        argv += ["--tls", "--cert", str(gw.cert), "--key", str(gw.key)]
    if gw.api_key_file is not None:
        argv += ["--api-key-file", str(gw.api_key_file)]
    return Launch(argv, dict(os.environ), manifest.path.parent.resolve())


def launch_for(manifest: Manifest, role: str, name: str | None = None) -> Launch:
    """Check what `role` needs on this host, then build its launch."""
    manifest.check(role, name)
    if role == "superlink":
        return superlink_launch(manifest)
    if role == "proxy":
        return proxy_launch(manifest)
    if role in ("supernode", "trainer"):
        assert name is not None
        return (supernode_launch if role == "supernode" else trainer_launch)(manifest, name)
    return gateway_launch(manifest)


def exec_launch(launch: Launch) -> None:
    """Replace this process with the launch (folders it writes to are created first)."""
    for folder in launch.folders:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chdir(launch.cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(launch.argv[0], launch.argv, launch.env)


def start_in_background(launch: Launch, log_file: Path) -> None:
    """Start the launch in this process group (Ctrl+C in the terminal stops it with the role
    this process becomes), its output appended to ``log_file``. A trainer that finds another one
    serving its socket exits."""
    for folder in launch.folders:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    log.info("started pid %d in the background: %s (log %s)", process.pid, launch.argv, log_file)


def register_nodes(manifest: Manifest) -> dict[str, str]:
    """Register every node's public key; node name -> node id (or 'already registered')."""
    manifest.check("register")
    link = manifest.superlink
    cli = FlwrCli(manifest.cli_home)
    cli.configure(link.control_address, link.ca_cert)
    result: dict[str, str] = {}
    for node in manifest.supernodes:
        try:
            result[node.name] = cli.register(node.public_key)
        except FlowerCliError as exc:
            if ALREADY_REGISTERED not in str(exc):
                raise
            result[node.name] = "already registered"
        log.info("%s: %s", node.name, result[node.name])
    return result
