#!/usr/bin/env python3
"""Generate the Grafana dashboards and Kibana saved objects of a data-set profile.

    python compose/scripts/gen_dashboards.py [--check]
    python compose/scripts/gen_dashboards.py --profile NAME|PATH --out-dir DIR

Without --profile: the credit-card files the compose stack mounts
(compose/grafana/dashboards/*.json, compose/kibana/fraud-alerts.ndjson); they are committed,
this script is their source, so every query is written once, from the data contract
(models.contract) and the services' metric names. --check exits 1 when a committed file
differs from what the script generates.

With --profile: the same dashboards for that data set, every name taken from its profile
(database, measurements, label and id fields, alert index, value column, message fields),
written under DIR in the layout of compose/:

    DIR/grafana/dashboards/<name>-{live-scoring,model-quality,model-drift,alerts}.json
    DIR/grafana/provisioning/datasources/<name>.yaml   InfluxDB <database>, Elasticsearch <index>
    DIR/kibana/<index>.ndjson                          data view, visualizations, dashboard
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from models import contract as c  # noqa: E402
from models.influx import EVENTS_MEASUREMENT as MODEL_EVENTS  # noqa: E402
from models.profile import DEFAULT_PROFILE, Profile, ProfileError, load_profile  # noqa: E402
from udf_agent.supervise.influx import EVENTS_MEASUREMENT  # noqa: E402

OUT_DIR = REPO_ROOT / "compose" / "grafana" / "dashboards"
KIBANA_DIR = REPO_ROOT / "compose" / "kibana"
INFLUX = {"type": "influxdb", "uid": "influxdb-fraud"}
ES = {"type": "elasticsearch", "uid": "es-fraud-alerts"}
PROM = {"type": "prometheus", "uid": "prometheus"}
SCORED = f'"{c.RETENTION_POLICY}"."{c.SCORED_MEASUREMENT}"'
INPUT = f'"{c.RETENTION_POLICY}"."{c.INPUT_MEASUREMENT}"'
QUALITY = f'"{c.RETENTION_POLICY}"."{c.MODEL_QUALITY_MEASUREMENT}"'
#: conventional PSI levels, drawn on the drift panels (the drift tasks' warn and crit)
PSI_WARNING, PSI_CRITICAL = 0.1, 0.25
EVENTS = f'"{c.RETENTION_POLICY}"."{EVENTS_MEASUREMENT}"'
#: fields the live-evaluation TICKscript writes into `model_quality`
QUALITY_FIELDS = ("precision", "recall", "alert_rate")
PER_SECOND = "/ ($__interval_ms / 1000)"
#: every query on scored points or model quality keeps to the models picked in $model
BY_MODEL = f'"{c.MODEL_TAG}" =~ /^$model$/'
#: a field comparison is false on points without the field: "scored by the challenger too"
HAS_CHALLENGER = f'"{c.SCORE_CHALLENGER}" >= 0'
#: Grafana refuses a dashboard or datasource uid longer than this
MAX_UID = 40


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (backslash and double quote escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid(base: str, suffix: str) -> str:
    uid = f"{base}-{suffix}" if suffix else base
    if len(uid) <= MAX_UID:
        return uid
    digest = hashlib.sha1(uid.encode()).hexdigest()[:6]
    keep = MAX_UID - len(suffix) - len(digest) - 2
    return f"{base[:keep]}-{digest}" + (f"-{suffix}" if suffix else "")


@dataclass(frozen=True)
class Names:
    """Every name a data set's dashboards use, from its profile. The credit-card profile
    gives the stack's historical names (uids fraud-*, datasources influxdb-fraud and
    es-fraud-alerts, titles "Fraud detection: ...")."""

    profile: Profile

    @property
    def default(self) -> bool:
        return self.profile.name == DEFAULT_PROFILE

    @property
    def influx(self) -> dict:
        return INFLUX if self.default else {"type": "influxdb", "uid": self.influx_uid}

    @property
    def influx_uid(self) -> str:
        return INFLUX["uid"] if self.default else _uid(f"influxdb-{self.profile.name}", "")

    @property
    def es(self) -> dict:
        return ES if self.default else {"type": "elasticsearch", "uid": self.es_uid}

    @property
    def es_uid(self) -> str:
        return ES["uid"] if self.default else _uid(f"es-{self.profile.alert_index}", "")

    def uid(self, suffix: str) -> str:
        return f"fraud-{suffix}" if self.default else _uid(self.profile.name, suffix)

    def title(self, what: str) -> str:
        return f"Fraud detection: {what}" if self.default else f"{self.profile.name}: {what}"

    @property
    def folder_title(self) -> str:
        return "Fraud detection" if self.default else self.profile.name

    @property
    def scored(self) -> str:
        p = self.profile
        return f"{ident(p.retention_policy)}.{ident(p.scored_measurement)}"

    @property
    def input(self) -> str:
        p = self.profile
        return f"{ident(p.retention_policy)}.{ident(p.measurement)}"

    @property
    def quality(self) -> str:
        return f"{ident(self.profile.retention_policy)}.{ident(c.MODEL_QUALITY_MEASUREMENT)}"

    @property
    def drift(self) -> str:
        return f"{ident(self.profile.retention_policy)}.{ident(c.DRIFT_MEASUREMENT)}"

    @property
    def label(self) -> str | None:
        p = self.profile
        return p.label_field if p.label is not None else None

    @property
    def counted(self) -> str:
        """A field every input point has (the label for credit cards, as ever)."""
        return self.label or self.profile.id_column

    @property
    def positives(self) -> str:
        return "frauds" if self.default else "anomalies"

    @property
    def negatives(self) -> str:
        return "legitimate transactions" if self.default else "normal points"


CREDITCARD = Names(load_profile(DEFAULT_PROFILE))


def influx(ref: str, query: str, alias: str | None = None, *, ds: dict = INFLUX) -> dict:
    target = {
        "refId": ref,
        "datasource": ds,
        "query": query,
        "rawQuery": True,
        "resultFormat": "time_series",
    }
    if alias:
        target["alias"] = alias
    return target


def prom(ref: str, expr: str, legend: str) -> dict:
    return {"refId": ref, "datasource": PROM, "expr": expr, "legendFormat": legend, "range": True}


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = self.y = 0
        self.row_h = 0
        self.next_id = 1

    def panel(
        self,
        title: str,
        targets: list[dict],
        *,
        kind: str = "timeseries",
        w: int = 12,
        h: int = 8,
        unit: str = "short",
        description: str = "",
        options: dict | None = None,
        field_config: dict | None = None,
    ) -> dict:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        defaults = {"unit": unit}
        defaults.update(field_config or {})
        panel = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": targets[0]["datasource"],
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options
            or {
                "legend": {"displayMode": "list", "placement": "bottom"},
                "tooltip": {"mode": "multi"},
            },
        }
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def model_variable(n: Names = CREDITCARD) -> dict:
    """$model: the models that scored points (all by default, several at once)."""
    query = f'SHOW TAG VALUES FROM {n.scored} WITH KEY = "{c.MODEL_TAG}"'
    return {
        "name": "model",
        "label": "model",
        "type": "query",
        "datasource": n.influx,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: a newly deployed model shows up
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
    }


def udf_events_annotation() -> dict:
    """The supervisor's udf_events as annotations: a task that stopped, the unscored
    stretch until its re-enable (a region, to end_ms), each backfill."""
    query = f'SELECT "text", "task", "event", "end_ms" FROM {EVENTS} WHERE $timeFilter'
    columns = {"textColumn": "text", "tagsColumn": "task,event", "timeEndColumn": "end_ms"}
    return {
        "name": "Scoring task events",
        "enable": True,
        "iconColor": "orange",
        "datasource": INFLUX,
        # the legacy fields and the target Grafana 9+ migrates them to
        "query": query,
        **columns,
        "target": {"query": query, "queryType": "tags", "fromAnnotations": True, **columns},
    }


def model_events_annotation(n: Names = CREDITCARD) -> dict:
    """`models retrain`'s decisions on the models picked in $model: a challenger promoted,
    kept as challenger, or a failed run; the text says versions, figures and gain."""
    events = f"{ident(n.profile.retention_policy)}.{ident(MODEL_EVENTS)}"
    query = f'SELECT "text", "model", "event" FROM {events} WHERE {BY_MODEL} AND $timeFilter'
    columns = {"textColumn": "text", "tagsColumn": "model,event"}
    return {
        "name": "Model retraining",
        "enable": True,
        "iconColor": "purple",
        "datasource": n.influx,
        # the legacy fields and the target Grafana 9+ migrates them to
        "query": query,
        **columns,
        "target": {"query": query, "queryType": "tags", "fromAnnotations": True, **columns},
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[dict],
    *,
    tags: list[str],
    refresh: str = "10s",
    time_from: str = "now-30m",
    variables: list[dict] | None = None,
    annotations: list[dict] | None = None,
    names: Names = CREDITCARD,
) -> dict:
    profile_tags = [] if names.default else [names.profile.name]
    return {
        "uid": uid,
        "title": title,
        "tags": ["tick-anomaly", *profile_tags, *tags],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": annotations or []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["tick-anomaly", *profile_tags],
                "asDropdown": True,
                "title": names.folder_title,
            }
        ],
        "panels": panels,
    }


def live_scoring(n: Names = CREDITCARD) -> dict:
    lay = Layout()

    def influx_q(ref: str, query: str, alias: str | None = None) -> dict:
        return influx(ref, query, alias, ds=n.influx)

    t = f"WHERE {BY_MODEL} AND $timeFilter"
    by_model = f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(0)'
    panels = [
        lay.panel(
            "Throughput",
            [
                influx_q(
                    "A",
                    f"SELECT count({ident(n.counted)}) {PER_SECOND} FROM {n.input} WHERE $timeFilter "
                    "GROUP BY time($__interval) fill(0)",
                    "published",
                ),
                influx_q(
                    "B",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {n.scored} {t} {by_model}',
                    f"scored $tag_{c.MODEL_TAG}",
                ),
                influx_q(
                    "C",
                    f'SELECT count("{c.SCORE_ERROR}") {PER_SECOND} FROM {n.scored} {t} {by_model}',
                    f"score errors $tag_{c.MODEL_TAG}",
                ),
            ],
            unit="pps",
            description="Points per second into InfluxDB, and back from the UDF for each "
            "model (every model scores every published point).",
        ),
        lay.panel(
            "Anomalies per second",
            [
                influx_q(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {n.scored} '
                    f'WHERE "{c.IS_ANOMALY}" = true AND {BY_MODEL} AND $timeFilter {by_model}',
                    f"$tag_{c.MODEL_TAG}",
                ),
            ],
            unit="pps",
        ),
        lay.panel(
            "Score percentiles and threshold",
            [
                influx_q(
                    "A",
                    f'SELECT percentile("{c.SCORE}", 50) AS "p50", '
                    f'percentile("{c.SCORE}", 95) AS "p95", '
                    f'percentile("{c.SCORE}", 99) AS "p99", '
                    f'mean("{c.THRESHOLD}") AS "threshold" FROM {n.scored} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)',
                    f"$tag_{c.MODEL_TAG} $col",
                ),
            ],
            unit="percentunit",
            field_config={"min": 0, "max": 1},
            description="The threshold is the one the agent used, read from the scored points.",
        ),
        lay.panel(
            "Score distribution",
            [
                influx_q(
                    "A",
                    f'SELECT "{c.SCORE}" FROM {n.scored} {t} GROUP BY "{c.MODEL_TAG}" '
                    "ORDER BY time DESC LIMIT 20000",
                    f"$tag_{c.MODEL_TAG}",
                ),
            ],
            kind="histogram",
            unit="percentunit",
            options={
                "bucketSize": 0.05,
                "bucketOffset": 0,
                "combine": False,
                "legend": {"displayMode": "list", "placement": "bottom"},
            },
            description="The latest 20 000 scores of each model in the time range.",
        ),
        lay.panel(
            "Scored by model version",
            [
                influx_q(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {n.scored} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}", "{c.MODEL_VERSION_TAG}" '
                    "fill(0)",
                    f"$tag_{c.MODEL_TAG} v$tag_{c.MODEL_VERSION_TAG}",
                ),
            ],
            unit="pps",
        ),
        lay.panel(
            "Mean score by model version",
            [
                influx_q(
                    "A",
                    f'SELECT mean("{c.SCORE}") FROM {n.scored} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}", "{c.MODEL_VERSION_TAG}" '
                    "fill(none)",
                    f"mean score $tag_{c.MODEL_TAG} v$tag_{c.MODEL_VERSION_TAG}",
                ),
            ],
            unit="percentunit",
        ),
        lay.panel(
            "Champion vs challenger: mean score",
            [
                influx_q(
                    "A",
                    f'SELECT mean("{c.SCORE}") AS "champion", '
                    f'mean("{c.SCORE_CHALLENGER}") AS "challenger" FROM {n.scored} '
                    f"WHERE {HAS_CHALLENGER} AND {BY_MODEL} AND $timeFilter "
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)',
                    f"$tag_{c.MODEL_TAG} $col",
                ),
            ],
            unit="percentunit",
            description="Shadow scoring (score vs score_challenger) on the points both scored. "
            "Empty until a `challenger` alias is promoted.",
        ),
        lay.panel(
            "Champion vs challenger: flags at their own thresholds",
            [
                influx_q(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {n.scored} '
                    f'WHERE "{c.IS_ANOMALY}" = true AND {HAS_CHALLENGER} AND {BY_MODEL} '
                    f"AND $timeFilter {by_model}",
                    f"$tag_{c.MODEL_TAG} champion",
                ),
                influx_q(
                    "B",
                    f'SELECT count("{c.SCORE_CHALLENGER}") {PER_SECOND} FROM {n.scored} '
                    f'WHERE "{c.SCORE_CHALLENGER}" >= "{c.THRESHOLD_CHALLENGER}" AND {BY_MODEL} '
                    f"AND $timeFilter {by_model}",
                    f"$tag_{c.MODEL_TAG} challenger",
                ),
            ],
            unit="pps",
            description="Points each model flags: the champion at `threshold` (is_anomaly), "
            "the challenger at `threshold_challenger`, both read from the scored points.",
        ),
        lay.panel(
            "Decision thresholds",
            [
                influx_q(
                    "A",
                    f'SELECT last("{c.THRESHOLD}") AS "champion", '
                    f'last("{c.THRESHOLD_CHALLENGER}") AS "challenger" FROM {n.scored} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)',
                    f"$tag_{c.MODEL_TAG} $col",
                ),
            ],
            w=24,
            h=6,
            unit="percentunit",
            field_config={"min": 0, "max": 1},
            description="What each model compares its scores with: the model card's tuned "
            "threshold unless a task sets one.",
        ),
    ]
    return dashboard(
        n.uid("live-scoring"),
        n.title("live scoring"),
        panels,
        tags=["influxdb"],
        variables=[model_variable(n)],
        # the supervisor writes its events into the credit-card database; retrain writes
        # into the profile's
        annotations=[
            *([udf_events_annotation()] if n.default else []),
            model_events_annotation(n),
        ],
        names=n,
    )


def model_quality(n: Names = CREDITCARD) -> dict:
    lay = Layout()

    def influx_q(ref: str, query: str, alias: str | None = None) -> dict:
        return influx(ref, query, alias, ds=n.influx)

    t = f"WHERE {BY_MODEL} AND $timeFilter"
    fields = ", ".join(f'last("{f}") AS "{f}"' for f in QUALITY_FIELDS)
    scored_g = f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(0)'
    versions = f"$tag_{c.MODEL_TAG} v$tag_{c.MODEL_VERSION_TAG}"
    label = ident(n.label) if n.label else None
    pos, neg = ("fraud", "legit") if n.default else ("anomaly", "normal")
    panels = [
        lay.panel(
            "Precision and recall (live, from labels)",
            [
                influx_q(
                    "A",
                    f"SELECT {fields} FROM {n.quality} {t} GROUP BY time($__interval), * fill(none)",
                    f"{versions} $col",
                ),
            ],
            w=24,
            unit="percentunit",
            field_config={"min": 0, "max": 1},
            description=f"Written by the evaluation TICKscript into `{c.MODEL_QUALITY_MEASUREMENT}`, "
            "one series per model version.",
        ),
    ]
    if label:
        panels.append(
            lay.panel(
                f"True positives / false positives / missed {n.positives}",
                [
                    influx_q(
                        "A",
                        f'SELECT count("{c.SCORE}") FROM {n.scored} WHERE "{c.IS_ANOMALY}" = true '
                        f"AND {label} = 1 AND {BY_MODEL} AND $timeFilter {scored_g}",
                        f"$tag_{c.MODEL_TAG} true positives",
                    ),
                    influx_q(
                        "B",
                        f'SELECT count("{c.SCORE}") FROM {n.scored} WHERE "{c.IS_ANOMALY}" = true '
                        f"AND {label} = 0 AND {BY_MODEL} AND $timeFilter {scored_g}",
                        f"$tag_{c.MODEL_TAG} false positives",
                    ),
                    influx_q(
                        "C",
                        f'SELECT count("{c.SCORE}") FROM {n.scored} WHERE "{c.IS_ANOMALY}" = false '
                        f"AND {label} = 1 AND {BY_MODEL} AND $timeFilter {scored_g}",
                        f"$tag_{c.MODEL_TAG} missed {n.positives}",
                    ),
                ],
                unit="short",
                description=f"Counted straight from {n.profile.scored_measurement} and its "
                f"{n.label}, per model.",
            )
        )
    panels.append(
        lay.panel(
            "Alert rate",
            [
                influx_q(
                    "A",
                    f'SELECT last("alert_rate") FROM {n.quality} {t} '
                    "GROUP BY time($__interval), * fill(none)",
                    versions,
                ),
            ],
            unit="percentunit",
        )
    )
    by_label = []
    if label:
        by_label = [
            influx_q(
                "A",
                f'SELECT mean("{c.SCORE}") FROM {n.scored} WHERE {label} = 1 '
                f'AND {BY_MODEL} AND $timeFilter GROUP BY time($__interval), "{c.MODEL_TAG}" '
                "fill(none)",
                f"$tag_{c.MODEL_TAG} {pos} ({n.label} 1)",
            ),
            influx_q(
                "B",
                f'SELECT mean("{c.SCORE}") FROM {n.scored} WHERE {label} = 0 '
                f'AND {BY_MODEL} AND $timeFilter GROUP BY time($__interval), "{c.MODEL_TAG}" '
                "fill(none)",
                f"$tag_{c.MODEL_TAG} {neg} ({n.label} 0)",
            ),
        ]
    panels.append(
        lay.panel(
            f"Score of {n.positives} vs {n.negatives}" if label else "Mean score and threshold",
            [
                *by_label,
                influx_q(
                    "C",
                    f'SELECT mean("{c.THRESHOLD}") FROM {n.scored} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)',
                    f"$tag_{c.MODEL_TAG} threshold",
                ),
            ],
            w=24,
            unit="percentunit",
            field_config={"min": 0, "max": 1},
        )
    )
    return dashboard(
        n.uid("model-quality"),
        n.title("live model quality"),
        panels,
        tags=["influxdb", "quality"],
        refresh="30s",
        time_from="now-6h",
        variables=[model_variable(n)],
        annotations=[model_events_annotation(n)],
        names=n,
    )


_PSI_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": PSI_WARNING},
        {"color": "red", "value": PSI_CRITICAL},
    ],
}


def model_drift(n: Names = CREDITCARD) -> dict:
    """Input drift of each model: the drift task's model_drift windows (PSI per feature, of
    the scores, the worst feature, rows per window) and the drift alerts in Elasticsearch."""
    lay = Layout()

    def influx_q(ref: str, query: str, alias: str | None = None) -> dict:
        return influx(ref, query, alias, ds=n.influx)

    t = f"WHERE {BY_MODEL} AND $timeFilter"
    by_model = f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)'
    features = n.profile.feature_names
    per_feature = ", ".join(
        f"mean({ident(c.DRIFT_PSI_PREFIX + f)}) AS {ident(f)}" for f in features
    )
    psi_config = {
        "min": 0,
        "color": {"mode": "palette-classic"},
        "thresholds": _PSI_THRESHOLDS,
        "custom": {"thresholdsStyle": {"mode": "dashed"}},
    }
    window = "each window of the drift task (10 minutes of input points, every minute)"
    panels = [
        lay.panel(
            "Input drift: PSI per feature",
            [
                influx_q(
                    "A", f"SELECT {per_feature} FROM {n.drift} {t} {by_model}", "$tag_model $col"
                )
            ],
            w=24,
            h=10,
            field_config=psi_config,
            description=f"Population stability index of every feature in {window}, against "
            "the distribution the model was trained on (its card). Under 0.1: no real change; "
            "0.1 to 0.25: a moderate shift (warning); over 0.25: a significant one (critical).",
        ),
        lay.panel(
            "Worst feature and score distribution (PSI)",
            [
                influx_q(
                    "A",
                    'SELECT max("psi_max") AS "worst feature", max("psi_score") AS "scores" '
                    f"FROM {n.drift} {t} {by_model}",
                    "$tag_model $col",
                )
            ],
            field_config=psi_config,
            description="The largest feature PSI of each window (the one drift alerts are "
            "raised on) and the PSI of the model's scores against its held-out test scores.",
        ),
        lay.panel(
            "Rows per drift window",
            [
                influx_q(
                    "A",
                    'SELECT last("count") AS "rows", last("unscored") AS "missing a feature" '
                    f"FROM {n.drift} {t} {by_model}",
                    "$tag_model $col",
                )
            ],
            description="Windows with fewer rows than the task's min_count (200) are not "
            "judged (drift_level insufficient); rows missing a feature are left out.",
        ),
        lay.panel(
            "Windows not at ok",
            [
                {
                    **influx_q(
                        "A",
                        'SELECT "drift_level", "drift_feature", "psi_max", "psi_score", "count" '
                        f"FROM {n.drift} WHERE \"drift_level\" != 'ok' AND {BY_MODEL} "
                        f'AND $timeFilter GROUP BY "{c.MODEL_TAG}" ORDER BY time DESC LIMIT 100',
                        "$tag_model",
                    ),
                    "resultFormat": "table",
                }
            ],
            kind="table",
            w=24,
            options={"showHeader": True, "sortBy": [{"displayName": "Time", "desc": True}]},
            description="The latest windows at warning, critical or too small to judge.",
        ),
    ]
    panels.append(
        {
            "id": lay.next_id,
            "type": "table",
            "title": "Drift alerts",
            "description": f"Drift alerts the alert sink indexed (index {n.profile.alert_index}, "
            "alert.kind drift): each change of level, a reminder while it lasts, the recovery.",
            "datasource": n.es,
            "gridPos": {"x": 0, "y": lay.y + lay.row_h, "w": 24, "h": 8},
            "targets": [_es_documents(n, f"model.name:$model AND {_DRIFT}")],
            "transformations": [_columns_in_order(_DRIFT_COLUMNS)],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {
                "showHeader": True,
                "sortBy": [{"displayName": "@timestamp", "desc": True}],
            },
        }
    )
    return dashboard(
        n.uid("model-drift"),
        n.title("model drift"),
        panels,
        tags=["influxdb", "drift"],
        refresh="1m",
        time_from="now-24h",
        variables=[model_variable(n)],
        annotations=[
            {
                "name": "Drift alerts",
                "enable": True,
                "iconColor": "purple",
                "datasource": n.es,
                "query": f"model.name:$model AND {_DRIFT} AND NOT alert.level:OK",
                "timeField": "@timestamp",
                "textField": "alert.message",
                "tagsField": "drift.feature",
            }
        ],
        names=n,
    )


def service_metrics() -> dict:
    lay = Layout()
    q = "histogram_quantile({p}, sum by (le) (rate({m}_bucket[5m])))"
    panels = [
        lay.panel(
            "Targets up",
            [
                prom("A", 'up{job=~"udf-agent|udf-supervisor|alert-sink|api"}', "{{job}}"),
            ],
            kind="stat",
            w=24,
            h=4,
            unit="bool_on_off",
            options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        ),
        lay.panel(
            "UDF agent: points in / out",
            [
                prom("A", "rate(udf_agent_points_in_total[1m])", "in"),
                prom("B", "rate(udf_agent_points_out_total[1m])", "out"),
            ],
            unit="pps",
        ),
        lay.panel(
            "UDF agent: scored by model version",
            [
                prom(
                    "A",
                    "sum by (model, version) (rate(udf_agent_points_scored_total[1m]))",
                    "{{model}} v{{version}}",
                ),
            ],
            unit="pps",
        ),
        lay.panel(
            "UDF agent: scoring latency",
            [
                prom("A", q.format(p=0.5, m="udf_agent_scoring_seconds"), "p50"),
                prom("B", q.format(p=0.95, m="udf_agent_scoring_seconds"), "p95"),
                prom("C", q.format(p=0.99, m="udf_agent_scoring_seconds"), "p99"),
            ],
            unit="s",
        ),
        lay.panel(
            "UDF agent: batch size",
            [
                prom("A", q.format(p=0.5, m="udf_agent_batch_size"), "p50"),
                prom("B", q.format(p=0.99, m="udf_agent_batch_size"), "p99"),
            ],
        ),
        lay.panel(
            "UDF agent: errors and fallbacks",
            [
                prom("A", "sum by (reason) (rate(udf_agent_errors_total[5m]))", "{{reason}}"),
                prom("B", "rate(udf_agent_fallback_batches_total[5m])", "fallback batches"),
            ],
            unit="ops",
        ),
        lay.panel(
            "UDF agent: Kapacitor connections",
            [
                prom("A", "udf_agent_connections", "open"),
            ],
        ),
        lay.panel(
            "UDF supervisor: scoring tasks",
            [
                prom("A", "udf_supervisor_tasks", "{{state}}"),
                prom(
                    "B",
                    "sum by (task) (increase(udf_supervisor_recoveries_total[15m]))",
                    "re-enabled {{task}} (15m)",
                ),
                prom(
                    "C",
                    "sum by (task) (udf_supervisor_gap_unscored_points)",
                    "left unscored {{task}}",
                ),
            ],
            description="Tasks executing / failed / disabled, re-enables after an agent "
            "restart, and points a backfill could not score.",
        ),
        lay.panel(
            "Alert sink: alerts in, documents shipped",
            [
                prom("A", "rate(alert_sink_alerts_received_total[5m])", "received"),
                prom("B", "rate(alert_sink_documents_shipped_total[5m])", "shipped"),
                prom(
                    "C",
                    "sum by (reason) (rate(alert_sink_alerts_rejected_total[5m]))",
                    "rejected {{reason}}",
                ),
            ],
            unit="ops",
        ),
        lay.panel(
            "Alert sink: spool and Elasticsearch",
            [
                prom("A", "alert_sink_spool_depth", "spool depth"),
                prom("B", "alert_sink_dead_letter_depth", "dead letters"),
                prom("C", "alert_sink_elasticsearch_up", "elasticsearch up"),
            ],
        ),
        lay.panel(
            "API: requests",
            [
                prom(
                    "A",
                    "sum by (endpoint, status) (rate(api_requests_total[5m]))",
                    "{{endpoint}} {{status}}",
                ),
                prom(
                    "B",
                    "sum by (model, version) (rate(api_predictions_total[5m]))",
                    "predictions {{model}} v{{version}}",
                ),
            ],
            unit="reqps",
        ),
        lay.panel(
            "API: latency p95",
            [
                prom(
                    "A",
                    "histogram_quantile(0.95, sum by (le, endpoint) "
                    "(rate(api_request_duration_seconds_bucket[5m])))",
                    "{{endpoint}}",
                ),
            ],
            unit="s",
        ),
    ]
    return dashboard(
        "fraud-service-metrics",
        "Fraud detection: service metrics",
        panels,
        tags=["prometheus"],
        refresh="30s",
        time_from="now-1h",
    )


# -- alert documents in Elasticsearch: Grafana dashboard, Kibana saved objects ------------
def _alert_keys(n: Names) -> dict[str, str | None]:
    """Document keys of a data set's alerts (alert_sink.routing): the row id, the value
    column, and the message fields."""
    p = n.profile
    if n.default:
        return {"id": c.TXN_ID, "value": "amount" if p.value else None}
    return {"id": "id", "value": f"fields.{p.value}" if p.value else None}


def _doc_key(n: Names, column: str) -> str:
    """The document key an alert row's column ends up under."""
    p = n.profile
    if column == p.id_column:
        return _alert_keys(n)["id"]
    if n.label and column == n.label:
        return c.LABEL
    if n.default and column == p.value:
        return "amount"
    return f"fields.{column}"


