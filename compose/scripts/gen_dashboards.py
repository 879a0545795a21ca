#!/usr/bin/env python3
"""Generate the Grafana dashboards of the stack (compose/grafana/dashboards/*.json).

    python compose/scripts/gen_dashboards.py [--check]

The JSON files are committed; this script is their source, so every query is written once,
from the data contract (models.contract) and the services' metric names. --check exits 1
when a committed file differs from what the script generates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from models import contract as c  # noqa: E402
from udf_agent.supervise.influx import EVENTS_MEASUREMENT  # noqa: E402

OUT_DIR = REPO_ROOT / "compose" / "grafana" / "dashboards"
INFLUX = {"type": "influxdb", "uid": "influxdb-fraud"}
PROM = {"type": "prometheus", "uid": "prometheus"}
SCORED = f'"{c.RETENTION_POLICY}"."{c.SCORED_MEASUREMENT}"'
INPUT = f'"{c.RETENTION_POLICY}"."{c.INPUT_MEASUREMENT}"'
QUALITY = f'"{c.RETENTION_POLICY}"."{c.MODEL_QUALITY_MEASUREMENT}"'
EVENTS = f'"{c.RETENTION_POLICY}"."{EVENTS_MEASUREMENT}"'
#: fields the live-evaluation TICKscript writes into `model_quality`
QUALITY_FIELDS = ("precision", "recall", "alert_rate")
PER_SECOND = "/ ($__interval_ms / 1000)"
#: every query on scored points or model quality keeps to the models picked in $model
BY_MODEL = f'"{c.MODEL_TAG}" =~ /^$model$/'
#: a field comparison is false on points without the field: "scored by the challenger too"
HAS_CHALLENGER = f'"{c.SCORE_CHALLENGER}" >= 0'


def influx(ref: str, query: str, alias: str | None = None) -> dict:
    target = {
        "refId": ref,
        "datasource": INFLUX,
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


def model_variable() -> dict:
    """$model: the models that scored points (all by default, several at once)."""
    query = f'SHOW TAG VALUES FROM {SCORED} WITH KEY = "{c.MODEL_TAG}"'
    return {
        "name": "model",
        "label": "model",
        "type": "query",
        "datasource": INFLUX,
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
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["tick-anomaly", *tags],
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
                "tags": ["tick-anomaly"],
                "asDropdown": True,
                "title": "Fraud detection",
            }
        ],
        "panels": panels,
    }


def live_scoring() -> dict:
    lay = Layout()
    t = f"WHERE {BY_MODEL} AND $timeFilter"
    by_model = f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(0)'
    panels = [
        lay.panel(
            "Throughput",
            [
                influx(
                    "A",
                    f'SELECT count("{c.LABEL}") {PER_SECOND} FROM {INPUT} WHERE $timeFilter '
                    "GROUP BY time($__interval) fill(0)",
                    "published",
                ),
                influx(
                    "B",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {SCORED} {t} {by_model}',
                    f"scored $tag_{c.MODEL_TAG}",
                ),
                influx(
                    "C",
                    f'SELECT count("{c.SCORE_ERROR}") {PER_SECOND} FROM {SCORED} {t} {by_model}',
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
                influx(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {SCORED} '
                    f'WHERE "{c.IS_ANOMALY}" = true AND {BY_MODEL} AND $timeFilter {by_model}',
                    f"$tag_{c.MODEL_TAG}",
                ),
            ],
            unit="pps",
        ),
        lay.panel(
            "Score percentiles and threshold",
            [
                influx(
                    "A",
                    f'SELECT percentile("{c.SCORE}", 50) AS "p50", '
                    f'percentile("{c.SCORE}", 95) AS "p95", '
                    f'percentile("{c.SCORE}", 99) AS "p99", '
                    f'mean("{c.THRESHOLD}") AS "threshold" FROM {SCORED} {t} '
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
                influx(
                    "A",
                    f'SELECT "{c.SCORE}" FROM {SCORED} {t} GROUP BY "{c.MODEL_TAG}" '
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
                influx(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {SCORED} {t} '
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
                influx(
                    "A",
                    f'SELECT mean("{c.SCORE}") FROM {SCORED} {t} '
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
                influx(
                    "A",
                    f'SELECT mean("{c.SCORE}") AS "champion", '
                    f'mean("{c.SCORE_CHALLENGER}") AS "challenger" FROM {SCORED} '
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
                influx(
                    "A",
                    f'SELECT count("{c.SCORE}") {PER_SECOND} FROM {SCORED} '
                    f'WHERE "{c.IS_ANOMALY}" = true AND {HAS_CHALLENGER} AND {BY_MODEL} '
                    f"AND $timeFilter {by_model}",
                    f"$tag_{c.MODEL_TAG} champion",
                ),
                influx(
                    "B",
                    f'SELECT count("{c.SCORE_CHALLENGER}") {PER_SECOND} FROM {SCORED} '
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
                influx(
                    "A",
                    f'SELECT last("{c.THRESHOLD}") AS "champion", '
                    f'last("{c.THRESHOLD_CHALLENGER}") AS "challenger" FROM {SCORED} {t} '
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
        "fraud-live-scoring",
        "Fraud detection: live scoring",
        panels,
        tags=["influxdb"],
        variables=[model_variable()],
        annotations=[udf_events_annotation()],
    )


def model_quality() -> dict:
    lay = Layout()
    t = f"WHERE {BY_MODEL} AND $timeFilter"
    fields = ", ".join(f'last("{f}") AS "{f}"' for f in QUALITY_FIELDS)
    scored_g = f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(0)'
    versions = f"$tag_{c.MODEL_TAG} v$tag_{c.MODEL_VERSION_TAG}"
    panels = [
        lay.panel(
            "Precision and recall (live, from labels)",
            [
                influx(
                    "A",
                    f"SELECT {fields} FROM {QUALITY} {t} GROUP BY time($__interval), * fill(none)",
                    f"{versions} $col",
                ),
            ],
            w=24,
            unit="percentunit",
            field_config={"min": 0, "max": 1},
            description=f"Written by the evaluation TICKscript into `{c.MODEL_QUALITY_MEASUREMENT}`, "
            "one series per model version.",
        ),
        lay.panel(
            "True positives / false positives / missed frauds",
            [
                influx(
                    "A",
                    f'SELECT count("{c.SCORE}") FROM {SCORED} WHERE "{c.IS_ANOMALY}" = true '
                    f'AND "{c.LABEL}" = 1 AND {BY_MODEL} AND $timeFilter {scored_g}',
                    f"$tag_{c.MODEL_TAG} true positives",
                ),
                influx(
                    "B",
                    f'SELECT count("{c.SCORE}") FROM {SCORED} WHERE "{c.IS_ANOMALY}" = true '
                    f'AND "{c.LABEL}" = 0 AND {BY_MODEL} AND $timeFilter {scored_g}',
                    f"$tag_{c.MODEL_TAG} false positives",
                ),
                influx(
                    "C",
                    f'SELECT count("{c.SCORE}") FROM {SCORED} WHERE "{c.IS_ANOMALY}" = false '
                    f'AND "{c.LABEL}" = 1 AND {BY_MODEL} AND $timeFilter {scored_g}',
                    f"$tag_{c.MODEL_TAG} missed frauds",
                ),
            ],
            unit="short",
            description="Counted straight from transactions_scored and its label, per model.",
        ),
        lay.panel(
            "Alert rate",
            [
                influx(
                    "A",
                    f'SELECT last("alert_rate") FROM {QUALITY} {t} '
                    "GROUP BY time($__interval), * fill(none)",
                    versions,
                ),
            ],
            unit="percentunit",
        ),
        lay.panel(
            "Score of frauds vs legitimate transactions",
            [
                influx(
                    "A",
                    f'SELECT mean("{c.SCORE}") FROM {SCORED} WHERE "{c.LABEL}" = 1 '
                    f'AND {BY_MODEL} AND $timeFilter GROUP BY time($__interval), "{c.MODEL_TAG}" '
                    "fill(none)",
                    f"$tag_{c.MODEL_TAG} fraud (label 1)",
                ),
                influx(
                    "B",
                    f'SELECT mean("{c.SCORE}") FROM {SCORED} WHERE "{c.LABEL}" = 0 '
                    f'AND {BY_MODEL} AND $timeFilter GROUP BY time($__interval), "{c.MODEL_TAG}" '
                    "fill(none)",
                    f"$tag_{c.MODEL_TAG} legit (label 0)",
                ),
                influx(
                    "C",
                    f'SELECT mean("{c.THRESHOLD}") FROM {SCORED} {t} '
                    f'GROUP BY time($__interval), "{c.MODEL_TAG}" fill(none)',
                    f"$tag_{c.MODEL_TAG} threshold",
                ),
            ],
            w=24,
            unit="percentunit",
            field_config={"min": 0, "max": 1},
        ),
    ]
    return dashboard(
        "fraud-model-quality",
        "Fraud detection: live model quality",
        panels,
        tags=["influxdb", "quality"],
        refresh="30s",
        time_from="now-6h",
        variables=[model_variable()],
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


DASHBOARDS = {
    "live-scoring.json": live_scoring,
    "model-quality.json": model_quality,
    "service-metrics.json": service_metrics,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out_dir / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
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
