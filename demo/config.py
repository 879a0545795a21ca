"""The demo's settings: one keyword-only object, filled from flags and ``DEMO_*``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SMALL_SYNTHETIC_ROWS", "DemoConfig"]

#: rows of the synthetic dataset in the reduced (CI) mode
SMALL_SYNTHETIC_ROWS = 20_000


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """What one ``python -m demo`` run does. Times are in seconds.

    ``registry``/``data_dir`` of ``None`` mean: the project defaults, or a temporary
    folder in the reduced mode (``small``).
    """

    #: a data-set profile (name or path); None or "creditcard": the credit-card demo
    profile: str | None = None
    model: str = "creditcard"
    version: str = "production"
    rate: float = 0.0
    n: int | None = None
    influx_url: str | None = None
    registry: Path | None = None
    data_dir: Path | None = None
    csv: Path | None = None
    synthetic_rows: int | None = None
    out: Path = Path("runs")
    small: bool = False
    seed: int = 42
    threshold: float | None = None
    max_batch: int = 512
    max_delay: str = "5ms"
    window: int | None = None
    post_workers: int = 4
    #: how long to wait for the agent and the sink to serve (they fail at once when they
    #: exit), and for InfluxDB unless ``influx_timeout`` says otherwise
    startup_timeout: float = 60.0
    #: how long the publisher waits for InfluxDB to answer (None: ``startup_timeout``)
    influx_timeout: float | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0 points/s, got {self.rate}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be a positive number of points, got {self.n}")
        if self.synthetic_rows is not None and self.synthetic_rows < 100:
            raise ValueError(f"synthetic_rows must be at least 100, got {self.synthetic_rows}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be a positive number of points, got {self.window}")
        for name in ("startup_timeout", "influx_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.post_workers < 1:
            raise ValueError(f"post_workers must be >= 1, got {self.post_workers}")

    @property
    def rows_for_synthetic(self) -> int:
        """Rows of the credit-card generator (another data set's: demo.dataset)."""
        if self.synthetic_rows is not None:
            return self.synthetic_rows
        return SMALL_SYNTHETIC_ROWS if self.small else 100_000

    @property
    def influx_wait(self) -> float:
        """Seconds the publisher waits for InfluxDB."""
        return self.influx_timeout if self.influx_timeout is not None else self.startup_timeout
