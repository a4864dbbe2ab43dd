"""Signed checkpoints (issue "Lock the federation"), tried against real gateway processes.

The attacker can write the folder the gateway serves but lacks the federation's signing key:
they change the weights so that one movie tops every list, recompute the sha256 in
manifest.json (so every file matches the manifest again) and then drop manifest.sig or sign
with a key of their own. A gateway started with --verify-key must refuse that checkpoint at
start (non-zero exit, a message naming the folder and the signature) and at reload (the old
model keeps answering). The control test shows the forgery does change the answers when no
signature is checked (--allow-unsigned): what is refused is a real attack.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway.conftest import free_port, make_checkpoint, reloads, start_gateway
from launch_helpers import wait_for
from signing_keys import verify_key_file

from fedrec_app.core.checkpoint import MANIFEST, SIGNATURE, WEIGHTS, point, verify_checkpoint
from fedrec_app.core.files import sha256_file
from fedrec_app.core.signing import new_signing_key, sign

pytestmark = pytest.mark.integration

USERS = (1, 4, 7, 12, 25)
HOW = ("no-signature", "another-key")


def forge(genuine: Path, folder: Path, movie_id: int, how: str) -> Path:
    """A copy of ``genuine`` in ``folder`` whose model puts ``movie_id`` first for everyone,
    with consistent sha256s, one round later, and no valid signature (``how``)."""
    shutil.copytree(genuine, folder)
    with np.load(folder / WEIGHTS) as npz:
        arrays = {name: npz[name] for name in npz.files}
    row = int(np.flatnonzero(arrays["item_ids"] == movie_id)[0])
    arrays["item_rank_bias"][row] += 1000.0  # first by the ranking score
    arrays["item_bias"][row] += 10.0  # predicted 5.0: above any min-rating
    np.savez(folder / WEIGHTS, **arrays)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = sha256_file(folder / WEIGHTS)
    manifest["round"] += 1
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / MANIFEST).write_bytes(data)
    (folder / SIGNATURE).unlink()
    if how == "another-key":
        (folder / SIGNATURE).write_bytes(sign(new_signing_key(), data))
    verify_checkpoint(folder)  # the hashes are all consistent: only the signature tells
    return folder


def answers(client: httpx.Client) -> dict[int, list[int]]:
    """Each probe user's recommended movie ids, in order."""
    out = {}
    for user in USERS:
        response = client.get("/recommend", params={"user_id": user, "n": 5})
        assert response.status_code == 200, response.text
        out[user] = [r["movie_id"] for r in response.json()["recommendations"]]
    return out


def outsider(served: dict[int, list[int]], genuine: Path) -> int:
    """A catalogue movie no probe user is recommended now."""
    with np.load(genuine / WEIGHTS) as npz:
        ids = [int(m) for m in npz["item_ids"]]
    shown = {m for recs in served.values() for m in recs}
    return next(m for m in reversed(ids) if m not in shown)


@pytest.fixture
def genuine(tmp_path: Path) -> Path:
    """round-0001 of a run, signed by the federation's (test) key."""
    return make_checkpoint(tmp_path / "run" / "round-0001", round_=1, seed=11)


def _gateway(checkpoint: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`fedrec gateway` expected to exit at start: its exit code and output."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app",
            "gateway",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_forgery_changes_the_answers_when_signatures_are_not_checked(
    genuine: Path, tmp_path: Path
) -> None:
    real = start_gateway(genuine, tmp_path)
    try:
        with real.client() as client:
            before = answers(client)
    finally:
        real.stop()
    target = outsider(before, genuine)
    forged = forge(genuine, tmp_path / "run" / "round-0002", target, "no-signature")
    unchecked = start_gateway(forged, tmp_path, "--allow-unsigned")
    try:
        with unchecked.client() as client:
            after = answers(client)
    finally:
        unchecked.stop()
    assert all(recs[0] == target for recs in after.values()), after
    assert after != before
    assert re.search(r"WARNING .*UNSIGNED", unchecked.log_text())


@pytest.mark.parametrize("how", HOW)
def test_forged_checkpoint_is_refused_at_start(genuine: Path, tmp_path: Path, how: str) -> None:
    forged = forge(genuine, tmp_path / "run" / "round-0002", 1, how)
    result = _gateway(forged, "--verify-key", str(verify_key_file()))
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(forged.resolve()) in result.stderr and "signature" in result.stderr
    assert "Traceback" not in result.stderr
    # through a run folder's pointer, the same
    point(tmp_path / "run", "latest", forged)
    result = _gateway(tmp_path / "run", "--verify-key", str(verify_key_file()))
    assert result.returncode == 2 and "signature" in result.stderr, result.stderr
    # the genuine folder next to it is served by the same command line
    gw = start_gateway(genuine, tmp_path)
    gw.stop()


@pytest.mark.parametrize("how", HOW)
def test_forged_checkpoint_is_refused_at_reload_and_the_old_model_keeps_serving(
    genuine: Path, tmp_path: Path, how: str
) -> None:
    run = tmp_path / "run"
    point(run, "latest", genuine)
    gw = start_gateway(run / "latest", tmp_path, "--watch", "--watch-interval", "0.2")
    try:
        with gw.client() as client:
            before = answers(client)
            target = outsider(before, genuine)
            point(run, "latest", forge(genuine, run / "round-0002", target, how))
            wait_for(lambda: reloads(client, "refused") >= 1)  # the watcher saw it
            gw.process.send_signal(signal.SIGHUP)  # and a forced reload refuses it too
            wait_for(lambda: reloads(client, "refused") >= 2)
            assert client.get("/readyz").json()["round"] == 1
            assert answers(client) == before
            assert reloads(client, "ok") == 0
            # a checkpoint the federation signed is taken as before
            point(run, "latest", make_checkpoint(run / "round-0003", round_=3, seed=12))
            wait_for(lambda: client.get("/readyz").json()["round"] == 3)
            assert reloads(client, "ok") == 1
    finally:
        gw.stop()
    log = gw.log_text()
    assert "reload refused" in log and str((run / "round-0002").resolve()) in log
    assert "signature" in log and "still serving run test-run round 1" in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--verify-key PUBFILE is required"),
        (("--allow-unsigned", "--verify-key", "{pub}"), "exclude each other"),
        (("--verify-key", "{tmp}/absent.pub"), "absent.pub: no such public key"),
        (("--verify-key", "{ckpt}/items.csv"), "items.csv: not a PEM public key"),
    ],
)
def test_gateway_without_a_usable_verify_key_does_not_start(
    genuine: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    args = tuple(a.format(pub=verify_key_file(), tmp=tmp_path, ckpt=genuine) for a in args)
    result = _gateway(genuine, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
