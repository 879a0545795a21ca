"""Prometheus metrics, one CollectorRegistry per app (tests create many apps)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SinkMetrics"]


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "alert_sink_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.alerts_received = Counter(
            "alert_sink_alerts_received", "Alert bodies accepted (2xx)", registry=r
        )
        self.documents_accepted = Counter(
            "alert_sink_documents_accepted",
            "Documents committed to the spool or store",
            registry=r,
        )
        self.documents_by_kind = Counter(
            "alert_sink_documents_by_kind",
            "Documents committed, by alert.kind (anomaly, drift)",
            ["kind"],
            registry=r,
        )
        self.explanations_invalid = Counter(
            "alert_sink_explanations_invalid",
            "Anomaly documents indexed without their malformed top_features explanation",
            registry=r,
        )
        self.rejected = Counter(
            "alert_sink_alerts_rejected", "Requests refused, by reason", ["reason"], registry=r
        )
        self.shipped = Counter(
            "alert_sink_documents_shipped", "Documents confirmed by Elasticsearch", registry=r
        )
        self.item_retries = Counter(
            "alert_sink_bulk_item_retries", "Bulk items kept for retry (429/5xx)", registry=r
        )
        self.dead_letters = Counter(
            "alert_sink_dead_letters", "Documents Elasticsearch rejected for good", registry=r
        )
        self.bulk_requests = Counter(
            "alert_sink_bulk_requests", "Bulk requests by outcome", ["outcome"], registry=r
        )
        self.bulk_seconds = Histogram(
            "alert_sink_bulk_seconds",
            "Bulk request latency",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.es_up = Gauge(
            "alert_sink_elasticsearch_up",
            "1 when the last Elasticsearch call succeeded",
            registry=r,
        )
        self.spool_depth = Gauge(
            "alert_sink_spool_depth", "Documents waiting for Elasticsearch", registry=r
        )
        self.spool_oldest_age = Gauge(
            "alert_sink_spool_oldest_age_seconds",
            "Age of the oldest undelivered document",
            registry=r,
        )
        self.dead_letter_depth = Gauge(
            "alert_sink_dead_letter_depth", "Documents in the dead-letter table", registry=r
        )
        self.store_size = Gauge(
            "alert_sink_store_documents", "Documents in the local store", registry=r
        )

    def bind_spool(
        self,
        depth: Callable[[], float],
        oldest_age: Callable[[], float | None],
        dead: Callable[[], float],
    ) -> None:
        """Spool gauges are read from SQLite at scrape time."""
        self.spool_depth.set_function(depth)
        self.spool_oldest_age.set_function(lambda: oldest_age() or 0.0)
        self.dead_letter_depth.set_function(dead)
