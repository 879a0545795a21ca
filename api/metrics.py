"""Prometheus metrics of one app, in their own CollectorRegistry (two apps in one process,
as in tests, never share counters). Under gunicorn each worker exposes its own figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class ApiMetrics:
    """Request, prediction and model-reload figures."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "api_requests",
            "HTTP requests answered, by route, method and status code.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "Time to answer a request, by route.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.records = Counter(
            "api_predictions",
            "Records scored, by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.batch_size = Histogram(
            "api_batch_records",
            "Records per accepted predict request.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.invalid = Counter(
            "api_invalid_requests",
            "Predict requests refused as bad input, by error code.",
            ["error"],
            registry=r,
        )
        self.reloads = Counter(
            "api_model_reloads",
            "Switches of the served version after an alias change.",
            registry=r,
        )
        self.load_failures = Counter(
            "api_model_load_failures",
            "Failed attempts to load a model version, by error type.",
            ["error_type"],
            registry=r,
        )
        self.serving = Gauge(
            "api_model_serving_info",
            "1 for the version answering un-versioned requests.",
            ["model", "version"],
            registry=r,
        )
