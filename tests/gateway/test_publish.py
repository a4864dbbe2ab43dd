"""`fedrec checkpoint publish`: staged, verified, switched in atomically; refused ones change
nothing; a real gateway with --watch on SERVE_DIR/current follows; `fedrec gateway --dry-run`
verifies the checkpoint without serving."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from import_blocker import NOT_IN_GATEWAY, run_cli_without
from launch_helpers import wait_for
from signing_keys import verify_key_file

from fedrec_app.core.checkpoint import MANIFEST, SIGNATURE, WEIGHTS, CheckpointError
from fedrec_app.ops.publish import CURRENT, RELEASES, current_release, prune, publish


def _fedrec(*args: str) -> subprocess.CompletedProcess[str]:
    """`fedrec ARGS…` as on a gateway host: only the gateway extra installed."""
    return run_cli_without(NOT_IN_GATEWAY, *args, timeout=60)


def _releases(serve: Path) -> list[str]:
    return sorted(p.name for p in (serve / RELEASES).iterdir())


def test_publish_stages_verifies_and_switches_current(checkpoint_factory, tmp_path) -> None:
    source = checkpoint_factory(tmp_path / "incoming" / "final", round_=3, run_id="r42")
    serve = tmp_path / "serve"
    result = publish(source, serve, verify_key_file())
    release = result.release
    assert release.parent == serve / RELEASES
    prefix = "r42-round-0003-"  # then 12 hex digits of the manifest's sha256
    assert release.name.startswith(prefix) and len(release.name) == len(prefix) + 12
    link = serve / CURRENT
    assert link.is_symlink() and os.readlink(link) == f"{RELEASES}/{release.name}"
    assert current_release(serve) == release.resolve() and result.previous is None
    assert sorted(p.name for p in release.iterdir()) == sorted(p.name for p in source.iterdir())
    for name in (MANIFEST, SIGNATURE, WEIGHTS):
        assert (release / name).read_bytes() == (source / name).read_bytes()
        assert stat.S_IMODE((release / name).stat().st_mode) == 0o640
    assert stat.S_IMODE(release.stat().st_mode) == 0o750
    assert _releases(serve) == [release.name]  # no temporary folder left behind
    # the same checkpoint again: same release, nothing copied twice
    again = publish(source, serve, verify_key_file())
    assert again.release == release and again.previous == release.resolve()


def _forged(checkpoint_factory, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoints that must be refused, with the text the refusal must carry."""
    altered = checkpoint_factory(tmp_path / "in" / "altered", round_=7, seed=3)
    data = bytearray((altered / WEIGHTS).read_bytes())
    data[-40] ^= 0xFF
    (altered / WEIGHTS).write_bytes(bytes(data))
    unsigned = checkpoint_factory(tmp_path / "in" / "unsigned", round_=7, signed=False)
    other = checkpoint_factory(
        tmp_path / "in" / "other", round_=7, key=Ed25519PrivateKey.generate()
    )
    return {
        "altered": (altered, f"{altered / WEIGHTS}: sha256 does not match"),
        "unsigned": (unsigned, f"{unsigned}: unsigned checkpoint (no {SIGNATURE})"),
        "other key": (other, f"{other / SIGNATURE}: signature does not verify"),
        "missing": (tmp_path / "in" / "nothing", f"{tmp_path / 'in' / 'nothing'}: no such"),
    }


def test_bad_checkpoints_are_refused_and_current_is_untouched(checkpoint_factory, tmp_path) -> None:
    serve = tmp_path / "serve"
    good = publish(
        checkpoint_factory(tmp_path / "in" / "good", round_=2), serve, verify_key_file()
    ).release
    for what, (folder, message) in _forged(checkpoint_factory, tmp_path).items():
        with pytest.raises(CheckpointError) as refused:
            publish(folder, serve, verify_key_file())
        assert message in str(refused.value), what
        assert current_release(serve) == good.resolve(), what
        assert _releases(serve) == [good.name], what  # nothing staged, nothing left over


def test_a_current_folder_copied_by_hand_is_not_replaced(checkpoint_factory, tmp_path) -> None:
    serve = tmp_path / "serve"
    by_hand = checkpoint_factory(serve / CURRENT, round_=1)
    with pytest.raises(CheckpointError, match=f"{serve / CURRENT}: a folder, not the link"):
        publish(checkpoint_factory(tmp_path / "in" / "new", round_=2), serve, verify_key_file())
    assert (by_hand / MANIFEST).is_file() and not (serve / RELEASES).exists()