def _table_columns(n: Names) -> list[str]:
    keys = _alert_keys(n)
    if n.default:
        shown = [keys["id"], "score", "threshold", "amount", "label"]
    else:
        shown = [keys["id"], "score", "threshold"]
        shown += [_doc_key(n, m) for m in n.profile.message_fields]
        if keys["value"]:
            shown.append(keys["value"])
        if n.label:
            shown.append(c.LABEL)
    return list(dict.fromkeys(shown))


def _es_target(n: Names, query: str, metrics: list[dict], buckets: list[dict]) -> dict:
    return {
        "refId": "A",
        "datasource": n.es,
        "query": query,
        "alias": "",
        "metrics": metrics,
        "bucketAggs": buckets,
        "timeField": "@timestamp",
    }


def _kibana_table(title: str, aggs: list[dict], *, per_page: int) -> dict:
    """A Kibana aggregation-based table visualisation (visState)."""
    return {
        "title": title,
        "type": "table",
        "aggs": aggs,
        "params": {
            "perPage": per_page,
            "showPartialRows": False,
            "showMetricsAtAllLevels": False,
            "showTotal": False,
            "totalFunc": "sum",
            "percentageCol": "",
        },
    }


def _es_documents(n: Names, query: str) -> dict:
    """The newest 100 matching documents, raw (a table panel's source)."""
    raw = {"id": "1", "type": "raw_data", "settings": {"size": "100", "order": "desc"}}
    return _es_target(n, query, [raw], [])


