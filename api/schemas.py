"""Marshmallow schemas: they generate the OpenAPI document. The predict request schema is
built from the served model's ordered feature list when the app is created."""

from __future__ import annotations

from collections.abc import Sequence

import marshmallow as ma
from marshmallow import fields

from models.contract import (
    IS_ANOMALY,
    MODEL_TAG,
    MODEL_VERSION_TAG,
    SCORE,
    THRESHOLD,
    TXN_ID,
)

__all__ = [
    "ErrorSchema",
    "HealthSchema",
    "ModelDetailSchema",
    "ModelListSchema",
    "PredictQuerySchema",
    "PredictResponseSchema",
    "PredictionSchema",
    "ProblemSchema",
    "ModelQuerySchema",
    "record_schema",
]


class ProblemSchema(ma.Schema):
    index = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Position of the record in the batch (0 for a single "
            "record); null for a problem with the whole body."
        },
    )
    field = fields.String(
        allow_none=True, metadata={"description": "Offending key; null for the whole record."}
    )
    message = fields.String(required=True)


class ErrorSchema(ma.Schema):
    """Every error answer (4xx and 5xx)."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    error = fields.String(
        required=True,
        metadata={"description": "Machine-readable error, e.g. validation_failed, bad_request"},
    )
    message = fields.String(required=True)
    problem_count = fields.Integer(metadata={"description": "Number of problems found"})
    problems = fields.List(fields.Nested(ProblemSchema))
    truncated = fields.Boolean(
        metadata={"description": "True when problems lists only the first 1000"}
    )


def record_schema(
    features: Sequence[str],
    *,
    types: Sequence[str] | None = None,
    levels: dict[str, Sequence[str]] | None = None,
    id_key: str = TXN_ID,
) -> type[ma.Schema]:
    """A record: every model feature (a finite number, or a string for a categorical
    feature) plus the optional id (``txn_id`` for cards), echoed in the prediction."""
    kinds = list(types or ["float"] * len(features))
    attrs: dict[str, fields.Field] = {}
    for name, kind in zip(features, kinds, strict=True):
        if kind == "categorical":
            known = ", ".join((levels or {}).get(name, ()))
            attrs[name] = fields.String(
                required=True,
                metadata={"description": f"Category label (known: {known}; others are scored)"},
            )
        else:
            attrs[name] = fields.Float(required=True, allow_nan=False)
    attrs[id_key] = fields.String(
        validate=ma.validate.Length(max=256),
        metadata={"description": "Optional record id, echoed in the prediction."},
    )
    return ma.Schema.from_dict(attrs, name="PredictRecord")


class PredictQuerySchema(ma.Schema):
    version = fields.String(
        metadata={
            "description": "Version number or alias to score with (default: the alias the "
            "server follows, normally production).",
            "example": "challenger",
        }
    )


class PredictionSchema(ma.Schema):
    score = fields.Float(
        required=True, data_key=SCORE, metadata={"description": "Probability of fraud, 0-1"}
    )
    is_anomaly = fields.Boolean(
        required=True, data_key=IS_ANOMALY, metadata={"description": "score >= threshold"}
    )
    threshold = fields.Float(required=True, data_key=THRESHOLD)
    model = fields.String(required=True, data_key=MODEL_TAG)
    model_version = fields.String(required=True, data_key=MODEL_VERSION_TAG)
    txn_id = fields.String(data_key=TXN_ID, metadata={"description": "Echo of the record's txn_id"})


class PredictResponseSchema(ma.Schema):
    model = fields.String(required=True)
    model_version = fields.String(required=True)
    count = fields.Integer(required=True)
    predictions = fields.List(
        fields.Nested(PredictionSchema),
        required=True,
        metadata={"description": "One prediction per record, in request order"},
    )


class VersionSummarySchema(ma.Schema):
    version = fields.String(required=True)
    aliases = fields.List(fields.String(), required=True)
    framework = fields.String()
    threshold = fields.Float(allow_none=True)
    created = fields.String(allow_none=True)
    metrics = fields.Dict(keys=fields.String())


class ModelSummarySchema(ma.Schema):
    name = fields.String(required=True)
    aliases = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    versions = fields.List(fields.Nested(VersionSummarySchema), required=True)


class ModelListSchema(ma.Schema):
    models = fields.List(fields.Nested(ModelSummarySchema), required=True)


class ModelQuerySchema(ma.Schema):
    version = fields.String(
        metadata={
            "description": "Version number or alias whose card is returned (default: "
            "production, else the latest version)."
        }
    )


class ModelDetailSchema(ModelSummarySchema):
    version = fields.String(required=True, metadata={"description": "Version of the card"})
    card = fields.Dict(
        keys=fields.String(), required=True, metadata={"description": "The model card"}
    )


class LoadFailureSchema(ma.Schema):
    ref = fields.String()
    version = fields.String(allow_none=True)
    message = fields.String()
    at = fields.String()


class HealthSchema(ma.Schema):
    status = fields.String(
        required=True,
        metadata={"description": "ok; degraded (serving, but the last load failed); unavailable"},
    )
    model = fields.String(required=True)
    alias = fields.String(required=True)
    serving_version = fields.String(allow_none=True)
    threshold = fields.Float(allow_none=True)
    last_switch = fields.String(allow_none=True)
    last_error = fields.Nested(LoadFailureSchema, allow_none=True)
    cached_versions = fields.List(fields.String())
    registry = fields.String()