def test_old_releases_are_pruned_never_the_current_one(checkpoint_factory, tmp_path) -> None:
    serve = tmp_path / "serve"
    published = [
        publish(
            checkpoint_factory(tmp_path / "in" / f"r{r}", round_=r, seed=r),
            serve,
            verify_key_file(),
            keep=3,
        )
        for r in range(1, 6)
    ]
    assert _releases(serve) == sorted(p.release.name for p in published[2:])
    assert [p.name for p in published[3].removed] == [published[0].release.name]
    assert current_release(serve) == published[4].release.resolve()
    # roll back to round 3 by publishing its release folder again
    rollback = publish(published[2].release, serve, verify_key_file(), keep=3)
    assert rollback.release == published[2].release and rollback.removed == ()
    assert current_release(serve) == published[2].release.resolve()
    os.utime(published[2].release, (1, 1))  # the oldest folder of all, and still current
    assert set(prune(serve, keep=1)) == {published[3].release, published[4].release}
    assert _releases(serve) == [published[2].release.name]


def test_cli_publish_and_refusal(checkpoint_factory, tmp_path) -> None:
    serve = tmp_path / "serve"
    good = checkpoint_factory(tmp_path / "in" / "good", round_=2)
    result = _fedrec(
        "checkpoint",
        "publish",
        str(good),
        "--to",
        str(serve),
        "--verify-key",
        str(verify_key_file()),
    )
    assert result.returncode == 0, result.stderr
    release = current_release(serve)
    assert release is not None and f"published {release}" in result.stdout
    unsigned = checkpoint_factory(tmp_path / "in" / "unsigned", round_=3, signed=False)
    result = _fedrec(
        "checkpoint",
        "publish",
        str(unsigned),
        "--to",
        str(serve),
        "--verify-key",
        str(verify_key_file()),
    )
    assert result.returncode == 2
    assert f"{unsigned}: unsigned checkpoint" in result.stderr
    assert current_release(serve) == release


@pytest.mark.integration
def test_watching_gateway_follows_publishes_and_keeps_serving_on_refusal(
    checkpoint_factory, gateway_factory, tmp_path
) -> None:
    serve = tmp_path / "serve"
    first = publish(
        checkpoint_factory(tmp_path / "in" / "a", round_=1, seed=1), serve, verify_key_file()
    )
    gw = gateway_factory(serve / CURRENT, "--watch", "--watch-interval", "0.2")
    with gw.client() as client:
        assert client.get("/readyz").json()["round"] == 1
        before = client.get("/recommend", params={"user_id": 4, "n": 10}).json()
        second = publish(
            checkpoint_factory(tmp_path / "in" / "b", round_=2, seed=2), serve, verify_key_file()
        )
        wait_for(lambda: client.get("/readyz").json()["round"] == 2)
        after = client.get("/recommend", params={"user_id": 4, "n": 10}).json()
        assert after["recommendations"] != before["recommendations"]
        assert f"now serving run test-run round 2 ({second.release})" in gw.log_text()
        # a forged checkpoint is refused by publish; the gateway keeps serving round 2
        forged = _forged(checkpoint_factory, tmp_path)["other key"][0]
        result = _fedrec(
            "checkpoint",
            "publish",
            str(forged),
            "--to",
            str(serve),
            "--verify-key",
            str(verify_key_file()),
        )
        assert result.returncode == 2 and "signature does not verify" in result.stderr
        time.sleep(1.0)  # five watch intervals
        assert client.get("/readyz").json()["round"] == 2
        assert client.get("/recommend", params={"user_id": 4, "n": 10}).json() == after
        # roll back: the gateway follows to round 1 again, with round 1's answers
        publish(first.release, serve, verify_key_file())
        wait_for(lambda: client.get("/readyz").json()["round"] == 1)
        assert client.get("/recommend", params={"user_id": 4, "n": 10}).json() == before
        assert "reload refused" not in gw.log_text()
        assert gw.process.poll() is None


def test_gateway_dry_run_verifies_the_checkpoint(checkpoint_factory, tmp_path) -> None:
    key = str(verify_key_file())
    good = checkpoint_factory(tmp_path / "good", round_=4, run_id="dry")
    result = _fedrec("gateway", "--checkpoint", str(good), "--verify-key", key, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "checkpoint ok (signature verified): run dry round 4" in result.stdout
    missing = tmp_path / "serve" / CURRENT
    result = _fedrec("gateway", "--checkpoint", str(missing), "--verify-key", key, "--dry-run")
    assert result.returncode == 2
    assert f"{missing}: no such checkpoint folder" in result.stderr
    unsigned = checkpoint_factory(tmp_path / "unsigned", signed=False)
    result = _fedrec("gateway", "--checkpoint", str(unsigned), "--verify-key", key, "--dry-run")
    assert result.returncode == 2
    assert f"{unsigned}: unsigned checkpoint (no {SIGNATURE})" in result.stderr
