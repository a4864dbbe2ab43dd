"""deploy/README.md section 7, followed literally against a real sshd and a real gateway: the
gateway host pulls a run's final/ with `scp -r` and a key limited to read-only SFTP
(`restrict,command="/usr/lib/openssh/sftp-server -R"`) into an incoming folder, publishes it with
`fedrec checkpoint publish`, and the gateway watching `serving/current` serves it. The key can
neither write on the SuperLink host nor run a command there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gateway.conftest import free_port, make_checkpoint, start_gateway
from signing_keys import verify_key_file

from fedrec_app.core.checkpoint import point
from fedrec_app.ops.publish import current_release

SSHD, SFTP_SERVER = Path("/usr/sbin/sshd"), Path("/usr/lib/openssh/sftp-server")

pytestmark = pytest.mark.integration


@pytest.fixture
def pull_account(tmp_path: Path):
    """sshd on 127.0.0.1 (the SuperLink host's), accepting one key for read-only SFTP only."""
    if os.geteuid() != 0:
        pytest.skip("sshd logs in the account it runs as: run as root (as CI does)")
    for tool in (SSHD, SFTP_SERVER, shutil.which("scp")):
        if tool is None or not Path(tool).is_file():
            pytest.fail(f"{tool or 'scp'} is not installed (.ci/run installs openssh-server)")
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    host_key, pull_key = ssh / "host", ssh / "fedrec-pull"
    for key in (host_key, pull_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    authorized = ssh / "authorized_keys"
    authorized.write_text(
        f'restrict,command="{SFTP_SERVER} -R" {Path(f"{pull_key}.pub").read_text()}'
    )
    port = free_port()
    config = ssh / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
        f"PidFile {ssh / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        f"StrictModes no\nSubsystem sftp {SFTP_SERVER}\n"  # as Debian's sshd_config has it
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    log = ssh / "sshd.log"
    with open(log, "wb") as out:
        sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", config], stdout=out, stderr=subprocess.STDOUT
        )
    known_hosts = ssh / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {' '.join(Path(f'{host_key}.pub').read_text().split()[:2])}\n"
    )
    options = [
        "-i",
        str(pull_key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-F",
        "/dev/null",
    ]
    try:
        deadline = time.monotonic() + 20
        while f"listening on 127.0.0.1 port {port}" not in log.read_text(errors="replace"):
            assert sshd.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield port, options
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


def _fedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_pull_with_a_read_only_key_then_publish(pull_account, tmp_path: Path) -> None:
    port, options = pull_account
    # the SuperLink host's checkpoint-dir: run 7 finished, run 9 resumed it and finished
    link = tmp_path / "superlink" / "checkpoints"
    point(
        link / "7",
        "latest",
        make_checkpoint(link / "7" / "round-0003", round_=3, run_id="7", seed=1),
    )
    make_checkpoint(link / "9" / "final", round_=6, run_id="9", seed=2)
    incoming, serving = tmp_path / "gw" / "incoming", tmp_path / "gw" / "serving"
    incoming.mkdir(parents=True)
    pub = str(verify_key_file())

    def pull(run_id: str, folder: str) -> Path:
        dest = incoming / f"{run_id}-{folder}"
        subprocess.run(
            [
                "scp",
                "-q",
                "-r",
                "-P",
                str(port),
                *options,
                f"root@127.0.0.1:{link / run_id / folder}",
                str(dest),
            ],
            check=True,
            timeout=60,
        )
        return dest

    first = pull("7", "latest")  # a symlink on the SuperLink host: scp copies its folder
    result = _fedrec("checkpoint", "publish", str(first), "--to", str(serving), "--verify-key", pub)
    assert result.returncode == 0, result.stderr
    gw = start_gateway(serving / "current", tmp_path, "--watch", "--watch-interval", "0.2")
    with gw.client() as client:
        assert client.get("/readyz").json()["run_id"] == "7"
        result = _fedrec(
            "checkpoint",
            "publish",
            str(pull("9", "final")),
            "--to",
            str(serving),
            "--verify-key",
            pub,
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["round"] != 6:
            assert time.monotonic() < deadline, gw.log_text()
            time.sleep(0.1)
        assert client.get("/readyz").json()["run_id"] == "9"
    gw.stop()
    assert current_release(serving).name.startswith("9-round-0006-")

    # the key reads, and nothing else: no upload, no command
    upload = subprocess.run(
        [
            "scp",
            "-q",
            "-P",
            str(port),
            *options,
            str(verify_key_file()),
            f"root@127.0.0.1:{link}/planted",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert upload.returncode != 0 and not (link / "planted").exists()
    marker = tmp_path / "ran"
    subprocess.run(
        ["ssh", "-p", str(port), *options, "root@127.0.0.1", f"touch {marker}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert not marker.exists()
