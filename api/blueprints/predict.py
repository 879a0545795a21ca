"""``POST /v1/predict``: score one record or a batch."""

from __future__ import annotations

import json
import logging

from flask import Response, request
from flask_smorest import Blueprint

from models.contract import IS_ANOMALY, MODEL_TAG, MODEL_VERSION_TAG, SCORE, THRESHOLD, TXN_ID
from models.errors import BackendError

from .._state import get_state
from ..errors import ScoringFailed, UnsupportedMediaType
from ..schemas import ErrorSchema, PredictQuerySchema, PredictResponseSchema
from ..validation import parse_json, validate_records

log = logging.getLogger("api.predict")

blp = Blueprint(
    "predict",
    __name__,
    url_prefix="/v1",
    description="Score transactions with a registered model.",
)

REQUEST_BODY_DOC = {
    "required": True,
    "description": (
        "One record, or an array of records (at most the server's max batch). A record "
        "has every feature of the model card (finite numbers; booleans, strings, null, "
        "NaN and Infinity are refused) and may carry a string txn_id, echoed back. Any "
        "other key is an error."
    ),
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/PredictRecord"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/PredictRecord"},
                    },
                ]
            }
        }
    },
}


@blp.route("/predict", methods=["POST"])
@blp.arguments(PredictQuerySchema, location="query", as_kwargs=True)
@blp.doc(requestBody=REQUEST_BODY_DOC)
@blp.response(200, PredictResponseSchema)
@blp.alt_response(400, schema=ErrorSchema, description="Body is not JSON")
@blp.alt_response(404, schema=ErrorSchema, description="Unknown version or alias")
@blp.alt_response(413, schema=ErrorSchema, description="Body larger than the size limit")
@blp.alt_response(415, schema=ErrorSchema, description="Content-Type is not application/json")
@blp.alt_response(422, schema=ErrorSchema, description="Invalid records; every problem is listed")
@blp.alt_response(503, schema=ErrorSchema, description="No model version could be loaded")
def predict(version: str | None = None) -> Response:
    """Score transactions

    Returns the fraud probability of each record, whether it reaches the model's
    decision threshold, and the model name and version that scored it.
    """
    state = get_state()
    if not request.is_json:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.mimetype or 'none'!r}"
        )
    payload = parse_json(request.get_data(cache=False))
    with state.service.use(version) as backend:
        id_key = backend.card.profile.get("id") or TXN_ID
        batch = validate_records(
            payload,
            backend.feature_names,
            max_batch=state.config.max_batch,
            types=backend.card.feature_types,
            id_key=id_key,
        )
        try:
            scores = backend.score(batch.X)
        except BackendError as exc:
            log.error(
                "event=scoring_failed model=%s version=%s rows=%d error_type=%s error=%r",
                backend.name,
                backend.version,
                len(batch.X),
                type(exc).__name__,
                str(exc),
            )
            raise ScoringFailed(
                f"{backend.name} v{backend.version} failed to score: {exc}"
            ) from exc
        except Exception as exc:  # a bug in a model: still an answer, with its reason logged
            log.exception(
                "event=scoring_failed model=%s version=%s rows=%d",
                backend.name,
                backend.version,
                len(batch.X),
            )
            raise ScoringFailed(
                f"{backend.name} v{backend.version} failed to score: {exc}"
            ) from exc
    threshold = float(backend.threshold)
    name, ver = backend.name, backend.version
    predictions = []
    for score, txn_id in zip(scores.tolist(), batch.txn_ids, strict=True):
        p = {
            SCORE: score,
            IS_ANOMALY: score >= threshold,
            THRESHOLD: threshold,
            MODEL_TAG: name,
            MODEL_VERSION_TAG: ver,
        }
        if txn_id is not None:
            p[id_key] = txn_id
        predictions.append(p)
    state.metrics.records.labels(name, ver).inc(len(predictions))
    state.metrics.batch_size.observe(len(predictions))
    body = {
        "model": name,
        "model_version": ver,
        "count": len(predictions),
        "predictions": predictions,
    }
    return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")
