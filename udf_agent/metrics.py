"""Prometheus metrics of the agent (one CollectorRegistry per server, injectable)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["AgentMetrics"]


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
        self.keepalives = Counter("udf_agent_keepalives", "Keepalive requests answered", registry=r)
        self.model_info = Gauge(
            "udf_agent_model_version_info",
            "1 for each model version currently used by a connection",
            ["model", "alias", "version"],
            registry=r,
        )
        self.reloads = Counter(
            "udf_agent_model_reloads",
            "Alias switches picked up without restart",
            ["model"],
            registry=r,
        )
        self.build = Info("udf_agent_build", "Agent build information", registry=r)
