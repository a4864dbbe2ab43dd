"""The ServerApp and ClientApp functions together on synthetic data, through an in-process Grid.

Real training, real checkpoints and node state on disk; no SuperLink (the integration tests have
one). Covers a full run, checkpoint files against the manifest, user rows staying on the node,
resume, a node lost mid-run, too few nodes, stale messages, a node without a partition, a site's own
partition folder and a node whose catalogue is not the run's.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from direct_grid import DirectGrid, app_nodes, app_run_config
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from gateway.conftest import start_gateway
from signing_keys import signing_key

from fedrec_app.client_app import app as client_app
from fedrec_app.core import protocol
from fedrec_app.core.checkpoint import CheckpointError, read_checkpoint, verify_checkpoint
from fedrec_app.core.config import ConfigError, parse_run_config
from fedrec_app.core.rated import RATED_ARRAYS, rated_lists
from fedrec_app.core.signing import new_signing_key, sign
from fedrec_app.core.training import init_item_arrays
from fedrec_app.data.catalogue import Catalogue, read_catalogue_csv, write_catalogue_csv
from fedrec_app.data.partition import load_partition_set_member
from fedrec_app.data.site import make_site_partition
from fedrec_app.node.state import load_state
from fedrec_app.server.replies import FederationError
from fedrec_app.server_app import main, run

pytestmark = pytest.mark.slow  # trains a Keras model (first TensorFlow import takes seconds)


def test_full_run_writes_verified_checkpoints(partition_set: Path, tmp_path: Path) -> None:
    config = app_run_config(
        partition_set, tmp_path / "ckpt", share_user_factors=True, keep_optimizer=True
    )
    grid = DirectGrid(app_nodes(partition_set, tmp_path / "state"), run_id=41, run_config=config)
    final = run(grid, parse_run_config(config), 41)

    run_dir = tmp_path / "ckpt" / "41"
    assert final == run_dir / "final"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best",
        "final",
        "latest",
        "round-0001",
        "round-0002",
    ]
    assert (run_dir / "latest").resolve() == (run_dir / "round-0002").resolve()
    for folder in ("round-0001", "round-0002", "best", "final"):
        # signed by the federation's key; every file against its sha256
        manifest = verify_checkpoint(run_dir / folder, signing_key().public_key())
        assert set(manifest["files"]) >= {"weights.npz", "items.csv"}
    ckpt = read_checkpoint(final)
    assert "model.keras" in ckpt.manifest["files"]
    assert ckpt.round == 2 and ckpt.has_user_factors
    assert [entry["round"] for entry in ckpt.manifest["history"]] == [1, 2]
    for key in ("test.rmse", "test.mae", "test.hr@10", "test.ndcg@10", "val.rmse", "train.loss"):
        assert np.isfinite(ckpt.manifest["metrics"][key])
    assert ckpt.manifest["run_config"]["checkpoint-dir"] == str(tmp_path / "ckpt")
    # Every user of both partitions is in the checkpoint; the nodes kept their own rows.
    state_a = load_state(tmp_path / "state" / "a", "41")
    state_b = load_state(tmp_path / "state" / "b", "41")
    assert state_a is not None and state_a.round == 2
    assert state_a.optimizer  # Adam's state continues from round to round (keep-optimizer)
    assert state_b is not None
    users = np.union1d(state_a.user_arrays["user_ids"], state_b.user_arrays["user_ids"])
    np.testing.assert_array_equal(ckpt.arrays["user_ids"], users)
    # The model changed from its initial state.
    start = init_item_arrays(len(ckpt.catalogue), parse_run_config(config).train_config())
    assert not np.allclose(start["item_embedding"], ckpt.arrays["item_embedding"])
    # Each user's rated movies came with their row (all they rated at their node), and a
    # gateway serving the checkpoint recommends none of them.
    _assert_rated_movies_left_out(partition_set, final, tmp_path)


def _assert_rated_movies_left_out(partition_set: Path, final: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(final)
    rated: dict[int, set[int]] = {}
    for index in (0, 1):
        part = load_partition_set_member(partition_set, index)
        for frame in (part.train, part.val, part.test):
            for user, movie in zip(frame["user_id"], frame["movie_id"], strict=True):
                rated.setdefault(int(user), set()).add(int(movie))
    lists = rated_lists(ckpt.arrays)
    user_ids = ckpt.arrays["user_ids"].tolist()
    assert {u: set(lists[r].tolist()) for r, u in enumerate(user_ids)} == {
        u: rated[u] for u in user_ids
    }
    users = [4, *np.random.default_rng(5).choice(user_ids, 5, replace=False).tolist()]
    gateway = start_gateway(final, tmp_path)
    try:
        with gateway.client() as client:
            for user in users:
                recs = client.get("/recommend", params={"user_id": user, "n": 20}).json()
                shown = {r["movie_id"] for r in recs["recommendations"]}
                assert shown and not shown & rated[user], user
    finally:
        gateway.stop()


def test_user_rows_stay_on_the_nodes_by_default(partition_set: Path, tmp_path: Path) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt", num_server_rounds=1)
    grid = DirectGrid(app_nodes(partition_set, tmp_path / "state"), run_id=42, run_config=config)
    final = run(grid, parse_run_config(config), 42)
    assert final is not None and not read_checkpoint(final).has_user_factors
    assert all(protocol.USERS not in m.content.array_records for m in grid.sent)
    assert not set(RATED_ARRAYS) & set(read_checkpoint(final).arrays)


def test_resume_continues_rounds_history_and_node_state(
    partition_set: Path, tmp_path: Path
) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt", num_server_rounds=2)
    nodes = app_nodes(partition_set, tmp_path / "state")
    run(DirectGrid(nodes, run_id=43, run_config=config), parse_run_config(config), 43)
    source = tmp_path / "ckpt" / "43" / "round-0001"

    config = {**config, "num-server-rounds": 3, "resume-from": str(source)}
    grid = DirectGrid(nodes, run_id=44, run_config=config)
    final = run(grid, parse_run_config(config), 44)
    assert final is not None
    manifest = json.loads((final / "manifest.json").read_text())
    assert [e["round"] for e in manifest["history"]] == [1, 2, 3]
    assert manifest["resumed_from"] == str(source.resolve())
    assert sorted(p.name for p in (tmp_path / "ckpt" / "44").glob("round-*")) == [
        "round-0002",
        "round-0003",
    ]
    # Rounds 2-3 were sent again and the nodes went on with the first run's user rows.
    assert sorted({int(m.content["config"]["round"]) for m in grid.sent}) == [2, 3]
    assert {m.content["config"]["state-key"] for m in grid.sent} == {"43"}
    state = load_state(tmp_path / "state" / "a", "43")
    assert state is not None and (state.run_id, state.round) == (44, 3)

    with pytest.raises(ConfigError, match="num-server-rounds must be larger"):
        run(grid, parse_run_config({**config, "num-server-rounds": 1}), 45)

    # A resume point signed by another key is refused before any round.
    other = new_signing_key()
    (source / "manifest.sig").write_bytes(sign(other, (source / "manifest.json").read_bytes()))
    sent = len(grid.sent)
    with pytest.raises(CheckpointError, match="signature does not verify"):
        run(grid, parse_run_config(config), 49)
    assert len(grid.sent) == sent


def test_a_node_lost_mid_run_does_not_stop_the_run(partition_set: Path, tmp_path: Path) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt", num_server_rounds=3, min_nodes=1)
    nodes = app_nodes(partition_set, tmp_path / "state")
    lost = max(nodes)
    grid = DirectGrid(nodes, run_id=46, run_config=config)
    grid.drop_after(lost, messages=1)  # answers round 1, then is gone
    final = run(grid, parse_run_config(config), 46)
    assert final is not None
    history = read_checkpoint(final).manifest["history"]
    assert [e["nodes"] for e in history] == [2, 1, 1]


def test_the_log_has_one_line_per_round_naming_sites(
    partition_set: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What `flwr log` shows: one line per round (round r/R, RMSE, NDCG@10 of the model the
    replies evaluated, nodes replied/asked by site name, seconds); failures: test_strategy."""
    caplog.set_level(logging.INFO, logger="fedrec_app")
    config = app_run_config(partition_set, tmp_path / "ckpt", num_server_rounds=3, min_nodes=1)
    nodes = app_nodes(partition_set, tmp_path / "state")
    lost = max(nodes)
    for node, name in zip(sorted(nodes), ("site-a", "site-b"), strict=True):
        nodes[node]["site-name"] = name
    grid = DirectGrid(nodes, run_id=48, run_config=config)
    grid.drop_after(lost, messages=1)  # answers round 1, then is gone
    main(grid, Context(48, 0, {}, RecordDict(), config))
    lines = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "fedrec_app.server.strategy"
        and r.levelno >= logging.INFO
        and " so far" not in r.getMessage()  # a slow round's heartbeat: test_strategy
    ]
    metric = r"RMSE \d\.\d{4}, NDCG@10 \d\.\d{3}"
    expected = [
        (logging.INFO, r"round 1/3: 2/2 nodes replied: site-a, site-b \| \d+\.\d s"),
        (
            logging.INFO,
            rf"round 2/3: model of round 1 on the held-out ratings: {metric} \| "
            r"1/1 nodes replied: site-a \| \d+\.\d s",
        ),  # site-b is gone: not asked
        (
            logging.INFO,
            rf"round 3/3: model of round 2 on the held-out ratings: {metric} \| "
            r"1/1 nodes replied: site-a \| \d+\.\d s",
        ),
        (
            logging.INFO,
            rf"final evaluation: model of round 3 on the held-out ratings: {metric} "
            r"\| 1/1 nodes replied: site-a \| \d+\.\d s",
        ),
    ]
    assert len(lines) == len(expected), lines
    for (level, text), (want_level, pattern) in zip(lines, expected, strict=True):
        assert level == want_level and re.fullmatch(pattern, text), text
    done = [r.getMessage() for r in caplog.records if r.name == "fedrec_app.server_app"]
    assert done[-1].startswith("run 48 completed: final checkpoint ")
    others = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO
        and r.name in ("fedrec_app.server.keeper", "fedrec_app.server_app")
    ]
    assert len(others) == 3, others  # run start, final checkpoint, completed: nothing per round


