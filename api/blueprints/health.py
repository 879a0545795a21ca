"""``GET /health``: which version serves, and the last load failure if any."""

from __future__ import annotations

from flask_smorest import Blueprint

from .._state import get_state
from ..schemas import HealthSchema

blp = Blueprint("health", __name__, description="Liveness and model status.")


@blp.route("/health", methods=["GET"])
@blp.response(200, HealthSchema, description="A model version is serving (ok or degraded)")
@blp.alt_response(503, schema=HealthSchema, description="No model version is loaded")
def health():
    """Service health

    ``degraded`` means the last attempt to load the followed alias failed (for example a
    checksum mismatch) and the previous version keeps serving; ``last_error`` says why.
    """
    body = get_state().service.health()
    return body, (200 if body["serving_version"] is not None else 503)
