"""Replays a data set's test rows into InfluxDB 1.x as its profile's input points."""

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
