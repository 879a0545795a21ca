"""Errors of the remote scoring backends. All are ``models.backends.BackendError``, which
the agent answers with its fallback model or a ``score_error`` field."""

from __future__ import annotations

from models.backends import BackendError

__all__ = ["BackendUnavailable", "CircuitOpen", "SignatureMismatch"]


class BackendUnavailable(BackendError):
    """The model server did not answer in time or refused the call.

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


class SignatureMismatch(BackendError):
    """The served model's signature differs from the one its card records."""
