"""``GET /metrics``: Prometheus text exposition of this app's registry."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .._state import get_state

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")


@blp.route("/metrics", methods=["GET"])
@blp.doc(
    responses={
        "200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
)
def metrics() -> Response:
    """Prometheus metrics"""
    state = get_state()
    return Response(generate_latest(state.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
