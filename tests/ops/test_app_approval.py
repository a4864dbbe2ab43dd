"""App approval: FAB hashes, the allowlist file, and the gate in Flower's SuperNode loop.

The gate tests drive Flower 1.42's real ``_pull_and_store_message`` with an in-memory node state
and stand-ins for the SuperLink calls: a refused FAB gets an error reply and no task (no
ClientApp would start); an approved one gets its task as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MessageType, Metadata, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supernode import start_client_internal
from flwr.supernode.nodestate import NodeStateFactory

from fedrec_app.core import protocol
from fedrec_app.ops import supernode_main
from fedrec_app.ops.app_approval import (
    AppGate,
    ApprovalError,
    app_hash,
    app_label,
    append_to_allowlist,
    check_file,
    parse_allowlist,
    read_allowlist,
)
from fedrec_app.ops.federation import NOOP_APP_DIR
from fedrec_app.ops.supernode_main import GateError, check_flower, install_gate, split_args

NODE_ID = 4242
RUN_ID = 77


@pytest.fixture
def noop_copy(tmp_path: Path) -> Path:
    return Path(
        shutil.copytree(
            NOOP_APP_DIR, tmp_path / "noop_app", ignore=shutil.ignore_patterns("__pycache__")
        )
    )


# ------------------------------------------------------------------ hashes
def test_app_hash_is_the_sha256_of_the_fab_flwr_run_builds(noop_copy: Path) -> None:
    digest = app_hash(noop_copy)
    assert digest == hashlib.sha256(build_fab_from_disk(noop_copy)).hexdigest()
    assert digest == app_hash(noop_copy) == app_hash(NOOP_APP_DIR)  # deterministic
    (noop_copy / "README.md").write_text("changed\n")  # the FAB carries *.md
    assert app_hash(noop_copy) != digest
    assert app_label(NOOP_APP_DIR) == "@fedrec/noopapp==1.0.0"


def test_app_hash_of_a_folder_that_is_no_app(tmp_path: Path) -> None:
    with pytest.raises(ApprovalError, match="no pyproject.toml"):
        app_hash(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ApprovalError, match="cannot build its FAB"):
        app_hash(tmp_path)


# ------------------------------------------------------------------ the allowlist file
def test_parse_allowlist_comments_blank_lines_case() -> None:
    a, b = "a" * 64, "0123456789abcdef" * 4
    text = f"# approved\n\n{a}\n  {b.upper()}  # fedrec 0.1.0, reviewed\n{a}\n"
    assert parse_allowlist(text) == {a, b}
    assert parse_allowlist("# nothing yet\n") == frozenset()


@pytest.mark.parametrize("entry", ["abc", "g" * 64, "a" * 65, f"{'a' * 64} {'b' * 64}"])
def test_a_bad_entry_names_the_file_and_line(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "approved.txt"
    path.write_text(f"# ok\n{'c' * 64}\n{entry}\n")
    path.chmod(0o644)
    with pytest.raises(ApprovalError, match=rf"{path}:3: .* is not a sha256 hex digest"):
        read_allowlist(path)


def test_append_creates_a_0644_file_once_and_keeps_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "node" / "approved.txt"
    a, b = "a" * 64, "b" * 64
    assert append_to_allowlist(path, a, "@x/y==1")
    assert path.stat().st_mode & 0o777 == 0o644
    assert not append_to_allowlist(path, a.upper())
    path.write_text(path.read_text() + "# admin's note")  # no newline at the end
    assert append_to_allowlist(path, b)
    text = path.read_text()
    assert f"{a}  # @x/y==1\n" in text and "# admin's note\n" in text and text.endswith(f"{b}\n")
    assert read_allowlist(path) == {a, b}
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(ApprovalError, match="not a sha256"):
        append_to_allowlist(path, "nope")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_an_allowlist_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "approved.txt"
    append_to_allowlist(path, "a" * 64)
    path.chmod(mode)
    with pytest.raises(ApprovalError, match="writable by group or others"):
        read_allowlist(path)


def test_an_allowlist_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "approved.txt"
    append_to_allowlist(path, "a" * 64)
    owner = path.stat().st_uid
    if owner == 0:  # root owns it: accepted for any node user; pretend root is someone else
        os.chown(path, 54321, -1)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(ApprovalError, match="owned by uid"):
        check_file(path)


def test_an_allowlist_in_a_folder_anyone_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "open" / "approved.txt"
    append_to_allowlist(path, "a" * 64)
    path.parent.chmod(0o777)
    with pytest.raises(ApprovalError, match="folder is writable by others"):
        read_allowlist(path)
    path.parent.chmod(0o1777)  # sticky, like /tmp: others cannot replace our file
    assert read_allowlist(path) == {"a" * 64}
    path.parent.chmod(0o755)
    link = tmp_path / "swappable" / "approved.txt"  # a symlink others could swap
    link.parent.mkdir()
    link.symlink_to(path)
    assert read_allowlist(link) == {"a" * 64}
    link.parent.chmod(0o777)
    with pytest.raises(ApprovalError, match="folder is writable by others"):
        read_allowlist(link)


def test_a_missing_allowlist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ApprovalError, match="cannot read the allowlist"):
        read_allowlist(tmp_path / "none.txt")


# ------------------------------------------------------------------ the gate's decision
def test_gate_checks_the_content_against_a_list_read_each_time(tmp_path: Path) -> None:
    path = tmp_path / "approved.txt"
    content = b"a FAB"
    digest = hashlib.sha256(content).hexdigest()
    gate = AppGate(path)
    missing = gate.check(content)
    assert not missing.approved and "allowlist unusable" in missing.detail
    append_to_allowlist(path, "b" * 64)
    assert not gate.check(content).approved
    append_to_allowlist(path, digest)  # approved without a restart
    assert gate.check(content, claimed=(digest, digest.upper())).approved
    lied = gate.check(content, claimed=("c" * 64,))  # the SuperLink's claim is not trusted
    assert not lied.approved and "claimed hash" in lied.detail and lied.digest == digest
    path.chmod(0o666)
    assert not gate.check(content).approved


# ------------------------------------------------------------------ the gate in Flower's loop
class Link:
    """Stand-ins for the SuperLink calls the loop makes, serving one message of one run."""

    def __init__(self, fab_content: bytes, claimed: str | None = None) -> None:
        metadata = Metadata(
            run_id=RUN_ID,
            message_id="",
            src_node_id=0,
            dst_node_id=NODE_ID,
            reply_to_message_id="",
            group_id="1",
            created_at=time.time(),
            ttl=3600.0,
            message_type=MessageType.TRAIN,
        )
        self.message = Message(
            metadata=metadata, content=RecordDict({"config": ConfigRecord({"round": 1})})
        )
        self.message.metadata.__dict__["_message_id"] = self.message.object_id
        self.objects = get_all_nested_objects(self.message)
        digest = claimed or hashlib.sha256(fab_content).hexdigest()
        self.run = Run.create_empty(RUN_ID)
        self.run.fab_hash = digest
        self.fab = Fab(digest, fab_content, {})
        self.fetched: list[str] = []
        self.confirmed: list[str] = []

    def calls(self) -> dict[str, Callable]:
        tree = get_object_tree(self.message)
        return {
            "receive": lambda: (self.message, tree),
            "get_run": lambda run_id: self.run,
            "get_fab": lambda fab_hash, run_id: self.fetched.append(fab_hash) or self.fab,
            "pull_object": lambda run_id, obj_id: self.objects[obj_id].deflate(),
            "confirm_message_received": lambda run_id, msg_id: self.confirmed.append(msg_id),
        }


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Flower's loop module with the gate's wrapper installed (undone after the test)."""
    monkeypatch.setattr(
        start_client_internal,
        "_pull_and_store_message",
        start_client_internal._pull_and_store_message,
    )
    return start_client_internal


