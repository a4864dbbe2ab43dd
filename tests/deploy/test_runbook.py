"""deploy/README.md, followed literally: every command block runs on its host, in order.

Hosts: `superlink`, `site1`, `site2`, `operator`, `gateway` and `admin`, each a network
namespace of `deploy/netns.sh` (the runbook's own addresses, 10.77.0.x, on a private bridge;
`admin` shares the operator's network namespace, it needs none of its own) plus a private mount
namespace in which `/opt/fedrec` is that host's own folder, `/etc`, `/var`, `/root` and `/opt`
are overlays whose changes stay in the host's folder (users, units, `/var/lib/fedrec-pull`),
and `/srv`, `/media`, `/run` and `/tmp` are the host's own. So no host sees another's files,
and nothing the runbook writes lands outside this test's temp folder (overlays rather than
copies of `/etc`: nothing to copy, and `/var` and `/root` get the same treatment). The admin
and operator folders start as a copy of the git-tracked files (the runbook's checkouts). Files
travel between hosts only as the runbook's `copy` blocks say (into the receiving host's
`/media/usb`). Each host's blocks run in one root shell state (variables carry over, as in
one terminal per host).

`systemctl`, `journalctl`, `sudo` and `apt-get` are shims (tests/deploy/shims): systemd is not
running here; the systemctl shim runs a unit's ExecStartPre/ExecStart as its User= and restarts
it after RestartSec= (70 s for a SuperNode). The lab's sshd runs on the SuperLink host (the
test starts it, with that host's Debian sshd_config), so the operator's tunnel and the gateway's
`scp` pull are real. The lines that install fedrec into a venv or build the wheel take minutes
and need the network: SUBSTITUTIONS replaces exactly those lines (each must be in the runbook
verbatim, so a changed line fails here); per-role installs are tested in tests/test_packaging.py.
A site's own ratings (a slice of a synthetic MovieLens set, user 4 at site1) and the MovieLens
folder behind the catalogue are the inputs the test supplies.

Beyond the blocks, the test injects faults where a lab would meet them: a run of an unapproved
FAB (one byte changed) is refused; site1's SuperNode is killed (-9) mid-run, comes back after
RestartSec and a later round has both nodes again; site2's SuperNode is stopped past
`node-wait-timeout` and the run ends `finished:failed` ("fewer than min-nodes"); section 6
resumes it from `latest` and section 7 publishes the resumed run. The operator's terminal sets
`ROUNDS` and `MORE_CONFIG` (documented in section 5) to keep the runs short.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from launch_helpers import wait_gone
from netns_helpers import REPO, Namespaces, namespaces_up
from runbook import Block, assigned_names, parse_runbook, substitute

from fedrec_app.ops.flower import COMPLETED, FlwrCli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNBOOK = REPO / "deploy" / "README.md"
SHIMS = Path(__file__).resolve().parent / "shims"
HOST_PATH = f"{SHIMS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETNS_ROLE = {"admin": "cli", "operator": "cli", "superlink": "link", "site1": "sn1",
              "site2": "sn2", "gateway": "gw"}  # fmt: skip
OVERLAYS = ("/etc", "/var", "/root", "/opt")
BINDS = ("/srv", "/media", "/run")

# runbook line -> what the test runs instead (each key must be a whole line of the runbook)
SUBSTITUTIONS = {
    "python3 -m venv /opt/fedrec/.venv": f"ln -sfn {sys.prefix} /opt/fedrec/.venv",
    "python3 -m venv /opt/fedrec/.venv                                # root-owned: the service "
    "cannot change its code": f"ln -sfn {sys.prefix} /opt/fedrec/.venv",
    "/opt/fedrec/.venv/bin/pip install -e '.[data]'": "true",
    "/opt/fedrec/.venv/bin/pip install -e '.[operator]'": "true",
    "/opt/fedrec/.venv/bin/pip install '/media/usb/dist/fedrec-0.1.0-py3-none-any.whl[superlink]'"
    "   # this host's role: [node], [gateway], [gpu]":
        "test -f /media/usb/dist/fedrec-0.1.0-py3-none-any.whl",
    "pip wheel --no-deps -w dist .        # dist/fedrec-0.1.0-py3-none-any.whl":
        "mkdir -p dist && echo 'not built: the hosts use the test venv' "
        "> dist/fedrec-0.1.0-py3-none-any.whl",
    "fedrec data download --data data     # MovieLens 100k, whose u.item is the catalogue's source":
        "test -f data/ml-100k/u.item",
}  # fmt: skip
# The operator's terminal (section 5: ROUNDS, MORE_CONFIG): short runs. node-wait-timeout: a
# crashed node is marked offline ~45 s after the crash (its round then aggregates without it) and
# is back ~75 s after it (RestartSec=70 + start-up): the next round waits ~30 s for it (~40 s
# on a loaded machine), within 75 s; a node stopped for good fails the run 75 s later.
# round-timeout: a node stopped mid-round may leave its reply half-uploaded, which Flower gives
# up on only when its upload session expires; the round aggregates without it after 60 s.
NODE_WAIT = 75
OPERATOR_ENV = {
    "ROUNDS": "7",
    "MORE_CONFIG": f"local-epochs=1 node-wait-timeout={NODE_WAIT} round-timeout=60",
}
ROUND_LINE = re.compile(r"round (\d+)/\d+: .*\| (\d)/(\d) nodes replied")


def _under_tmp(*paths: Path) -> list[Path]:
    """The paths among ``paths`` that lie under /tmp (a CI checkout and its venv may), which a
    host's own /tmp would hide: they are bound back in."""
    found = []
    for path in paths:
        if path.is_relative_to("/tmp") and path != Path("/tmp") and path not in found:
            found.append(path)
    return found


