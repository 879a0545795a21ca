"""The alert sink over real HTTP, shipping to an in-process Elasticsearch peer."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import WAIT, eventually
from es_peer import ElasticsearchPeer, alert_bodies, synthetic_alert
from http_serving import serve_in_thread
from werkzeug.serving import make_server

from alert_sink import ConfigError, SinkConfig, create_app
from alert_sink.es import ElasticsearchTarget
from alert_sink.payload import parse_alert
from alert_sink.storage import encode_cursor
from models.contract import ALERT_DOC_FIELDS, ALERT_INDEX

pytestmark = pytest.mark.slow

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODIES = alert_bodies()


def wait_until(condition, timeout: float = WAIT, what: str = "condition") -> None:
    eventually(condition, timeout, what, interval=0.02)


class RunningSink:
    def __init__(self, config: SinkConfig | None, **kw) -> None:
        self.app = create_app(config, **kw)
        self.sink = self.app.extensions["alert_sink"]
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.thread = serve_in_thread(self.server)

    def post(self, body: bytes, headers=AUTH, **kw) -> requests.Response:
        return requests.post(
            f"{self.url}/kapacitor",
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=10,
            **kw,
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.sink.close(timeout=10)


def es_config(tmp_path: Path, url: str, **kw) -> SinkConfig:
    return SinkConfig(
        es_url=url,
        spool_path=tmp_path / "spool.db",
        token=TOKEN,
        poll_interval=0.05,
        backoff_initial=0.02,
        backoff_max=0.2,
        health_timeout=0.5,
        es_request_timeout=5.0,
        **kw,
    )


@pytest.fixture
def peer() -> Iterator[ElasticsearchPeer]:
    # the server of the compose stack: the same major as the Python client
    p = ElasticsearchPeer(version="9.5.2").start()
    yield p
    p.stop()


@pytest.fixture
def sink(tmp_path, peer) -> Iterator[RunningSink]:
    s = RunningSink(es_config(tmp_path, peer.url))
    yield s
    s.close()


def spool_depth(s: RunningSink) -> int:
    return s.sink.spool.depth()


def expected_ids(bodies) -> set[str]:
    return {d.doc_id for b in bodies for d in parse_alert(b)}


# -- delivery ------------------------------------------------------------------------------


def test_recorded_alerts_reach_elasticsearch_with_contract_fields(sink, peer):
    for name, body in BODIES.items():
        r = sink.post(body)
        assert r.status_code == 202, (name, r.text)
        assert r.json()["accepted"] == 1
    wait_until(lambda: len(peer.docs()) == len(BODIES), what="all alerts indexed")
    docs = peer.docs()
    assert set(docs) == expected_ids(BODIES.values())
    for doc in docs.values():
        assert list(doc) == ALERT_DOC_FIELDS
    assert {d["txn_id"] for d in docs.values()} == {"t1", "t2", "t3", "t4", "t6", "u1", "u3"}
    # Template installed with the contract types, index created before the first alert.
    mappings = peer.templates[ALERT_INDEX]["template"]["mappings"]["properties"]
    assert mappings["@timestamp"]["type"] == "date"
    assert mappings["score"]["type"] == "float"
    assert mappings["alert"]["properties"]["level"]["type"] == "keyword"
    wait_until(lambda: spool_depth(sink) == 0, what="spool drained")
    # And the peer's search agrees (what Kibana would see).
    r = requests.post(
        f"{peer.url}/{ALERT_INDEX}/_count",
        json={"query": {"term": {"alert.level": "OK"}}},
        timeout=5,
    )
    assert r.json()["count"] == 1


def test_redelivered_alert_overwrites_instead_of_duplicating(sink, peer):
    body = BODIES["00-critical-prev-critical.json"]
    for _ in range(3):
        assert sink.post(body).status_code == 202
    wait_until(lambda: spool_depth(sink) == 0, what="spool drained")
    assert len(peer.docs()) == 1
    (doc_id,) = peer.docs()
    assert doc_id == parse_alert(body)[0].doc_id


def test_the_clients_own_headers_reach_a_server_of_its_major(tmp_path):
    import elasticsearch

    major = int(elasticsearch.__versionstr__.split(".")[0])
    peer = ElasticsearchPeer(version=f"{major}.5.2").start()
    s = RunningSink(es_config(tmp_path, peer.url))
    try:
        assert s.post(BODIES["01-critical-prev-critical.json"]).status_code == 202
        wait_until(lambda: len(peer.docs()) == 1, what="indexed")
        bulk = [r for r in peer.requests if r.path.endswith("_bulk")][0]
        # no rewrite: what the client itself asks for
        assert bulk.headers["content-type"] == (
            f"application/vnd.elasticsearch+x-ndjson; compatible-with={major}"
        )
        assert (
            bulk.headers["accept"] == f"application/vnd.elasticsearch+json; compatible-with={major}"
        )
    finally:
        s.close()
        peer.stop()


def test_an_older_server_needs_es_compat_version(tmp_path, caplog):
    import elasticsearch

    older = int(elasticsearch.__versionstr__.split(".")[0]) - 1
    peer = ElasticsearchPeer(version=f"{older}.19.20").start()
    s = RunningSink(es_config(tmp_path, peer.url))
    try:
        # the server refuses the client's headers: the alert is kept, and the log says why
        with caplog.at_level("WARNING", logger="alert_sink"):
            assert s.post(BODIES["01-critical-prev-critical.json"]).status_code == 202
            wait_until(
                lambda: any("--es-compat-version" in r.getMessage() for r in caplog.records),
                what="hint logged",
            )
        assert peer.docs() == {} and spool_depth(s) == 1
    finally:
        s.close()
    s = RunningSink(es_config(tmp_path, peer.url, es_compat_version=older))
    try:
        wait_until(lambda: len(peer.docs()) == 1, what="spooled alert indexed")
        bulk = [r for r in peer.requests if r.path.endswith("_bulk")][-1]
        assert bulk.headers["accept"] == (
            f"application/vnd.elasticsearch+json; compatible-with={older}"
        )
    finally:
        s.close()
        peer.stop()


def test_basic_auth_credentials_are_sent(tmp_path):
    peer = ElasticsearchPeer(username="elastic", password="pw").start()
    s = RunningSink(es_config(tmp_path, peer.url, es_username="elastic", es_password="pw"))
    try:
        assert s.post(BODIES["00-critical-prev-critical.json"]).status_code == 202
        wait_until(lambda: len(peer.docs()) == 1, what="indexed with credentials")
    finally:
        s.close()
        peer.stop()


def test_credentials_in_the_url_are_used_but_never_shown(tmp_path, caplog):
    peer = ElasticsearchPeer(username="elastic", password="pw-in-url").start()
    url = f"http://elastic:pw-in-url@127.0.0.1:{peer.port}"
    with caplog.at_level("INFO", logger="alert_sink"):
        s = RunningSink(es_config(tmp_path, url))
    try:
        assert s.post(BODIES["00-critical-prev-critical.json"]).status_code == 202
        wait_until(lambda: len(peer.docs()) == 1, what="indexed with credentials from the URL")
        h = requests.get(f"{s.url}/health", timeout=5).json()  # no token needed
        assert h["elasticsearch"]["url"] == f"http://elastic:***@127.0.0.1:{peer.port}"
        assert "pw-in-url" not in caplog.text and "elastic:***@" in caplog.text
    finally:
        s.close()
        peer.stop()


# -- outages -------------------------------------------------------------------------------


def test_outage_of_any_kind_loses_nothing_and_duplicates_nothing(sink, peer):
    bodies = [synthetic_alert(n) for n in range(60)]
    for b in bodies[:10]:
        assert sink.post(b).status_code == 202
    wait_until(lambda: len(peer.docs()) == 10, what="first batch")

    peer.stop()  # connection refused
    for b in bodies[10:30]:
        assert sink.post(b).status_code == 202
    h = requests.get(f"{sink.url}/health", timeout=5).json()
    assert h["status"] == "degraded" and h["elasticsearch"]["reachable"] is False
    assert h["spool"]["depth"] == 20
    assert h["spool"]["oldest_undelivered_age_seconds"] >= 0
    time.sleep(0.3)  # several failed retries
    assert spool_depth(sink) == 20

    peer.unavailable_status = 503  # up but unhealthy, from its first answer on
    peer.start()  # same port, same data
    for b in bodies[30:40]:
        assert sink.post(b).status_code == 202
    time.sleep(0.3)
    assert spool_depth(sink) == 30

    # Partial failures: some items 429, some 500, the rest succeed.
    peer.unavailable_status = None
    flaky = {
        parse_alert(b)[0].doc_id: s for b, s in zip(bodies[30:36], [429, 500] * 3, strict=True)
    }
    failures_left = dict.fromkeys(flaky, 2)

    def fault(doc_id, _source):
        # Each flaky item fails twice (with its 429 or 500), then succeeds.
        if failures_left.get(doc_id, 0) > 0:
            failures_left[doc_id] -= 1
            return flaky[doc_id]
        return None

    peer.item_fault = fault
    for b in bodies[40:]:
        assert sink.post(b).status_code == 202
    wait_until(lambda: spool_depth(sink) == 0, what="spool drained after outage")
    docs = peer.docs()
    assert set(docs) == expected_ids(bodies)
    assert len(docs) == 60
    assert {d["txn_id"] for d in docs.values()} == {f"s{n}" for n in range(60)}
    assert sink.sink.spool.dead_letter_count() == 0
    metrics = requests.get(f"{sink.url}/metrics", timeout=5).text
    assert "alert_sink_bulk_item_retries_total" in metrics
    retries = _metric(metrics, "alert_sink_bulk_item_retries_total")
    assert retries >= 2 * len(flaky)
    assert not any(failures_left.values())
    assert _metric(metrics, "alert_sink_documents_shipped_total") >= 60


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_rejected_items_go_to_dead_letter_not_lost(sink, peer):
    bad = parse_alert(synthetic_alert(2))[0].doc_id
    peer.item_fault = lambda doc_id, _src: 400 if doc_id == bad else None
    for n in range(5):
        assert sink.post(synthetic_alert(n)).status_code == 202
    wait_until(lambda: spool_depth(sink) == 0, what="spool settled")
    assert len(peer.docs()) == 4 and bad not in peer.docs()
    (dead,) = sink.sink.spool.dead_letters()
    assert dead.doc_id == bad and dead.status == 400
    assert dead.doc["txn_id"] == "s2"
    h = requests.get(f"{sink.url}/health", timeout=5).json()
    assert h["spool"]["dead_letter"] == 1
    metrics = requests.get(f"{sink.url}/metrics", timeout=5).text
    assert _metric(metrics, "alert_sink_dead_letters_total") == 1
    assert _metric(metrics, "alert_sink_dead_letter_depth") == 1


def test_starts_and_accepts_while_elasticsearch_is_down(tmp_path):
    peer = ElasticsearchPeer()
    peer.start()
    url = peer.url
    peer.stop()
    s = RunningSink(es_config(tmp_path, url))
    try:
        assert s.post(BODIES["00-critical-prev-critical.json"]).status_code == 202
        h = requests.get(f"{s.url}/health", timeout=5)
        assert h.status_code == 200
        assert h.json()["elasticsearch"]["index_ready"] is False
        time.sleep(0.2)
        peer.start()
        wait_until(lambda: len(peer.docs()) == 1, what="template then alert after ES start")
        wait_until(lambda: spool_depth(s) == 0, what="spool settled")
        assert ALERT_INDEX in peer.templates
        h = requests.get(f"{s.url}/health", timeout=5).json()
        assert h["status"] == "ok" and h["spool"]["depth"] == 0
    finally:
        s.close()
        peer.stop()


def test_restart_of_the_sink_ships_what_was_spooled(tmp_path, peer):
    peer.unavailable_status = 503
    s = RunningSink(es_config(tmp_path, peer.url))
    bodies = [synthetic_alert(n) for n in range(15)]
    for b in bodies:
        assert s.post(b).status_code == 202
    s.close()
    assert peer.docs() == {}
    peer.unavailable_status = None
    s2 = RunningSink(es_config(tmp_path, peer.url))
    try:
        wait_until(lambda: len(peer.docs()) == 15, what="spool from the previous run")
        assert set(peer.docs()) == expected_ids(bodies)
    finally:
        s2.close()


def test_shipper_survives_an_unexpected_error(tmp_path, peer):
    failures = []

    class Flaky(ElasticsearchTarget):
        def bulk(self, items):
            if not failures:
                failures.append(len(items))
                raise RuntimeError("unforeseen")
            return super().bulk(items)

    s = RunningSink(es_config(tmp_path, peer.url), target_factory=Flaky)
    try:
        bodies = [synthetic_alert(n) for n in range(5)]
        for b in bodies:
            assert s.post(b).status_code == 202
        wait_until(lambda: spool_depth(s) == 0, what="spool drained after the error")
        assert failures and set(peer.docs()) == expected_ids(bodies)
        # the state is cleared right after the spool is settled, so it may trail by a moment
        wait_until(lambda: s.sink.shipper.state.last_error is None, what="error cleared")
    finally:
        s.close()


# -- security and bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + base64.b64encode(b"kapacitor:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},  # no user:
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Digest " + TOKEN},
    ],
)
def test_bad_token_is_refused_and_nothing_is_stored(sink, headers):
    r = sink.post(BODIES["00-critical-prev-critical.json"], headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert spool_depth(sink) == 0


def test_the_token_as_basic_auth_password_is_accepted(sink, peer):
    # what Kapacitor's [[httppost]] endpoint sends with basic-auth (any user name)
    basic = base64.b64encode(f"kapacitor:{TOKEN}".encode()).decode()
    r = sink.post(
        BODIES["00-critical-prev-critical.json"], headers={"Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 202, r.text
    wait_until(lambda: len(peer.docs()) == 1, what="indexed")


def test_oversized_body_gets_413(tmp_path, peer):
    s = RunningSink(es_config(tmp_path, peer.url, max_body_bytes=2048))
    try:
        body = json.loads(BODIES["00-critical-prev-critical.json"])
        body["message"] = "x" * 4096
        r = s.post(json.dumps(body).encode())
        assert r.status_code == 413
        assert "2048" in r.json()["error"]
        # Chunked upload without a Content-Length is limited too.
        r = s.post(iter([json.dumps(body).encode()]))
        assert r.status_code == 413
        assert spool_depth(s) == 0
        assert s.post(BODIES["00-critical-prev-critical.json"]).status_code == 202
    finally:
        s.close()


def test_malformed_payloads_get_400_naming_the_problem(sink):
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    good_row = raw["data"]["series"][0]["values"][0]
    raw["data"]["series"][0]["values"] = [good_row, good_row, good_row[:5]]
    r = sink.post(json.dumps(raw).encode())
    assert r.status_code == 400
    assert r.json()["error"] == "data.series[0].values[2]: row has 5 values but 7 columns"
    r = sink.post(b"{oops")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    raw["data"]["series"][0]["values"][0][4] = "0.9"
    r = sink.post(json.dumps(raw).encode())
    assert r.status_code == 400
    assert r.json()["error"] == (
        "data.series[0].values[0]: column 'score' must be a number, got string"
    )
    # a number no double holds is bad input too, not a server error
    raw["data"]["series"][0]["values"][0][4] = 0.25
    r = sink.post(json.dumps(raw).replace("0.25", "9" * 401).encode())
    assert r.status_code == 400
    assert "column 'score' is out of range" in r.json()["error"]
    assert spool_depth(sink) == 0
    metrics = requests.get(f"{sink.url}/metrics", timeout=5).text
    assert 'alert_sink_alerts_rejected_total{reason="invalid"} 4.0' in metrics


def test_health_and_metrics_need_no_token(sink):
    h = requests.get(f"{sink.url}/health", timeout=5)
    assert h.status_code == 200 and h.json()["mode"] == "elasticsearch"
    m = requests.get(f"{sink.url}/metrics", timeout=5)
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    assert "alert_sink_spool_depth" in m.text


def test_alerts_endpoint_is_store_mode_only(sink):
    r = requests.get(f"{sink.url}/alerts", headers=AUTH, timeout=5)
    assert r.status_code == 404 and "--store" in r.json()["error"]


def test_two_apps_in_one_process_have_separate_metrics(tmp_path, peer):
    a = create_app(es_config(tmp_path / "a", peer.url, start_shipper=False))
    b = create_app(es_config(tmp_path / "b", peer.url, start_shipper=False))
    try:
        ca, cb = a.test_client(), b.test_client()
        assert (
            ca.post(
                "/kapacitor", data=BODIES["00-critical-prev-critical.json"], headers=AUTH
            ).status_code
            == 202
        )
        assert "alert_sink_alerts_received_total 1.0" in ca.get("/metrics").text
        assert "alert_sink_alerts_received_total 0.0" in cb.get("/metrics").text
    finally:
        a.extensions["alert_sink"].close()
        b.extensions["alert_sink"].close()


# -- store mode ----------------------------------------------------------------------------


@pytest.fixture
def store_sink(tmp_path) -> Iterator[RunningSink]:
    s = RunningSink(SinkConfig(store_path=tmp_path / "alerts.db", token=TOKEN))
    yield s
    s.close()


def get_alerts(s: RunningSink, **params) -> dict:
    r = requests.get(f"{s.url}/alerts", params=params, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_store_mode_keeps_alerts_queryable(store_sink):
    for body in BODIES.values():
        assert store_sink.post(body).status_code == 202
    for n in range(30):
        body = synthetic_alert(
            n,
            level="WARNING" if n % 3 == 0 else "CRITICAL",
            label=n % 2,
            model="iforest" if n % 5 == 0 else "creditcard",
        )
        assert store_sink.post(body).status_code == 202
    store_sink.post(BODIES["00-critical-prev-critical.json"])  # redelivery
    everything = get_alerts(store_sink, limit=1000)
    assert everything["total"] == len(BODIES) + 30
    for doc in everything["alerts"]:
        assert set(doc) == {"_id", *ALERT_DOC_FIELDS}
    stamps = [d["@timestamp"] for d in everything["alerts"]]
    assert stamps == sorted(stamps)
    # Precision/recall inputs are intact.
    labels = {d["txn_id"]: d["label"] for d in everything["alerts"]}
    assert labels["t1"] == 1 and labels["u1"] == 0 and labels["s3"] == 1

    assert get_alerts(store_sink, level="warning")["total"] == 10
    assert get_alerts(store_sink, level="OK")["total"] == 1
    assert get_alerts(store_sink, txn_id="u3")["alerts"][0]["score"] == 0.83
    assert get_alerts(store_sink, model="iforest")["total"] == 6
    since = get_alerts(store_sink, since="2026-11-22T20:55:55Z", until="2026-11-22T20:56:08Z")
    assert {d["txn_id"] for d in since["alerts"]} == {"u3", "t1", "t2"}

    # Offset paging and cursor paging visit everything once.
    seen = []
    for offset in range(0, everything["total"], 7):
        seen += [d["_id"] for d in get_alerts(store_sink, limit=7, offset=offset)["alerts"]]
    assert seen == [d["_id"] for d in everything["alerts"]]
    seen, cursor = [], None
    while True:
        # an offset beside a cursor is ignored, and the answer says so
        page = get_alerts(
            store_sink, limit=8, **({"cursor": cursor, "offset": 5} if cursor else {})
        )
        assert page["offset"] == 0
        seen += [d["_id"] for d in page["alerts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [d["_id"] for d in everything["alerts"]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: must be between 1 and 1000"),
        ({"limit": "x"}, "limit: must be an integer"),
        ({"level": "PANIC"}, "level: must be one of"),
        ({"since": "last week"}, "since: must be RFC 3339 or epoch seconds"),
        ({"cursor": "!!"}, "cursor: invalid cursor"),
        # Beyond SQLite's int64: refused, not a 500.
        ({"since": "inf"}, "since: must be RFC 3339 or epoch seconds"),
        ({"until": "1e200"}, "until: must be RFC 3339 or epoch seconds"),
        ({"since": "2300-01-01T00:00:00Z"}, "since: must be RFC 3339 or epoch seconds"),
        ({"offset": str(2**70)}, "offset: must be between 0 and"),
        ({"cursor": encode_cursor(2**70, 1)}, "cursor: invalid cursor"),
    ],
)
def test_store_query_errors(store_sink, params, message):
    r = requests.get(f"{store_sink.url}/alerts", params=params, headers=AUTH, timeout=5)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_store_refuses_a_time_beyond_int64_nanoseconds(store_sink):
    raw = json.loads(BODIES["00-critical-prev-critical.json"])
    raw["data"]["series"][0]["values"][0][0] = "2300-01-01T00:00:00Z"
    r = store_sink.post(json.dumps(raw))
    assert r.status_code == 400
    assert "outside the int64 nanosecond range" in r.json()["error"]
    assert get_alerts(store_sink)["total"] == 0


def test_app_built_from_the_environment_requires_a_token(tmp_path, monkeypatch):
    # gunicorn "alert_sink:create_app()" takes its settings from ALERT_SINK_*.
    for name in [n for n in os.environ if n.startswith("ALERT_SINK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ALERT_SINK_STORE", f"sqlite:{tmp_path / 'alerts.db'}")
    with pytest.raises(ConfigError, match="bearer token is required"):
        create_app()
    monkeypatch.setenv("ALERT_SINK_TOKEN", "from-env")
    s = RunningSink(None)
    try:
        assert requests.get(f"{s.url}/alerts", timeout=5).status_code == 401
        assert s.post(synthetic_alert(1), headers=None).status_code == 401
        ok = {"Authorization": "Bearer from-env"}
        assert s.post(synthetic_alert(1), headers=ok).status_code == 202
        r = requests.get(f"{s.url}/alerts", headers=ok, timeout=5)
        assert r.status_code == 200 and r.json()["total"] == 1
    finally:
        s.close()


def test_store_mode_requires_token_on_alerts(store_sink):
    assert requests.get(f"{store_sink.url}/alerts", timeout=5).status_code == 401
    h = requests.get(f"{store_sink.url}/health", timeout=5).json()
    assert h == {"mode": "store", "accepting": True, "store": {"documents": 0}, "status": "ok"}
