"""Task supervisor: re-enables Kapacitor tasks whose UDF died and backfills their gap
(``python -m udf_agent.supervise``)."""

from .errors import (
    BackfillError,
    InfluxError,
    KapacitorError,
    KapacitorUnavailable,
    ScriptError,
    SupervisorError,
)
from .influx import EVENTS_MEASUREMENT, InfluxClient
from .kapacitor import KapacitorClient
from .metrics import SupervisorMetrics
from .supervisor import BACKFILL_PREFIX, Backoff, Gap, Supervisor, SupervisorConfig, probe_socket
from .tickscript import ScoringTask, backfill_script, read_scoring_task, udfs_used

__all__ = [
    "BACKFILL_PREFIX",
    "EVENTS_MEASUREMENT",
    "BackfillError",
    "Backoff",
    "Gap",
    "InfluxClient",
    "InfluxError",
    "KapacitorClient",
    "KapacitorError",
    "KapacitorUnavailable",
    "ScoringTask",
    "ScriptError",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorMetrics",
    "backfill_script",
    "probe_socket",
    "read_scoring_task",
    "udfs_used",
]
