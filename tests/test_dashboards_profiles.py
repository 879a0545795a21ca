"""Grafana dashboards, datasources and Kibana objects generated for any data set, checked
against the names its profile, its alert documents and a real InfluxDB use."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from http_serving import serve_in_thread
from test_alert_sink_dashboards import _FakeKibana, _walk

from alert_sink.payload import parse_alert
from alert_sink.routing import Router
from models import contract
from models.profile import Profile, load_profile, load_profile_text
from publisher import SampleSource
from publisher.lineprotocol import escape_string, format_bool, format_float, format_int, line

ROOT = Path(__file__).resolve().parents[1]
QUALITY_FIELDS = {"precision", "recall", "alert_rate", "tp", "fp", "fn", "flagged", "total"}

AWKWARD = """
name = "awkward"
[influxdb]
database = "plant db, north"
retention_policy = "one week"
measurement = "machine readings,v=1"
scored_measurement = "machine readings scored"
[columns]
id = "Row ID"
label = "Machine failure"
label_field = "failure flag"
value = "Repair cost ($)"
tags = ["Plant site"]
[[features]]
name = "Air temperature [K]"
type = "float"
[[features]]
name = "Type = kind"
type = "categorical"
levels = ["H", "L"]
[[features]]
name = "Repair cost ($)"
type = "float"
[alerts]
index = "awkward-alerts"
message_fields = ["Row ID", "Type = kind", "Plant site"]
"""


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_dashboards_p", ROOT / "compose" / "scripts" / "gen_dashboards.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_dashboards_p"] = module
    spec.loader.exec_module(module)
    return module


gen = _gen()
PROFILES = {
    "creditcard": load_profile("creditcard"),
    "machine_failure": load_profile("machine_failure"),
    "awkward": load_profile_text(AWKWARD),
}


def files_of(profile: Profile) -> dict[str, object]:
    out = {}
    for rel, text in gen.profile_files(profile).items():
        if rel.endswith(".json"):
            out[rel] = json.loads(text)
        elif rel.endswith(".yaml"):
            out[rel] = yaml.safe_load(text)
        else:
            out[rel] = [json.loads(line) for line in text.splitlines()]
    return out


def row_of(profile: Profile, i: int = 0) -> dict[str, object]:
    """One scored point of the data set: every field it can have."""
    row: dict[str, object] = {}
    for f in profile.features:
        row[f.name] = f.levels[0] if f.categorical else (i + 1 if f.type == "int" else 1.5 + i)
    row[profile.id_column] = f"r{i}"
    if profile.label is not None:
        row[profile.label_field] = i % 2
    for extra in (profile.value, profile.order):
        if extra is not None and extra not in row and extra not in profile.tags:
            row[extra] = 2.5
    row.update(score=0.2 + (i % 7) / 10, is_anomaly=i % 3 == 0, threshold=0.31)
    row.update(score_challenger=0.4 + (i % 5) / 10, threshold_challenger=0.6)
    return row


def alert_doc_keys(profile: Profile) -> set[str]:
    """Every key the alert sink gives a document of this data set (from real alert bodies:
    an explained anomaly and a drift window), as Kibana and Grafana name them."""
    row = row_of(profile)
    row["top_features"] = contract.format_top_features(profile.feature_names, [0.5, 0.25], 2)
    columns = ["time", *sorted(row)]
    tags = {"model": "m", "model_version": "1", "source": "s"}
    tags.update({t: "x" for t in profile.tags})
    body = {
        "id": "a",
        "time": "2026-01-01T00:00:00Z",
        "level": "CRITICAL",
        "message": "m",
        "data": {
            "series": [
                {
                    "name": profile.scored_measurement,
                    "tags": tags,
                    "columns": columns,
                    "values": [["2026-01-01T00:00:00Z", *(row[c] for c in columns[1:])]],
                }
            ]
        },
    }
    router = Router([profile], default_index="fraud-alerts")
    (doc,) = parse_alert(json.dumps(body), router=router)
    assert doc.index == profile.alert_index and doc.source["explanation"]
    drift_row = {"count": 600, "drift_feature": profile.feature_names[0], "psi_max": 0.3}
    drift_row.update(drift_level="critical", psi_score=0.1, unscored=0)
    drift_row.update({f"psi_{f}": 0.01 for f in profile.feature_names})
    columns = ["time", *sorted(drift_row)]
    body["data"]["series"] = [
        {
            "name": contract.DRIFT_MEASUREMENT,
            "tags": {"model": "m", "model_version": "1", "data_set": profile.name},
            "columns": columns,
            "values": [["2026-01-01T00:00:00Z", *(drift_row[c] for c in columns[1:])]],
        }
    ]
    (drift,) = parse_alert(json.dumps(body), router=router)
    assert drift.index == profile.alert_index and drift.kind == "drift"
    keys = set(doc.source) | set(drift.source)
    for key, value in doc.source.items():
        if isinstance(value, list):
            keys |= {f"{key}.{sub}" for item in value for sub in item}
    return keys


def influx_names(profile: Profile) -> tuple[set[str], set[str]]:
    """Measurements and field/tag names the data set has in InfluxDB."""
    measurements = {profile.measurement, profile.scored_measurement, "model_quality"}
    measurements.add(contract.DRIFT_MEASUREMENT)
    names = set(row_of(profile)) | set(contract.OUTPUT_FIELDS) | set(contract.OUTPUT_TAGS)
    names |= {contract.SOURCE_TAG, *profile.tags} | QUALITY_FIELDS
    # the drift task's model_drift (the agent's fields, the task's data_set tag)
    names |= {contract.DRIFT_PSI_PREFIX + f for f in profile.feature_names}
    names |= set(contract.DRIFT_FIELDS) | {contract.DATA_SET_TAG}
    return measurements, names


def _ident_names(query: str) -> list[str]:
    return [
        m.replace('\\"', '"').replace("\\\\", "\\")
        for m in re.findall(r'"((?:[^"\\]|\\.)*)"', query)
    ]


def _targets(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_generated_files_use_only_the_data_sets_names(name):
    profile = PROFILES[name]
    files = files_of(profile)
    (ds_file,) = [v for k, v in files.items() if k.endswith(".yaml")]
    sources = {d["uid"]: d for d in ds_file["datasources"]}
    influx = next(d for d in sources.values() if d["type"] == "influxdb")
    es = next(d for d in sources.values() if d["type"] == "elasticsearch")
    assert influx["database"] == influx["jsonData"]["dbName"] == profile.database
    assert es["jsonData"]["index"] == profile.alert_index
    assert all(len(uid) <= 40 for uid in sources)
    measurements, names = influx_names(profile)
    doc_keys = alert_doc_keys(profile)
    uids = []
    for rel, dash in files.items():
        if not rel.endswith(".json"):
            continue
        uids.append(dash["uid"])
        assert len(dash["uid"]) <= 40
        assert profile.name in dash["tags"] or name == "creditcard"
        for panel, target in _targets(dash):
            ds = target.get("datasource") or panel["datasource"]
            assert ds["uid"] in sources, (rel, panel["title"])
            if ds["type"] == "influxdb":
                query = target["query"]
                idents = _ident_names(query)
                froms = re.findall(r'FROM\s+"(?:[^"\\]|\\.)*"\."((?:[^"\\]|\\.)*)"', query)
                assert froms and set(froms) <= measurements, (rel, query)
                aliases = set(re.findall(r'AS\s+"([^"]+)"', query))
                unknown = set(idents) - measurements - {profile.retention_policy} - aliases - names
                assert not unknown, (rel, panel["title"], unknown)
            else:
                used = {m["field"] for m in target["metrics"] if "field" in m}
                used |= {b["field"] for b in target["bucketAggs"]}
                used |= set(re.findall(r"([\w.@]+):", target["query"]))
                assert used <= doc_keys, (rel, panel["title"], used - doc_keys)
        for org in _walk(dash["panels"], "indexByName"):
            assert set(org) <= doc_keys, (rel, set(org) - doc_keys)
        for ann in dash["annotations"]["list"]:
            if ann["datasource"]["type"] == "elasticsearch":
                assert {ann["timeField"], ann["textField"], ann["tagsField"]} <= doc_keys
    assert len(set(uids)) == 4
    (objects,) = [v for k, v in files.items() if k.endswith(".ndjson")]
    check_kibana(objects, profile, doc_keys)


def check_kibana(objects: list[dict], profile: Profile, doc_keys: set[str]) -> None:
    (view,) = [o for o in objects if o["type"] == "index-pattern"]
    assert view["id"] == view["attributes"]["title"] == profile.alert_index
    assert set(json.loads(view["attributes"]["fieldFormatMap"])) <= doc_keys
    present = {(o["type"], o["id"]) for o in objects}
    used: set[str] = set()
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, ref
        attrs = obj["attributes"]
        if obj["type"] == "visualization":
            for agg in json.loads(attrs["visState"])["aggs"]:
                if "field" in agg["params"]:
                    used.add(agg["params"]["field"])
        if obj["type"] == "search":
            used |= set(attrs["columns"]) | {s[0] for s in attrs["sort"]}
    assert used <= doc_keys, used - doc_keys
    (dash,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    assert len(panels) == len(dash["references"]) == len(objects) - 2


def test_the_default_profile_gives_the_committed_files():
    """--profile creditcard and the committed stack files say the same thing."""
    files = gen.profile_files(PROFILES["creditcard"])
    committed = {p.name: p.read_text() for p in gen.committed_files()}
    mapping = {
        "grafana/dashboards/creditcard-live-scoring.json": "live-scoring.json",
        "grafana/dashboards/creditcard-model-quality.json": "model-quality.json",
        "grafana/dashboards/creditcard-model-drift.json": "model-drift.json",
        "grafana/dashboards/creditcard-alerts.json": "fraud-alerts.json",
        "kibana/fraud-alerts.ndjson": "fraud-alerts.ndjson",
    }
    for rel, name in mapping.items():
        assert files[rel] == committed[name], rel
    for path, text in gen.committed_files().items():
        assert path.read_text() == text, path  # and the committed files are up to date


def test_a_data_set_without_value_or_label_gets_fewer_panels():
    from dataclasses import replace

    bare = replace(PROFILES["machine_failure"], label=None, message_fields=("UDI", "Type"))
    files = files_of(bare)
    alerts = files["grafana/dashboards/machine_failure-alerts.json"]
    assert [p["title"] for p in alerts["panels"]] == [
        "Critical alerts",
        "Alerts over time by level",
        "Max score and threshold by model",
        "Latest alerts",
    ]
    assert "grafana/dashboards/machine_failure-model-quality.json" not in files  # no ground truth
    for dash in (v for k, v in files.items() if k.endswith(".json")):
        for _panel, target in _targets(dash):
            assert '"label"' not in target["query"], dash["uid"]
        for org in _walk(dash["panels"], "indexByName"):
            assert "label" not in org
    (objects,) = [v for k, v in files.items() if k.endswith(".ndjson")]
    check_kibana(objects, bare, alert_doc_keys(bare))


def _scored_line(profile: Profile, model: str, version: str, i: int, ts: int) -> str:
    fields = []
    for k, v in row_of(profile, i).items():
        if model == "b" and k.endswith("_challenger"):
            continue  # only model a has a challenger
        if isinstance(v, bool):
            fields.append((k, format_bool(v)))
        elif isinstance(v, int):
            fields.append((k, format_int(v)))
        elif isinstance(v, float):
            fields.append((k, format_float(v)))
        else:
            fields.append((k, escape_string(str(v))))
    tags = {"source": "s", "model": model, "model_version": version}
    tags.update({t: "x" for t in profile.tags})
    return line(profile.scored_measurement, tags, fields, ts)


@pytest.mark.influxdb
@pytest.mark.parametrize("name", ["machine_failure", "awkward"])
def test_every_generated_query_runs_on_a_real_influxdb(influxdb, name):
    profile = PROFILES[name]
    db, rp = profile.database, profile.retention_policy
    influxdb.create_database(db)
    if rp != "autogen":
        q = f'CREATE RETENTION POLICY "{rp}" ON "{db}" DURATION 1w REPLICATION 1 DEFAULT'
        influxdb.query(q, post=True, epoch=None)
    now = time.time_ns()
    inputs = SampleSource(
        measurement=profile.measurement,
        fields=[(profile.id_column, "string", ["r0"])]
        + ([(profile.label_field, "int", [0])] if profile.label else []),
        ids=["r0"],
        source="s",
    )
    lines = [f"{inputs.line(0)} {now - 5 * 10**9}"]
    error_point = {profile.id_column: escape_string("e"), "score_error": escape_string("missing")}
    tags = {"source": "s", "model": "a", "model_version": "1"}
    lines.append(line(profile.scored_measurement, tags, error_point.items(), now - 10**9))
    for i in range(20):
        ts = now - (i + 1) * 10**9
        lines.append(_scored_line(profile, "a", "1", i, ts))
        lines.append(_scored_line(profile, "b", "3", i, ts))
        lines.append(
            "model_quality,model=a,model_version=1 precision=0.5,recall=0.5,alert_rate=0.1,"
            f"tp=1i,fp=1i,fn=1i,flagged=2i,total=20i {ts}"
        )
        for model, version in (("a", "1"), ("b", "3")):
            drift = [(f"psi_{f}", format_float(0.01 * (i % 9 + 1))) for f in profile.feature_names]
            drift += [("psi_score", format_float(0.02)), ("psi_max", format_float(0.3))]
            drift += [("drift_feature", escape_string(profile.feature_names[0]))]
            drift += [("drift_level", escape_string("warning" if i % 4 else "ok"))]
            drift += [("count", format_int(600)), ("unscored", format_int(0))]
            tags = {"model": model, "model_version": version, "data_set": profile.name}
            lines.append(line(contract.DRIFT_MEASUREMENT, tags, drift, ts))
    r = influxdb._session.post(
        influxdb.url + "/write",
        params={"db": db, "rp": rp, "precision": "ns"},
        data="\n".join(lines).encode(),
        timeout=30,
    )
    assert r.status_code == 204, r.text

    def run(query: str, models: str) -> list[dict]:
        q = (
            query.replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval_ms", "10000")
            .replace("$__interval", "10s")
            .replace("$model", models)
        )
        (result,) = influxdb.query(q, db=db, epoch=None)
        assert "error" not in result, (q, result)
        return result.get("series", [])

    checked = 0
    for rel, dash in files_of(profile).items():
        if not rel.endswith(".json") or rel.endswith("-alerts.json"):
            continue
        (var,) = dash["templating"]["list"]
        assert {v[1] for s in run(var["query"], "") for v in s["values"]} == {"a", "b"}
        for panel, target in _targets(dash):
            if (target.get("datasource") or panel["datasource"])["type"] != "influxdb":
                continue  # the drift alerts from Elasticsearch
            series = run(target["query"], "(a|b)")
            models = {s.get("tags", {}).get("model") for s in series}
            if '"model" =~' in target["query"]:
                assert models and models <= {"a", "b"}, (rel, panel["title"], target["refId"])
                checked += 1
            else:
                assert series, (rel, panel["title"])  # the input throughput
    assert checked >= 14


@pytest.mark.slow
def test_the_cli_writes_a_data_sets_files(tmp_path):
    script = ROOT / "compose" / "scripts" / "gen_dashboards.py"
    r = subprocess.run(
        [sys.executable, str(script), "--profile", "machine_failure", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "grafana/dashboards/machine_failure-alerts.json",
        "grafana/dashboards/machine_failure-live-scoring.json",
        "grafana/dashboards/machine_failure-model-drift.json",
        "grafana/dashboards/machine_failure-model-quality.json",
        "grafana/provisioning/datasources/machine_failure.yaml",
        "kibana/machine-failure-alerts.ndjson",
    ]
    r = subprocess.run(
        [sys.executable, str(script), "--profile", "machine_failure"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--out-dir" in r.stderr


@pytest.mark.slow
def test_the_import_script_imports_every_data_sets_objects(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    kibana = tmp_path / "kibana"
    kibana.mkdir()
    shutil.copy(ROOT / "compose" / "kibana" / "import.sh", kibana / "import.sh")
    shutil.copy(ROOT / "compose" / "kibana" / "fraud-alerts.ndjson", kibana)
    mf = gen.profile_files(PROFILES["machine_failure"])["kibana/machine-failure-alerts.ndjson"]
    (kibana / "machine-failure-alerts.ndjson").write_text(mf)
    _FakeKibana.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKibana)
    serve_in_thread(server)
    try:
        env = {
            **os.environ,
            "KIBANA_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "ELASTIC_PASSWORD": "pw",
            "KIBANA_IMPORT_TIMEOUT": "10",
        }
        r = subprocess.run(
            ["sh", str(kibana / "import.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        titles = [
            next(o for o in call["objects"] if o["type"] == "index-pattern")["id"]
            for call in _FakeKibana.received
        ]
        assert titles == ["fraud-alerts", "machine-failure-alerts"]
    finally:
        server.shutdown()
        server.server_close()
        _FakeKibana.received = []
