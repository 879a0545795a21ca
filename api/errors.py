"""The API's exception tree. Each error carries the HTTP status it is answered with and a
machine-readable ``code``; registry and backend errors are wrapped at the edge with
``raise ... from exc`` so a client never sees a 500 for something it can fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "ModelNotFound",
    "ModelUnavailable",
    "ScoringFailed",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class ApiError(Exception):
    """Base class of every error the API answers; ``status`` is the HTTP status."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def payload(self) -> dict[str, Any]:
        return {"code": self.status, "error": self.code, "message": self.message}


class BadRequest(ApiError):
    """The body is not JSON (or not decodable at all)."""

    status = 400
    code = "bad_request"


class UnsupportedMediaType(ApiError):
    """The request's Content-Type is not JSON."""

    status = 415
    code = "unsupported_media_type"


class ValidationFailed(ApiError):
    """Well-formed JSON that is not a valid record or batch; lists every problem found."""

    status = 422
    code = "validation_failed"
    #: problems listed in the body at most (the total is always reported)
    MAX_LISTED = 1000

    def __init__(self, problems: Iterable[Mapping[str, Any]]) -> None:
        self.problems = [dict(p) for p in problems]
        n_records = len({p.get("index") for p in self.problems if p.get("index") is not None})
        noun = "problem" if len(self.problems) == 1 else "problems"
        where = f" in {n_records} record{'s' if n_records != 1 else ''}" if n_records else ""
        super().__init__(f"{len(self.problems)} {noun}{where}")

    def payload(self) -> dict[str, Any]:
        body = super().payload()
        body["problem_count"] = len(self.problems)
        body["problems"] = self.problems[: self.MAX_LISTED]
        body["truncated"] = len(self.problems) > self.MAX_LISTED
        return body


class ModelNotFound(ApiError):
    """Unknown model name, version or alias."""

    status = 404
    code = "model_not_found"


class ModelUnavailable(ApiError):
    """No model version could be loaded (missing, corrupt, or failing its checksum)."""

    status = 503
    code = "model_unavailable"


class ScoringFailed(ApiError):
    """The backend raised while scoring validated input; logged with its cause."""

    status = 500
    code = "scoring_failed"
