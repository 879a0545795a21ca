"""The data contract (docs/architecture.md) as constants, so every component and every
consistency test uses the same names."""

from __future__ import annotations

__all__ = [
    "IS_ANOMALY",
    "MODEL_TAG",
    "MODEL_VERSION_TAG",
    "SCORE",
    "SCORE_CHALLENGER",
    "SCORE_ERROR",
    "THRESHOLD",
    "THRESHOLD_CHALLENGER",
    "TOP_FEATURES",
    "ALERT_DOC_FIELDS",
    "ALERT_INDEX",
    "DATABASE",
    "FEATURES",
    "INPUT_FIELDS",
    "INPUT_MEASUREMENT",
    "LABEL",
    "MODEL_QUALITY_MEASUREMENT",
    "OUTPUT_FIELDS",
    "OUTPUT_TAGS",
    "RETENTION_POLICY",
    "SCORED_MEASUREMENT",
    "SOURCE_TAG",
    "TXN_ID",
]

DATABASE = "fraud"
RETENTION_POLICY = "autogen"
INPUT_MEASUREMENT = "transactions"
SCORED_MEASUREMENT = "transactions_scored"
MODEL_QUALITY_MEASUREMENT = "model_quality"

SOURCE_TAG = "source"
TXN_ID = "txn_id"
LABEL = "label"

#: model inputs, in the column order of the Kaggle/ULB credit-card file
FEATURES = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
#: every field of a `transactions` point: float features, string txn_id, int label
INPUT_FIELDS = [*FEATURES, TXN_ID, LABEL]

SCORE = "score"
IS_ANOMALY = "is_anomaly"
THRESHOLD = "threshold"
SCORE_CHALLENGER = "score_challenger"
#: the challenger's decision threshold, written with every score_challenger
THRESHOLD_CHALLENGER = "threshold_challenger"
#: the features that pushed an anomalous point's score up the most ("V14:+0.42,V4:+0.18")
TOP_FEATURES = "top_features"
SCORE_ERROR = "score_error"
OUTPUT_FIELDS = [
    SCORE,
    IS_ANOMALY,
    THRESHOLD,
    SCORE_CHALLENGER,
    THRESHOLD_CHALLENGER,
    SCORE_ERROR,
    TOP_FEATURES,
]
MODEL_TAG = "model"
MODEL_VERSION_TAG = "model_version"
OUTPUT_TAGS = [MODEL_TAG, MODEL_VERSION_TAG]

ALERT_INDEX = "fraud-alerts"
ALERT_DOC_FIELDS = [
    "@timestamp",
    "alert.id",
    "alert.level",
    "alert.message",
    "task",
    "txn_id",
    "score",
    "threshold",
    "model.name",
    "model.version",
    "amount",
    "label",
    "source",
]
