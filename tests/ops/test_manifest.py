"""deploy/federation.yaml: errors name the field; `fedrec deploy` builds secure launches."""

from __future__ import annotations

import configparser
import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gateway.conftest import make_checkpoint

from fedrec_app.core.signing import load_signing_key
from fedrec_app.data.catalogue import write_catalogue_csv
from fedrec_app.data.movielens import read_items
from fedrec_app.data.site import make_site_partition
from fedrec_app.ops.app_approval import append_to_allowlist
from fedrec_app.ops.certs import issue_server_cert, make_certs, make_node_keys
from fedrec_app.ops.deploy import launch_for, proxy_command
from fedrec_app.ops.manifest import ManifestError, load_manifest

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "root": ".",
    "superlink": {
        "address": "10.77.0.1",
        "port": 9093,
        "bind": "0.0.0.0",
        "ca-cert": "certs/ca.crt",
        "server-cert": "certs/server.pem",
        "server-key": "certs/server.key",
        "database": "state/link/state.db",
        "log-file": "state/link/superlink.log",
    },
    "cli-home": "state/cli",
    "supernodes": [
        {
            "name": "site1",
            "private-key": "certs/nodes/site1",
            "data-path": "data/p0",
            "state-dir": "state/site1",
            "gpu": 0,
            "approved-apps": "approved/site1.txt",
        },
        {
            "name": "site2",
            "private-key": "certs/nodes/site2",
            "data-path": "data/p1",
            "state-dir": "state/site2",
            "superlink": "10.77.0.1:9093",
            "runtime-port": 9095,
            "approved-apps": "approved/site2.txt",
        },
    ],
    "gateway": {
        "host": "10.77.0.6",
        "port": 8443,
        "checkpoint": "ckpt/final",
        "cert": "certs/gateway.pem",
        "key": "certs/gateway.key",
        "verify-key": "certs/federation-signing.pub",
    },
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, synthetic_ml: Path) -> Path:
    root = tmp_path_factory.mktemp("site")
    make_certs(root / "certs", ["10.77.0.1"])
    issue_server_cert(root / "certs", "gateway", ["10.77.0.6"])
    make_node_keys(root / "certs" / "nodes", ["site1", "site2"])
    _partition_folders(root / "data", synthetic_ml)
    for name in ("site1", "site2"):
        append_to_allowlist(root / "approved" / f"{name}.txt", "a" * 64)
    # the gateway's checkpoint, signed with this site's federation key
    make_checkpoint(
        root / "ckpt" / "final", key=load_signing_key(root / "certs" / "federation-signing.key")
    )
    make_checkpoint(root / "ckpt" / "unsigned", signed=False)
    make_checkpoint(root / "ckpt" / "other-key")  # signed, but by another federation's key
    return root


def _partition_folders(data: Path, synthetic_ml: Path) -> None:
    """p0, p1: each site's own partition folder (`fedrec partition site`); and broken ones."""
    data.mkdir(parents=True)
    write_catalogue_csv(read_items(synthetic_ml), data / "items.csv")
    lines = (synthetic_ml / "u.data").read_text().splitlines(True)
    for k, part in enumerate(("p0", "p1", "altered", "no-items", "no-manifest")):
        ratings = data / f"{part}.tsv"
        ratings.write_text("".join(lines[k * 200 : (k + 1) * 200]))
        make_site_partition(ratings, data / "items.csv", data / part)
    (data / "altered" / "train.csv").write_text("user_id,movie_id,rating,timestamp\n")
    (data / "no-items" / "items.csv").unlink()
    (data / "no-manifest" / "manifest.yaml").unlink()
    (data / "empty").mkdir()


def _write(site: Path, data: dict, name: str = "fed.yaml") -> Path:
    path = site / name
    path.write_text(yaml.safe_dump(data))
    return path


