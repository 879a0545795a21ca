"""The model library's exceptions: one tree, so ``except ModelsError`` catches every
failure of datasets, training, the registry and the scoring backends.

::

    ModelsError
    ├── DataError (also a ValueError)   a dataset cannot be used
    │   └── SchemaError                 a CSV does not have the columns it needs
    ├── TrainingError                   training, tuning or evaluation could not run
    ├── RegistryError                   the model registry refused or failed
    │   ├── ModelNotFound               unknown model, version or alias
    │   ├── InvalidCard                 a model card that is not a valid card
    │   ├── ChecksumMismatch            an artifact differs from its card's sha256
    │   ├── UnsafeArtifact              a card names a file outside its version directory
    │   └── SignatureError              a card unsigned or altered (signing key set)
    └── BackendError                    a backend could not load or score
        ├── InvalidInput                a batch of the wrong shape for the card
        ├── InvalidScores               scores that are not one probability per row
        ├── SignatureMismatch           the served model differs from its card
        └── BackendUnavailable          a model server did not answer (``code``)
            └── CircuitOpen             failing fast after repeated failures

Library errors (joblib, TensorFlow, gRPC, HTTP) are wrapped into these at the edges with
``raise ... from exc``; every message says what happened and, where it can, what to do.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ChecksumMismatch",
    "CircuitOpen",
    "DataError",
    "InvalidCard",
    "InvalidInput",
    "InvalidScores",
    "ModelNotFound",
    "ModelsError",
    "RegistryError",
    "SchemaError",
    "SignatureError",
    "SignatureMismatch",
    "TrainingError",
    "UnsafeArtifact",
]


class ModelsError(Exception):
    """Base class of the model library's errors; the message says what to do."""


class DataError(ModelsError, ValueError):
    """A dataset cannot be used (empty, unreadable, too few positives for a split)."""


class SchemaError(DataError):
    """A CSV does not have the columns its schema needs."""


class TrainingError(ModelsError):
    """Training, tuning or evaluation could not run (bad candidate name, bad option)."""


class RegistryError(ModelsError):
    """The registry refused or failed; the message says what to do."""


class ModelNotFound(RegistryError):
    """Unknown model name, version or alias."""


class InvalidCard(RegistryError):
    """A model card that is not a valid card (missing key, wrong type, bad value)."""


class ChecksumMismatch(RegistryError):
    """An artifact's sha256 differs from the one recorded in its card."""


class UnsafeArtifact(RegistryError):
    """A card names an artifact outside its own version directory (an absolute path,
    ``..``, or a symlink leading out): refused before anything is opened."""


class SignatureError(RegistryError):
    """A signing key is configured and a card is unsigned, or its signature does not
    match (the card, and so the artifact checksum it records, was altered)."""


class BackendError(ModelsError):
    """A backend could not load or score; the message says why."""


class InvalidInput(BackendError):
    """A batch that is not 2-D with the card's number of features."""


class InvalidScores(BackendError):
    """A backend returned scores that are not one probability per row.

    ``scores`` holds what it returned (float64, one per row when the count was right,
    else None) and ``bad`` the indexes of the rows whose score is NaN, infinite or
    outside [0, 1], so a caller may keep the good rows.
    """

    def __init__(self, message: str, *, scores: Any = None, bad: Any = None) -> None:
        super().__init__(message)
        self.scores = scores
        self.bad = bad


class SignatureMismatch(BackendError):
    """The served model's signature differs from the one its card records."""


class BackendUnavailable(BackendError):
    """A model server did not answer in time or refused the call.

    ``code`` is the gRPC status name (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``…) or an
    HTTP-derived equivalent for the REST transport.
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class CircuitOpen(BackendUnavailable):
    """Failing fast: the circuit breaker is open after repeated failures."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="CIRCUIT_OPEN")