def test_a_failed_run_says_so_in_its_log(
    partition_set: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt", min_nodes=3)
    grid = DirectGrid(app_nodes(partition_set, tmp_path / "state"), run_id=51, run_config=config)
    with pytest.raises(FederationError):
        main(grid, Context(51, 0, {}, RecordDict(), config))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "run 51 FAILED: only 2 node(s) connected, fewer than min-nodes=3, within "
        "node-wait-timeout=1 s: the run stops"
    ]


def test_too_few_nodes_fails_with_a_clear_message(partition_set: Path, tmp_path: Path) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt", min_nodes=3)
    grid = DirectGrid(app_nodes(partition_set, tmp_path / "state"), run_id=47, run_config=config)
    with pytest.raises(FederationError, match="fewer than min-nodes=3.*node-wait-timeout=1 s"):
        run(grid, parse_run_config(config), 47)
    assert not grid.sent


def test_run_without_a_usable_signing_key_fails_before_any_round(
    partition_set: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "absent.key"
    not_ed25519 = tmp_path / "ec.key"
    not_ed25519.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for key, says in ((missing, "no such signing key"), (not_ed25519, "not an Ed25519")):
        config = app_run_config(partition_set, tmp_path / "ckpt", signing_key=str(key))
        grid = DirectGrid(
            app_nodes(partition_set, tmp_path / "state"), run_id=50, run_config=config
        )
        with pytest.raises(ConfigError, match=f"'signing-key': {key}: {says}"):
            run(grid, parse_run_config(config), 50)
        assert not grid.sent and not (tmp_path / "ckpt").exists()


def test_relative_checkpoint_dir_is_refused(partition_set: Path) -> None:
    config = app_run_config(partition_set, Path("relative/ckpt"))
    with pytest.raises(ConfigError, match="'checkpoint-dir' must be an absolute path"):
        run(DirectGrid({}, run_id=48, run_config=config), parse_run_config(config), 48)


def _train_message(partition_set: Path, server_round: int) -> Message:
    catalogue = read_catalogue_csv(partition_set / "items.csv")
    config = parse_run_config(app_run_config(partition_set, Path("/unused")))
    content = RecordDict(
        {
            protocol.ARRAYS: protocol.to_record(
                init_item_arrays(len(catalogue), config.train_config())
            ),
            protocol.CONFIG: ConfigRecord(
                {
                    "round": server_round,
                    "state-key": "49",
                    "catalogue-fingerprint": catalogue.fingerprint,
                    "evaluate": False,
                }
            ),
        }
    )
    msg = Message(content=content, message_type="train", dst_node_id=5, group_id="1")
    msg.metadata.__dict__["_message_id"] = msg.object_id
    return msg


def test_client_stale_and_unconfigured_nodes_reply_short_codes(
    partition_set: Path, tmp_path: Path
) -> None:
    config = app_run_config(partition_set, tmp_path / "ckpt")
    DirectGrid({}, run_id=49, run_config=config)  # the task identity Message() needs
    node_config = {"data-path": str(partition_set / "partition-0"), "state-dir": str(tmp_path)}

    def ask(server_round: int, node: dict) -> Message:
        context = Context(49, 5, dict(node), RecordDict(), dict(config))
        return client_app(_train_message(partition_set, server_round), context)

    assert not ask(2, node_config).has_error()
    stale = ask(1, node_config)  # an earlier round, e.g. redelivered after a restart
    assert stale.has_error() and stale.error.reason == "fedrec:stale"
    missing = ask(3, {"state-dir": str(tmp_path)})
    assert missing.has_error() and missing.error.reason == "fedrec:no-partition"
    broken = ask(3, {**node_config, "data-path": str(tmp_path / "nowhere")})
    assert broken.error.reason == "fedrec:bad-partition"  # no path, no data in the reply
    unpacked = _train_message(partition_set, 4)  # one Array per name: not this protocol
    unpacked.content.array_records[protocol.ARRAYS] = ArrayRecord(
        {"item_bias": Array(np.zeros(3, np.float32))}
    )
    context = Context(49, 5, dict(node_config), RecordDict(), dict(config))
    assert client_app(unpacked, context).error.reason == "fedrec:bad-message"


def _site_folder(synthetic_ml: Path, tmp_path: Path, catalogue: Path) -> Path:
    """A site's own folder made by `fedrec partition site` from its own ratings file."""
    tmp_path.mkdir(exist_ok=True)
    ratings = tmp_path / "site-ratings.tsv"
    ratings.write_text("".join((synthetic_ml / "u.data").read_text().splitlines(True)[:500]))
    return make_site_partition(ratings, catalogue, tmp_path / "site-data", seed=1).out


def test_a_site_folder_trains_with_the_runs_catalogue(
    partition_set: Path, synthetic_ml: Path, tmp_path: Path
) -> None:
    folder = _site_folder(synthetic_ml, tmp_path, partition_set / "items.csv")
    config = app_run_config(partition_set, tmp_path / "ckpt", num_server_rounds=1)
    nodes = {
        101: {"data-path": str(partition_set / "partition-0"), "state-dir": str(tmp_path / "a")},
        202: {"data-path": str(folder), "state-dir": str(tmp_path / "b")},
    }
    final = run(DirectGrid(nodes, run_id=51, run_config=config), parse_run_config(config), 51)
    assert final is not None
    assert load_state(tmp_path / "b", "51") is not None  # the site node trained


def test_a_node_whose_catalogue_differs_is_refused_with_catalogue_mismatch(
    partition_set: Path, synthetic_ml: Path, tmp_path: Path
) -> None:
    """A site folder that verifies, made with another items.csv (one title changed): the node
    refuses the run's messages with `catalogue-mismatch`, sending no arrays."""
    ours = read_catalogue_csv(partition_set / "items.csv")
    titles = ("Another title (1995)", *ours.titles[1:])
    other = tmp_path / "other" / "items.csv"
    other.parent.mkdir()
    write_catalogue_csv(Catalogue(ours.movie_ids, titles, ours.years, ours.genres), other)
    folder = _site_folder(synthetic_ml, tmp_path, other)
    config = app_run_config(partition_set, tmp_path / "ckpt")
    DirectGrid({}, run_id=52, run_config=config)  # the task identity Message() needs
    node_config = {"data-path": str(folder), "state-dir": str(tmp_path / "state")}
    context = Context(52, 5, node_config, RecordDict(), dict(config))
    reply = client_app(_train_message(partition_set, 1), context)
    assert reply.has_error() and reply.error.reason == "fedrec:catalogue-mismatch"
    assert not reply.has_content()
    same = _site_folder(synthetic_ml, tmp_path / "same", partition_set / "items.csv")
    context = Context(52, 6, {**node_config, "data-path": str(same)}, RecordDict(), dict(config))
    assert not client_app(_train_message(partition_set, 1), context).has_error()
