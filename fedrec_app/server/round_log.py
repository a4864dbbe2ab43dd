"""The operator's view of a round (``flwr log``): one line per round with the model's figures, which
nodes replied by site name, who failed or stayed silent, and the seconds it took."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from flwr.app import Message

from fedrec_app.core import protocol
from fedrec_app.core.metrics import metric_key
from fedrec_app.server.replies import RoundResult, metrics_of, node_label

# in the one line per round
SHOWN_METRICS = ((metric_key("test", "rmse"), "RMSE"), (metric_key("test", "ndcg@10"), "NDCG@10"))


def learn_names(replies: Iterable[Message], names: dict[int, str]) -> None:
    """Remember the site name each reply carries (``protocol.add_site_name``) by node id: a node
    that fails later, when its reply has no content, is still named."""
    for reply in replies:
        if not reply.has_error():
            name = protocol.site_name(reply.content)
            if name:
                names[reply.metadata.src_node_id] = name


def round_line(
    head: str,
    asked: Sequence[int],
    answered: Iterable[int],
    result: RoundResult,
    names: Mapping[int, str],
    seconds: float,
) -> str:
    """The one line the operator reads per round (``flwr log``): the model the replies
    evaluated, which nodes replied (by site name) of how many asked, who failed or stayed
    silent, and the seconds it took."""
    parts = []
    if result.eval_round is not None and result.sums:
        metrics = metrics_of(result)
        shown = ", ".join(
            f"{label} {format_metric(key, metrics.get(key, math.nan))}"
            for key, label in SHOWN_METRICS
        )
        parts.append(f"model of round {result.eval_round} on the held-out ratings: {shown}")
    replied = ", ".join(sorted(node_label(n, names) for n in result.replied)) or "none"
    nodes = f"{len(result.replied)}/{len(asked)} nodes replied: {replied}"
    if result.failures:
        nodes += "; failed: " + "; ".join(result.failures)
    silent = sorted(node_label(n, names) for n in set(asked) - set(answered))
    if silent:
        nodes += "; no reply: " + ", ".join(silent)
    parts.append(nodes)
    parts.append(f"{seconds:.1f} s")
    return f"{head}: " + " | ".join(parts)


def format_metric(key: str, value: float) -> str:
    """One figure as an operator reads it: counts as integers, RMSE/MAE/losses with 4 decimals,
    ranking metrics (``ndcg@10``, ``hr@10``, …) with 3, seconds with 1."""
    name = key.rpartition(".")[2]
    if name in ("rmse", "mae") or "loss" in name:
        return f"{value:.4f}"
    if "@" in name:
        return f"{value:.3f}"
    if "seconds" in name:
        return f"{value:.1f}"
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``key=value`` pairs, sorted, each figure by ``format_metric``."""
    return " ".join(f"{key}={format_metric(key, value)}" for key, value in sorted(metrics.items()))
