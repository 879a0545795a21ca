"""The alert sink's exception tree; library errors are wrapped at the edges."""

from __future__ import annotations

__all__ = [
    "AlertSinkError",
    "ConfigError",
    "ElasticsearchError",
    "ElasticsearchUnavailable",
    "PayloadError",
    "SpoolError",
]


class AlertSinkError(Exception):
    """Base class of every error raised by the alert sink."""


class ConfigError(AlertSinkError):
    """The command line or environment does not describe a runnable service."""


class PayloadError(AlertSinkError):
    """A posted alert body is malformed; the message names the offending part."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class SpoolError(AlertSinkError):
    """The local SQLite spool or store could not be read or written."""


class ElasticsearchError(AlertSinkError):
    """Elasticsearch answered with an error that retrying will not fix."""


class ElasticsearchUnavailable(ElasticsearchError):
    """Elasticsearch could not be reached or asked us to retry later (429/5xx)."""
