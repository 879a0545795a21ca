"""Errors of the demo. A :class:`StageError` names the stage that failed."""

from __future__ import annotations

__all__ = ["DemoError", "DemoInterrupted", "StageError"]


class DemoError(Exception):
    """Base class of the demo's errors; the message says what to do."""


class StageError(DemoError):
    """A stage of the demo failed; ``stage`` is its name, the cause is chained."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"demo failed at stage {stage!r}: {message}")
        self.stage = stage
        self.reason = message


class DemoInterrupted(DemoError):
    """SIGINT/SIGTERM during a run; everything started has been stopped."""
