"""Per-app objects, kept in ``app.extensions`` so that two apps never share state."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .config import ApiConfig
from .metrics import ApiMetrics
from .service import ModelService

EXTENSION_KEY = "tick_anomaly_api"


@dataclass(frozen=True)
class AppState:
    config: ApiConfig
    service: ModelService
    metrics: ApiMetrics


def get_state() -> AppState:
    return current_app.extensions[EXTENSION_KEY]
