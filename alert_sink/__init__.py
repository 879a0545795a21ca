"""Kapacitor alert webhook → durable SQLite spool → Elasticsearch (or a local store)."""

from .app import AlertSink, create_app
from .config import SinkConfig
from .errors import (
    AlertSinkError,
    ConfigError,
    ElasticsearchError,
    ElasticsearchUnavailable,
    PayloadError,
    SpoolError,
)
from .payload import AlertDocument, parse_alert

__all__ = [
    "AlertDocument",
    "AlertSink",
    "AlertSinkError",
    "ConfigError",
    "ElasticsearchError",
    "ElasticsearchUnavailable",
    "PayloadError",
    "SinkConfig",
    "SpoolError",
    "create_app",
    "parse_alert",
]
