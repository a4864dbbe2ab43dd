"""Prometheus metrics: requests, latency, errors, and the model being served."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedrec_app.gateway.store import ModelStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self, store: ModelStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedrec_gateway_requests",
            "HTTP requests handled",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedrec_gateway_request_duration_seconds",
            "Time from request start to the end of the response",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "fedrec_gateway_errors",
            "Responses with status >= 400 (kind: client 4xx, server 5xx)",
            ("route", "kind"),
            registry=self.registry,
        )
        self.registry.register(_ModelCollector(store))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, "server" if status >= 500 else "client").inc()


class _ModelCollector(Collector):
    """Reads the store at scrape time: round of the served model and reload outcomes."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        manifest = self.store.current.manifest
        round_ = GaugeMetricFamily(
            "fedrec_gateway_model_round", "Round of the checkpoint being served", labels=["run_id"]
        )
        round_.add_metric([str(manifest.get("run_id", ""))], float(manifest.get("round", 0)))
        yield round_
        reloads = CounterMetricFamily(
            "fedrec_gateway_reloads", "Checkpoint reloads by result", labels=["result"]
        )
        for result, count in self.store.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
