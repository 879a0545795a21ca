"""Kapacitor alert JSON → contract documents (no I/O), on the real recorded bodies."""

from __future__ import annotations

import json

import pytest
from es_peer import alert_bodies, synthetic_alert

from alert_sink.errors import PayloadError
from alert_sink.payload import parse_alert, parse_rfc3339_ns, task_from_details
from models.contract import ALERT_DOC_FIELDS

BODIES = alert_bodies()


@pytest.mark.parametrize("name", sorted(BODIES))
def test_recorded_bodies_map_to_contract_documents(name):
    raw = json.loads(BODIES[name])
    (doc,) = parse_alert(BODIES[name])
    src = doc.source
    assert list(src) == ALERT_DOC_FIELDS
    series = raw["data"]["series"][0]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert src["@timestamp"] == row["time"]
    assert src["alert.id"] == raw["id"]
    assert src["alert.level"] == raw["level"]
    assert src["alert.message"] == raw["message"]
    assert src["txn_id"] == row["txn_id"]
    assert src["score"] == row["score"]
    assert src["threshold"] == row["threshold"]
    assert src["amount"] == float(row["Amount"]) and isinstance(src["amount"], float)
    assert src["label"] == row["label"]
    assert src["model.name"] == series["tags"]["model"]
    assert src["model.version"] == series["tags"]["model_version"]
    assert src["source"] == series["tags"]["source"]
    assert doc.timestamp_ns == parse_rfc3339_ns(row["time"])


def test_task_from_details_dump_else_query_else_series_name():
    dumped = BODIES["crit-default-details.json"]
    assert parse_alert(dumped)[0].source["task"] == "fraud_alert2"
    # The dump wins over the query parameter: it is what Kapacitor says the task is.
    assert parse_alert(dumped, task="other")[0].source["task"] == "fraud_alert2"
    plain = BODIES["00-critical-prev-critical.json"]
    assert parse_alert(plain, task="fraud_alert")[0].source["task"] == "fraud_alert"
    assert parse_alert(plain)[0].source["task"] == "transactions_scored"
    assert task_from_details("amount 121.5") is None
    assert task_from_details("{not json") is None


def test_integer_amount_becomes_float():
    # Kapacitor writes a whole float field without a fraction ("Amount": 11).
    (doc,) = parse_alert(BODIES["crit-default-details.json"])
    assert doc.source["amount"] == 11.0 and isinstance(doc.source["amount"], float)


def test_doc_ids_unique_across_alerts_sharing_an_id_and_stable_on_redelivery():
    ids = [parse_alert(body)[0].doc_id for body in BODIES.values()]
    assert len({json.loads(b)["id"] for b in BODIES.values()}) == 1  # same alert id for all
    assert len(set(ids)) == len(ids)
    for body in BODIES.values():
        assert parse_alert(body)[0].doc_id == parse_alert(bytes(body))[0].doc_id
        # Key order and whitespace do not matter, only content.
        reformatted = json.dumps(json.loads(body), indent=2, sort_keys=True).encode()
        assert parse_alert(reformatted)[0].doc_id == parse_alert(body)[0].doc_id


def test_several_series_and_rows_give_one_document_each():
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    series = raw["data"]["series"][0]
    row = series["values"][0]
    series["values"] = [row, [*row[:-1], "t1b"]]
    raw["data"]["series"] = [series, {**series, "tags": {**series["tags"], "source": "b"}}]
    docs = parse_alert(json.dumps(raw))
    assert len(docs) == 4
    assert len({d.doc_id for d in docs}) == 4
    assert [d.source["txn_id"] for d in docs] == ["t1", "t1b", "t1", "t1b"]


def test_alert_without_series_still_gives_a_document():
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    raw["data"] = {}
    (doc,) = parse_alert(json.dumps(raw))
    assert doc.source["@timestamp"] == raw["time"]
    assert doc.source["txn_id"] is None and doc.source["score"] is None


def test_rows_without_txn_id_get_distinct_ids():
    raw = json.loads(synthetic_alert(1))
    s = raw["data"]["series"][0]
    idx = s["columns"].index("txn_id")
    s["columns"].pop(idx)
    row = s["values"][0]
    row.pop(idx)
    s["values"] = [row, list(row)]
    docs = parse_alert(json.dumps(raw))
    assert len({d.doc_id for d in docs}) == 2


def _mutate(fn):
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    fn(raw)
    return json.dumps(raw)


def _set_row(raw, col, value):
    s = raw["data"]["series"][0]
    s["values"][0][s["columns"].index(col)] = value


