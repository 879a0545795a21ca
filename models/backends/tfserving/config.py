"""How the TF Serving backend reaches its server, and the limits it works within."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import BackendError

__all__ = ["MAX_ROWS_PER_REQUEST", "MIN_RETRY_BUDGET", "RETRYABLE", "TFServingConfig"]

#: gRPC codes worth one retry inside the deadline budget
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
#: rows per request above which a batch is split (TF Serving's default gRPC receive
#: limit is 4 MiB; 16384 rows x 30 float32 = 1.9 MiB)
MAX_ROWS_PER_REQUEST = 16_384
#: do not start a retry with less than this left of the deadline budget (seconds)
MIN_RETRY_BUDGET = 0.005


@dataclass(frozen=True, kw_only=True)
class TFServingConfig:
    """How to reach TF Serving (times in seconds)."""

    target: str = "localhost:8500"
    rest_url: str | None = None
    transport: str = "grpc"
    timeout: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    max_rows_per_request: int = MAX_ROWS_PER_REQUEST

    def __post_init__(self) -> None:
        if self.transport not in ("grpc", "rest"):
            raise BackendError(
                f"tfserving transport must be 'grpc' or 'rest', not {self.transport!r}"
            )
        if self.transport == "rest" and not self.rest_url:
            raise BackendError("tfserving transport 'rest' needs a REST URL (--tfserving-rest-url)")
        if not self.timeout > 0:
            raise BackendError(f"tfserving timeout must be > 0 seconds, not {self.timeout!r}")
        if self.breaker_failures < 1 or self.breaker_cooldown < 0:
            raise BackendError("tfserving breaker needs failures >= 1 and cooldown >= 0")
