"""Errors raised by the model library (datasets, training, evaluation).

Registry and backend errors live with their modules (``models.registry``,
``models.backends``); everything here derives from :class:`ModelsError`.
"""

from __future__ import annotations

__all__ = ["DataError", "ModelsError", "SchemaError", "TrainingError"]


class ModelsError(Exception):
    """Base class of the model library's errors; the message says what to do."""


class DataError(ModelsError, ValueError):
    """A dataset cannot be used (empty, unreadable, too few positives for a split)."""


class SchemaError(DataError):
    """A CSV does not follow the credit-card schema ``Time, V1..V28, Amount, Class``."""


class TrainingError(ModelsError):
    """Training, tuning or evaluation could not run (bad candidate name, bad option)."""