BAD = [
    (b"{not json", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object, got array"),
    (b"\xff\xfe", "body is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply"),
    (_mutate(lambda r: r.pop("id")), "missing required key 'id'"),
    (_mutate(lambda r: r.update(id=5)), "id: must be a string, got number"),
    (_mutate(lambda r: r.update(time="yesterday")), "time: not an RFC 3339 timestamp"),
    (_mutate(lambda r: r.update(time="2026-02-30T00:00:00Z")), "time: not an RFC 3339 timestamp"),
    (
        _mutate(lambda r: _set_row(r, "time", "2300-01-01T00:00:00Z")),
        "data.series[0].values[0] column 'time': '2300-01-01T00:00:00Z' is outside the int64",
    ),
    (
        _mutate(lambda r: r.update(time="0001-01-01T00:00:00+01:00")),
        "time: '0001-01-01T00:00:00+01:00' is outside the int64 nanosecond range",
    ),
    (
        _mutate(lambda r: r.update(level="PANIC")),
        "level: must be one of OK, INFO, WARNING, CRITICAL",
    ),
    (_mutate(lambda r: r.update(duration="5s")), "duration: must be an integer"),
    (_mutate(lambda r: r.update(data=[])), "data: must be an object, got array"),
    (_mutate(lambda r: r["data"].update(series={})), "data.series: must be an array"),
    (
        _mutate(lambda r: r["data"]["series"][0]["values"][0].pop()),
        "data.series[0].values[0]: row has 6 values but 7 columns",
    ),
    (
        _mutate(lambda r: _set_row(r, "score", "high")),
        "data.series[0].values[0]: column 'score' must be a number, got string",
    ),
    (
        _mutate(lambda r: _set_row(r, "Amount", True)),
        "data.series[0].values[0]: column 'Amount' must be a number, got boolean",
    ),
    (
        _mutate(lambda r: _set_row(r, "txn_id", 7)),
        "data.series[0].values[0]: column 'txn_id' must be a string, got number",
    ),
    (
        _mutate(lambda r: _set_row(r, "label", 0.5)),
        "data.series[0].values[0]: column 'label' must be an integer",
    ),
    # Python's json accepts NaN and Infinity; neither is an integer.
    (
        _mutate(lambda r: _set_row(r, "label", 0.125)).replace("0.125", "NaN"),
        "data.series[0].values[0]: column 'label' must be an integer",
    ),
    (
        _mutate(lambda r: _set_row(r, "label", 0.125)).replace("0.125", "1e400"),
        "data.series[0].values[0]: column 'label' must be an integer",
    ),
    # Integer literals too large for a double (Python's json reads them exactly).
    (
        _mutate(lambda r: _set_row(r, "score", 0.125)).replace("0.125", "9" * 401),
        "data.series[0].values[0]: column 'score' is out of range: it does not fit a 64-bit float",
    ),
    (
        _mutate(lambda r: _set_row(r, "threshold", 0.125)).replace("0.125", "-" + "1" * 400),
        "data.series[0].values[0]: column 'threshold' is out of range",
    ),
    (
        _mutate(lambda r: _set_row(r, "Amount", 0.125)).replace("0.125", "7" * 309),
        "data.series[0].values[0]: column 'Amount' is out of range",
    ),
    (
        _mutate(lambda r: _set_row(r, "label", 0.125)).replace("0.125", "1" * 401),
        "data.series[0].values[0]: column 'label' must be an integer",
    ),
    (
        _mutate(lambda r: _set_row(r, "label", 2**63)),
        "data.series[0].values[0]: column 'label' must be an integer",
    ),
    # A lone surrogate escape decodes but cannot be stored as UTF-8 (nor hashed into the id).
    (
        _mutate(lambda r: r.update(message="x")).replace('"x"', '"\\ud800"'),
        "message: string holds an unpaired UTF-16 surrogate escape",
    ),
    (
        _mutate(lambda r: _set_row(r, "txn_id", "x")).replace('"x"', '"\\udfff"'),
        "data.series[0].values[0][6]: string holds an unpaired UTF-16 surrogate escape",
    ),
    (
        _mutate(lambda r: _set_row(r, "time", "noon")),
        "data.series[0].values[0] column 'time': not an RFC 3339 timestamp",
    ),
    (
        _mutate(lambda r: r["data"]["series"][0]["tags"].update(source=1)),
        "data.series[0].tags: must be an object of string values",
    ),
    (
        _mutate(lambda r: r["data"]["series"][0].update(columns="time")),
        "data.series[0].columns: must be a non-empty array of strings",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m for _, m in BAD])
def test_malformed_bodies_are_rejected_with_a_message_naming_the_problem(body, message):
    with pytest.raises(PayloadError) as info:
        parse_alert(body)
    assert message in str(info.value)


def test_one_bad_row_rejects_the_whole_body():
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    s = raw["data"]["series"][0]
    good = s["values"][0]
    s["values"] = [good, good, [*good[:4], "bad", *good[5:]]]
    with pytest.raises(PayloadError, match=r"values\[2\]: column 'score'"):
        parse_alert(json.dumps(raw))


def test_rfc3339_parsing_keeps_nanoseconds_and_offsets():
    assert parse_rfc3339_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert parse_rfc3339_ns("1970-01-01T01:00:00+01:00") == 0
    with pytest.raises(ValueError):
        parse_rfc3339_ns("1970-01-01")
