"""A circuit breaker: fail fast after repeated failures, probe again after a cool-down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; after ``cooldown`` seconds one
    caller is let through as a half-open probe: success closes, failure re-opens."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self.opened = 0  # times it opened

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state}, failures={self.failures}, cooldown={self.cooldown}s)"

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May a call go out now? While open, only the first caller after the cool-down
        gets True (the probe); the rest fail fast until the probe reports."""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown:
                self._state = self.HALF_OPEN
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._state = self.CLOSED

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == self.HALF_OPEN or (
                self._state == self.CLOSED and self._consecutive >= self.failures
            ):
                self._trip()

    def force_open(self) -> None:
        with self._lock:
            self._trip()

    def _trip(self) -> None:
        self._state = self.OPEN
        self._opened_at = self._clock()
        self.opened += 1

    def retry_in(self) -> float:
        """Seconds until the next probe may go out (0 when not open)."""
        with self._lock:
            if self._state != self.OPEN:
                return 0.0
            return max(0.0, self.cooldown - (self._clock() - self._opened_at))
