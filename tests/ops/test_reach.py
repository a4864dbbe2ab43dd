"""`fedrec deploy supernode NAME --dry-run` / `deploy register --dry-run`: the SuperLink address
answers TLS with the lab CA (a real TLS listener), and a SAN problem's advice keeps the CA."""

from __future__ import annotations

import re
import shlex
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from fedrec_app.data.layout import partition_dir_name
from fedrec_app.data.partition import make_partitions
from fedrec_app.ops.app_approval import append_to_allowlist
from fedrec_app.ops.certs import CertPaths, make_certs, make_node_keys
from fedrec_app.ops.manifest import ManifestError, load_manifest
from fedrec_app.ops.reach import Unreachable, check_reachable, tls_handshake


@contextmanager
def tls_listener(paths: CertPaths, host: str = "127.0.0.1") -> Iterator[str]:
    """A TLS server with `paths`' server certificate on HOST:PORT (yielded) that completes
    every handshake, as the Fleet proxy does (it then answers 404 to any HTTP path)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(paths.server_cert, paths.server_key)
    listener = socket.create_server((host, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{host}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_handshake_ok_and_each_failure_says_why(tmp_path: Path) -> None:
    lab = make_certs(tmp_path / "lab", ["10.77.0.1"])
    other = make_certs(tmp_path / "other")
    with tls_listener(lab) as address:
        tls_handshake(address, lab.ca_cert, timeout=5)
        with pytest.raises(Unreachable, match=r"does not verify against .*other/ca\.crt"):
            tls_handshake(address, other.ca_cert, timeout=5)
    with (
        tls_listener(lab, "127.0.0.2") as address,
        pytest.raises(Unreachable, match=r"not valid for 127\.0\.0\.2"),
    ):  # not in the SANs
        tls_handshake(address, lab.ca_cert, timeout=5)
    with pytest.raises(Unreachable, match="connection refused"):
        tls_handshake(f"127.0.0.1:{_free_port()}", lab.ca_cert, timeout=5)
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,
        pytest.raises(Unreachable, match=r"no answer within 0\.3 s"),
    ):  # TCP, never TLS
        tls_handshake(f"127.0.0.1:{silent.getsockname()[1]}", lab.ca_cert, timeout=0.3)
    with pytest.raises(Unreachable, match="not host:port"):
        tls_handshake("127.0.0.1", lab.ca_cert)


def _site(
    root: Path, node_superlink: str, control_port: int = 9092, data: Path | None = None
) -> Path:
    """A manifest with one node, its certificates, keys and allowlist (and its partition folder
    when `data`, a MovieLens folder, is given: what `deploy supernode` checks)."""
    make_certs(root / "certs", ["10.77.0.1"])
    make_node_keys(root / "certs" / "nodes", ["site1"])
    data_path = root / "data" / "p0"
    if data is None:
        data_path.mkdir(parents=True)
    else:
        data_path = make_partitions(data, root / "data" / "set", 1).out / partition_dir_name(0)
    append_to_allowlist(root / "approved.txt", "a" * 64)
    config = root / "fed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "superlink": {
                    "address": "10.77.0.1",
                    "port": 9093,
                    "control-port": control_port,
                    "ca-cert": "certs/ca.crt",
                    "server-cert": "certs/server.pem",
                    "server-key": "certs/server.key",
                    "database": "state/link/state.db",
                },
                "supernodes": [
                    {
                        "name": "site1",
                        "superlink": node_superlink,
                        "private-key": "certs/nodes/site1",
                        "data-path": str(data_path),
                        "state-dir": "state/site1",
                        "approved-apps": "approved.txt",
                    }
                ],
            }
        )
    )
    return config


def _fedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_check_reachable_names_the_field_address_and_reason(tmp_path: Path) -> None:
    port = _free_port()
    manifest = load_manifest(_site(tmp_path, f"127.0.0.1:{port}", control_port=port))
    with pytest.raises(
        ManifestError,
        match=rf"supernodes\[0\]\.superlink: 127\.0\.0\.1:{port} "
        r"does not answer TLS with .*ca\.crt: connection refused",
    ):
        check_reachable(manifest, "supernode", "site1")
    with pytest.raises(
        ManifestError,
        match=rf"superlink\.control-port: 127\.0\.0\.1:{port} "
        "does not answer TLS",
    ):
        check_reachable(manifest, "register")
    assert check_reachable(manifest, "superlink") == []


def test_dry_run_on_a_node_host_fails_on_a_wrong_superlink_address(
    tmp_path: Path, synthetic_ml: Path
) -> None:
    lab = CertPaths(tmp_path / "certs")
    # the node's address is rewritten below, once the listener has a port
    config = _site(tmp_path, "127.0.0.1:1", data=synthetic_ml)
    with tls_listener(lab) as address:
        text = config.read_text().replace("127.0.0.1:1", address)
        config.write_text(text)
        good = _fedrec(
            "deploy", "supernode", "site1", "-c", str(config), "--dry-run", "--no-trainer"
        )
        assert good.returncode == 0, good.stderr
        assert good.stdout.splitlines()[-1] == (
            f"# supernodes[0].superlink {address}: TLS handshake verified against {lab.ca_cert}"
        )
        # the runbook's wrong address: a host that answers, but with a certificate not for it
        wrong = address.replace("127.0.0.1", "127.0.0.2")
        config.write_text(text.replace(address, wrong))
        bad = _fedrec("deploy", "supernode", "site1", "-c", str(config), "--dry-run")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert f"supernodes[0].superlink: {wrong} does not answer TLS" in bad.stderr
        assert "connection refused" in bad.stderr  # nothing listens on 127.0.0.2 at that port
        skipped = _fedrec(
            "deploy", "supernode", "site1", "-c", str(config), "--dry-run", "--no-connect"
        )
        assert skipped.returncode == 0, skipped.stderr
        assert "TLS handshake" not in skipped.stdout
        assert (
            _fedrec("deploy", "supernode", "site1", "-c", str(config), "--no-connect").returncode
            == 2
        )  # --no-connect only with --dry-run
    assert not (tmp_path / "state").exists()  # a dry run starts and writes nothing


def test_register_dry_run_checks_the_control_port(tmp_path: Path) -> None:
    lab = CertPaths(tmp_path / "certs")
    config = _site(tmp_path, "10.77.0.1:9093", control_port=_free_port())
    bad = _fedrec("deploy", "register", "-c", str(config), "--dry-run")
    assert bad.returncode == 2 and "superlink.control-port: 127.0.0.1:" in bad.stderr
    assert "connection refused" in bad.stderr
    with tls_listener(lab) as address:
        port = int(address.rsplit(":", 1)[1])
        config.write_text(re.sub(r"control-port: \d+", f"control-port: {port}", config.read_text()))
        good = _fedrec("deploy", "register", "-c", str(config), "--dry-run")
        assert good.returncode == 0, good.stderr
        assert "site1: would register" in good.stdout
        assert f"# superlink.control-port {address}: TLS handshake verified" in good.stdout


def test_the_advice_for_a_missing_san_keeps_the_ca(tmp_path: Path) -> None:
    """Followed literally, the advised command re-issues server.pem for the missing address
    with the same CA: the check passes and every node's ca.crt still verifies the SuperLink."""
    config = _site(tmp_path, "127.0.0.2:9093")  # a node dials an address not in the SANs
    ca_before = (tmp_path / "certs" / "ca.crt").read_bytes()
    with pytest.raises(ManifestError) as info:
        load_manifest(config).check("superlink")
    message = str(info.value)
    assert "supernodes[0].superlink: 127.0.0.2 is not covered" in message
    assert "--force" not in message
    command = re.search(r"`(fedrec certs [^`]+)`", message)
    assert command is not None, message
    argv = shlex.split(command.group(1))
    assert argv[2:] == [
        "--out",
        str(tmp_path / "certs"),
        "--renew-server",
        "--san",
        "10.77.0.1",
        "--san",
        "127.0.0.2",
    ]
    done = _fedrec(*argv[1:])
    assert done.returncode == 0, done.stderr
    load_manifest(config).check("superlink")  # now covered
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == ca_before
    lab = CertPaths(tmp_path / "certs")
    with tls_listener(lab, "127.0.0.2") as address:  # the node's old ca.crt trusts the new cert
        check_reachable(
            load_manifest(config.parent / _retarget(config, address)), "supernode", "site1"
        )


def _retarget(config: Path, address: str) -> str:
    """A copy of `config` whose node dials `address`; returns its file name."""
    target = config.with_name("fed-live.yaml")
    target.write_text(config.read_text().replace("127.0.0.2:9093", address))
    return target.name


def test_the_supernode_unit_starts_while_the_superlink_is_down() -> None:
    """Its start-up check skips the handshake: the SuperNode waits for the SuperLink itself."""
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "fedrec-supernode@.service"
    pre = [line for line in unit.read_text().splitlines() if line.startswith("ExecStartPre=")]
    assert pre and all("--dry-run" in line and "--no-connect" in line for line in pre)
