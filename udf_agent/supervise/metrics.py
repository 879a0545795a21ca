"""Prometheus metrics of the task supervisor (one CollectorRegistry per supervisor)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SupervisorMetrics"]

_SECONDS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 900, 3600)


class SupervisorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "udf_supervisor_polls", "Task lists read from Kapacitor", ["result"], registry=r
        )
        self.last_poll = Gauge(
            "udf_supervisor_last_poll_timestamp_seconds",
            "When the task list was last read successfully (Unix time)",
            registry=r,
        )
        self.tasks = Gauge(
            "udf_supervisor_tasks",
            "Watched tasks (those calling a watched UDF) by state",
            ["state"],
            registry=r,
        )
        self.task_up = Gauge(
            "udf_supervisor_task_executing",
            "1 when the watched task is enabled and executing, 0 when it is enabled but not",
            ["task"],
            registry=r,
        )
        self.failures = Counter(
            "udf_supervisor_task_failures",
            "Times a watched task was found enabled but not executing",
            ["task"],
            registry=r,
        )
        self.recoveries = Counter(
            "udf_supervisor_recoveries",
            "Tasks re-enabled by the supervisor after their UDF died",
            ["task"],
            registry=r,
        )
        self.reenable_errors = Counter(
            "udf_supervisor_reenable_errors",
            "Re-enable attempts Kapacitor refused or that failed",
            ["task"],
            registry=r,
        )
        self.probes = Counter(
            "udf_supervisor_socket_probes",
            "Agent socket probes (an info request) by result",
            ["socket", "result"],
            registry=r,
        )
        self.downtime = Histogram(
            "udf_supervisor_downtime_seconds",
            "From the gap's start to the task's re-enable",
            buckets=_SECONDS,
            registry=r,
        )
        self.reenable_delay = Histogram(
            "udf_supervisor_reenable_delay_seconds",
            "From the first successful socket probe to the task executing again",
            buckets=_SECONDS,
            registry=r,
        )
        self.backfills = Counter(
            "udf_supervisor_backfills",
            "Gap backfills by result (ok, failed, skipped)",
            ["task", "result"],
            registry=r,
        )
        self.backfill_points = Counter(
            "udf_supervisor_backfill_points",
            "Points of a gap scored by a backfill",
            ["task"],
            registry=r,
        )
        self.unscored = Gauge(
            "udf_supervisor_gap_unscored_points",
            "Points of the task's last gap still without a score after its backfill",
            ["task"],
            registry=r,
        )
        self.backfill_seconds = Histogram(
            "udf_supervisor_backfill_seconds",
            "Duration of one backfill (define, replay, verify)",
            buckets=_SECONDS,
            registry=r,
        )
        self.backfills_pending = Gauge(
            "udf_supervisor_backfills_pending", "Gaps waiting to be backfilled", registry=r
        )
        self.refused = Counter(
            "udf_supervisor_refused",
            "Work refused because a bound was reached, by what",
            ["what"],
            registry=r,
        )
        self.errors = Counter(
            "udf_supervisor_errors",
            "Errors talking to Kapacitor or InfluxDB, by where",
            ["where"],
            registry=r,
        )
        self.events_pending = Gauge(
            "udf_supervisor_events_pending", "udf_events points waiting to be written", registry=r
        )
