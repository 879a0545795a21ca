"""``GET /v1/models`` and ``GET /v1/models/<name>``: what the registry holds."""

from __future__ import annotations

import logging
from typing import Any

from flask_smorest import Blueprint

from models import registry as _registry
from models.registry import Registry, RegistryError

from .._state import get_state
from ..errors import ModelNotFound, ModelUnavailable
from ..schemas import ErrorSchema, ModelDetailSchema, ModelListSchema, ModelQuerySchema

log = logging.getLogger("api.models")

blp = Blueprint(
    "models", __name__, url_prefix="/v1/models", description="Registered models and their cards."
)


def _summary(registry: Registry, name: str) -> dict[str, Any]:
    aliases = registry.aliases(name)
    versions = []
    for v in registry.versions(name):
        try:
            data = registry.card(name, v).data
        except RegistryError as exc:
            log.warning("event=card_unreadable model=%s version=%s error=%r", name, v, str(exc))
            data = {}
        versions.append(
            {
                "version": v,
                "aliases": sorted(a for a, av in aliases.items() if av == v),
                "framework": data.get("framework"),
                "threshold": data.get("threshold"),
                "created": data.get("created"),
                "metrics": dict(data.get("metrics") or {}),
            }
        )
    return {"name": name, "aliases": aliases, "versions": versions}


@blp.route("", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models():
    """List models

    Every model in the registry with its versions (framework, threshold, metrics) and
    aliases.
    """
    registry = get_state().service.registry
    models = []
    for name in registry.models():
        try:
            models.append(_summary(registry, name))
        except RegistryError as exc:
            log.warning("event=model_unreadable model=%s error=%r", name, str(exc))
    return {"models": models}


@blp.route("/<string:name>", methods=["GET"])
@blp.arguments(ModelQuerySchema, location="query", as_kwargs=True)
@blp.response(200, ModelDetailSchema)
@blp.alt_response(404, schema=ErrorSchema, description="Unknown model, version or alias")
def get_model(name: str, version: str | None = None):
    """Describe a model

    Its versions and aliases, and the model card of one version (production by default,
    else the latest).
    """
    registry = get_state().service.registry
    try:
        summary = _summary(registry, name)
        if version is None:
            version = "production" if "production" in summary["aliases"] else "latest"
        card = registry.card(name, version)
    except _registry.ModelNotFound as exc:
        raise ModelNotFound(str(exc)) from exc
    except RegistryError as exc:
        raise ModelUnavailable(str(exc)) from exc
    return {**summary, "version": card.version, "card": dict(card.data)}
