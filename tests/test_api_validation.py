"""Every way a predict request can be wrong gets a 4xx with every problem listed (record
index and field), never a 500; property-based bodies included."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
import requests
from http_serving import serve_in_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from werkzeug.serving import make_server

from api import ApiConfig, ValidationFailed, create_app
from api.schemas import ErrorSchema
from api.validation import parse_json, validate_records
from models.contract import FEATURES
from models.registry import Registry

MODEL = "creditcard"
MAX_BATCH = 50


@pytest.fixture(scope="module")
def estimator() -> LogisticRegression:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, len(FEATURES)))
    y = (X[:, 2] - X[:, 5] > 0.3).astype(int)
    return LogisticRegression(max_iter=1000).fit(X, y)


@contextmanager
def serve(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = serve_in_thread(server, name="api-test-server")
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def url(tmp_path_factory, estimator):
    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root)
    reg.register(MODEL, estimator, features=FEATURES, threshold=0.5)
    reg.promote(MODEL, "1")
    app = create_app(ApiConfig(registry=root, model=MODEL, max_batch=MAX_BATCH))
    with serve(app) as base:
        yield f"{base}/v1/predict"


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def good_record(seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return dict(zip(FEATURES, rng.normal(size=len(FEATURES)).tolist(), strict=True))


def post_json_text(session, url, text: str | bytes, content_type="application/json"):
    return session.post(url, data=text, headers={"Content-Type": content_type}, timeout=10)


def problems_of(response) -> set[tuple]:
    body = response.json()
    assert ErrorSchema().validate(body) == {}, body
    return {(p["index"], p["field"]) for p in body["problems"]}


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


# -- record-level problems: 422 naming record index and field -------------------------
@pytest.mark.parametrize(
    ("body", "expected", "message_part"),
    [
        (without(good_record(), "V3"), {(0, "V3")}, "missing feature"),
        ({**good_record(), "foo": 1.0}, {(0, "foo")}, "unknown field"),
        ({**good_record(), "Class": 0}, {(0, "Class")}, "unknown field"),
        ({**good_record(), "V1": True}, {(0, "V1")}, "got boolean"),
        ({**good_record(), "V1": False}, {(0, "V1")}, "got boolean"),
        ({**good_record(), "Amount": "12.5"}, {(0, "Amount")}, "got string"),
        ({**good_record(), "Amount": None}, {(0, "Amount")}, "got null"),
        ({**good_record(), "V2": [1.0]}, {(0, "V2")}, "got array"),
        ({**good_record(), "V2": {"x": 1}}, {(0, "V2")}, "got object"),
        ({**good_record(), "txn_id": 17}, {(0, "txn_id")}, "expected a string"),
        ({**good_record(), "txn_id": None}, {(0, "txn_id")}, "got null"),
        ({**good_record(), "txn_id": "x" * 257}, {(0, "txn_id")}, "longer than"),
        ([], {(None, None)}, "empty batch"),
        ([good_record()] * (MAX_BATCH + 1), {(None, None)}, f"maximum of {MAX_BATCH}"),
        (42, {(None, None)}, "got number"),
        ("a string", {(None, None)}, "got string"),
        (None, {(None, None)}, "got null"),
        ([good_record(), 3, [1]], {(1, None), (2, None)}, "must be a JSON object"),
    ],
)
def test_invalid_records_are_422_with_index_and_field(session, url, body, expected, message_part):
    r = post_json_text(session, url, json.dumps(body))
    assert r.status_code == 422, r.text
    assert problems_of(r) == expected
    assert r.json()["error"] == "validation_failed"
    assert any(message_part in p["message"] for p in r.json()["problems"])


def test_every_problem_in_every_record_is_listed(session, url):
    records = [good_record(i) for i in range(6)]
    records[0] = without(records[0], "V1")
    records[2]["Amount"] = True
    records[2]["extra"] = 1
    records[5] = {k: "1" for k in FEATURES}
    r = session.post(url, json=records, timeout=10)
    assert r.status_code == 422
    body = r.json()
    expected = {(0, "V1"), (2, "Amount"), (2, "extra")} | {(5, f) for f in FEATURES}
    assert problems_of(r) == expected
    assert body["problem_count"] == len(expected) and body["truncated"] is False
    assert body["message"] == f"{len(expected)} problems in 3 records"


@pytest.mark.parametrize(
    ("text", "status", "message_part"),
    [
        ('{"V1": NaN}', 400, "NaN is not a valid JSON number"),
        ("[Infinity]", 400, "Infinity is not a valid JSON number"),
        ("-Infinity", 400, "-Infinity is not a valid JSON number"),
        ("{not json", 400, "not valid JSON"),
        ("", 400, "body is empty"),
        ("   ", 400, "body is empty"),
        (b"\xff\xfe\xfa", 400, "not"),
        ("[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ],
)
def test_malformed_json_is_400(session, url, text, status, message_part):
    r = post_json_text(session, url, text)
    assert r.status_code == status, r.text
    body = r.json()
    assert ErrorSchema().validate(body) == {}
    assert body["error"] == "bad_request" and message_part in body["message"]


def test_numbers_outside_float_range_are_422(session, url):
    rec = good_record()
    text = json.dumps(rec).replace(str(rec["V4"]), "1e400").replace(str(rec["V5"]), "9" * 400)
    r = post_json_text(session, url, text)
    assert r.status_code == 422
    messages = {p["field"]: p["message"] for p in r.json()["problems"]}
    assert messages == {"V4": "must be a finite number", "V5": "number is out of the float range"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(session, url, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = session.post(url, data=json.dumps(good_record()).encode(), headers=headers, timeout=10)
    assert r.status_code == 415
    assert r.json()["error"] == "unsupported_media_type"


def test_json_suffix_content_type_is_accepted(session, url):
    r = post_json_text(session, url, json.dumps(good_record()), "application/vnd.api+json")
    assert r.status_code == 200


def test_oversized_body_is_413_json(session, url):
    huge = b'{"Time": ' + b"1" * (ApiConfig(max_batch=MAX_BATCH).max_content_length + 10) + b"}"
    r = post_json_text(session, url, huge)
    assert r.status_code == 413
    assert r.json()["code"] == 413 and ErrorSchema().validate(r.json()) == {}


def test_wrong_method_and_unknown_route_are_json(session, url):
    r = session.get(url, timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = session.post(url.replace("/predict", "/nothing"), json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_query_parameter_validation_is_a_json_error(session, url):
    # A repeated ?version= is still one string for webargs; an empty one means default.
    r = session.post(url, params={"version": ""}, json=good_record(), timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == "1"


def test_problem_list_is_capped_but_counted():
    records = [{"V1": True}] * 100
    with pytest.raises(ValidationFailed) as info:
        validate_records(records, FEATURES, max_batch=1000)
    payload = info.value.payload()
    assert payload["problem_count"] == 100 * len(FEATURES)  # 29 missing + 1 boolean each
    assert len(payload["problems"]) == ValidationFailed.MAX_LISTED and payload["truncated"]


def test_validate_records_fast_path_matches_order():
    rec = good_record(5)
    shuffled = dict(reversed(list(rec.items())))
    batch = validate_records([shuffled, {**rec, "txn_id": "a"}], FEATURES, max_batch=10)
    np.testing.assert_array_equal(batch.X[0], [rec[f] for f in FEATURES])
    assert batch.X.dtype == np.float64 and batch.txn_ids == [None, "a"] and not batch.single
    assert parse_json(b'{"a": 1}') == {"a": 1}


# -- property-based: arbitrary bodies never give a 500 --------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
feature_keys = st.sampled_from([*FEATURES, "txn_id", "Class", "label", ""])
record_like = st.dictionaries(feature_keys | st.text(max_size=6), json_scalars, max_size=34)
near_valid = st.builds(
    lambda base, changes, drop: {
        **{k: v for k, v in base.items() if k not in drop},
        **changes,
    },
    st.just(good_record(1)),
    st.dictionaries(feature_keys, json_values, max_size=3),
    st.sets(feature_keys, max_size=3),
)

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_answer(r) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code == 200:
        assert all(0.0 <= p["score"] <= 1.0 for p in body["predictions"])
    else:
        assert r.status_code in (400, 422), r.text
        assert ErrorSchema().validate(body) == {}
        if r.status_code == 422:
            assert body["problem_count"] >= 1


@PROPERTY_SETTINGS
@given(value=json_values)
@pytest.mark.slow
def test_any_json_value_never_500(session, url, value):
    # allow_nan=True: NaN/Infinity literals must come back as 400, not crash.
    _check_answer(post_json_text(session, url, json.dumps(value, allow_nan=True)))


@PROPERTY_SETTINGS
@given(body=record_like | st.lists(record_like | json_values, max_size=5))
@pytest.mark.slow
def test_random_records_never_500(session, url, body):
    _check_answer(post_json_text(session, url, json.dumps(body, allow_nan=True)))


@PROPERTY_SETTINGS
@given(body=near_valid | st.lists(near_valid, min_size=1, max_size=4))
@pytest.mark.slow
def test_nearly_valid_records_name_each_bad_field(session, url, body):
    r = post_json_text(session, url, json.dumps(body, allow_nan=True))
    _check_answer(r)
    records = body if isinstance(body, list) else [body]
    all_good = all(
        set(rec) - {"txn_id"} == set(FEATURES)
        and all(type(rec[f]) in (int, float) and np.isfinite(float(rec[f])) for f in FEATURES)
        and (("txn_id" not in rec) or isinstance(rec["txn_id"], str) and len(rec["txn_id"]) <= 256)
        for rec in records
    )
    if all_good:
        assert r.status_code == 200
    elif r.status_code == 422:
        for index, field in problems_of(r):
            assert index is not None and 0 <= index < len(records)
            assert field is None or field in records[index] or field in FEATURES


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=64))
@pytest.mark.slow
def test_raw_bytes_never_500(session, url, raw):
    r = post_json_text(session, url, raw)
    assert r.status_code < 500, r.text


@PROPERTY_SETTINGS
@given(
    rows=st.lists(
        st.lists(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000),
            min_size=len(FEATURES),
            max_size=len(FEATURES),
        ),
        min_size=1,
        max_size=MAX_BATCH,
    )
)
@pytest.mark.slow
def test_valid_records_always_scored_like_the_model(session, url, estimator, rows):
    body = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    r = session.post(url, json=body, timeout=10)
    assert r.status_code == 200, r.text
    expected = estimator.predict_proba(np.array(rows, dtype=np.float64))[:, 1]
    np.testing.assert_allclose([p["score"] for p in r.json()["predictions"]], expected, rtol=1e-12)
