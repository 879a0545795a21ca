"""Kibana saved objects, their import script, and the Grafana dashboard use the contract."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from es_peer import alert_bodies
from http_serving import serve_in_thread

from alert_sink.payload import parse_alert
from models.contract import ALERT_INDEX

REPO = Path(__file__).resolve().parents[1]
KIBANA = REPO / "compose" / "kibana"
NDJSON = KIBANA / "fraud-alerts.ndjson"
GRAFANA = REPO / "compose" / "grafana" / "dashboards" / "fraud-alerts.json"


def document_keys(*bodies: bytes) -> set[str]:
    """Every field of the documents the sink makes of ``bodies``, as Kibana and Grafana
    name them (an array of objects: ``explanation.feature``)."""
    keys: set[str] = set()
    for body in bodies:
        for doc in parse_alert(body):
            for key, value in doc.source.items():
                keys.add(key)
                if isinstance(value, list):
                    keys |= {f"{key}.{sub}" for item in value for sub in item}
    return keys


def _explained_and_drift() -> tuple[bytes, bytes]:
    recorded = json.loads(next(iter(alert_bodies().values())))
    series = recorded["data"]["series"][0]
    series["columns"].append("top_features")
    series["values"][0].append("V14:+0.42,V4:+0.18")
    drift = json.loads(json.dumps(recorded))
    drift["data"]["series"] = [
        {
            "name": "model_drift",
            "tags": {"model": "creditcard", "model_version": "3", "data_set": "creditcard"},
            "columns": ["time", "count", "drift_feature", "drift_level", "psi_max",
                        "psi_score", "unscored"],
            "values": [["2026-11-22T20:56:07Z", 600, "V14", "critical", 0.4, 0.1, 0]],
        }
    ]  # fmt: skip
    return json.dumps(recorded).encode(), json.dumps(drift).encode()


#: what an anomaly (with its explanation) and a drift alert give, parsed by the sink
FIELDS = document_keys(*_explained_and_drift())


def kibana_objects() -> list[dict]:
    lines = NDJSON.read_text().splitlines()
    assert all(line.strip() for line in lines)
    return [json.loads(line) for line in lines]


def field_of(name: str) -> str:
    # Kibana may address the keyword sub-field of a text field.
    return name.removesuffix(".keyword")


def test_kibana_objects_have_the_export_shape():
    objects = kibana_objects()
    for obj in objects:
        assert {
            "type",
            "id",
            "attributes",
            "references",
            "coreMigrationVersion",
            "typeMigrationVersion",
        } <= set(obj)
        assert re.fullmatch(r"8\.\d+\.\d+", obj["coreMigrationVersion"])
    assert len({(o["type"], o["id"]) for o in objects}) == len(objects)
    types = {o["type"] for o in objects}
    assert {"index-pattern", "visualization", "search", "dashboard"} <= types


def test_data_view_is_the_contract_index():
    (view,) = [o for o in kibana_objects() if o["type"] == "index-pattern"]
    assert view["attributes"]["title"] == ALERT_INDEX
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    for name in json.loads(view["attributes"]["fieldFormatMap"]):
        assert name in FIELDS


def test_every_reference_resolves_and_searches_use_the_data_view():
    objects = kibana_objects()
    present = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, ref
        meta = obj["attributes"].get("kibanaSavedObjectMeta")
        if meta and obj["type"] != "dashboard":
            source = json.loads(meta["searchSourceJSON"])
            names = {r["name"]: r for r in obj["references"]}
            ref = names[source["indexRefName"]]
            assert ref == {
                "id": ALERT_INDEX,
                "type": "index-pattern",
                "name": source["indexRefName"],
            }


def test_visualizations_and_search_use_only_contract_fields():
    used = set()
    for obj in kibana_objects():
        attrs = obj["attributes"]
        if obj["type"] == "visualization":
            state = json.loads(attrs["visState"])
            for agg in state["aggs"]:
                if "field" in agg["params"]:
                    used.add(field_of(agg["params"]["field"]))
        if obj["type"] == "search":
            used |= {field_of(c) for c in attrs["columns"]}
            used |= {field_of(s[0]) for s in attrs["sort"]}
        meta = attrs.get("kibanaSavedObjectMeta")
        if meta:
            query = json.loads(meta["searchSourceJSON"])["query"]["query"]
            used |= set(re.findall(r"([\w.@]+)\s*:", query))
    assert used, "no fields found"
    assert used <= FIELDS, used - FIELDS
    assert {"@timestamp", "alert.level", "amount", "score", "txn_id"} <= used
    assert {"explanation.feature", "explanation.contribution", "drift.feature"} <= used


def test_anomaly_objects_leave_drift_alerts_out_and_the_drift_search_keeps_them():
    queries = {}
    for obj in kibana_objects():
        meta = obj["attributes"].get("kibanaSavedObjectMeta")
        if meta and obj["type"] != "dashboard":
            queries[obj["id"]] = json.loads(meta["searchSourceJSON"])["query"]["query"]
    assert queries.pop("fraud-alerts-drift") == 'alert.kind : "drift"'
    assert queries and all('not alert.kind : "drift"' in q for q in queries.values()), queries


def test_dashboard_panels_match_references():
    (dash,) = [o for o in kibana_objects() if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    assert len(panels) == 7
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]


class _FakeKibana(BaseHTTPRequestHandler):
    received: list[dict] = []

    def log_message(self, *args):
        return

    def _auth_ok(self) -> bool:
        expected = "Basic " + base64.b64encode(b"elastic:pw").decode()
        return self.headers.get("Authorization") == expected

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if not self._auth_ok():
            return self._reply(401, {"statusCode": 401})
        self._reply(200, {"status": {"overall": {"level": "available"}}})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if not self._auth_ok():
            return self._reply(401, {"statusCode": 401})
        if self.headers.get("kbn-xsrf") is None:
            return self._reply(400, {"message": "Request must contain a kbn-xsrf header."})
        # multipart: pull the ndjson part out and parse it as Kibana would.
        boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
        part = raw.split(b"--" + boundary)[1]
        payload = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        objects = [json.loads(line) for line in payload.decode().splitlines() if line]
        self.received.append({"path": self.path, "objects": objects})
        self._reply(200, {"success": True, "successCount": len(objects), "errors": []})


@pytest.mark.slow
def test_import_script_posts_the_objects_to_kibana():
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
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
            ["sh", str(KIBANA / "import.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert "event=imported" in r.stdout
        (call,) = _FakeKibana.received
        assert call["path"] == "/api/saved_objects/_import?overwrite=true"
        assert call["objects"] == kibana_objects()
        env["ELASTIC_PASSWORD"] = "wrong"
        env["KIBANA_IMPORT_TIMEOUT"] = "0"
        r = subprocess.run(
            ["sh", str(KIBANA / "import.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 1 and "kibana_not_available" in r.stderr
    finally:
        server.shutdown()
        server.server_close()


def _walk(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def test_grafana_dashboard_uses_the_datasource_uid_and_contract_fields():
    dash = json.loads(GRAFANA.read_text())
    assert dash["uid"] and dash["title"]
    sources = list(_walk(dash, "datasource"))
    assert sources
    assert all(s == {"type": "elasticsearch", "uid": "es-fraud-alerts"} for s in sources)
    panels = dash["panels"]
    assert {p["type"] for p in panels} >= {"stat", "timeseries", "table"}
    used = {f for f in _walk(panels, "field")}
    used |= {
        f
        for t in _walk(panels, "targets")
        for q in t
        for f in re.findall(r"([\w.@]+):", q["query"])
    }
    used |= {f for f in _walk(dash["annotations"], "timeField")}
    used |= {f for f in _walk(dash["annotations"], "textField")}
    for org in _walk(panels, "indexByName"):
        used |= set(org)
    assert used <= FIELDS, used - FIELDS
    assert {"@timestamp", "alert.level", "amount", "score", "txn_id"} <= used
    assert all(t["timeField"] == "@timestamp" for t in _walk(panels, "targets") for t in t)


def test_grafana_alerts_dashboard_filters_by_model():
    dash = json.loads(GRAFANA.read_text())
    (var,) = dash["templating"]["list"]
    assert var["name"] == "model" and var["multi"] and var["includeAll"]
    assert json.loads(var["query"]) == {"find": "terms", "field": "model.name"}
    queries = [t["query"] for t in _walk(dash["panels"], "targets") for t in t]
    queries += [a["query"] for a in dash["annotations"]["list"]]
    assert queries and all(q.startswith("model.name:$model") for q in queries), queries
