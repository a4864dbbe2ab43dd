"""What travels between the ServerApp and the ClientApps: record names, packing, error codes.

A train message carries ``arrays`` (the shared arrays: item rows + ``global_bias``) and
``config`` (round, state key, catalogue fingerprint, whether to evaluate first). The reply
carries ``arrays`` (the node's trained shared arrays), ``counts`` (per-row example counts, same
names), optionally ``users`` (user rows, only when user factors are shared) and ``metrics``
(training figures plus the evaluation sums of the incoming model, prefixed ``test.`` / ``val.``:
``fedrec_app.core.metrics.metric_key``, the one spelling of a figure from node to checkpoint).
An evaluate message carries ``arrays`` and ``config``; its reply only ``metrics``. Every reply of
a node whose node-config names its site (``site-name``) also carries ``node``, a ConfigRecord
(strings) with that name, so the server's log says who replied.

Each array record holds ONE Flower ``Array``: the named arrays as an uncompressed ``.npz``
archive (``to_record`` / ``from_record``). Flower 1.42 moves every Array as an object of its own,
with requests per object on every hop (ServerApp, SuperLink, SuperNode, ClientApp): the no-op app
took 0.5-3.5 s longer per round with its bytes in 12 arrays than in 1 (docs/benchmarks.md).

A failing node replies with a Flower ``Error`` whose reason is ``fedrec:<code>`` (one of
``ERROR_CODES``): never data, never a traceback (that stays in the node's log). A node that
refuses a run's app (``fedrec_app.ops.supernode_main``) adds its node id and the app's hash:
``refusal_reason``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedrec_app.core.metrics import EvalSums, split_metrics

ARRAYS, CONFIG, COUNTS, USERS, METRICS = "arrays", "config", "counts", "users", "metrics"
NODE, SITE_NAME = "node", "site-name"  # the replying node's ConfigRecord; node-config key
PACKED = "npz"  # the one Array of an array record
EVAL_SPLITS = ("test", "val")
EVAL_ROUND = "eval-round"  # the round whose global model the evaluation sums describe
ERROR_PREFIX = "fedrec:"
ERROR_CODES: dict[str, str] = {
    "no-partition": "node-config has no data-path and run-config no partition-set",
    "bad-node-config": "a node-config value has the wrong type (gpu-index, threads)",
    "bad-partition": "the node's partition failed verification",
    "catalogue-mismatch": "the node's catalogue differs from the server's",
    "bad-message": "the message lacks a record or an array",
    "stale": "the message belongs to a round this node already trained",
    "trainer-failed": "the node's warm trainer died or refused the request",
    "internal": "unexpected error (see the node's log)",
    "app-not-approved": "the node's admin has not approved this app's FAB hash",
}
APP_NOT_APPROVED = "app-not-approved"


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named arrays as an ArrayRecord of one Array (an uncompressed .npz archive)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{n: np.asarray(v) for n, v in arrays.items()})
    return ArrayRecord({PACKED: Array(np.frombuffer(buffer.getbuffer(), np.uint8))})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named arrays of a ``to_record`` record; ValueError when it is not one."""
    if list(record.keys()) != [PACKED]:
        raise ValueError(f"expected one array {PACKED!r} in the record, got {sorted(record)}")
    data = record[PACKED].numpy().tobytes()
    if not data.startswith(b"PK"):
        raise ValueError(f"array {PACKED!r} is not an .npz archive")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
        raise ValueError(f"array {PACKED!r} is not an .npz archive: {exc}") from exc


def add_site_name(reply: RecordDict, node_config: Mapping[str, object]) -> None:
    """Name the replying site in ``reply`` (record ``node``) when node-config has ``site-name``."""
    name = node_config.get(SITE_NAME)
    if isinstance(name, str) and name.strip():
        reply[NODE] = ConfigRecord({SITE_NAME: name.strip()})


def site_name(reply: RecordDict) -> str | None:
    """The site name a reply carries (``add_site_name``), or None."""
    record = reply.config_records.get(NODE)
    name = record.get(SITE_NAME) if record is not None else None
    return name if isinstance(name, str) and name else None


def eval_metrics(sums: Mapping[str, EvalSums], eval_round: int) -> dict[str, float]:
    """Flatten per-split evaluation sums into MetricRecord values."""
    out: dict[str, float] = {EVAL_ROUND: float(eval_round)}
    for split, split_sums in sums.items():
        out.update(split_metrics(split, split_sums.to_dict()))
    return out


def read_eval_sums(metrics: MetricRecord | Mapping[str, float]) -> dict[str, EvalSums]:
    """The per-split evaluation sums in a reply's metrics (splits that are absent are skipped)."""
    out: dict[str, EvalSums] = {}
    for split in EVAL_SPLITS:
        prefix = f"{split}."
        values = {
            key[len(prefix) :]: float(v)
            for key, v in metrics.items()
            if key.startswith(prefix) and isinstance(v, int | float)
        }
        if values:
            out[split] = EvalSums.from_dict(values)
    return out


def error_reason(code: str) -> str:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return f"{ERROR_PREFIX}{code}"


def refusal_reason(node_id: int | str, digest: str) -> str:
    """The reason of a node's reply that refuses to run an app it has not approved."""
    return (
        f"{error_reason(APP_NOT_APPROVED)}: node {node_id}: app {digest} is not approved "
        "on this node"
    )


def is_refusal(reason: str) -> bool:
    """Whether an error reason is a node's refusal of the run's app (``refusal_reason``)."""
    return reason.startswith(error_reason(APP_NOT_APPROVED))
