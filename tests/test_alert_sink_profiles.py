"""Alerts of any data set: fixed contract fields, every other row field under fields.*,
the index chosen by the series' profile."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import free_port
from es_peer import ElasticsearchPeer, alert_bodies
from test_alert_sink_http import AUTH, RunningSink, es_config, wait_until

from alert_sink import ConfigError
from alert_sink.cli import build_parser, config_from_args
from alert_sink.errors import PayloadError
from alert_sink.es import index_template
from alert_sink.payload import parse_alert
from alert_sink.routing import LEGACY, PROFILE_DOC_FIELDS, Router, layout_for
from alert_sink.storage import Spool
from models.contract import ALERT_DOC_FIELDS, ALERT_INDEX
from models.profile import load_profile

REPO = Path(__file__).resolve().parents[1]
CC = load_profile("creditcard")
MF = load_profile("machine_failure")
BODIES = alert_bodies()


def mf_alert(n: int = 1, **changes) -> bytes:
    """A machine_failure alert shaped as Kapacitor posts it: time, then the fields in byte
    order; tags model, model_version, source."""
    ts = f"2026-11-22T21:00:{n % 60:02d}.000000{n % 1000:03d}Z"
    row = {
        "time": ts,
        "Air temperature [K]": 301.5,
        "Process temperature [K]": 310,  # a whole float comes without a fraction
        "Rotational speed [rpm]": 1282 + n,
        "Tool wear [min]": 212,
        "Torque [Nm]": 62.7,
        "Type": "L",
        "UDI": str(1000 + n),
        "is_anomaly": True,
        "label": 1,
        "score": 0.93,
        "threshold": 0.31,
    }
    row.update(changes)
    columns = ["time", *sorted(k for k in row if k != "time")]
    return json.dumps(
        {
            "id": "machine_failure:machine_failure",
            "message": f"Anomaly in machine_failure: UDI {row['UDI']} scored 0.93",
            "details": "UDI=1001 score=0.93",
            "time": ts,
            "duration": 0,
            "level": "CRITICAL",
            "data": {
                "series": [
                    {
                        "name": MF.scored_measurement,
                        "tags": {"model": "machine_failure", "model_version": "2", "source": "p1"},
                        "columns": columns,
                        "values": [[row[c] for c in columns]],
                    }
                ]
            },
            "previousLevel": "OK",
            "recoverable": True,
        }
    ).encode()


ROUTER = Router([CC, MF], default_index=ALERT_INDEX)


def test_a_profile_document_keeps_the_fixed_fields_and_carries_the_rest():
    (doc,) = parse_alert(mf_alert(1), router=ROUTER)
    src = doc.source
    assert list(src)[: len(PROFILE_DOC_FIELDS)] == PROFILE_DOC_FIELDS
    assert doc.index == MF.alert_index and doc.row_id == "1001"
    assert (src["id"], src["label"], src["source"]) == ("1001", 1, "p1")
    assert (src["score"], src["threshold"]) == (0.93, 0.31)
    assert (src["model.name"], src["model.version"]) == ("machine_failure", "2")
    carried = {k.removeprefix("fields."): v for k, v in src.items() if k.startswith("fields.")}
    assert carried == {
        "Air temperature [K]": 301.5,
        "Process temperature [K]": 310.0,
        "Rotational speed [rpm]": 1283,
        "Tool wear [min]": 212,
        "Torque [Nm]": 62.7,
        "Type": "L",
        "is_anomaly": True,
    }
    assert isinstance(carried["Process temperature [K]"], float)  # a float feature
    assert isinstance(carried["Tool wear [min]"], int)  # an int feature


def test_the_creditcard_route_adds_fields_to_the_contract_document():
    for name, body in BODIES.items():
        (plain,) = parse_alert(body)
        (routed,) = parse_alert(body, router=ROUTER)
        assert list(plain.source) == ALERT_DOC_FIELDS and plain.index is None
        assert list(routed.source)[: len(ALERT_DOC_FIELDS)] == ALERT_DOC_FIELDS, name
        assert {k: routed.source[k] for k in ALERT_DOC_FIELDS} == plain.source
        assert routed.source["fields.is_anomaly"] is not None
        assert "fields.Amount" not in routed.source  # it is `amount`
        assert routed.doc_id == plain.doc_id  # a re-delivery overwrites either way
        assert routed.index == ALERT_INDEX


def test_a_series_no_profile_names_takes_the_default_route(caplog):
    router = Router([MF], default_index=ALERT_INDEX)
    body = BODIES["00-critical-prev-critical.json"]
    for _ in range(3):
        (doc,) = parse_alert(body, router=router)
        assert list(doc.source) == ALERT_DOC_FIELDS and doc.index is None
    assert caplog.text.count("event=unrouted_series") == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Torque [Nm]": "62.7"}, "column 'Torque [Nm]' must be a number, got string"),
        ({"Tool wear [min]": 212.5}, "column 'Tool wear [min]' must be an integer"),
        ({"Type": 2}, "column 'Type' must be a string, got number"),
        ({"UDI": 1001}, "column 'UDI' must be a string, got number"),
        ({"vibration": 2**64}, "column 'vibration' is out of range"),
        ({"vibration": [1, 2]}, "column 'vibration' must be a number, a string or a boolean"),
        ({"label": 0.5}, "column 'label' must be an integer"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_field(change, message):
    with pytest.raises(PayloadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_alert(mf_alert(1, **change), router=ROUTER)


def test_an_infinite_number_is_refused_even_in_an_unknown_field():
    body = mf_alert(1, vibration=0.125).replace(b"0.125", b"1e400")
    with pytest.raises(PayloadError, match="column 'vibration' must be finite"):
        parse_alert(body, router=ROUTER)


def test_unknown_fields_and_extra_tags_are_carried():
    body = json.loads(mf_alert(2, vibration=3, note="hand-checked", flag=False))
    body["data"]["series"][0]["tags"]["plant site"] = "north, hall=2"
    (doc,) = parse_alert(json.dumps(body), router=ROUTER)
    assert doc.source["fields.vibration"] == 3 and doc.source["fields.flag"] is False
    assert doc.source["fields.note"] == "hand-checked"
    assert doc.source["fields.plant site"] == "north, hall=2"


def test_index_templates_type_the_profile_fields():
    legacy = index_template(ALERT_INDEX)
    mapping = legacy["template"]["mappings"]
    assert mapping["dynamic"] == "strict" and "fields" not in mapping["properties"]
    assert "dynamic_templates" not in mapping
    both = index_template(ALERT_INDEX, [LEGACY, layout_for(CC)])["template"]["mappings"]
    assert {k: v for k, v in both["properties"].items() if k != "fields"} == (mapping["properties"])
    fields = both["properties"]["fields"]
    assert fields["dynamic"] is True and both["date_detection"] is False
    assert fields["properties"]["V1"] == {"type": "double"}
    assert "Amount" not in fields["properties"]  # it is the fixed key `amount`
    mf = index_template(MF.alert_index, [layout_for(MF)])["template"]["mappings"]
    assert set(mf["properties"]) == {"@timestamp", "alert", "task", "id", "score",
                                     "threshold", "model", "label", "source", "explanation",
                                     "fields"}  # fmt: skip
    known = mf["properties"]["fields"]["properties"]
    assert known["Type"]["type"] == "keyword"
    assert known["Rotational speed [rpm]"] == {"type": "long"}
    assert known["Torque [Nm]"] == {"type": "double"}
    assert known["is_anomaly"] == {"type": "boolean"}
    assert "UDI" not in known and "label" not in known  # fixed keys `id` and `label`


def test_the_cli_reads_profiles_from_flags_or_the_environment(tmp_path):
    env = {"ALERT_SINK_TOKEN": "t", "ALERT_SINK_PROFILES": "creditcard, machine_failure"}
    args = build_parser(env).parse_args(["--store", f"sqlite:{tmp_path / 'a.db'}"])
    config = config_from_args(args, env)
    assert [p.name for p in config.profiles] == ["creditcard", "machine_failure"]
    args = build_parser(env).parse_args(
        ["--store", f"sqlite:{tmp_path / 'a.db'}", "--profile", "machine_failure"]
    )
    assert [p.name for p in config_from_args(args, env).profiles] == ["machine_failure"]
    args = build_parser(env).parse_args(["--store", "sqlite:x.db", "--profile", "nope"])
    with pytest.raises(ConfigError, match="--profile nope: no profile 'nope'"):
        config_from_args(args, env)
    twin = tmp_path / "twin.toml"
    twin.write_text(MF.to_toml().replace('name = "machine_failure"', 'name = "twin"'))
    args = build_parser(env).parse_args(
        ["--store", "sqlite:x.db", "--profile", "machine_failure", "--profile", str(twin)]
    )
    with pytest.raises(ConfigError, match="both name the scored measurement"):
        config_from_args(args, env)


@pytest.mark.slow
def test_documents_go_to_each_profiles_index_in_elasticsearch(tmp_path):
    peer = ElasticsearchPeer(version="9.5.2").start()
    sink = RunningSink(es_config(tmp_path, peer.url, profiles=(CC, MF)))
    try:
        for n in range(5):
            assert sink.post(mf_alert(n)).status_code == 202
        assert sink.post(BODIES["00-critical-prev-critical.json"]).status_code == 202
        # a float feature that arrived whole first, then with a fraction: one mapping
        assert sink.post(mf_alert(9, **{"Torque [Nm]": 40})).status_code == 202
        # a field no profile names: mapped by its first value, numbers as double
        assert sink.post(mf_alert(10, vibration=3)).status_code == 202
        assert sink.post(mf_alert(11, vibration=3.25)).status_code == 202
        wait_until(lambda: sink.sink.spool.depth() == 0, what="spool drained")
        assert sink.sink.spool.dead_letter_count() == 0
        assert peer.dynamic_fields[MF.alert_index] == {"fields.vibration": "double"}
        mf_docs = peer.docs(MF.alert_index)
        assert len(mf_docs) == 8
        ids = {str(1000 + n) for n in (*range(5), 9, 10, 11)}
        assert {d["id"] for d in mf_docs.values()} == ids
        assert all("fields.Torque [Nm]" in d for d in mf_docs.values())
        (cc_doc,) = peer.docs(ALERT_INDEX).values()
        assert cc_doc["txn_id"] == "t1" and cc_doc["fields.is_anomaly"] is True
        assert set(peer.templates) == {ALERT_INDEX, MF.alert_index}
        assert peer.dynamic_fields.get(ALERT_INDEX, {}) == {}  # every field was declared
    finally:
        sink.close()
        peer.stop()


def test_an_old_spool_file_is_upgraded_and_its_alerts_still_ship(tmp_path):
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as c:
        c.executescript(
            "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, "
            "doc TEXT NOT NULL, enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "last_error TEXT);"
            "CREATE TABLE dead_letter (seq INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, "
            "doc TEXT NOT NULL, enqueued_at REAL NOT NULL, failed_at REAL NOT NULL, "
            "status INTEGER, error TEXT NOT NULL);"
        )
        c.execute("INSERT INTO spool (doc_id, doc, enqueued_at) VALUES ('a', '{}', 1.0)")
    spool = Spool(path)
    try:
        (item,) = spool.peek(10)
        assert (item.doc_id, item.index) == ("a", None)
        (doc,) = parse_alert(mf_alert(1), router=ROUTER)
        spool.enqueue([doc])
        assert [i.index for i in spool.peek(10)] == [None, MF.alert_index]
        spool.settle(dead={item.seq: (400, "mapping")})
        assert spool.dead_letters()[0].doc_id == "a"
    finally:
        spool.close()


@pytest.mark.slow
def test_the_sink_process_with_a_profile_stores_each_data_set_apart(tmp_path):
    port = free_port()
    (tmp_path / "token").write_text("tok\n")
    env = {**os.environ, "ALERT_SINK_PROFILES": "machine_failure"}
    env.pop("ALERT_SINK_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alert_sink", "--port", str(port), "--store",
         f"sqlite:{tmp_path / 'alerts.db'}", "--token-file", str(tmp_path / "token")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    headers = {**AUTH, "Authorization": "Bearer tok", "Content-Type": "application/json"}
    try:

        def up() -> bool:
            try:
                return requests.get(url + "/health", timeout=1).status_code == 200
            except requests.RequestException:
                return proc.poll() is not None

        wait_until(up, timeout=60, what="the sink")
        assert proc.poll() is None
        r = requests.post(url + "/kapacitor", data=mf_alert(3), headers=headers, timeout=10)
        assert r.status_code == 202, r.text
        r = requests.post(
            url + "/kapacitor",
            data=BODIES["00-critical-prev-critical.json"],
            headers=headers,
            timeout=10,
        )
        assert r.status_code == 202
        bad = requests.post(
            url + "/kapacitor", data=mf_alert(4, **{"Torque [Nm]": "x"}), headers=headers
        )
        assert bad.status_code == 400 and "'Torque [Nm]'" in bad.json()["error"]
        got = requests.get(url + "/alerts", params={"index": MF.alert_index}, headers=headers)
        (doc,) = got.json()["alerts"]
        assert doc["id"] == "1003" and doc["fields.Type"] == "L"
        got = requests.get(url + "/alerts", params={"index": ALERT_INDEX}, headers=headers)
        (doc,) = got.json()["alerts"]
        assert list(doc) == ["_id", *ALERT_DOC_FIELDS]
        got = requests.get(url + "/alerts", params={"id": "1003"}, headers=headers)
        assert got.json()["total"] == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
    assert proc.returncode == 0