def _columns_in_order(columns: list[str]) -> dict:
    """Table columns in this order; Elasticsearch's own metadata columns hidden."""
    hidden = ("_id", "_index", "_type", "highlight", "sort")
    return {
        "id": "organize",
        "options": {
            "excludeByName": dict.fromkeys(hidden, True),
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {},
        },
    }


_DATE_HISTOGRAM = {
    "id": "2",
    "type": "date_histogram",
    "field": "@timestamp",
    "settings": {"interval": "auto", "min_doc_count": "0", "trimEdges": "0"},
}
#: drift alerts share the index with anomalies; documents older than alert.kind have none
_DRIFT = f"{c.ALERT_KIND}:{c.ALERT_KIND_DRIFT}"
_ANOMALIES = f"model.name:$model AND NOT {_DRIFT}"
_CRITICAL = f'{_ANOMALIES} AND alert.level:"CRITICAL"'
_DRIFT_COLUMNS = [
    "@timestamp",
    "alert.level",
    "drift.feature",
    "drift.psi",
    "drift.psi_score",
    "drift.count",
    "drift.unscored",
    "model.name",
    "model.version",
    "task",
    "alert.id",
    "alert.message",
]
_STAT_OPTIONS = {"reduceOptions": {"calcs": ["sum"], "fields": "", "values": False}}