def _mutated(**changes: object) -> dict:
    """BASE with `section.key=value` changes (value None deletes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, key = dotted.replace("__", ".").split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[key]
        else:
            node[key] = value
    return data


def test_valid_manifest_builds_secure_launches(site: Path) -> None:
    manifest = load_manifest(_write(site, BASE))
    link = launch_for(manifest, "superlink")
    argv = link.argv
    assert {"--enable-supernode-auth", "--disable-runtime-dependency-installation"} <= set(argv)
    assert argv[argv.index("--ssl-certfile") + 1] == str(site / "certs" / "server.pem")
    assert argv[argv.index("--database") + 1] == str(site / "state" / "link" / "state.db")
    # the SuperLink on loopback; the lab address is the Fleet proxy's
    assert (argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]) == ("127.0.0.1", "9092")
    proxy = launch_for(manifest, "proxy")
    assert proxy.argv[proxy.argv.index("-c") + 1] == str(
        site / "state" / "link" / "proxy" / "nginx.conf"
    )
    config = proxy_command(manifest).config()
    assert "listen 0.0.0.0:9093 ssl;" in config and "server 127.0.0.1:9092;" in config
    assert link.env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert link.env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert link.env["FLWR_HOME"] == str(site / "state" / "link")

    node = launch_for(manifest, "supernode", "site1")
    argv = node.argv
    assert argv[argv.index("--superlink") + 1] == "10.77.0.1:9093"
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(
        site / "certs" / "nodes" / "site1"
    )
    assert argv[argv.index("--root-certificates") + 1] == str(site / "certs" / "ca.crt")
    assert argv[argv.index("--max-wait-time") + 1] == "600"
    assert argv[argv.index("--node-config") + 1] == (
        f"data-path='{site / 'data' / 'p0'}' state-dir='{site / 'state' / 'site1'}' gpu-index=0 "
        "site-name='site1'"
    )
    assert "--runtime-port" not in argv and argv[argv.index("--port") + 1] == "9094"
    assert argv[argv.index("--approved-apps") + 1] == str(site / "approved" / "site1.txt")
    argv2 = launch_for(manifest, "supernode", "site2").argv
    assert argv2[argv2.index("--port") + 1] == "9095"

    gateway = launch_for(manifest, "gateway").argv
    assert gateway[gateway.index("--checkpoint") + 1] == str(site / "ckpt" / "final")
    assert "--tls" in gateway
    assert gateway[gateway.index("--verify-key") + 1] == str(
        site / "certs" / "federation-signing.pub"
    )
    assert "--allow-unsigned" not in gateway
    assert "--watch" in gateway  # a published checkpoint (SERVE_DIR/current) is picked up


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"superlink.port": None}, r"superlink\.port: missing"),
        ({"supernodes.0.data-path": None}, r"supernodes\[0\]\.data-path: missing"),
        ({"superlink.prot": 1}, r"superlink\.prot: unknown field"),
        ({"superlink.port": "9093"}, r"superlink\.port: must be int"),
        ({"superlink.port": 70000}, r"superlink\.port: must be a port"),
        ({"supernodes.1.name": "site1"}, r"supernodes\[1\]\.name: 'site1' appears twice"),
        ({"supernodes.0.gpu": True}, r"supernodes\[0\]\.gpu: must be int"),
        ({"gateway.tls": "yes"}, r"gateway\.tls: must be bool"),
        ({"gateway.verify-key": None}, r"gateway\.verify-key: missing"),
        ({"supernodes.1.data-path": None}, r"supernodes\[1\]\.data-path: missing \(required\)"),
        ({"supernodes.1.datapath": "x"}, r"supernodes\[1\]\.datapath: unknown field \(known: "),
        ({"supernodes.0.max-wait-time": 0}, r"supernodes\[0\]\.max-wait-time: must be > 0"),
        ({"supernodes.0.name": "a/b"}, r"supernodes\[0\]\.name: must be a non-empty name"),
        ({"superlink.address": "10.0 .1"}, r"superlink\.address: must be an IP address"),
        ({"superlink.database": " "}, r"superlink\.database: must not be empty"),
        ({"supernodes": []}, r"supernodes: must not be empty"),
        ({"superlink": [1]}, r"superlink: must be a mapping, got list"),
        ({"gateway.cert": None}, r"gateway\.cert: missing \(required with tls: true\)"),
        ({"cli_home": "x"}, r"cli_home: unknown field \(known: cli-home, gateway, root, "),
    ],
)
def test_structural_errors_name_the_field(site: Path, changes: dict, field: str) -> None:
    with pytest.raises(ManifestError, match=field):
        load_manifest(_write(site, _mutated(**changes), "bad.yaml"))


@pytest.mark.parametrize(
    ("changes", "role", "name", "field"),
    [
        ({}, "supernode", "site9", r"supernodes: no node named 'site9' \(known: site1, site2\)"),
        (
            {"supernodes.0.private-key": "certs/nodes/missing"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.private-key: cannot read .*missing",
        ),
        (
            {"supernodes.1.public-key": "certs/nodes/nope.pub"},
            "register",
            None,
            r"supernodes\[1\]\.public-key: cannot read",
        ),
        (
            {"superlink.address": "10.77.0.2"},
            "superlink",
            None,
            r"superlink\.address: 10\.77\.0\.2 is not covered by the SANs",
        ),
        (
            {"supernodes.1.superlink": "link.example:9093"},
            "superlink",
            None,
            r"supernodes\[1\]\.superlink: link\.example is not covered",
        ),
        ({"gateway.host": "10.77.0.7"}, "gateway", None, r"gateway\.host: 10\.77\.0\.7 is not"),
        (
            {"gateway.verify-key": "certs/none.pub"},
            "gateway",
            None,
            r"gateway\.verify-key: cannot read .*none\.pub",
        ),
        (
            {"gateway.verify-key": "certs/ca.crt"},
            "gateway",
            None,  # a certificate, not the key
            r"gateway\.verify-key: .*ca\.crt: not a PEM public key",
        ),
        (
            {"gateway.checkpoint": "ckpt/none"},
            "gateway",
            None,
            r"gateway\.checkpoint: .*ckpt/none: no such checkpoint folder",
        ),
        (
            {"gateway.checkpoint": "ckpt/unsigned"},
            "gateway",
            None,
            r"gateway\.checkpoint: .*ckpt/unsigned: unsigned checkpoint \(no manifest\.sig\)",
        ),
        (
            {"gateway.checkpoint": "ckpt/other-key"},
            "gateway",
            None,
            r"gateway\.checkpoint: .*other-key/manifest\.sig: signature does not verify",
        ),
        (
            {"gateway.checkpoint": "data"},
            "gateway",
            None,  # a folder, but no checkpoint in it
            r"gateway\.checkpoint: .*data: neither a checkpoint folder",
        ),
        (
            {"supernodes.0.data-path": "data/none"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.data-path: .* is not a folder",
        ),
        (
            {"supernodes.0.data-path": "data/empty"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.data-path: .*data/empty/manifest\.yaml: missing: not a partition "
            r"folder.*fedrec partition site",
        ),
        (
            {"supernodes.1.data-path": "data/no-manifest"},
            "trainer",
            "site2",
            r"supernodes\[1\]\.data-path: .*no-manifest/manifest\.yaml: missing",
        ),
        (
            {"supernodes.0.data-path": "data/altered"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.data-path: .*altered/train\.csv: .* bytes, the manifest says",
        ),
        (
            {"supernodes.0.data-path": "data/no-items"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.data-path: .*no-items/items\.csv: missing \(listed in the partition "
            r"manifest\)",
        ),
        (
            {"supernodes.0.approved-apps": "approved/none.txt"},
            "supernode",
            "site1",
            r"supernodes\[0\]\.approved-apps: .*none\.txt: cannot read the allowlist",
        ),
        (
            {"supernodes.0.approved-apps": None},
            "supernode",
            "site1",  # default: in state-dir
            r"supernodes\[0\]\.approved-apps: .*state/site1/approved-apps\.txt: cannot read",
        ),
    ],
)
def test_host_checks_name_the_field(
    site: Path, changes: dict, role: str, name: str | None, field: str
) -> None:
    manifest = load_manifest(_write(site, _mutated(**changes), "bad.yaml"))
    with pytest.raises(ManifestError, match=field):
        launch_for(manifest, role, name)


def test_every_structural_error_is_named_and_no_value_takes_the_default(site: Path) -> None:
    data = _mutated(**{"superlink.port": "9093", "supernodes.1.gpu": 1.5})
    with pytest.raises(ManifestError) as err:
        load_manifest(_write(site, data, "bad.yaml"))
    lines = str(err.value).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "superlink.port: must be int, got '9093'",
        "supernodes[1].gpu: must be int, got 1.5",
    ]
    assert all(line.startswith(str(site / "bad.yaml")) for line in lines)
    data = _mutated(**{"supernodes.1.runtime-port": 9096, "superlink.control-port": 9092})
    data["supernodes"][0]["runtime-port"] = None  # `runtime-port:` with no value
    manifest = load_manifest(_write(site, data, "null.yaml"))
    assert [node.runtime_port for node in manifest.supernodes] == [9094, 9096]
    with pytest.raises(ManifestError, match=r"null\.yaml: must be a mapping, got NoneType"):
        load_manifest(_write(site, None, "null.yaml"))


def test_private_key_readable_by_others_is_refused(site: Path) -> None:
    key = site / "certs" / "nodes" / "site1"
    manifest = load_manifest(_write(site, BASE))
    key.chmod(0o644)
    try:
        with pytest.raises(ManifestError, match=r"supernodes\[0\]\.private-key: .*chmod 600"):
            launch_for(manifest, "supernode", "site1")
    finally:
        key.chmod(0o600)


def _fedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *args], capture_output=True, text=True, check=False
    )


def test_deploy_cli_dry_run_and_errors(site: Path) -> None:
    config = _write(site, BASE)
    result = _fedrec(
        "deploy", "supernode", "site2", "-c", str(config), "--dry-run", "--no-connect"
    )  # no SuperLink at 10.77.0.1 here: tests/ops/test_reach.py
    assert result.returncode == 0, result.stderr
    cd_line, command, note, trainer = result.stdout.strip().splitlines()
    assert cd_line == f"cd {site / 'state' / 'site2'}"
    assert note == f"# in the background, logging to {site / 'state' / 'site2' / 'trainer.log'}:"
    assert shlex.split(trainer)[1:4] == ["-m", "fedrec_app", "trainer"]
    alone = _fedrec(
        "deploy",
        "supernode",
        "site2",
        "-c",
        str(config),
        "--dry-run",
        "--no-trainer",
        "--no-connect",
    )
    assert alone.stdout.strip().splitlines() == [cd_line, command]
    words = shlex.split(command)
    assert "FLWR_DISABLE_UPDATE_CHECK=1" in words and "FLWR_TELEMETRY_ENABLED=0" in words
    assert words[words.index("--superlink") - 5 : words.index("--superlink")] == [
        sys.executable,
        "-m",
        "fedrec_app.ops.supernode_main",
        "--approved-apps",
        str(site / "approved" / "site2.txt"),
    ]
    result = _fedrec("deploy", "trainer", "site2", "-c", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout.strip().splitlines()[1])
    assert words[words.index("fedrec_app") + 1] == "trainer"
    assert words[words.index("--state-dir") + 1] == str(site / "state" / "site2")
    assert "--data-path" in words and "--gpu-index" in words
    result = _fedrec("deploy", "supernode", "nobody", "-c", str(config), "--dry-run")
    assert result.returncode == 2 and "no node named 'nobody'" in result.stderr
    result = _fedrec("deploy", "superlink", "-c", str(site / "absent.yaml"))
    assert result.returncode == 2 and "cannot read manifest" in result.stderr
    assert not (site / "state").exists()  # nothing started, nothing written


def test_deploy_dry_run_verifies_the_nodes_partition_folder(site: Path) -> None:
    """`--dry-run` checks the node's own folder (manifest, hashes, catalogue copy), starts
    nothing, and names the field and the file."""
    config = _write(site, _mutated(**{"supernodes.1.data-path": "data/no-items"}), "dry.yaml")
    result = _fedrec("deploy", "supernode", "site2", "-c", str(config), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "supernodes[1].data-path: " in result.stderr
    assert f"{site / 'data' / 'no-items' / 'items.csv'}: missing" in result.stderr
    assert not (site / "state" / "site2").exists()  # nothing started, nothing written


def test_deploy_gateway_dry_run_verifies_the_checkpoint(site: Path) -> None:
    good = _fedrec("deploy", "gateway", "-c", str(_write(site, BASE)), "--dry-run")
    assert good.returncode == 0, good.stderr
    assert "--watch" in shlex.split(good.stdout.strip().splitlines()[-1])
    for checkpoint, reason in (
        ("ckpt/none", "ckpt/none: no such checkpoint folder"),
        ("ckpt/unsigned", "unsigned checkpoint (no manifest.sig)"),
    ):
        config = _write(site, _mutated(**{"gateway.checkpoint": checkpoint}), "gw.yaml")
        result = _fedrec("deploy", "gateway", "-c", str(config), "--dry-run")
        assert result.returncode == 2, result.stdout
        assert "gateway.checkpoint: " in result.stderr and reason in result.stderr


def test_example_manifest_loads(tmp_path: Path) -> None:
    manifest = load_manifest(REPO / "deploy" / "federation.yaml")
    assert [n.name for n in manifest.supernodes] == ["site1", "site2"]
    assert manifest.superlink.database.is_absolute()
    assert manifest.supernodes[0].superlink == "10.77.0.1:9093"


def test_systemd_units_restart_after_at_least_70_seconds() -> None:
    units = sorted((REPO / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {
        "fedrec-superlink.service",
        "fedrec-supernode@.service",
        "fedrec-trainer@.service",
        "fedrec-gateway.service",
        "fedrec-proxy.service",
    }
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        service = parser["Service"]
        # The warm trainer and the proxy are no SuperNodes: they may come back at once.
        if unit.name not in ("fedrec-trainer@.service", "fedrec-proxy.service"):
            assert int(service["RestartSec"]) >= 70, unit.name
        assert re.search(
            r"fedrec deploy (superlink|proxy|supernode %i|trainer %i|gateway) -c ",
            service["ExecStart"],
        ), unit.name
        assert os.path.isabs(service["ExecStart"].split()[0])
