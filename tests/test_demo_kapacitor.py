"""The demo's alert bodies against Kapacitor's real ones (tests/fixtures/alerts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alert_sink.payload import parse_alert, parse_rfc3339_ns
from demo.kapacitor import (
    AlertState,
    ScoredRecord,
    alert_body,
    alerts_for,
    go_json_float,
    go_print,
    rfc3339_nano,
)

FIXTURES = Path(__file__).parent / "fixtures" / "alerts"


def fixture_record(name: str) -> tuple[bytes, ScoredRecord]:
    raw = (FIXTURES / name).read_bytes().strip()
    body = json.loads(raw)
    series = body["data"]["series"][0]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    t = parse_rfc3339_ns(row.pop("time"))
    # JSON has no int/float distinction for whole floats ("Amount": 11): keep Kapacitor's types
    fields = {k: (float(v) if k in ("Amount", "score", "threshold") else v) for k, v in row.items()}
    return raw, ScoredRecord(time_ns=t, tags=series["tags"], fields=fields)


def section(body: bytes, start: str, end: str) -> bytes:
    s = body.index(start.encode())
    return body[s : body.index(end.encode(), s)]


@pytest.mark.parametrize(
    "name", ["00-critical-prev-critical.json", "02-critical-prev-critical.json",
             "04-critical-prev-ok.json"],
)  # fmt: skip
def test_body_matches_kapacitor_bytes_outside_the_templates(name):
    raw, rec = fixture_record(name)
    want = json.loads(raw)
    ours = alert_body(
        rec,
        level=want["level"],
        previous=want["previousLevel"],
        duration_ns=want["duration"],
        measurement=want["data"]["series"][0]["name"],
    )
    # id/message/details come from the task's templates (the fixtures used other ones);
    # everything from "time" on must be byte-identical, key order included.
    assert section(ours, '"time":', '"recoverable"') == section(raw, '"time":', '"recoverable"')
    assert ours.endswith(b'"recoverable":true}')
    assert list(json.loads(ours)) == list(want)


def test_alert_task_state_matches_the_recorded_sequence():
    # The fixtures' task saw is_anomaly true, true, true, false, false, true; 04 is the
    # first critical after OK points: previousLevel OK and duration 0.
    recs = [fixture_record(n)[1] for n in ("00-critical-prev-critical.json",
            "01-critical-prev-critical.json", "02-critical-prev-critical.json",
            "03-ok-prev-critical.json", "04-critical-prev-ok.json")]  # fmt: skip
    state = AlertState()
    seen = [state.update(r) for r in recs]
    assert [s[0] for s in seen] == ["CRITICAL", "CRITICAL", "CRITICAL", "OK", "CRITICAL"]
    assert [s[1] for s in seen] == ["OK", "CRITICAL", "CRITICAL", "CRITICAL", "OK"]
    assert seen[1][2] == recs[1].time_ns - recs[0].time_ns
    assert seen[2][2] == recs[2].time_ns - recs[0].time_ns
    assert seen[4][2] == 0
    posted = alerts_for(recs, model="creditcard")
    assert [r.fields["txn_id"] for r, _ in posted] == ["t1", "t2", "t3", "t6"]


def test_the_sink_accepts_and_indexes_the_body():
    rec = ScoredRecord(
        time_ns=1_795_380_967_401_477_472,
        tags={"source": "demo-1", "model": "creditcard", "model_version": "2"},
        fields={"Amount": 1000000.0, "V1": -1.5e-7, "is_anomaly": True, "label": 1,
                "score": 0.000012, "threshold": 0.00001, "txn_id": "t<1>"},
    )  # fmt: skip
    body = alert_body(
        rec, level="CRITICAL", previous="OK", duration_ns=0, measurement="transactions_scored"
    )
    doc = parse_alert(body)[0].source
    assert doc["txn_id"] == "t<1>" and doc["label"] == 1 and doc["amount"] == 1e6
    assert doc["alert.id"] == "fraud:creditcard"
    assert doc["@timestamp"] == "2026-11-22T20:56:07.401477472Z"
    text = body.decode()
    # text/template in the message, html/template (escaped) in the details
    assert "txn t<1> scored 1.2e-05 (threshold 1e-05), amount 1e+06" in json.loads(text)["message"]
    assert "txn_id=t&lt;1&gt; score=1.2e-05" in json.loads(text)["details"]
    # Go's encoding/json: whole floats without a fraction, <>& escaped in strings
    assert '07.401477472Z",1000000,-1.5e-7,true,1,0.000012,0.00001,"t\\u003c1\\u003e"]' in text
    assert '"details":"txn_id=t\\u0026lt;1\\u0026gt; score=1.2e-05' in text


@pytest.mark.parametrize(
    ("value", "printed", "as_json"),
    [(0.91, "0.91", "0.91"), (11.0, "11", "11"), (1.2e-05, "1.2e-05", "0.000012"),
     (1e6, "1e+06", "1000000"), (123456.5, "123456.5", "123456.5"), (1e-7, "1e-07", "1e-7"),
     (1e21, "1e+21", "1e+21"), (-0.5, "-0.5", "-0.5"), (0.0, "0", "0")],
)  # fmt: skip
def test_go_number_formatting(value, printed, as_json):
    assert go_print(value) == printed
    assert go_json_float(value) == as_json


def test_go_print_other_types():
    assert go_print(True) == "true"
    assert go_print(7) == "7"
    assert go_print(None) == "<no value>"


def test_rfc3339_nano_trims_like_go():
    assert rfc3339_nano(1_795_380_967_401_477_472) == "2026-11-22T20:56:07.401477472Z"
    assert rfc3339_nano(1_795_380_967_400_000_000) == "2026-11-22T20:56:07.4Z"
    assert rfc3339_nano(1_795_380_967_000_000_000) == "2026-11-22T20:56:07Z"
