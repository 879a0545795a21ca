"""Drift alerts and explanations in the alert sink, and both end to end: the agent on its real
sockets, the alert Kapacitor's alert node builds from the shipped task files, the sink on a
real port, the in-process Elasticsearch peer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import requests
from agent_helpers import Client, close_clients, register_tiny, row_point
from conftest import WAIT
from es_peer import ElasticsearchPeer, alert_bodies
from kapacitor_alert import alert_body, go_value, render
from kapacitor_peer import rfc3339
from test_alert_sink_http import RunningSink, es_config, wait_until
from test_tickscripts import TICK_DIR, parse, resolve, resolved_udf_options

from alert_sink.errors import ConfigError, PayloadError
from alert_sink.es import index_template
from alert_sink.payload import parse_alert
from alert_sink.routing import DRIFT, LEGACY, PROFILE_DOC_FIELDS, Router, layout_for
from models import contract
from models.drift import reference_profile
from models.profile import load_profile
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame
from udf_agent.server import AgentConfig, AgentServer

CC = load_profile("creditcard")
MF = load_profile("machine_failure")
ROUTER = Router([CC, MF], default_index=contract.ALERT_INDEX)
RECORDED = json.loads(alert_bodies()["00-critical-prev-critical.json"])


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


def _body(series: dict, **top) -> bytes:
    body = {**RECORDED, **top, "data": {"series": [series]}}
    return json.dumps(body).encode()


def drift_series(**fields) -> dict:
    row = {
        "time": "2026-11-22T21:00:00Z",
        "count": 12000,
        "drift_feature": "V14",
        "drift_level": "critical",
        "psi_V14": 0.61,
        "psi_max": 0.61,
        "psi_score": 0.12,
        "unscored": 3,
    }
    row.update(fields)
    columns = ["time", *sorted(k for k in row if k != "time")]
    return {
        "name": "model_drift",
        "tags": {"model": "creditcard", "model_version": "3", "data_set": "creditcard"},
        "columns": columns,
        "values": [[row[c] for c in columns]],
    }


# -- documents ---------------------------------------------------------------------------------
def test_an_anomaly_carries_its_explanation_and_its_kind():
    (doc,) = parse_alert(json.dumps(RECORDED))
    assert list(doc.source) == contract.ALERT_DOC_FIELDS
    assert doc.source["alert.kind"] == "anomaly" and doc.source["explanation"] is None
    series = dict(RECORDED["data"]["series"][0])
    series["columns"] = [*series["columns"], "top_features"]
    series["values"] = [[*series["values"][0], "V14:+0.42,V4:+0.18,Amount:+0.05"]]
    for router in (None, ROUTER):
        (doc,) = parse_alert(_body(series), router=router)
        assert doc.source["explanation"] == [
            {"feature": "V14", "contribution": 0.42},
            {"feature": "V4", "contribution": 0.18},
            {"feature": "Amount", "contribution": 0.05},
        ]
        assert "fields.top_features" not in doc.source and doc.warnings == ()


def test_a_profile_anomaly_names_awkward_features_in_its_explanation():
    name = "Air temperature [K]"
    text = contract.format_top_features([name, "a,b:c%"], [0.5, 0.25], 3)
    assert text == "Air temperature [K]:+0.5,a%2Cb%3Ac%25:+0.25"
    row = {"time": "2026-11-22T21:00:00Z", "UDI": "7", "score": 0.9, "threshold": 0.3}
    row["top_features"] = text
    columns = list(row)
    series = {
        "name": MF.scored_measurement,
        "tags": {"model": "mf", "model_version": "1"},
        "columns": columns,
        "values": [[row[c] for c in columns]],
    }
    (doc,) = parse_alert(_body(series), router=ROUTER)
    assert doc.index == MF.alert_index and list(doc.source)[: len(PROFILE_DOC_FIELDS)] == (
        PROFILE_DOC_FIELDS
    )
    assert [e["feature"] for e in doc.source["explanation"]] == [name, "a,b:c%"]
    assert "fields.top_features" not in doc.source


@pytest.mark.parametrize(
    "text, why",
    [
        ("V14", "not name:contribution"),
        ("V14:+0.42,,V4:+0.1", "empty entry"),
        (":0.3", "not name:contribution"),
        ("V14:high", "is not a number"),
        ("V14:nan", "not finite"),
        ("V14:+inf", "not finite"),
        (42, "not a string"),
    ],
)
def test_a_malformed_explanation_is_left_out_and_the_alert_kept(text, why):
    series = dict(RECORDED["data"]["series"][0])
    series["columns"] = [*series["columns"], "top_features"]
    series["values"] = [[*series["values"][0], text]]
    (doc,) = parse_alert(_body(series))
    assert doc.source["explanation"] is None and doc.source["txn_id"] == "t1"
    (warning,) = doc.warnings
    assert why in warning and "top_features" in warning


def test_an_empty_top_features_is_an_empty_explanation():
    series = dict(RECORDED["data"]["series"][0])
    series["columns"] = [*series["columns"], "top_features"]
    series["values"] = [[*series["values"][0], ""]]  # no feature pushed the score up
    (doc,) = parse_alert(_body(series))
    assert doc.source["explanation"] == [] and doc.warnings == ()


def test_a_drift_window_is_a_drift_document_in_its_data_sets_index():
    for router in (None, Router(default_index="other"), ROUTER):
        (doc,) = parse_alert(_body(drift_series(), id="drift:creditcard"), router=router)
        assert list(doc.source) == contract.DRIFT_ALERT_DOC_FIELDS
        assert doc.source["alert.kind"] == "drift" and doc.kind == "drift"
        assert doc.source["drift.feature"] == "V14" and doc.source["drift.psi"] == 0.61
        assert doc.source["drift.psi_score"] == 0.12 and doc.source["drift.level"] == "critical"
        assert (doc.source["drift.count"], doc.source["drift.unscored"]) == (12000, 3)
        assert doc.source["model.name"] == "creditcard" and doc.source["model.version"] == "3"
        assert doc.index == (CC.alert_index if router is ROUTER else None)
    series = drift_series()
    series["tags"]["data_set"] = MF.name
    (doc,) = parse_alert(_body(series), router=ROUTER)
    assert doc.index == MF.alert_index and doc.kind == "drift"
    # a window without a score distribution (scoring failed) still alerts
    series = drift_series()
    i = series["columns"].index("psi_score")
    del series["columns"][i], series["values"][0][i]
    (doc,) = parse_alert(_body(series))
    assert doc.source["drift.psi_score"] is None


def test_a_drift_alert_of_an_unknown_data_set_goes_to_the_default_index(caplog):
    series = drift_series()
    series["tags"]["data_set"] = "pumps"
    router = Router([MF], default_index=contract.ALERT_INDEX)
    with caplog.at_level(logging.WARNING, "alert_sink.routing"):
        for _ in range(3):
            (doc,) = parse_alert(_body(series), router=router)
            assert doc.index is None and doc.kind == "drift"
    assert [r.message for r in caplog.records].count(
        "event=unrouted_drift data_set='pumps' index=fraud-alerts (no --profile names it)"
    ) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"psi_max": "high"}, "column 'psi_max' must be a number"),
        ({"count": 1.5}, "column 'count' must be an integer"),
        ({"drift_feature": 3}, "column 'drift_feature' must be a string"),
        ({"psi_score": float("inf")}, "must be finite"),
    ],
)
def test_a_bad_drift_value_is_a_400_naming_the_column(change, message):
    body = _body(drift_series(**change)).replace(b"Infinity", b"1e999")
    with pytest.raises(PayloadError, match=message):
        parse_alert(body)


def test_a_profile_cannot_score_into_the_drift_measurement():
    from dataclasses import replace

    with pytest.raises(ConfigError, match="model_drift"):
        Router([replace(MF, scored_measurement="model_drift")], default_index="x")


def test_every_index_template_holds_drift_documents_and_explanations():
    for name, layouts in ROUTER.indices().items():
        assert DRIFT.kind in {layout.kind for layout in layouts}, name
        props = index_template(name, layouts)["template"]["mappings"]["properties"]
        assert props["alert"]["properties"]["kind"]["type"] == "keyword"
        assert props["drift"]["properties"]["psi"] == {"type": "float"}
        assert props["drift"]["properties"]["count"] == {"type": "long"}
        explanation = props["explanation"]["properties"]
        assert explanation["feature"]["type"] == "keyword"
        assert explanation["contribution"] == {"type": "float"}
    assert {layout.name for layout in ROUTER.indices()[contract.ALERT_INDEX]} == {
        LEGACY.name,
        DRIFT.name,
        layout_for(CC).name,
        "drift:creditcard",
    }


# -- over HTTP, into the Elasticsearch peer -------------------------------------------------
@pytest.fixture
def peer():
    p = ElasticsearchPeer(version="9.5.2").start()
    yield p
    p.stop()


@pytest.mark.slow
def test_a_malformed_explanation_is_counted_logged_and_the_alert_indexed(tmp_path, peer, caplog):
    series = dict(RECORDED["data"]["series"][0])
    series["columns"] = [*series["columns"], "top_features"]
    series["values"] = [[*series["values"][0], "V14:+0.4,V4"]]
    sink = RunningSink(es_config(tmp_path, peer.url))
    try:
        with caplog.at_level(logging.WARNING, "alert_sink.http"):
            r = sink.post(_body(series))
        assert r.status_code == 202, r.text
        wait_until(lambda: len(peer.docs()) == 1, what="the alert indexed")
        (doc,) = peer.docs().values()
        assert doc["explanation"] is None and doc["txn_id"] == "t1"
        assert any("event=explanation_dropped" in m for m in caplog.messages)
        metrics = requests.get(f"{sink.url}/metrics", timeout=10).text
        assert "alert_sink_explanations_invalid_total 1.0" in metrics
        assert 'alert_sink_documents_by_kind_total{kind="anomaly"} 1.0' in metrics
    finally:
        sink.close()


@pytest.mark.slow
def test_an_index_made_by_an_older_sink_gets_the_new_fields(tmp_path, peer):
    """A template shapes only indices created after it: the sink adds the fields it now
    writes (alert.kind, explanation, drift.*) to an existing index, or every new document
    would be refused by its strict mapping."""
    old = index_template(contract.ALERT_INDEX)
    assert "drift" not in old["template"]["mappings"]["properties"]  # credit cards only
    old["template"]["mappings"]["properties"].pop("explanation")
    old["template"]["mappings"]["properties"]["alert"]["properties"].pop("kind")
    requests.put(f"{peer.url}/_index_template/{contract.ALERT_INDEX}", json=old, timeout=10)
    requests.put(f"{peer.url}/{contract.ALERT_INDEX}", timeout=10)
    series = dict(RECORDED["data"]["series"][0])
    series["columns"] = [*series["columns"], "top_features"]
    series["values"] = [[*series["values"][0], "V14:+0.42"]]
    sink = RunningSink(es_config(tmp_path, peer.url))
    try:
        assert sink.post(_body(series)).status_code == 202
        assert sink.post(_body(drift_series(), id="drift:creditcard")).status_code == 202
        wait_until(lambda: len(peer.docs()) == 2, what="both documents indexed")
        assert sink.sink.spool.dead_letter_count() == 0
        kinds = sorted(d["alert.kind"] for d in peer.docs().values())
        assert kinds == ["anomaly", "drift"]
        mapping = peer.mappings[contract.ALERT_INDEX]["properties"]
        assert mapping["explanation"]["properties"]["feature"]["type"] == "keyword"
    finally:
        sink.close()


@pytest.mark.slow
def test_a_mapping_conflict_is_logged_and_does_not_stop_shipping(tmp_path, peer, caplog):
    old = index_template(contract.ALERT_INDEX)
    props = old["template"]["mappings"]["properties"]
    props["explanation"] = {"type": "keyword"}  # a field of the same name, another type
    requests.put(f"{peer.url}/_index_template/{contract.ALERT_INDEX}", json=old, timeout=10)
    requests.put(f"{peer.url}/{contract.ALERT_INDEX}", timeout=10)
    sink = RunningSink(es_config(tmp_path, peer.url))
    try:
        with caplog.at_level(logging.ERROR, "alert_sink.elasticsearch"):
            assert sink.post(json.dumps(RECORDED).encode()).status_code == 202
            wait_until(lambda: len(peer.docs()) == 1, what="the alert without explanation")
        failed = [m for m in caplog.messages if "event=mapping_update_failed" in m]
        assert len(failed) == 1 and "field=explanation" in failed[0], failed
        # the other new fields made it: drift documents are taken
        assert sink.post(_body(drift_series())).status_code == 202
        wait_until(lambda: len(peer.docs()) == 2, what="the drift alert")
        series = dict(RECORDED["data"]["series"][0])
        series["columns"] = [*series["columns"], "top_features"]
        series["values"] = [[*series["values"][0], "V14:+0.42"]]
        assert sink.post(_body(series, time="2026-11-22T20:56:08Z")).status_code == 202
        wait_until(lambda: sink.sink.spool.dead_letter_count() == 1, what="the refused one")
    finally:
        sink.close()


# -- end to end: agent -> Kapacitor-shaped alert -> sink -> Elasticsearch ------------------
def _point_fields(p) -> dict:
    return {**p.fieldsDouble, **p.fieldsInt, **p.fieldsString, **p.fieldsBool}


def _task(name: str) -> tuple[dict, object]:
    data = json.loads((TICK_DIR / "tasks" / f"{name}.json").read_text())
    template = parse((TICK_DIR / "templates" / f"{data['template-id']}.tick").read_text())
    return data, template


def _prop(template, name: str, data: dict, i: int = 0):
    (call,) = [c for c in template.calls(".", name)]
    return resolve(call.args[i], template, data["vars"])


def _init(path: Path, task: str, node: str) -> Client:
    """Connect as Kapacitor does for the task's UDF node: init with the options the shipped
    task file and its template resolve to."""
    data, template = _task(task)
    c = Client(path, timeout=WAIT)
    init = pb.Request()
    init.init.taskID, init.init.nodeID = task, node
    init.init.options.extend(resolved_udf_options(template, data["vars"]))
    c.send(encode_frame(init.SerializeToString()))
    resp = c.recv_kind("init").init
    assert resp.success, resp.error
    return c


@pytest.mark.slow
def test_an_alert_explains_itself_from_the_agent_to_elasticsearch(tmp_path, peer):
    reg = Registry(tmp_path / "registry")
    register_tiny(reg, "creditcard")  # y depends on V1 + V2
    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "udf.sock", registry=reg.root), registry=reg
    ).start()
    sink = RunningSink(es_config(tmp_path, peer.url))
    try:
        c = _init(tmp_path / "udf.sock", "score_creditcard", "score2")
        row = np.zeros(len(contract.FEATURES))
        row[1] = row[2] = 4.0  # V1 and V2: far over the threshold
        t = 1_795_000_000_123_456_789
        c.send(encode_frame(pb.Request(point=row_point(row, t=t, txn="e1")).SerializeToString()))
        (scored,) = c.recv_points(1)
        fields = _point_fields(scored)
        assert fields["is_anomaly"] is True
        top = contract.parse_top_features(fields["top_features"])
        assert len(top) == 3 and {top[0][0], top[1][0]} == {"V1", "V2"}  # .explain(3)

        data, template = _task("fraud_alert_creditcard")
        # .crit(lambda: "is_anomaly" == TRUE): CRITICAL
        body = alert_body(
            name=contract.SCORED_MEASUREMENT,  # influxDBOut wrote it, the alert task read it
            time_rfc3339=rfc3339(t),
            tags=dict(scored.tags),
            fields=fields,
            id_template=_prop(template, "id", data),
            message_template=_prop(template, "message", data),
            details_template=_prop(template, "details", data),
            level="CRITICAL",
        )
        message = json.loads(body)["message"]
        assert message.endswith("; top features " + fields["top_features"]), message
        assert "<no value>" not in message
        r = sink.post(body)
        assert r.status_code == 202, r.text
        wait_until(lambda: len(peer.docs()) == 1, what="the alert indexed")
        (doc,) = peer.docs().values()
        assert doc["alert.kind"] == "anomaly" and doc["txn_id"] == "e1"
        assert doc["explanation"] == [{"feature": f, "contribution": v} for f, v in top]
        assert doc["alert.message"] == message
    finally:
        sink.close()
        srv.stop()


def _drift_registry(tmp_path: Path) -> Registry:
    from agent_helpers import train_tiny

    reg = Registry(tmp_path / "registry")
    model, X, _ = train_tiny(0, n=6000)
    kinds = ["float"] * len(contract.FEATURES)
    ref = reference_profile(X, contract.FEATURES, kinds, model.predict_proba(X)[:, 1])
    card = reg.register(
        "creditcard", model, features=contract.FEATURES, threshold=0.5, extra={"reference": ref}
    )
    reg.promote("creditcard", card.version, "production")
    return reg


def _window(c: Client, rows: np.ndarray, t0: int):
    begin = pb.Request()
    begin.begin.name, begin.begin.size = contract.INPUT_MEASUREMENT, len(rows)
    c.send(encode_frame(begin.SerializeToString()))
    for i, r in enumerate(rows):
        c.send(
            encode_frame(pb.Request(point=row_point(r, t=t0 + i, txn=f"w{i}")).SerializeToString())
        )
    end = pb.Request()
    end.end.name, end.end.tmax = contract.INPUT_MEASUREMENT, t0 + len(rows) - 1
    c.send(encode_frame(end.SerializeToString()))
    return c.recv_kind("point").point


@pytest.mark.slow
def test_a_drift_alert_from_the_agent_reaches_elasticsearch_as_drift(tmp_path, peer):
    """The shipped drift task: its options on the agent's drift socket, a window with one
    feature shifted by two standard deviations, the point the task tags with its data set,
    its level from the alert's lambdas, its texts from the template; then the recovery."""
    reg = _drift_registry(tmp_path)
    srv = AgentServer(
        AgentConfig(
            socket_path=tmp_path / "udf.sock",
            drift_socket_path=tmp_path / "drift.sock",
            registry=reg.root,
        ),
        registry=reg,
    ).start()
    sink = RunningSink(es_config(tmp_path, peer.url, profiles=(CC, MF)))
    data, template = _task("drift_creditcard")
    tag_key, tag_value = _prop(template, "tag", data, 0), _prop(template, "tag", data, 1)
    assert (tag_key, tag_value) == (contract.DATA_SET_TAG, CC.name)
    try:
        c = _init(tmp_path / "drift.sock", "drift_creditcard", "drift2")
        rng = np.random.default_rng(5)
        rows = rng.normal(size=(600, len(contract.FEATURES)))
        rows[:, contract.FEATURES.index("V3")] += 2.0
        previous = "OK"
        for step, window in enumerate((rows, rng.normal(size=(600, len(contract.FEATURES))))):
            t0 = 1_795_000_000_000_000_000 + step * 60 * 10**9
            point = _window(c, window, t0)
            fields = _point_fields(point)
            # what the dashboards and the sink read of model_drift is what the agent writes
            psi = {contract.DRIFT_PSI_PREFIX + f for f in contract.FEATURES}
            assert set(fields) == psi | set(contract.DRIFT_FIELDS)
            assert point.name == contract.DRIFT_MEASUREMENT
            assert set(point.tags) == set(contract.OUTPUT_TAGS)
            tags = {**point.tags, tag_key: tag_value}  # |default().tag('data_set', ...)
            assert fields["drift_level"] != "insufficient"  # |where() lets it through
            level = {"critical": "CRITICAL", "warning": "WARNING"}.get(fields["drift_level"], "OK")
            body = alert_body(
                name=point.name,
                time_rfc3339=rfc3339(point.time),
                tags=tags,
                fields=fields,
                id_template=_prop(template, "id", data),
                message_template=_prop(template, "message", data),
                details_template=_prop(template, "details", data),
                level=level,
                previous_level=previous,
                task="drift_creditcard",
            )
            previous = level
            r = sink.post(body)
            assert r.status_code == 202, r.text
            wait_until(lambda n=step + 1: len(peer.docs()) == n, what=f"drift alert {step}")
        docs = sorted(peer.docs(contract.ALERT_INDEX).values(), key=lambda d: d["@timestamp"])
        crit, ok = docs
        assert [d["alert.kind"] for d in docs] == ["drift", "drift"]
        assert crit["alert.id"] == ok["alert.id"] == "drift:creditcard"
        assert crit["alert.level"] == "CRITICAL" and ok["alert.level"] == "OK"
        assert crit["drift.feature"] == "V3" and crit["drift.level"] == "critical"
        assert crit["drift.psi"] > 0.25 and crit["drift.count"] == 600
        assert crit["alert.message"].startswith(
            f"Input drift (CRITICAL) of model creditcard v1: V3 PSI {crit['drift.psi']:.3f}, "
            f"score PSI {crit['drift.psi_score']:.3f}"
        ), crit["alert.message"]
        assert crit["alert.message"].endswith(", 600 rows")
        assert ok["drift.psi"] < 0.1 and ok["drift.level"] == "ok"
        assert not peer.docs(MF.alert_index)
    finally:
        sink.close()
        srv.stop()


