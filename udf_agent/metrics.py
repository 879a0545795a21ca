"""Prometheus metrics of the agent (one CollectorRegistry per server, injectable)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["AgentMetrics", "BackendStatsCollector"]

#: stats() counters a remote backend may report -> (metric suffix, help)
_BACKEND_COUNTERS = {
    "requests": ("requests", "Requests sent to the model server, retries included"),
    "rows": ("rows", "Rows scored by the model server"),
    "failures": ("failed_batches", "Batches the model server failed to score"),
    "retries": ("retries", "Requests retried after a transient failure"),
    "rejected": ("rejected_batches", "Batches failed fast while the circuit breaker was open"),
    "breaker_opened": ("breaker_opened", "Times the circuit breaker opened"),
}
_BREAKER_STATES = ("closed", "open", "half_open")


class BackendStatsCollector(Collector):
    """Exports the counters of loaded backends that keep their own (``stats()``, e.g. the
    TF Serving backend: requests, retries, breaker state), read at scrape time."""

    def __init__(self, loaded: Callable[[], Iterable[tuple[str, str, Any]]]) -> None:
        self._loaded = loaded

    def collect(self):
        labels = ["model", "version", "backend"]
        counters = {
            key: CounterMetricFamily(f"udf_agent_backend_{suffix}", text, labels=labels)
            for key, (suffix, text) in _BACKEND_COUNTERS.items()
        }
        state = GaugeMetricFamily(
            "udf_agent_backend_breaker_state",
            "1 for the circuit breaker's current state",
            labels=[*labels, "state"],
        )
        for name, version, backend in self._loaded():
            stats_fn = getattr(backend, "stats", None)
            if stats_fn is None:
                continue
            stats = stats_fn()
            values = [name, version, str(stats.get("transport") or type(backend).__name__)]
            for key, family in counters.items():
                if key in stats:
                    family.add_metric(values, float(stats[key]))
            if "breaker_state" in stats:
                for s in _BREAKER_STATES:
                    state.add_metric([*values, s], 1.0 if stats["breaker_state"] == s else 0.0)
        yield from counters.values()
        yield state


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.points_in = Counter(
            "udf_agent_points_in", "Points received from Kapacitor", registry=r
        )
        self.points_out = Counter(
            "udf_agent_points_out", "Points written back to Kapacitor", registry=r
        )
        self.points_scored = Counter(
            "udf_agent_points_scored", "Points that got a score", ["model", "version"], registry=r
        )
        self.errors = Counter(
            "udf_agent_errors",
            "Points or connections with a problem, by reason",
            ["reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "udf_agent_fallback_batches", "Batches scored by the fallback model", registry=r
        )
        self.batch_size = Histogram(
            "udf_agent_batch_size",
            "Points per scoring call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "udf_agent_scoring_seconds",
            "Duration of one vectorized scoring call",
            buckets=(
                0.0001,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
            ),
            registry=r,
        )
        self.connections = Gauge("udf_agent_connections", "Open Kapacitor connections", registry=r)
        self.connections_total = Counter(
            "udf_agent_connections_accepted", "Kapacitor connections accepted", registry=r
        )
        self.connections_refused = Counter(
            "udf_agent_connections_refused",
            "Connections refused because --max-connections were open",
            registry=r,
        )
        self.keepalives = Counter("udf_agent_keepalives", "Keepalive requests answered", registry=r)
        self.inflight = Gauge(
            "udf_agent_inflight_points",
            "Points read from Kapacitor and not yet written back (all connections)",
            registry=r,
        )
        self.backpressure_seconds = Counter(
            "udf_agent_backpressure_seconds",
            "Time readers spent not reading because their in-flight bound was reached",
            registry=r,
        )
        self.model_info = Gauge(
            "udf_agent_model_version_info",
            "1 for each model version currently used by a connection",
            ["model", "alias", "version"],
            registry=r,
        )
        self.drift_windows = Counter(
            "udf_agent_drift_windows",
            "Windows judged by @drift(), by model and drift level",
            ["model", "level"],
            registry=r,
        )
        self.reloads = Counter(
            "udf_agent_model_reloads",
            "Alias switches picked up without restart",
            ["model"],
            registry=r,
        )

    def watch_backends(self, loaded: Callable[[], Iterable[tuple[str, str, Any]]]) -> None:
        """Export the stats of the backends ``loaded()`` lists at each scrape."""
        self.registry.register(BackendStatsCollector(loaded))
