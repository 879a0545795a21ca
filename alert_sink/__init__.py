"""Kapacitor alert webhook → durable SQLite spool → Elasticsearch (or a local store)."""

from __future__ import annotations

from typing import Any

from .app import AlertSink, build_app
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


def create_app(config: SinkConfig | None = None, **kwargs: Any) -> Any:
    """The sink's Flask app; ``config=None`` reads ``ALERT_SINK_*`` from the environment
    (``gunicorn "alert_sink:create_app()"``)."""
    if config is None:
        from .cli import config_from_env

        config = config_from_env()
    return build_app(config, **kwargs)