def test_the_renderer_prints_as_go_does():
    data = {"Fields": {"a": 0.91, "b": 11.0, "c": 1e-05, "z": 0.0, "s": ""}, "Tags": {}}
    assert render('{{ index .Fields "a" }} {{ index .Fields "b" }}', data) == "0.91 11"
    assert render('{{ index .Fields "c" }}|{{ index .Fields "x" }}', data) == "1e-05|<no value>"
    assert render('{{ with index .Fields "z" }}zero{{ end }}.', data) == "."
    assert render('{{ with index .Fields "s" }}s{{ end }}{{ with index .Fields "a" }}{{ . }}{{ end }}', data) == "0.91"  # fmt: skip
    assert render('{{ printf "%.3f" (index .Fields "a") }}', data) == "0.910"
    assert go_value(1e21) == "1e+21" and go_value(123456789.0) == "123456789"


# -- the shipped drift task on a real InfluxDB, through the Kapacitor peer ------------------
@pytest.mark.slow
@pytest.mark.influxdb
def test_the_shipped_drift_task_writes_model_drift_and_alerts_through_the_sink(
    tmp_path, peer, influxdb
):
    """drift_creditcard as the load directory defines it (its template and task file, the
    window shortened to one minute), replayed by the Kapacitor peer over two minutes of
    input in a real InfluxDB: the query, @drift() on the agent's socket, the data_set tag,
    model_drift written back, the alert node's levels and state, the post to the sink."""
    from kapacitor_peer import KapacitorPeer

    from udf_agent.supervise.kapacitor import KapacitorClient

    influxdb.create_database(contract.DATABASE)
    minute = 60 * 10**9
    t0 = (1_795_000_000_000_000_000 // minute) * minute
    rng = np.random.default_rng(11)
    lines = []
    for m, shift in enumerate((0.0, 2.0)):  # minute 1 as trained, minute 2 with V3 moved
        rows = rng.normal(size=(600, len(contract.FEATURES)))
        rows[:, contract.FEATURES.index("V3")] += shift
        for i, row in enumerate(rows):
            values = ",".join(f"{f}={v:.6f}" for f, v in zip(contract.FEATURES, row, strict=True))
            t = t0 + m * minute + i * 10**8
            lines.append(f'transactions,source=pub {values},txn_id="m{m}-{i}",label=0i {t}')
    influxdb.write(contract.DATABASE, "\n".join(lines))

    reg = _drift_registry(tmp_path)
    drift_sock = tmp_path / "drift.sock"
    srv = AgentServer(
        AgentConfig(
            socket_path=tmp_path / "udf.sock", drift_socket_path=drift_sock, registry=reg.root
        ),
        registry=reg,
    ).start()
    sink = RunningSink(es_config(tmp_path, peer.url, profiles=(CC, MF)))
    kapacitor = KapacitorPeer(
        udfs={"drift": drift_sock},
        influx_url=influxdb.url,
        alert_endpoints={"alert-sink": (f"{sink.url}/kapacitor", ("kapacitor", "s3cret"))},
    ).start()
    try:
        data, _ = _task("drift_creditcard")
        task_vars = {**data["vars"], "period": {"type": "duration", "value": "1m"}}
        kapacitor.load_task(
            "drift_creditcard",
            (TICK_DIR / "templates" / "model_drift.tick").read_text(),
            task_vars,
            template_id=data["template-id"],
            dbrps=data["dbrps"],
        )
        client = KapacitorClient(kapacitor.url)
        client.replay_batch(
            replay_id="r1", task_id="drift_creditcard", start_ns=t0, stop_ns=t0 + 2 * minute
        )
        wait_until(lambda: client.replay("r1")["status"] != "running", what="the replay")
        assert client.replay("r1")["status"] == "finished", client.replay("r1")
        kapacitor.flush()

        (result,) = influxdb.query(
            'SELECT * FROM "model_drift" GROUP BY *', db=contract.DATABASE, epoch="ns"
        )
        (series,) = result["series"]
        assert series["tags"] == {
            "model": "creditcard",
            "model_version": "1",
            "data_set": "creditcard",
        }
        rows = [dict(zip(series["columns"], v, strict=True)) for v in series["values"]]
        assert [r["time"] for r in rows] == [t0 + minute, t0 + 2 * minute]  # the windows' ends
        assert [r["drift_level"] for r in rows] == ["ok", "critical"]
        assert [r["count"] for r in rows] == [600, 600] and rows[1]["drift_feature"] == "V3"
        (keys,) = influxdb.query(
            'SHOW FIELD KEYS FROM "model_drift"', db=contract.DATABASE, epoch=None
        )
        types = dict(keys["series"][0]["values"])
        assert types["count"] == "integer" and types["psi_V3"] == "float"

        # the first window is ok (no alert: nothing changed), the second raises one
        ((body, status),) = kapacitor.alerts_posted
        assert status == 202, body
        wait_until(lambda: len(peer.docs()) == 1, what="the drift alert indexed")
        (doc,) = peer.docs(contract.ALERT_INDEX).values()
        assert doc["alert.kind"] == "drift" and doc["alert.level"] == "CRITICAL"
        assert doc["alert.id"] == "drift:creditcard" and doc["drift.feature"] == "V3"
        assert doc["drift.psi"] == rows[1]["psi_max"] and doc["drift.count"] == 600
        assert doc["alert.message"].startswith("Input drift (CRITICAL) of model creditcard v1")
    finally:
        kapacitor.stop()
        sink.close()
        srv.stop()


# -- what a real Kapacitor posted for these tasks -------------------------------------------
RECORDED_DIR = Path(__file__).parent / "fixtures" / "kapacitor-alerts-drift-explain"
TEMPLATES = json.loads((RECORDED_DIR / "templates.json").read_text())


def _recorded(name: str) -> dict:
    return json.loads((RECORDED_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize(
    "name, task",
    [
        ("anomaly-with-top-features", "fraud_alert_creditcard"),
        ("drift-critical-small-window", "drift_creditcard"),
        ("drift-ok-recovery", "drift_creditcard"),
        ("drift-critical", "drift_creditcard"),
    ],
)
def test_the_alerts_are_built_as_kapacitor_1_5_built_them(name, task):
    """The texts Kapacitor rendered from the tasks' Go templates, and the body's shape, are
    what tests/kapacitor_alert.py builds from the same row: the renderer the end-to-end
    tests rely on is held to the real thing."""
    real = _recorded(name)
    (series,) = real["data"]["series"]
    (row,) = series["values"]
    fields = dict(zip(series["columns"][1:], row[1:], strict=True))
    mine = json.loads(
        alert_body(
            name=series["name"],
            time_rfc3339=row[0],
            tags=series["tags"],
            fields=fields,
            id_template=TEMPLATES[task]["id"],
            message_template=TEMPLATES[task]["message"],
            details_template=TEMPLATES[task]["details"],
            level=real["level"],
            previous_level=real["previousLevel"],
            duration_ns=real["duration"],
            recoverable=real["recoverable"],
        )
    )
    assert mine == real
    assert list(mine) == list(real) and mine["data"]["series"][0]["columns"] == series["columns"]


def test_the_recorded_alerts_become_an_explained_anomaly_and_drift_documents():
    (doc,) = parse_alert(json.dumps(_recorded("anomaly-with-top-features")), router=ROUTER)
    assert doc.kind == "anomaly" and doc.warnings == ()
    assert doc.source["explanation"] == [
        {"feature": "V2", "contribution": 7.34},
        {"feature": "V1", "contribution": 7.3},
        {"feature": "Time", "contribution": 0.145},
    ]
    assert doc.source["alert.message"].endswith("; top features V2:+7.34,V1:+7.3,Time:+0.145")
    levels = []
    for name in ("drift-critical-small-window", "drift-ok-recovery", "drift-critical"):
        (doc,) = parse_alert(json.dumps(_recorded(name)), router=ROUTER)
        assert doc.kind == "drift" and doc.index == CC.alert_index
        assert list(doc.source) == contract.DRIFT_ALERT_DOC_FIELDS
        levels.append((doc.source["alert.level"], doc.source["drift.level"]))
    assert levels == [("CRITICAL", "critical"), ("OK", "ok"), ("CRITICAL", "critical")]
    assert doc.source["drift.feature"] == "V3" and doc.source["drift.count"] == 899


@pytest.mark.slow
def test_the_local_store_lists_alerts_by_kind(tmp_path):
    from alert_sink import SinkConfig

    sink = RunningSink(SinkConfig(store_path=tmp_path / "alerts.db", token="s3cret"))
    try:
        for name in ("anomaly-with-top-features", "drift-critical", "drift-ok-recovery"):
            assert sink.post(json.dumps(_recorded(name)).encode()).status_code == 202
        auth = {"Authorization": "Bearer s3cret"}

        def listed(**params) -> list[dict]:
            r = requests.get(f"{sink.url}/alerts", params=params, headers=auth, timeout=10)
            assert r.status_code == 200, r.text
            return r.json()["alerts"]

        assert len(listed()) == 3
        drift = listed(kind="drift")
        assert [d["alert.level"] for d in drift] == ["OK", "CRITICAL"]  # in time order
        (anomaly,) = listed(kind="anomaly")
        assert anomaly["explanation"][0] == {"feature": "V2", "contribution": 7.34}
    finally:
        sink.close()
