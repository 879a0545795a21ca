"""The supervisor's exceptions, under the agent's tree (``udf_agent.errors.AgentError``).
HTTP and socket errors are wrapped into these at the edges with ``raise ... from exc``."""

from __future__ import annotations

from ..errors import AgentError

__all__ = [
    "BackfillError",
    "InfluxError",
    "KapacitorError",
    "KapacitorUnavailable",
    "ScriptError",
    "SupervisorError",
]


class SupervisorError(AgentError):
    """Base class of every error the task supervisor raises."""


class KapacitorError(SupervisorError):
    """Kapacitor answered a request with an error (its JSON ``error`` text is kept)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KapacitorUnavailable(KapacitorError):
    """Kapacitor could not be reached (connection refused, timeout)."""


class InfluxError(SupervisorError):
    """InfluxDB could not be reached or refused a query or write."""


class ScriptError(SupervisorError):
    """A task's TICKscript is outside what the supervisor can read or rewrite."""


class BackfillError(SupervisorError):
    """A gap backfill could not be run or did not finish."""
