"""ModelStore: which folder is served, when it reloads, and what it refuses."""

from __future__ import annotations

import json
import logging

import pytest
from signing_keys import verify_key_file

from fedrec_app.core.checkpoint import CheckpointError, point
from fedrec_app.core.errors import FedrecError
from fedrec_app.core.signing import new_signing_key
from fedrec_app.gateway.store import ModelStore, resolve_checkpoint


def test_run_folder_serves_final_else_latest(checkpoint_factory, tmp_path) -> None:
    run = tmp_path / "run"
    point(run, "latest", checkpoint_factory(run / "round-0001", round_=1))
    assert resolve_checkpoint(run) == run / "latest"
    checkpoint_factory(run / "final", round_=2)
    assert resolve_checkpoint(run) == run / "final"
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        resolve_checkpoint(tmp_path)


def test_reload_only_on_change_and_refuses_bad_manifests(checkpoint_factory, tmp_path) -> None:
    run = tmp_path / "run"
    point(run, "latest", checkpoint_factory(run / "round-0001", round_=1))
    store = ModelStore(run / "latest", verify_key_file())
    first = store.current
    assert store.reload() is False and store.current is first  # nothing changed
    assert store.reload(force=True) is True and store.current.checkpoint.round == 1
    # a manifest that parses but is malformed in a way the reader does not expect
    odd = checkpoint_factory(run / "round-0002", round_=2)
    manifest = json.loads((odd / "manifest.json").read_text())
    manifest["catalogue"] = "not an object"
    (odd / "manifest.json").write_text(json.dumps(manifest))
    point(run, "latest", odd)
    served = store.current
    assert store.reload() is False
    assert store.current is served and store.reloads == {"ok": 1, "refused": 1}
    point(run, "latest", checkpoint_factory(run / "round-0003", round_=3))
    assert store.reload() is True and store.current.checkpoint.round == 3


def test_a_folder_gone_for_a_moment_is_not_a_refusal(checkpoint_factory, tmp_path) -> None:
    folder = checkpoint_factory(tmp_path / "final", round_=1)
    store = ModelStore(folder, verify_key_file())
    aside = folder.rename(tmp_path / ".final.old")  # as during an in-place replacement
    assert store.reload() is False and store.reloads == {"ok": 0, "refused": 0}
    aside.rename(folder)
    assert store.reload(force=True) is True


def test_reload_refuses_unsigned_or_foreign_signatures(checkpoint_factory, tmp_path) -> None:
    run = tmp_path / "run"
    point(run, "latest", checkpoint_factory(run / "round-0001", round_=1))
    store = ModelStore(run / "latest", verify_key_file())
    for round_, kwargs, says in (
        (2, {"signed": False}, "unsigned checkpoint"),
        (3, {"key": new_signing_key()}, "signature does not verify"),
    ):
        point(
            run, "latest", checkpoint_factory(run / f"round-000{round_}", round_=round_, **kwargs)
        )
        assert store.reload() is False
        assert store.current.checkpoint.round == 1
        assert store.last_refusal is not None and says in store.last_refusal
    assert store.reloads == {"ok": 0, "refused": 2}
    point(run, "latest", checkpoint_factory(run / "round-0004", round_=4))
    assert store.reload() is True and store.current.checkpoint.round == 4


def test_no_verify_key_needs_an_explicit_allow_unsigned(checkpoint_factory, tmp_path, caplog):
    folder = checkpoint_factory(tmp_path / "final", signed=False)
    with pytest.raises(FedrecError, match="no verify key"):
        ModelStore(folder)
    with pytest.raises(CheckpointError, match=f"{folder}: unsigned checkpoint"):
        ModelStore(folder, verify_key_file())
    with caplog.at_level(logging.WARNING, logger="fedrec_app.gateway.store"):
        store = ModelStore(folder, allow_unsigned=True)
    assert store.current.checkpoint.round >= 1
    assert any(
        r.levelno == logging.WARNING and "UNSIGNED" in r.getMessage() for r in caplog.records
    )
