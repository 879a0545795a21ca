"""The Flask app factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, g, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from models.contract import FEATURES, TXN_ID
from models.registry import RegistryError

from ._state import EXTENSION_KEY, AppState
from .blueprints import health_blp, metrics_blp, models_blp, predict_blp
from .config import ApiConfig
from .errors import ApiError
from .metrics import ApiMetrics
from .schemas import ErrorSchema, record_schema
from .service import ModelService

__all__ = ["create_app"]

log = logging.getLogger("api.app")

API_VERSION = "1.0"
#: where the bundled Swagger UI assets are served (swagger-ui-bundle, no CDN needed)
SWAGGER_UI_ASSETS = "/docs/assets"


class _Api(Api):
    """flask-smorest's Api with this service's error body."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        payload: dict[str, Any] = {
            "code": error.code,
            "error": (error.name or "error").lower().replace(" ", "_"),
            "message": error.description or error.name,
        }
        data = getattr(error, "data", None) or {}
        messages = data.get("messages") or data.get("errors")
        if messages:  # webargs validation errors: {location: {field: [messages]}}
            problems = []
            for location, by_field in messages.items():
                items = by_field.items() if isinstance(by_field, Mapping) else [(None, by_field)]
                for field, msgs in items:
                    for msg in msgs if isinstance(msgs, list) else [msgs]:
                        problems.append(
                            {"index": None, "field": field, "message": f"{location}: {msg}"}
                        )
            payload["error"] = "validation_failed"
            payload["message"] = f"{len(problems)} problem(s) in the request parameters"
            payload["problem_count"] = len(problems)
            payload["problems"] = problems
            payload["truncated"] = False
        return payload, error.code, data.get("headers", {})


def _record_schema_for_docs(service: ModelService) -> type:
    """The served model's record schema for the OpenAPI document, else the contract's."""
    try:
        card = (
            service.serving.card
            if service.serving is not None
            else service.registry.card(service.name, service.alias)
        )
    except RegistryError:
        return record_schema(list(FEATURES))
    return record_schema(
        card.features,
        types=card.feature_types,
        levels=card.categorical,
        id_key=card.profile.get("id") or TXN_ID,
    )


def create_app(config: ApiConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the API app. ``config``: an :class:`ApiConfig`, a mapping of its fields (on top of
    the ``API_*`` environment), or ``None`` for the environment only."""
    cfg = ApiConfig.coerce(config)
    app = Flask("api", static_folder=None)
    app.config.update(
        API_TITLE="tick-anomaly model API",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=cfg.swagger_ui_url or f"{SWAGGER_UI_ASSETS}/",
        MAX_CONTENT_LENGTH=cfg.max_content_length,
        JSON_SORT_KEYS=False,
    )
    metrics = ApiMetrics()

    def on_switch(old: str | None, new: str) -> None:
        metrics.reloads.inc()
        if old is not None:
            metrics.serving.remove(cfg.model, old)
        metrics.serving.labels(cfg.model, new).set(1)

    service = ModelService(
        cfg,
        on_switch=on_switch,
        on_failure=lambda error_type: metrics.load_failures.labels(error_type).inc(),
    )
    service.check(force=True)
    app.extensions[EXTENSION_KEY] = AppState(config=cfg, service=service, metrics=metrics)

    api = _Api(
        app,
        spec_kwargs={
            "info": {
                "description": (
                    "Scores credit-card transactions with the registered production model "
                    "(hot-reloaded when the alias moves). Bad input is answered with 4xx "
                    "and a list of every problem."
                )
            }
        },
    )
    api.spec.components.schema("PredictRecord", schema=_record_schema_for_docs(service))
    for blp in (predict_blp, models_blp, health_blp, metrics_blp):
        api.register_blueprint(blp)
    if not cfg.swagger_ui_url:
        from swagger_ui_bundle import swagger_ui_path

        # static files only, outside the OpenAPI document like the /docs page itself
        app.register_blueprint(
            Blueprint(
                "swagger-ui-assets",
                __name__,
                static_folder=swagger_ui_path,
                static_url_path=SWAGGER_UI_ASSETS,
            )
        )

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        if request.blueprint == "predict" and exc.status < 500:
            metrics.invalid.labels(exc.code).inc()
        return exc.payload(), exc.status

    @app.before_request
    def _start_timer() -> None:
        g.api_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("api_started")
        if started is not None:
            metrics.latency.labels(rule).observe(time.perf_counter() - started)
        metrics.requests.labels(rule, request.method, str(response.status_code)).inc()
        return response

    log.info(
        "event=app_created model=%s alias=%s registry=%s serving_version=%s max_batch=%d",
        cfg.model,
        cfg.alias,
        cfg.registry,
        service.serving.version if service.serving else None,
        cfg.max_batch,
    )
    return app
