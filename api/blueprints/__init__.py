"""One blueprint per resource."""

from __future__ import annotations

from .health import blp as health_blp
from .metrics import blp as metrics_blp
from .models import blp as models_blp
from .predict import blp as predict_blp

__all__ = ["health_blp", "metrics_blp", "models_blp", "predict_blp"]