def alerts_dashboard(n: Names = CREDITCARD) -> dict:
    """Grafana on the alert index: critical alerts, value at risk, alerts by level, max score
    against threshold, the latest alerts, all of anomalies only (drift alerts, in the same
    index, are on the model-drift dashboard)."""
    p, keys = n.profile, _alert_keys(n)
    index = p.alert_index
    panels: list[dict] = []
    wide = keys["value"] is None
    panels.append(
        {
            "id": 1,
            "type": "stat",
            "title": "Critical alerts",
            "description": (
                f"Critical fraud alerts in the selected time range (index {index})."
                if n.default
                else f"Critical alerts in the selected time range (index {index})."
            ),
            "datasource": n.es,
            "gridPos": {"x": 0, "y": 0, "w": 12 if wide else 6, "h": 6},
            "targets": [
                _es_target(n, _CRITICAL, [{"id": "1", "type": "count"}], [_DATE_HISTOGRAM])
            ],
            "options": {
                **_STAT_OPTIONS,
                "colorMode": "background",
                "graphMode": "area",
                "textMode": "value",
                "justifyMode": "auto",
                "orientation": "auto",
            },
            "fieldConfig": {
                "defaults": {
                    "unit": "short",
                    "color": {"mode": "thresholds"},
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
                    },
                },
                "overrides": [],
            },
        }
    )
    if not wide:
        panels.append(
            {
                "id": 2,
                "type": "stat",
                "title": "Amount at risk" if n.default else f"{p.value} at risk",
                "description": (
                    "Sum of the transaction amounts of critical alerts."
                    if n.default
                    else f"Sum of {p.value} over critical alerts."
                ),
                "datasource": n.es,
                "gridPos": {"x": 6, "y": 0, "w": 6, "h": 6},
                "targets": [
                    _es_target(
                        n,
                        _CRITICAL,
                        [{"id": "1", "type": "sum", "field": keys["value"]}],
                        [_DATE_HISTOGRAM],
                    )
                ],
                "options": {
                    **_STAT_OPTIONS,
                    "colorMode": "value",
                    "graphMode": "none",
                    "textMode": "value",
                    "justifyMode": "auto",
                    "orientation": "auto",
                },
                "fieldConfig": {
                    "defaults": {"unit": "currencyEUR" if n.default else "short", "decimals": 2},
                    "overrides": [],
                },
            }
        )
    legend = {
        "legend": {"displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "multi"},
    }
    panels.append(
        {
            "id": 3,
            "type": "timeseries",
            "title": "Alerts over time by level",
            "datasource": n.es,
            "gridPos": {"x": 12, "y": 0, "w": 12, "h": 12},
            "targets": [
                _es_target(
                    n,
                    _ANOMALIES,
                    [{"id": "1", "type": "count"}],
                    [
                        {
                            "id": "3",
                            "type": "terms",
                            "field": "alert.level",
                            "settings": {
                                "size": "5",
                                "order": "desc",
                                "orderBy": "_count",
                                "min_doc_count": "1",
                            },
                        },
                        _DATE_HISTOGRAM,
                    ],
                )
            ],
            "fieldConfig": {
                "defaults": {
                    "custom": {
                        "drawStyle": "bars",
                        "stacking": {"mode": "normal"},
                        "fillOpacity": 80,
                    },
                    "unit": "short",
                },
                "overrides": [],
            },
            "options": legend,
        }
    )
    panels.append(
        {
            "id": 4,
            "type": "timeseries",
            "title": "Max score and threshold by model",
            "datasource": n.es,
            "gridPos": {"x": 0, "y": 6, "w": 12, "h": 6},
            "targets": [
                _es_target(
                    n,
                    _ANOMALIES,
                    [
                        {"id": "1", "type": "max", "field": "score"},
                        {"id": "4", "type": "max", "field": "threshold"},
                    ],
                    [
                        {
                            "id": "3",
                            "type": "terms",
                            "field": "model.name",
                            "settings": {
                                "size": "10",
                                "order": "desc",
                                "orderBy": "_term",
                                "min_doc_count": "1",
                            },
                        },
                        _DATE_HISTOGRAM,
                    ],
                )
            ],
            "fieldConfig": {
                "defaults": {"min": 0, "max": 1, "unit": "percentunit"},
                "overrides": [],
            },
            "options": legend,
        }
    )
    order = ["@timestamp", "alert.level", *_table_columns(n), c.EXPLANATION]
    order += ["model.name", "model.version", "source", "task", "alert.id", "alert.message"]
    panels.append(
        {
            "id": 5,
            "type": "table",
            "title": "Latest alerts",
            "description": (
                "Newest anomaly alerts; label is the ground truth of the transaction, "
                "explanation the features that pushed its score up the most."
                if n.default
                else "Newest anomaly alerts; fields.* hold the row's fields"
                + (f", label its ground truth ({n.label})" if n.label else "")
                + ", explanation the features that pushed the score up the most."
            ),
            "datasource": n.es,
            "gridPos": {"x": 0, "y": 12, "w": 24, "h": 12},
            "targets": [_es_documents(n, _ANOMALIES)],
            "transformations": [_columns_in_order(order)],
            "fieldConfig": {
                "defaults": {},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "score"},
                        "properties": [
                            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                            {
                                "id": "thresholds",
                                "value": {
                                    "mode": "absolute",
                                    "steps": [
                                        {"color": "green", "value": None},
                                        {"color": "orange", "value": 0.5},
                                        {"color": "red", "value": 0.9},
                                    ],
                                },
                            },
                        ],
                    }
                ],
            },
            "options": {
                "showHeader": True,
                "sortBy": [{"displayName": "@timestamp", "desc": True}],
            },
        }
    )
    variable_query = json.dumps({"find": "terms", "field": "model.name"})
    return {
        "uid": n.uid("alerts"),
        "title": "Fraud alerts" if n.default else f"{p.name}: alerts",
        "tags": ["fraud" if n.default else p.name, "alerts", "elasticsearch"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "model",
                    "label": "model",
                    "type": "query",
                    "datasource": n.es,
                    "query": variable_query,
                    "definition": variable_query,
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "options": [],
                    "sort": 1,
                    "hide": 0,
                    "regex": "",
                }
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Critical alerts",
                    "enable": True,
                    "iconColor": "red",
                    "datasource": n.es,
                    "query": _CRITICAL,
                    "timeField": "@timestamp",
                    "textField": "alert.message",
                    "tagsField": keys["id"],
                }
            ]
        },
        "links": [],
        "panels": panels,
    }


