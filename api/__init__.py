"""Flask REST API serving the production model: ``create_app()`` for gunicorn
(``gunicorn "api:create_app()"``), ``python -m api`` to run it directly."""

from __future__ import annotations

from .app import create_app
from .config import ApiConfig
from .errors import (
    ApiError,
    BadRequest,
    ModelNotFound,
    ModelUnavailable,
    ScoringFailed,
    UnsupportedMediaType,
    ValidationFailed,
)
from .service import ModelService

__all__ = [
    "ApiConfig",
    "ApiError",
    "BadRequest",
    "ModelNotFound",
    "ModelService",
    "ModelUnavailable",
    "ScoringFailed",
    "UnsupportedMediaType",
    "ValidationFailed",
    "create_app",
]
