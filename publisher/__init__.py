"""Replays test-set transactions into InfluxDB 1.x as the data contract's `transactions`."""

from .config import PublisherConfig
from .core import Publisher, PublishResult
from .errors import (
    ConfigError,
    DataError,
    InfluxRejectedError,
    InfluxUnavailableError,
    InfluxWriteError,
    PublisherError,
)
from .source import SampleSource, load_samples
from .writer import InfluxWriter

__all__ = [
    "ConfigError",
    "DataError",
    "InfluxRejectedError",
    "InfluxUnavailableError",
    "InfluxWriteError",
    "InfluxWriter",
    "PublishResult",
    "Publisher",
    "PublisherConfig",
    "PublisherError",
    "SampleSource",
    "load_samples",
]