def _dumps(value: object) -> str:
    """JSON inside a saved object's attribute (Kibana's export style)."""
    return json.dumps(value)


_KQL_DRIFT = f'{c.ALERT_KIND} : "{c.ALERT_KIND_DRIFT}"'
#: anomalies: documents written before alert.kind existed have none, and are anomalies
_KQL_ANOMALIES = f"not {_KQL_DRIFT}"


def _kuery_source(query: str = "", *, index: bool = True) -> dict:
    source: dict = {"query": {"query": query, "language": "kuery"}, "filter": []}
    if index:
        source["indexRefName"] = "kibanaSavedObjectMeta.searchSourceJSON.index"
    return {"searchSourceJSON": _dumps(source)}


def _terms(agg_id: str, schema: str, field: str, size: int, label: str | None = None) -> dict:
    params = {
        "field": field,
        "size": size,
        "order": "desc",
        "orderBy": "1",
        "otherBucket": False,
        "missingBucket": False,
    }
    if label:
        params["customLabel"] = label
    return {"id": agg_id, "enabled": True, "type": "terms", "schema": schema, "params": params}


def kibana_objects(n: Names = CREDITCARD) -> list[dict]:
    """Kibana saved objects (8.x export, which Kibana 9 imports and migrates): the data view
    of the alert index, visualizations, the latest-alerts search and a dashboard."""
    p, keys = n.profile, _alert_keys(n)
    index = p.alert_index
    prefix = "fraud-alerts" if n.default else index
    kind = "Fraud alerts" if n.default else f"{p.name} alerts"
    what = "transactions" if n.default else "points"
    ref = [
        {
            "id": index,
            "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
            "type": "index-pattern",
        }
    ]

    def meta(obj_id: str, obj_type: str, attributes: dict, migration: str) -> dict:
        return {
            "attributes": attributes,
            "coreMigrationVersion": "8.8.0",
            "id": obj_id,
            "managed": False,
            "references": ref,
            "type": obj_type,
            "typeMigrationVersion": migration,
        }

    formats = {}
    if keys["value"]:
        formats[keys["value"]] = {"id": "number", "params": {"pattern": "0,0.00"}}
    formats["score"] = {"id": "number", "params": {"pattern": "0.000"}}
    for key in ("explanation.contribution", "drift.psi", "drift.psi_score"):
        formats[key] = {"id": "number", "params": {"pattern": "0.000"}}
    objects = [
        {
            "attributes": {
                "allowNoIndex": True,
                "fieldAttrs": "{}",
                "fieldFormatMap": _dumps(formats),
                "fields": "[]",
                "name": index,
                "runtimeFieldMap": "{}",
                "sourceFilters": "[]",
                "timeFieldName": "@timestamp",
                "title": index,
                "typeMeta": "{}",
            },
            "coreMigrationVersion": "8.8.0",
            "id": index,
            "managed": False,
            "references": [],
            "type": "index-pattern",
            "typeMigrationVersion": "8.0.0",
        }
    ]
    over_time = f"{kind} over time"
    histogram = {
        "title": over_time,
        "type": "histogram",
        "aggs": [
            {"id": "1", "enabled": True, "type": "count", "params": {}, "schema": "metric"},
            {
                "id": "2",
                "enabled": True,
                "type": "date_histogram",
                "schema": "segment",
                "params": {
                    "field": "@timestamp",
                    "useNormalizedEsInterval": True,
                    "interval": "auto",
                    "drop_partials": False,
                    "min_doc_count": 1,
                    "extended_bounds": {},
                },
            },
            _terms("3", "group", "alert.level", 5),
        ],
        "params": {
            "type": "histogram",
            "addTooltip": True,
            "addLegend": True,
            "legendPosition": "right",
            "times": [],
            "addTimeMarker": False,
            "grid": {"categoryLines": False},
            "categoryAxes": [
                {
                    "id": "CategoryAxis-1",
                    "type": "category",
                    "position": "bottom",
                    "show": True,
                    "style": {},
                    "scale": {"type": "linear"},
                    "labels": {"show": True, "filter": True, "truncate": 100},
                    "title": {},
                }
            ],
            "valueAxes": [
                {
                    "id": "ValueAxis-1",
                    "name": "LeftAxis-1",
                    "type": "value",
                    "position": "left",
                    "show": True,
                    "style": {},
                    "scale": {"type": "linear", "mode": "normal"},
                    "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                    "title": {"text": "Alerts"},
                }
            ],
            "seriesParams": [
                {
                    "show": True,
                    "type": "histogram",
                    "mode": "stacked",
                    "data": {"label": "Alerts", "id": "1"},
                    "valueAxis": "ValueAxis-1",
                    "drawLinesBetweenPoints": True,
                    "lineWidth": 2,
                    "showCircles": True,
                }
            ],
            "thresholdLine": {
                "show": False,
                "value": 10,
                "width": 1,
                "style": "full",
                "color": "#E7664C",
            },
            "labels": {"show": False},
        },
    }
    objects.append(
        meta(
            f"{prefix}-over-time",
            "visualization",
            {
                "title": over_time,
                "description": "Alerts per interval, stacked by level",
                "uiStateJSON": "{}",
                "version": 1,
                "visState": _dumps(histogram),
                "kibanaSavedObjectMeta": _kuery_source(_KQL_ANOMALIES),
            },
            "8.5.0",
        )
    )
    by_level = f"{kind} by level"
    pie = {
        "title": by_level,
        "type": "pie",
        "aggs": [
            {"id": "1", "enabled": True, "type": "count", "params": {}, "schema": "metric"},
            _terms("2", "segment", "alert.level", 5),
        ],
        "params": {
            "type": "pie",
            "addTooltip": True,
            "addLegend": True,
            "legendPosition": "right",
            "isDonut": True,
            "labels": {"show": True, "values": True, "last_level": True, "truncate": 100},
        },
    }
    objects.append(
        meta(
            f"{prefix}-by-level",
            "visualization",
            {
                "title": by_level,
                "description": "",
                "uiStateJSON": "{}",
                "version": 1,
                "visState": _dumps(pie),
                "kibanaSavedObjectMeta": _kuery_source(_KQL_ANOMALIES),
            },
            "8.5.0",
        )
    )
    # the value panel sits right of the histogram; without one the histogram is full width
    wide = 32 if keys["value"] else 48
    panels = [(f"{prefix}-over-time", "visualization", (0, 0, wide, 14))]
    if keys["value"]:
        at_risk = "Amount at risk (critical alerts)" if n.default else f"{p.value} at risk"
        value_label = "Amount at risk" if n.default else f"{p.value} at risk"
        metric = {
            "title": at_risk,
            "type": "metric",
            "aggs": [
                {
                    "id": "1",
                    "enabled": True,
                    "type": "sum",
                    "schema": "metric",
                    "params": {"field": keys["value"], "customLabel": value_label},
                },
                {
                    "id": "2",
                    "enabled": True,
                    "type": "cardinality",
                    "schema": "metric",
                    "params": {"field": keys["id"], "customLabel": what.capitalize()},
                },
            ],
            "params": {
                "addTooltip": True,
                "addLegend": False,
                "type": "metric",
                "metric": {
                    "percentageMode": False,
                    "useRanges": False,
                    "colorSchema": "Green to Red",
                    "metricColorMode": "None",
                    "colorsRange": [{"from": 0, "to": 10000}],
                    "labels": {"show": True},
                    "invertColors": False,
                    "style": {
                        "bgFill": "#000",
                        "bgColor": False,
                        "labelColor": False,
                        "subText": "",
                        "fontSize": 60,
                    },
                },
            },
        }
        objects.append(
            meta(
                f"{prefix}-amount-at-risk" if n.default else f"{prefix}-value-at-risk",
                "visualization",
                {
                    "title": at_risk,
                    "description": "",
                    "uiStateJSON": "{}",
                    "version": 1,
                    "visState": _dumps(metric),
                    "kibanaSavedObjectMeta": _kuery_source(
                        f'alert.level : "CRITICAL" and {_KQL_ANOMALIES}'
                    ),
                },
                "8.5.0",
            )
        )
        panels.append((objects[-1]["id"], "visualization", (32, 0, 16, 14)))
    panels.append((f"{prefix}-by-level", "visualization", (0, 14, 16, 14)))
    top = "Top-scored transactions" if n.default else f"Top-scored {what}"
    top_aggs = [
        {
            "id": "1",
            "enabled": True,
            "type": "max",
            "schema": "metric",
            "params": {"field": "score", "customLabel": "Score"},
        }
    ]
    if keys["value"]:
        top_aggs.append(
            {
                "id": "3",
                "enabled": True,
                "type": "max",
                "schema": "metric",
                "params": {
                    "field": keys["value"],
                    "customLabel": "Amount" if n.default else p.value,
                },
            }
        )
    if n.label:
        top_aggs.append(
            {
                "id": "4",
                "enabled": True,
                "type": "max",
                "schema": "metric",
                "params": {"field": c.LABEL, "customLabel": "Label"},
            }
        )
    top_aggs.append(
        _terms("2", "bucket", keys["id"], 20, "Transaction" if n.default else p.id_column)
    )
    top_aggs.append(_terms("5", "bucket", "model.name", 5, "Model"))
    table = _kibana_table(top, top_aggs, per_page=10)
    objects.append(
        meta(
            f"{prefix}-top-scored",
            "visualization",
            {
                "title": top,
                "description": "",
                "uiStateJSON": "{}",
                "version": 1,
                "visState": _dumps(table),
                "kibanaSavedObjectMeta": _kuery_source(_KQL_ANOMALIES),
            },
            "8.5.0",
        )
    )
    panels.append((f"{prefix}-top-scored", "visualization", (16, 14, 32, 14)))
    explained = "Features behind the alerts"
    bar = _kibana_table(
        explained,
        [
            {
                "id": "1",
                "enabled": True,
                "type": "count",
                "params": {"customLabel": "Alerts it explains"},
                "schema": "metric",
            },
            _terms("2", "bucket", "explanation.feature", 15, "Feature"),
        ],
        per_page=15,
    )
    objects.append(
        meta(
            f"{prefix}-explained-by",
            "visualization",
            {
                "title": explained,
                "description": "How many alerts each feature is among the top features of "
                "(the explanation the agent gives every anomalous point)",
                "uiStateJSON": "{}",
                "version": 1,
                "visState": _dumps(bar),
                "kibanaSavedObjectMeta": _kuery_source(_KQL_ANOMALIES),
            },
            "8.5.0",
        )
    )
    panels.append((f"{prefix}-explained-by", "visualization", (0, 28, 16, 18)))
    columns = ["alert.level", *_table_columns(n), "explanation.feature"]
    columns += ["explanation.contribution", "model.name", "model.version", "source"]
    columns += ["task", "alert.message"]
    objects.append(
        meta(
            f"{prefix}-latest",
            "search",
            {
                "title": "Latest fraud alerts" if n.default else f"Latest {p.name} alerts",
                "description": "",
                "columns": columns,
                "sort": [["@timestamp", "desc"]],
                "grid": {},
                "hideChart": False,
                "isTextBasedQuery": False,
                "kibanaSavedObjectMeta": _kuery_source(_KQL_ANOMALIES),
            },
            "8.0.0",
        )
    )
    panels.append((f"{prefix}-latest", "search", (16, 28, 32, 18)))
    objects.append(
        meta(
            f"{prefix}-drift",
            "search",
            {
                "title": f"Drift alerts ({p.name})" if not n.default else "Drift alerts",
                "description": "Input drift of the models (the drift tasks): the feature "
                "that moved most and its PSI; a level change, a reminder, the recovery",
                "columns": _DRIFT_COLUMNS[1:],
                "sort": [["@timestamp", "desc"]],
                "grid": {},
                "hideChart": False,
                "isTextBasedQuery": False,
                "kibanaSavedObjectMeta": _kuery_source(_KQL_DRIFT),
            },
            "8.0.0",
        )
    )
    panels.append((f"{prefix}-drift", "search", (0, 46, 48, 14)))
    panel_json = [
        {
            "version": "8.8.0",
            "type": kind_,
            "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
            "panelIndex": str(i),
            "embeddableConfig": {"enhancements": {}},
            "panelRefName": f"panel_{i}",
        }
        for i, (_, kind_, (x, y, w, h)) in enumerate(panels, start=1)
    ]
    dashboard_obj = meta(
        f"{prefix}-dashboard",
        "dashboard",
        {
            "title": kind,
            "description": (
                "Kapacitor fraud alerts indexed by the alert sink (index fraud-alerts)"
                if n.default
                else f"Kapacitor alerts of {p.name} indexed by the alert sink (index {index})"
            ),
            "hits": 0,
            "panelsJSON": _dumps(panel_json),
            "optionsJSON": _dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "version": 1,
            "timeRestore": True,
            "timeFrom": "now-1h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 10000},
            "kibanaSavedObjectMeta": _kuery_source(index=False),
        },
        "8.7.0",
    )
    dashboard_obj["references"] = [
        {"name": f"{i}:panel_{i}", "type": kind_, "id": obj_id}
        for i, (obj_id, kind_, _) in enumerate(panels, start=1)
    ]
    objects.append(dashboard_obj)
    return objects


