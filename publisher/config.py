"""Keyword-only configuration of one publisher run (times in seconds)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = ["MODES", "PublisherConfig", "default_source"]

MODES = ("random", "sequential")


def default_source() -> str:
    """Tag value naming this publisher instance: ``publisher-<hostname>``."""
    return f"publisher-{socket.gethostname()}"


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    influx_url: str
    database: str = "fraud"
    #: None: the database's default retention policy
    retention_policy: str | None = None
    #: the data-set profile (name or path); None: the credit-card data set
    profile: str | None = None
    csv: Path = Path("data/test.csv")
    rate: float = 100.0  #: points per second; 0 = as fast as InfluxDB accepts
    count: int | None = None  #: stop after this many points; None = run forever
    mode: str = "random"
    batch_size: int = 500
    flush_interval: float = 1.0  #: longest a point waits in a partial batch
    jitter: float = 0.0  #: 0..1, random shift of each send time, as a fraction of 1/rate
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    source: str = field(default_factory=default_source)
    seed: int | None = None
    max_pending_batches: int = 20  #: bounded buffer; the producer waits when it is full
    timeout: float = 10.0  #: HTTP timeout of one write
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    shutdown_timeout: float = 5.0  #: how long to keep retrying unsent points at exit
    startup_timeout: float = 60.0  #: how long to wait for InfluxDB to answer at start
    progress_interval: float = 5.0
    create_database: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.influx_url.startswith(("http://", "https://")):
            problems.append(
                f"--influx-url must start with http:// or https://, got {self.influx_url!r}"
            )
        if not self.database:
            problems.append("--database must not be empty")
        if self.retention_policy is not None and not self.retention_policy:
            problems.append("--retention-policy must not be empty")
        if self.rate < 0:
            problems.append(f"--rate must be >= 0 (0 = unlimited), got {self.rate}")
        if self.count is not None and self.count < 0:
            problems.append(f"--count must be >= 0, got {self.count}")
        if self.mode not in MODES:
            problems.append(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.flush_interval <= 0:
            problems.append(f"--flush-interval must be > 0, got {self.flush_interval}")
        if not 0.0 <= self.jitter <= 1.0:
            problems.append(f"--jitter must be between 0 and 1, got {self.jitter}")
        if (self.username is None) != (self.password is None):
            problems.append("--username and --password must be given together")
        if self.max_pending_batches < 1:
            problems.append("max_pending_batches must be >= 1")
        if not self.source:
            problems.append("--source must not be empty")
        if problems:
            raise ConfigError("; ".join(problems))