def _pull_once(module: types.ModuleType, link: Link) -> tuple[int | None, object]:
    factory = NodeStateFactory(ObjectStoreFactory())
    state, store = factory.state(), factory.objectstore_factory.store()
    state.set_node_id(NODE_ID)
    run_id = module._pull_and_store_message(
        state=state, object_store=store, node_config={}, trusted_entities=None, **link.calls()
    )
    return run_id, state


def test_gate_refuses_an_unapproved_fab_before_any_task(
    gated: types.ModuleType, tmp_path: Path, caplog
) -> None:
    allowlist = tmp_path / "approved.txt"
    append_to_allowlist(allowlist, app_hash(NOOP_APP_DIR))
    install_gate(gated, AppGate(allowlist))
    content = b"PK not an approved app"
    link = Link(content)
    run_id, state = _pull_once(gated, link)
    digest = hashlib.sha256(content).hexdigest()
    assert run_id == RUN_ID and link.fetched == [digest]
    assert state.get_tasks(run_ids=[RUN_ID]) == []  # no task: no flwr-clientapp would start
    assert state.get_run(RUN_ID) is None  # the next message of this run is checked again
    (reply,) = state.get_messages_legacy(is_reply=True)
    assert reply.has_error() and reply.metadata.reply_to_message_id == link.message.object_id
    assert reply.error.reason == protocol.refusal_reason(NODE_ID, digest)
    assert protocol.is_refusal(reply.error.reason)
    assert f"node {NODE_ID}: app {digest} is not approved on this node" in reply.error.reason
    assert link.confirmed == []  # its content was never pulled
    assert any(r.levelname == "ERROR" and digest in r.getMessage() for r in caplog.records)