@dataclass
class Host:
    """One lab host: a network namespace plus a mount namespace held by an anchor process."""

    name: str
    root: Path  # this host's folder (outside view)
    netns: str
    logs: Path
    anchor: subprocess.Popen[bytes] | None = None
    ran: list[str] = field(default_factory=list)

    @property
    def fedrec(self) -> Path:
        return self.root / "fedrec"

    def up(self) -> None:
        for sub in ("fedrec", "srv", "media/usb", "run/runbook", "run/sshd", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").chmod(0o1777)
        mounts = []
        for target in OVERLAYS:
            upper, work = self.root / f"ov{target}-up", self.root / f"ov{target}-work"
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            mounts.append(
                f"mount -t overlay overlay -o lowerdir={target},upperdir={upper},"
                f"workdir={work} {target}"
            )
        mounts += [
            "mkdir -p /opt/fedrec",
            f"mount --bind {self.fedrec} /opt/fedrec",
            "chmod 0711 /root",
        ]  # the test's Python lives under /root/.pyenv
        mounts += [f"mount --bind {self.root / t.lstrip('/')} {t}" for t in BINDS]
        for outside in _under_tmp(REPO, Path(sys.prefix), Path(sys.prefix).resolve()):
            inside = self.root / "tmp" / outside.relative_to("/tmp")
            inside.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {outside} {inside}")  # the checkout and venv stay seen
        mounts += [f"mount --rbind {self.root / 'tmp'} /tmp", "echo ready", "exec sleep infinity"]
        self.anchor = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
             "private", "bash", "-euc", "\n".join(mounts)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.anchor.stdout is not None
        line = self.anchor.stdout.readline().decode()
        assert line.strip() == "ready", f"{self.name}: {line}{self.anchor.stdout.read(4000)!r}"

    def argv(self, *command: str) -> list[str]:
        assert self.anchor is not None
        return ["nsenter", "-t", str(self.anchor.pid), "-m", "-n", "--", *command]

    def env(self) -> dict[str, str]:
        return {"PATH": HOST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                "USER": "root", "LOGNAME": "root"}  # fmt: skip

    def script(self, body: str, save: list[str]) -> str:
        keep = " ".join(save)
        trap = (f"trap 'for n in {keep}; do declare -p $n 2>/dev/null || true; done "
                f">> /run/runbook/shell.env' EXIT\n") if save else ""  # fmt: skip
        return ("set -euo pipefail\ncd /opt/fedrec\n"
                "if [ -f /run/runbook/shell.env ]; then . /run/runbook/shell.env; fi\n"
                f"{trap}{body}")  # fmt: skip

    def sh(
        self,
        body: str,
        label: str,
        timeout: float = 240,
        save: list[str] | None = None,
        check: bool = True,
    ) -> str:
        """Run `body` in this host's shell state; its output (also kept under logs/)."""
        log = self.logs / f"{len(list(self.logs.iterdir())):03d}-{self.name}-{label}.log"
        with open(log, "wb") as out:
            out.write(f"$ # on {self.name}\n{body}\n---\n".encode())
            out.flush()
            try:
                result = subprocess.run(
                    self.argv("bash", "-c", self.script(body, save or [])),
                    env=self.env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
                code = result.returncode
            except subprocess.TimeoutExpired:
                code = -1
        text = log.read_text(errors="replace").split("\n---\n", 1)[1]
        if check and code != 0:
            raise AssertionError(
                f"{label} on {self.name} exited {code} after:\n{body}\n--- output:\n{text[-6000:]}"
            )
        return text

    def set_env(self, values: dict[str, str]) -> None:
        with open(self.root / "run" / "runbook" / "shell.env", "a") as env:
            for key, value in values.items():
                env.write(f"export {key}={json.dumps(value)}\n")

    def journal(self, unit: str) -> str:
        path = self.root / "run" / "fedrec-shim" / f"{unit}.service.journal"
        return path.read_text(errors="replace") if path.exists() else ""

    def main_pid(self, unit: str) -> int:
        return int((self.root / "run" / "fedrec-shim" / f"{unit}.service.main").read_text())


class HostCli(FlwrCli):
    """The operator's `flwr`, run on the operator host (through its SSH tunnel)."""

    def __init__(self, host: Host) -> None:
        super().__init__(Path("/opt/fedrec/state/cli"))
        self.host = host

    def _exec(self, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.host.argv(*argv), env=self.env(), capture_output=True,
                              text=True, timeout=timeout or self.timeout, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip


def _copy_tree(src: Path, dst: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=src, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)


def _site_ratings(synthetic: Path, hosts: dict[str, Host]) -> None:
    """Each site's own ratings file where the runbook reads it: /srv/SITE/ratings.csv. site1
    (users with an even id, user 4 among them) as u.data lines, site2 as CSV with a header."""
    lines = (synthetic / "u.data").read_text().splitlines()
    site1 = [line for line in lines if int(line.split("\t")[0]) % 2 == 0]
    site2 = [line.replace("\t", ",") for line in lines if int(line.split("\t")[0]) % 2 == 1]
    assert any(line.split("\t")[0] == "4" for line in site1)
    for name, rows in (("site1", site1), ("site2", ["user_id,movie_id,rating,timestamp", *site2])):
        folder = hosts[name].root / "srv" / name
        folder.mkdir(parents=True)
        (folder / "ratings.csv").write_text("\n".join(rows) + "\n")


def _kill_all(namespaces: Namespaces, hosts: dict[str, Host]) -> list[str]:
    """Every process in the topology's network namespaces: SIGTERM, then SIGKILL; what is left."""
    names = sorted({namespaces.name(role) for role in NETNS_ROLE.values()})

    def pids() -> list[int]:
        found = []
        for ns in names:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            found += [int(p) for p in out.stdout.split()]
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids() and time.monotonic() < deadline:
            time.sleep(0.2)
    for host in hosts.values():
        if host.anchor is not None:
            host.anchor.wait(timeout=10)
    return [f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}" for pid in pids()
            if Path(f"/proc/{pid}").exists()]  # fmt: skip


def _wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(poll)


def _rounds(log: str) -> list[tuple[int, int]]:
    """(round, nodes replied) of each round line of `flwr log`."""
    return [(int(m.group(1)), int(m.group(2))) for m in ROUND_LINE.finditer(log)]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[dict[str, Host], Namespaces]]:
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    if os.geteuid() != 0:
        pytest.skip("the hosts are namespaces with their own mounts: run as root (as CI does)")
    if shutil.which("nsenter") is None or shutil.which("unshare") is None:
        pytest.fail("needs nsenter and unshare (util-linux)")
    with namespaces_up(2, subnet="10.77.0") as namespaces:
        logs = tmp_path / "logs"
        logs.mkdir()
        hosts = {name: Host(name, tmp_path / "hosts" / name, namespaces.name(role), logs)
                 for name, role in NETNS_ROLE.items()}  # fmt: skip
        try:
            for host in hosts.values():
                host.up()
            yield hosts, namespaces
        finally:
            left = _kill_all(namespaces, hosts)
            assert not left, f"processes left in the namespaces: {left}"
            assert not wait_gone(str(tmp_path), timeout=10), "processes of this test left"
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    for path in ("/opt/fedrec", "/var/lib/fedrec-pull", "/var/lib/fedrec-operator", "/srv/site1"):
        assert not Path(path).exists(), f"{path} was written outside the hosts' folders"


def _start_sshd(host: Host) -> None:
    """The lab's sshd on the SuperLink host (Debian's config; host keys of this machine)."""
    for tool in ("/usr/sbin/sshd", "/usr/lib/openssh/sftp-server", "/usr/sbin/nginx"):
        if not Path(tool).is_file():
            pytest.fail(f"{tool} is not installed (.ci/run installs openssh-server, nginx-light)")
    log = host.root / "run" / "sshd.log"
    with open(log, "wb") as out:
        subprocess.Popen(host.argv("/usr/sbin/sshd", "-D", "-e"), stdout=out,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    _wait(lambda: "listening on" in log.read_text(errors="replace"), 20, "sshd listening", 0.2)


# ~6.5 min on an idle 2-core machine; 10 min and more when other tests load it
@pytest.mark.timeout(1500)
def test_runbook_followed_literally(lab, synthetic_ml: Path) -> None:  # noqa: C901, PLR0915
    hosts, _ = lab
    blocks = parse_runbook(RUNBOOK)
    assert {h for b in blocks for h in b.hosts} == set(NETNS_ROLE)
    assert [b.text.split("\n", 1)[0] for b in blocks if b.kind == "skip"] == [
        "for role in gateway operator data superlink node simulation; do"
    ]
    for name in ("admin", "operator"):
        _copy_tree(REPO, hosts[name].fedrec)
    (hosts["admin"].fedrec / "data").mkdir()
    shutil.copytree(synthetic_ml, hosts["admin"].fedrec / "data" / "ml-100k")
    _site_ratings(synthetic_ml, hosts)
    _start_sshd(hosts["superlink"])
    hosts["operator"].set_env(OPERATOR_ENV)
    operator, cli = hosts["operator"], HostCli(hosts["operator"])
    used: set[str] = set()
    state: dict[str, str] = {}

    def run_block(block: Block) -> None:
        if block.kind == "copy":
            for copy in block.copies:
                for rel in copy.paths:
                    src = hosts[copy.source].fedrec / rel
                    dst = hosts[copy.dest].root / "media" / "usb" / rel
                    assert src.is_file(), f"{block.label()}: {copy.source} has no {rel}"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            return
        body = substitute(block.text, SUBSTITUTIONS, used)
        for name in block.hosts:
            long = "--stream" in body or "until " in body
            out = hosts[name].sh(body, f"L{block.line}", timeout=600 if long else 240,
                                 save=assigned_names(body))  # fmt: skip
            state[f"{block.line}:{name}"] = out

    def before(block: Block) -> None:
        if "RUN_CONFIG=" in block.text and "refused" not in state:
            refused_run(block)

    def refused_run(block: Block) -> None:
        """Scenario (a), test-only: the same checkout with one byte changed is a FAB no site
        approved; its run is refused by both nodes and ends failed, saying so."""
        copy = operator.fedrec.parent / "unapproved"
        shutil.copytree(operator.fedrec / "fedrec_app", copy / "fedrec_app",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copy2(operator.fedrec / "pyproject.toml", copy / "pyproject.toml")
        with open(copy / "fedrec_app" / "client_app.py", "a") as f:
            f.write("#")
        inside = "/opt/fedrec/unapproved"
        shutil.move(str(copy), str(operator.fedrec / "unapproved"))
        run_id = cli.run(Path(inside), {
            "checkpoint-dir": "/opt/fedrec/checkpoints", "num-server-rounds": 2,
            "catalogue": "/opt/fedrec/catalogue/items.csv",
            "signing-key": "/opt/fedrec/certs/federation-signing.key",
            "min-nodes": 2, "node-wait-timeout": 30,
        })  # fmt: skip
        record = cli.wait(run_id, timeout=300)
        shutil.rmtree(operator.fedrec / "unapproved")
        assert record["status"] == "finished:failed", record
        assert "not approved" in record["status-details"], record
        for site in ("site1", "site2"):
            assert "fedrec:app-not-approved" in hosts[site].journal(f"fedrec-supernode@{site}")
        state["refused"] = run_id

    def after(block: Block) -> None:
        if "RUN_CONFIG=" in block.text and "crash" not in state:
            crash_and_outage()
        elif block.text.startswith("flwr log $RUN_ID fedrec --stream") and "outage" not in state:
            outage_ended()
        elif "resume-from=" in block.text:
            run_id = operator.sh("echo $RUN_ID", "run-id").strip()
            assert cli.status(run_id)["status"] == COMPLETED, cli.log(run_id)[-3000:]
            assert run_id != state["failed"]
            state["resumed"] = run_id
        elif "--format json" not in block.text and "10.77.0.1:9093/v1/control" in block.text:
            out = state[f"{block.line}:operator"]
            assert "404" in out.split() and "refused: 7" in out, out

    def crash_and_outage() -> None:
        """Scenarios (c) and (d): kill -9 site1's SuperNode after round 2; the shim restarts it
        after RestartSec=70, it rejoins and a later round has 2/2 nodes; then site2's SuperNode
        is stopped and kept down past node-wait-timeout."""
        run_id = operator.sh("echo $RUN_ID", "run-id").strip()
        state["failed"] = run_id
        _wait(lambda: (2, 2) in _rounds(cli.log(run_id)), 300, "round 2 with 2/2 nodes")
        site1 = hosts["site1"]
        pid = site1.main_pid("fedrec-supernode@site1")
        os.kill(pid, signal.SIGKILL)
        crashed = time.monotonic()
        state["crash"] = str(pid)
        _wait(lambda: site1.main_pid("fedrec-supernode@site1") != pid, 120, "site1 restarted")
        restarted = time.monotonic() - crashed
        assert restarted >= 69, f"restarted after {restarted:.0f} s, before RestartSec=70"
        after_crash = max(r for r, _ in _rounds(cli.log(run_id)))

        def rejoined() -> bool:
            return any(r > after_crash and n == 2 for r, n in _rounds(cli.log(run_id)))

        _wait(rejoined, 200, "a round with 2/2 nodes after site1's restart")
        assert any(n == 1 for _, n in _rounds(cli.log(run_id))), cli.log(run_id)[-3000:]
        assert site1.journal("fedrec-supernode@site1").count("SuperNode ID") == 2
        hosts["site2"].sh("systemctl stop fedrec-supernode@site2", "outage")
        state["outage-start"] = str(time.monotonic())

    def outage_ended() -> None:
        run_id = state["failed"]
        record = cli.status(run_id)
        assert record["status"] == "finished:failed", record
        assert "fewer than min-nodes" in record["status-details"], record
        assert time.monotonic() - float(state["outage-start"]) >= NODE_WAIT
        hosts["site2"].sh("systemctl start fedrec-supernode@site2", "outage-over")
        _wait(lambda: hosts["site2"].journal("fedrec-supernode@site2").count("SuperNode ID") == 2,
              120, "site2 back")  # fmt: skip
        state["outage"] = "over"

    for block in blocks:
        if block.kind == "skip":
            continue
        before(block)
        run_block(block)
        after(block)

    assert used == set(SUBSTITUTIONS), f"not in the runbook: {set(SUBSTITUTIONS) - used}"
    assert {"refused", "crash", "outage", "resumed"} <= set(state)

    # section 7's checks answered, from the resumed run's checkpoint
    gateway = hosts["gateway"]
    ca = "--cacert /opt/fedrec/certs/ca.crt"
    ready = json.loads(gateway.sh(f"curl -sf {ca} https://10.77.0.6:8443/readyz", "readyz"))
    assert ready["run_id"] == state["resumed"], ready
    posted = json.loads(gateway.sh(
        f"curl -sf {ca} -H 'Content-Type: application/json' -d "
        """'{"ratings": [{"movie_id": 50, "rating": 5}], "n": 5}' """
        "https://10.77.0.6:8443/recommend", "post"))  # fmt: skip
    assert len(posted["recommendations"]) == 5, posted
    by_user = json.loads(
        gateway.sh(f"curl -sf {ca} 'https://10.77.0.6:8443/recommend?user_id=4&n=5'", "get")
    )
    assert by_user["user_id"] == 4 and len(by_user["recommendations"]) == 5, by_user
    with open(hosts["admin"].fedrec / "catalogue" / "items.csv", newline="") as items:
        titles = {row["movie_id"]: row["title"] for row in csv.DictReader(items)}
    for rec in by_user["recommendations"] + posted["recommendations"]:
        assert rec["movie_title"] == titles[str(rec["movie_id"])], rec
    _check_never(hosts)


def _check_never(hosts: dict[str, Host]) -> None:
    """Section 2's "never" column, checked on what each host holds at the end (its folder and
    its stick): no `ca.key` beyond the admin's, no node key off its own site, no signing key
    off the SuperLink host, no ratings off their site."""
    for name, host in hosts.items():
        held = [p for folder in (host.fedrec, host.root / "media", host.root / "srv")
                for p in folder.rglob("*") if p.is_file() and ".venv" not in p.parts]  # fmt: skip
        names = {p.name for p in held}
        if name != "admin":
            assert "ca.key" not in names, name
        for site in ("site1", "site2"):
            if name not in (site, "admin"):
                assert site not in names, f"{name} holds {site}'s private key"
                assert not (host.root / "srv" / site).exists(), f"{name} holds {site}'s ratings"
        if name not in ("admin", "superlink"):
            assert "federation-signing.key" not in names, name
        if name not in ("admin", "gateway"):
            assert "fedrec-pull" not in names, f"{name} holds the pull key"


def test_runbook_blocks_say_where_they_run() -> None:
    """Without root too: every bash block names its hosts, every host of section 2 gets its
    files by a copy block, and every substituted line is still in the runbook."""
    blocks = parse_runbook(RUNBOOK)
    assert {h for b in blocks for h in b.hosts} == set(NETNS_ROLE)
    lines = {line.strip() for b in blocks if b.kind == "bash" for line in b.text.splitlines()}
    assert set(SUBSTITUTIONS) <= lines, set(SUBSTITUTIONS) - lines
    from_admin = {c.dest for b in blocks for c in b.copies if c.source == "admin"}
    assert from_admin == set(NETNS_ROLE) - {"admin"}
    for block in blocks:
        for copy in block.copies:
            assert all(not p.startswith("/") and ".." not in p for p in copy.paths), block.label()
            assert "certs/ca.key" not in copy.paths, block.label()