def render_ndjson(objects: list[dict]) -> str:
    return "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects)


DASHBOARDS = {
    "live-scoring.json": live_scoring,
    "model-quality.json": model_quality,
    "model-drift.json": model_drift,
    "service-metrics.json": service_metrics,
    "fraud-alerts.json": alerts_dashboard,
}
#: the credit-card Kibana objects, beside compose/kibana/import.sh
KIBANA_FILE = "fraud-alerts.ndjson"


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML string


def datasources_yaml(n: Names) -> str:
    """Grafana provisioning of a data set's two datasources: InfluxDB on its database,
    Elasticsearch on its alert index, with the stack's read-only users."""
    p = n.profile
    return "\n".join(
        [
            f"# Grafana datasources of the {p.name} data set, generated by",
            "# compose/scripts/gen_dashboards.py --profile; the read-only users of the stack need",
            f"# READ on database {p.database} and read on index {p.alert_index} (docs/byo-data.md).",
            "apiVersion: 1",
            "",
            "datasources:",
            f"  - name: {_yaml_str(f'InfluxDB {p.database}')}",
            f"    uid: {_yaml_str(n.influx_uid)}",
            "    type: influxdb",
            "    access: proxy",
            "    url: http://influxdb:8086",
            "    editable: false",
            "    user: ${INFLUXDB_READ_USER}",
            f"    database: {_yaml_str(p.database)}",
            "    jsonData:",
            "      version: InfluxQL",
            f"      dbName: {_yaml_str(p.database)}",
            "      httpMode: GET",
            "      timeInterval: 1s",
            "    secureJsonData:",
            "      password: ${INFLUXDB_READ_USER_PASSWORD}",
            "",
            f"  - name: {_yaml_str(f'Elasticsearch {p.alert_index}')}",
            f"    uid: {_yaml_str(n.es_uid)}",
            "    type: elasticsearch",
            "    access: proxy",
            "    url: http://elasticsearch:9200",
            "    editable: false",
            "    basicAuth: true",
            "    basicAuthUser: grafana",
            f"    database: {_yaml_str(p.alert_index)}",
            "    jsonData:",
            f"      index: {_yaml_str(p.alert_index)}",
            '      timeField: "@timestamp"',
            "      maxConcurrentShardRequests: 5",
            "      logMessageField: alert.message",
            "      logLevelField: alert.level",
            "    secureJsonData:",
            "      basicAuthPassword: ${GRAFANA_ES_PASSWORD}",
            "",
        ]
    )


