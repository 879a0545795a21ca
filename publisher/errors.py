"""The publisher's exceptions: one small tree, library errors wrapped at the edges."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InfluxRejectedError",
    "InfluxUnavailableError",
    "InfluxWriteError",
    "PublisherError",
]


class PublisherError(Exception):
    """Base class of every error the publisher raises."""


class ConfigError(PublisherError):
    """A flag or environment variable has an unusable value."""


class DataError(PublisherError):
    """The sample CSV is missing, unreadable or does not follow the dataset schema."""


class InfluxWriteError(PublisherError):
    """Talking to InfluxDB failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InfluxUnavailableError(InfluxWriteError):
    """Transient: connection refused/reset, timeout or a 5xx answer. Retried with backoff."""


class InfluxRejectedError(InfluxWriteError):
    """Permanent: a 4xx answer (bad data, bad credentials, no permission). Never retried."""