def test_gate_refuses_a_fab_whose_claimed_hash_lies(
    gated: types.ModuleType, tmp_path: Path
) -> None:
    fab = build_fab_from_disk(NOOP_APP_DIR)
    allowlist = tmp_path / "approved.txt"
    append_to_allowlist(allowlist, hashlib.sha256(fab).hexdigest())
    install_gate(gated, AppGate(allowlist))
    tampered = fab + b"\0"
    link = Link(tampered, claimed=hashlib.sha256(fab).hexdigest())  # claims the approved hash
    run_id, state = _pull_once(gated, link)
    assert run_id == RUN_ID and state.get_tasks(run_ids=[RUN_ID]) == []
    (reply,) = state.get_messages_legacy(is_reply=True)
    assert hashlib.sha256(tampered).hexdigest() in reply.error.reason


def test_gate_lets_an_approved_fab_through_unchanged(
    gated: types.ModuleType, tmp_path: Path
) -> None:
    allowlist = tmp_path / "approved.txt"
    append_to_allowlist(allowlist, app_hash(NOOP_APP_DIR))
    install_gate(gated, AppGate(allowlist))
    link = Link(build_fab_from_disk(NOOP_APP_DIR))
    run_id, state = _pull_once(gated, link)
    assert run_id == RUN_ID
    (task,) = state.get_tasks(run_ids=[RUN_ID])
    assert task.fab_hash == link.run.fab_hash
    assert state.get_messages_legacy(is_reply=True) == []
    assert link.confirmed == [link.message.object_id]


def test_gate_refuses_to_install_on_another_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    check_flower(start_client_internal)  # the Flower installed here is the verified one
    with pytest.raises(GateError, match="verified on flwr 1.42.0 only, this is flwr 1.43.0"):
        check_flower(start_client_internal, version="1.43.0")
    changed = types.ModuleType("flwr.supernode.start_client_internal")
    for name in supernode_main.VERIFIED_SOURCES:
        setattr(changed, name, getattr(start_client_internal, name))
    changed._pull_and_store_message = lambda **kwargs: None
    with pytest.raises(GateError, match="_pull_and_store_message is not the code"):
        install_gate(changed, AppGate(Path("unused")))
    monkeypatch.setattr(supernode_main.importlib.metadata, "version", lambda name: "1.42.1")
    with pytest.raises(GateError, match="this is flwr 1.42.1"):
        install_gate(start_client_internal, AppGate(Path("unused")))


# ------------------------------------------------------------------ the entry point's options
def test_split_args_takes_exactly_one_approval_option() -> None:
    flower = ["--superlink", "127.0.0.1:1", "--insecure"]
    assert split_args(["--approved-apps", "a.txt", *flower]) == (Path("a.txt"), False, flower)
    assert split_args([*flower, "--approved-apps=a.txt"]) == (Path("a.txt"), False, flower)
    assert split_args(["--allow-any-app", *flower]) == (None, True, flower)
    for bad in (
        [],
        flower,
        ["--approved-apps"],
        ["--approved-apps", "--insecure"],
        ["--approved-apps", "a", "--allow-any-app"],
        ["--approved-apps", "a", "--approved-apps", "b"],
    ):
        with pytest.raises(ValueError, match="--approved-apps"):
            split_args(bad)


def _entry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app.ops.supernode_main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_supernode_will_not_start_without_a_usable_allowlist(tmp_path: Path) -> None:
    flower = ["--superlink", "127.0.0.1:9", "--insecure", "--max-retries", "0"]
    result = _entry(*flower)
    assert result.returncode != 0 and "give exactly one of --approved-apps" in result.stderr
    result = _entry("--approved-apps", str(tmp_path / "none.txt"), *flower)
    assert result.returncode != 0 and "cannot read the allowlist" in result.stderr
    open_list = tmp_path / "open.txt"
    append_to_allowlist(open_list, "a" * 64)
    open_list.chmod(0o666)
    result = _entry("--approved-apps", str(open_list), *flower)
    assert result.returncode != 0 and "writable by group or others" in result.stderr
    assert "SuperNode ID" not in result.stderr + result.stdout


def test_fedrec_app_hash_prints_the_hash_and_appends_it(tmp_path: Path, capsys) -> None:
    from fedrec_app.cli import main

    allowlist = tmp_path / "node" / "approved.txt"
    argv = ["app", "hash", str(NOOP_APP_DIR), "--append", str(allowlist)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == app_hash(NOOP_APP_DIR) and f"added to {allowlist}" in err
    assert read_allowlist(allowlist) == {app_hash(NOOP_APP_DIR)}
    assert "@fedrec/noopapp==1.0.0" in allowlist.read_text()
    assert main(argv) == 0 and "already in" in capsys.readouterr().err
    assert main(["app", "hash", str(tmp_path)]) == 2
    assert "no pyproject.toml" in capsys.readouterr().err