def profile_files(profile: Profile) -> dict[str, str]:
    """Relative path -> content: the dashboards, datasources and Kibana objects of a data
    set, in the layout of compose/ (see the module docstring)."""
    n = Names(profile)
    name = profile.name
    files = {f"grafana/dashboards/{name}-live-scoring.json": render(lambda: live_scoring(n))}
    if n.label:  # without a ground truth there is no live evaluation (no quality task)
        files[f"grafana/dashboards/{name}-model-quality.json"] = render(lambda: model_quality(n))
    files[f"grafana/dashboards/{name}-model-drift.json"] = render(lambda: model_drift(n))
    files[f"grafana/dashboards/{name}-alerts.json"] = render(lambda: alerts_dashboard(n))
    files[f"grafana/provisioning/datasources/{name}.yaml"] = datasources_yaml(n)
    files[f"kibana/{profile.alert_index}.ndjson"] = render_ndjson(kibana_objects(n))
    return files


def committed_files(out_dir: Path = OUT_DIR, kibana_dir: Path = KIBANA_DIR) -> dict[Path, str]:
    """The credit-card files of the compose stack and their content."""
    files = {out_dir / name: render(build) for name, build in DASHBOARDS.items()}
    files[kibana_dir / KIBANA_FILE] = render_ndjson(kibana_objects())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where to write: the Grafana dashboards folder (default compose/grafana/dashboards; "
        "compose/kibana for the Kibana objects), or with --profile the root of the layout",
    )
    parser.add_argument(
        "--profile",
        help="a data set's files (a name in profiles/ or a TOML path), under --out-dir",
    )
    args = parser.parse_args(argv)
    if args.profile:
        if args.out_dir is None:
            parser.error("--profile needs --out-dir DIR")
        try:
            profile = load_profile(args.profile)
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        files = {args.out_dir / rel: text for rel, text in profile_files(profile).items()}
    elif args.out_dir is not None:
        files = committed_files(args.out_dir, args.out_dir)
    else:
        files = committed_files()
    stale = []
    for path, text in files.items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
