"""The data contract (docs/architecture.md) as constants, so every component and every
consistency test uses the same names, and the one text format two services share: the
``top_features`` string the agent writes and the alert sink reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import unquote

__all__ = [
    "ALERT_KIND",
    "ALERT_KIND_ANOMALY",
    "ALERT_KIND_DRIFT",
    "DATA_SET_TAG",
    "DRIFT_ALERT_DOC_FIELDS",
    "DRIFT_FIELDS",
    "DRIFT_MEASUREMENT",
    "DRIFT_PSI_PREFIX",
    "EXPLANATION",
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
    "format_top_features",
    "parse_top_features",
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

#: the @drift() UDF's output (udf_agent/drift.py): one point per window, with a
#: ``psi_<feature>`` field per feature and these
DRIFT_MEASUREMENT = "model_drift"
DRIFT_PSI_PREFIX = "psi_"
DRIFT_FIELDS = ["psi_score", "psi_max", "drift_feature", "drift_level", "count", "unscored"]
#: tag the drift task puts on its points: the data set (profile) whose input it watches,
#: which routes its alerts to that data set's index
DATA_SET_TAG = "data_set"

ALERT_INDEX = "fraud-alerts"
#: what an alert document is about: a scored point over its threshold, or a drift window
ALERT_KIND = "alert.kind"
ALERT_KIND_ANOMALY = "anomaly"
ALERT_KIND_DRIFT = "drift"
#: an anomaly document's top_features, parsed: [{"feature": "V14", "contribution": 0.42}, ...]
EXPLANATION = "explanation"
ALERT_DOC_FIELDS = [
    "@timestamp",
    "alert.id",
    ALERT_KIND,
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
    EXPLANATION,
]
#: a drift alert's document (in the same index as the data set's anomalies)
DRIFT_ALERT_DOC_FIELDS = [
    "@timestamp",
    "alert.id",
    ALERT_KIND,
    "alert.level",
    "alert.message",
    "task",
    "model.name",
    "model.version",
    "drift.feature",
    "drift.psi",
    "drift.psi_score",
    "drift.level",
    "drift.count",
    "drift.unscored",
]


# -- top_features: "V14:+0.42,V4:+0.18" ------------------------------------------------------
def _escape_name(name: str) -> str:
    return name.replace("%", "%25").replace(",", "%2C").replace(":", "%3A")


def format_top_features(names: Sequence[str], contributions: Sequence[float], top: int) -> str:
    """``"V14:+0.42,V4:+0.18"``: the ``top`` features with the largest positive finite
    contributions, largest first (``%``, ``,`` and ``:`` in a name are %-escaped)."""
    values = [float(c) for c in contributions]
    pushed = [j for j, c in enumerate(values) if c > 0 and math.isfinite(c)]
    pushed.sort(key=lambda j: -values[j])  # stable: ties keep the card's order
    return ",".join(f"{_escape_name(names[j])}:{values[j]:+.3g}" for j in pushed[:top])


def parse_top_features(text: str) -> list[tuple[str, float]]:
    """The inverse of :func:`format_top_features`: ``[(name, contribution), ...]`` in the
    string's order. Raises ``ValueError`` naming the first entry that is not
    ``name:number`` with a non-empty name and a finite number."""
    out = []
    for entry in text.split(","):
        if not entry:
            if text:
                raise ValueError(f"empty entry in {text!r}")
            continue
        name, sep, value = entry.rpartition(":")
        if not sep or not name:
            raise ValueError(f"{entry!r} is not name:contribution")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{entry!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{entry!r}: the contribution is not finite")
        out.append((unquote(name), number))
    return out
