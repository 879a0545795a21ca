"""The model REST API against a real port: predictions equal the model's own scores,
versions and aliases, hot reload, checksum refusal, OpenAPI, metrics, and the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from http_serving import serve_in_thread
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from werkzeug.serving import make_server

from api import ApiConfig, ModelService, create_app
from api.schemas import ErrorSchema, HealthSchema, PredictResponseSchema
from models.contract import FEATURES
from models.registry import Registry

MODEL = "creditcard"
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- fixtures -------------------------------------------------------------------------
def make_data(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, 0] = rng.uniform(0, 172_800, size=n)  # Time, seconds
    X[:, -1] = rng.gamma(2.0, 40.0, size=n)  # Amount
    logits = 1.5 * X[:, 1] - 2.0 * X[:, 3] + 0.01 * (X[:, -1] - 80) - 1.0
    y = (logits + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return X, y


def fit(seed: int, C: float) -> LogisticRegression:
    X, y = make_data(seed)
    # Fitted on a numpy array in FEATURES order, as the registry contract requires.
    return LogisticRegression(C=C, max_iter=2000).fit(X, y)


@pytest.fixture(scope="module")
def estimators() -> dict[str, LogisticRegression]:
    return {"1": fit(1, 1.0), "2": fit(2, 0.001)}


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory, estimators) -> Path:
    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root)
    reg.register(MODEL, estimators["1"], features=FEATURES, threshold=0.4, metrics={"auc": 0.9})
    reg.register(MODEL, estimators["2"], features=FEATURES, threshold=0.6)
    reg.promote(MODEL, "1", "production")
    reg.promote(MODEL, "2", "challenger")
    return root


@pytest.fixture
def registry_dir(tmp_path, base_registry) -> Path:
    """A private copy, for tests that promote or tamper."""
    dst = tmp_path / "registry"
    shutil.copytree(base_registry, dst)
    return dst


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
def shared_url(base_registry):
    """A server on the read-only registry, shared by the tests that only read."""
    app = create_app(ApiConfig(registry=base_registry, model=MODEL, reload_interval=0))
    with serve(app) as url:
        yield url


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def records(X: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return sample.value
    return None


# -- predictions ------------------------------------------------------------------------
@pytest.mark.slow
def test_single_record_scores_equal_the_model(shared_url, session, estimators):
    X, _ = make_data(99, n=1)
    body = {**records(X)[0], "txn_id": "t-0001"}
    r = session.post(f"{shared_url}/v1/predict", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert PredictResponseSchema().validate(data) == {}
    assert (data["model"], data["model_version"], data["count"]) == (MODEL, "1", 1)
    (p,) = data["predictions"]
    expected = estimators["1"].predict_proba(X)[0, 1]
    assert p["score"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert p["is_anomaly"] is bool(expected >= 0.4)
    assert p["threshold"] == 0.4
    assert (p["model"], p["model_version"], p["txn_id"]) == (MODEL, "1", "t-0001")


def test_batch_scores_in_order_with_integers_accepted(shared_url, session, estimators):
    X, _ = make_data(7, n=300)
    X[:, 0] = np.round(X[:, 0])  # whole seconds, sent as JSON integers below
    body = records(X)
    for rec in body:
        rec["Time"] = int(rec["Time"])
    body[5]["txn_id"] = "only-this-one"
    r = session.post(f"{shared_url}/v1/predict", json=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    expected = estimators["1"].predict_proba(X)[:, 1]
    np.testing.assert_allclose([p["score"] for p in preds], expected, rtol=1e-12, atol=1e-15)
    flags = [p["is_anomaly"] for p in preds]
    assert flags == [bool(s >= 0.4) for s in expected]
    assert any(flags) and not all(flags)  # the threshold splits this sample
    assert [p.get("txn_id") for p in preds].count("only-this-one") == 1
    assert "txn_id" not in preds[0] and preds[5]["txn_id"] == "only-this-one"


@pytest.mark.parametrize(
    ("ref", "version", "threshold"),
    [("2", "2", 0.6), ("challenger", "2", 0.6), ("production", "1", 0.4), ("1", "1", 0.4)],
)
def test_version_query_selects_version_or_alias(
    shared_url, session, estimators, ref, version, threshold
):
    X, _ = make_data(5, n=20)
    r = session.post(f"{shared_url}/v1/predict", params={"version": ref}, json=records(X))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert {(p["model_version"], p["threshold"]) for p in preds} == {(version, threshold)}
    np.testing.assert_allclose(
        [p["score"] for p in preds], estimators[version].predict_proba(X)[:, 1], rtol=1e-12
    )


@pytest.mark.parametrize("ref", ["9", "staging", "latest-but-wrong"])
def test_unknown_version_is_404(shared_url, session, ref):
    X, _ = make_data(5, n=1)
    r = session.post(f"{shared_url}/v1/predict", params={"version": ref}, json=records(X)[0])
    assert r.status_code == 404
    body = r.json()
    assert ErrorSchema().validate(body) == {}
    assert body["error"] == "model_not_found" and MODEL in body["message"]


def test_versions_are_cached_lru_and_a_held_version_is_never_evicted(registry_dir, estimators):
    from models.backends import BackendFactory, sklearn_builder

    calls: list[str] = []

    def counting_builder(registry, card):
        calls.append(card.version)
        return sklearn_builder(registry, card)

    reg = Registry(registry_dir)
    reg.register(MODEL, estimators["1"], features=FEATURES, threshold=0.5)  # v3
    service = ModelService(
        ApiConfig(registry=registry_dir, model=MODEL, cache_size=2, reload_interval=0),
        factory=BackendFactory({"sklearn": counting_builder}),
    )

    def version(ref=None):
        with service.use(ref) as backend:
            return backend.version

    assert version() == "1" and calls == ["1"]
    assert version("2") == "2" and version("challenger") == "2"
    assert calls == ["1", "2"]  # the alias resolved to the cached version
    # A third version evicts the least recently used one nobody holds: 2, not the
    # serving 1, which the followed alias holds.
    assert version("3") == "3"
    assert service.cached_versions() == ["1", "3"]
    assert version("1") == "1" and calls == ["1", "2", "3"]
    assert version("2") == "2" and calls == ["1", "2", "3", "2"]
    # A request holding a version keeps it open even when the cache moves on.
    with service.use("3") as held:
        version("2")
        version("1")
        assert not held.closed
        np.testing.assert_array_equal(held.score(np.zeros((1, len(FEATURES)))).shape, (1,))
    service.close()


# -- models, health, metrics ----------------------------------------------------------
def test_models_list_and_detail(shared_url, session, base_registry):
    r = session.get(f"{shared_url}/v1/models")
    assert r.status_code == 200
    (model,) = r.json()["models"]
    assert model["name"] == MODEL
    assert model["aliases"] == {"production": "1", "challenger": "2"}
    assert [(v["version"], v["aliases"], v["threshold"]) for v in model["versions"]] == [
        ("1", ["production"], 0.4),
        ("2", ["challenger"], 0.6),
    ]
    assert model["versions"][0]["metrics"] == {"auc": 0.9}

    r = session.get(f"{shared_url}/v1/models/{MODEL}")
    assert r.status_code == 200
    detail = r.json()
    card = Registry(base_registry).card(MODEL, "production")
    assert detail["version"] == "1" and detail["card"] == dict(card.data)
    assert detail["card"]["features"] == FEATURES
    assert detail["card"]["artifact"]["sha256"] == card.artifact_sha256

    r = session.get(f"{shared_url}/v1/models/{MODEL}", params={"version": "challenger"})
    assert r.json()["version"] == "2" and r.json()["card"]["threshold"] == 0.6


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/models/nosuchmodel", {}),
        (f"/v1/models/{MODEL}", {"version": "42"}),
        ("/v1/models/..", {}),
        ("/v1/models/" + "m" * 300, {}),  # longer than a file name may be
    ],
)
def test_models_unknown_is_404(shared_url, session, path, params):
    r = session.get(shared_url + path, params=params)
    assert r.status_code == 404
    assert ErrorSchema().validate(r.json()) == {}


@pytest.mark.slow
def test_health_and_metrics(registry_dir, session):
    app = create_app(ApiConfig(registry=registry_dir, model=MODEL))
    with serve(app) as url:
        health = session.get(f"{url}/health")
        assert health.status_code == 200
        h = health.json()
        assert HealthSchema().validate(h) == {}
        assert (h["status"], h["serving_version"], h["last_error"]) == ("ok", "1", None)

        X, _ = make_data(3, n=25)
        assert session.post(f"{url}/v1/predict", json=records(X)).status_code == 200
        assert session.post(f"{url}/v1/predict", json=records(X)[0]).status_code == 200
        assert session.post(f"{url}/v1/predict", json=[{"V1": True}]).status_code == 422
        r = session.get(f"{url}/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.text
    assert metric_value(text, "api_predictions_total", {"model": MODEL, "version": "1"}) == 26
    assert metric_value(text, "api_batch_records_count") == 2
    assert metric_value(text, "api_batch_records_sum") == 26
    assert metric_value(text, "api_invalid_requests_total", {"error": "validation_failed"}) == 1
    assert (
        metric_value(
            text,
            "api_requests_total",
            {"endpoint": "/v1/predict", "method": "POST", "status": "200"},
        )
        == 2
    )
    assert metric_value(text, "api_model_serving_info", {"version": "1"}) == 1
    assert metric_value(text, "api_request_duration_seconds_count", {"endpoint": "/health"}) == 1


def test_metrics_are_per_app(registry_dir):
    a = create_app(ApiConfig(registry=registry_dir, model=MODEL))
    b = create_app(ApiConfig(registry=registry_dir, model=MODEL))
    X, _ = make_data(3, n=4)
    assert a.test_client().post("/v1/predict", json=records(X)).status_code == 200
    text_b = b.test_client().get("/metrics").get_data(as_text=True)
    assert metric_value(text_b, "api_predictions_total", {"version": "1"}) is None


# -- hot reload -----------------------------------------------------------------------
@pytest.mark.slow
def test_hot_reload_on_promotion(registry_dir, session, estimators):
    app = create_app(ApiConfig(registry=registry_dir, model=MODEL, reload_interval=0))
    X, _ = make_data(11, n=10)
    with serve(app) as url:
        first = session.post(f"{url}/v1/predict", json=records(X)).json()
        assert first["model_version"] == "1"
        Registry(registry_dir).promote(MODEL, "2", "production")
        second = session.post(f"{url}/v1/predict", json=records(X)).json()
        assert second["model_version"] == "2"
        np.testing.assert_allclose(
            [p["score"] for p in second["predictions"]],
            estimators["2"].predict_proba(X)[:, 1],
            rtol=1e-12,
        )
        assert {p["threshold"] for p in second["predictions"]} == {0.6}
        h = session.get(f"{url}/health").json()
        assert (h["status"], h["serving_version"]) == ("ok", "2")
        text = session.get(f"{url}/metrics").text
    assert metric_value(text, "api_model_reloads_total") == 2  # startup load + the switch
    assert metric_value(text, "api_model_serving_info", {"version": "2"}) == 1
    assert metric_value(text, "api_model_serving_info", {"version": "1"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_alias_file_is_checked_at_most_every_interval(registry_dir):
    clock = FakeClock()
    service = ModelService(
        ApiConfig(registry=registry_dir, model=MODEL, reload_interval=0.5, clock=clock)
    )
    assert service.check().version == "1"
    Registry(registry_dir).promote(MODEL, "2", "production")
    clock.now += 0.4
    assert service.check().version == "1"  # within the interval: no stat, old version
    clock.now += 0.2
    assert service.check().version == "2"
    service.close()


@pytest.mark.slow
def test_failed_promotion_keeps_old_version_and_shows_in_health(registry_dir, session, estimators):
    reg = Registry(registry_dir)
    card = reg.register(MODEL, estimators["2"], features=FEATURES, threshold=0.5)  # v3
    artifact = reg.artifact_path(card)
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    app = create_app(ApiConfig(registry=registry_dir, model=MODEL, reload_interval=0))
    X, _ = make_data(12, n=3)
    with serve(app) as url:
        reg.promote(MODEL, "3", "production")
        r = session.post(f"{url}/v1/predict", json=records(X))
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        health = session.get(f"{url}/health")
        assert health.status_code == 200
        h = health.json()
        assert h["status"] == "degraded" and h["serving_version"] == "1"
        assert h["last_error"]["version"] == "3"
        assert (
            "sha256" in h["last_error"]["message"]
            and "does not match" in h["last_error"]["message"]
        )
        # Asking for the tampered version explicitly is refused, not served.
        r = session.post(f"{url}/v1/predict", params={"version": "3"}, json=records(X))
        assert r.status_code == 503
        assert r.json()["error"] == "model_unavailable" and "sha256" in r.json()["message"]
        # Promoting a good version clears the error.
        reg.promote(MODEL, "2", "production")
        assert session.post(f"{url}/v1/predict", json=records(X)).json()["model_version"] == "2"
        h = session.get(f"{url}/health").json()
        assert (h["status"], h["last_error"]) == ("ok", None)
        text = session.get(f"{url}/metrics").text
    assert (
        metric_value(text, "api_model_load_failures_total", {"error_type": "ChecksumMismatch"}) == 2
    )


@pytest.mark.slow
def test_tampered_only_version_gives_503_until_fixed(registry_dir, session):
    reg = Registry(registry_dir)
    artifact = reg.artifact_path(reg.card(MODEL, "1"))
    good = artifact.read_bytes()
    artifact.write_bytes(good[:-10])
    app = create_app(ApiConfig(registry=registry_dir, model=MODEL, reload_interval=0))
    X, _ = make_data(13, n=2)
    with serve(app) as url:
        health = session.get(f"{url}/health")
        assert health.status_code == 503
        h = health.json()
        assert h["status"] == "unavailable" and h["serving_version"] is None
        assert "sha256" in h["last_error"]["message"]
        r = session.post(f"{url}/v1/predict", json=records(X))
        assert r.status_code == 503
        body = r.json()
        assert ErrorSchema().validate(body) == {}
        assert body["error"] == "model_unavailable" and "sha256" in body["message"]
        # Repairing the artifact and re-promoting recovers without a restart.
        artifact.write_bytes(good)
        reg.promote(MODEL, "1", "production")
        r = session.post(f"{url}/v1/predict", json=records(X))
        assert r.status_code == 200 and r.json()["model_version"] == "1"


@pytest.mark.slow
def test_missing_registry_answers_503_not_500(tmp_path, session):
    app = create_app(ApiConfig(registry=tmp_path / "empty", model=MODEL))
    with serve(app) as url:
        assert session.get(f"{url}/health").status_code == 503
        X, _ = make_data(1, n=1)
        r = session.post(f"{url}/v1/predict", json=records(X))
        assert r.status_code == 503 and "unknown model" in r.json()["message"]
        assert session.get(f"{url}/v1/models").json() == {"models": []}


# -- OpenAPI --------------------------------------------------------------------------
def _url_map_operations(app) -> set[tuple[str, str]]:
    import re

    ops = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in ("api-docs", "swagger-ui-assets"):
            continue  # the spec, the docs page and its static assets
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            ops.add((path, method.lower()))
    return ops


@pytest.mark.slow
def test_openapi_document_is_valid_and_covers_every_route(base_registry):
    app = create_app(ApiConfig(registry=base_registry, model=MODEL))
    with serve(app) as url:
        spec = requests.get(f"{url}/openapi.json", timeout=5).json()
    try:
        from openapi_spec_validator import validate
    except ImportError:  # structural checks below still run
        validate = None
    if validate is not None:
        validate(spec)
    assert spec["openapi"].startswith("3.")
    verbs = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    documented = {
        (path, method) for path, item in spec["paths"].items() for method in item if method in verbs
    }
    routes = _url_map_operations(app)
    assert routes == documented
    assert {("/v1/predict", "post"), ("/health", "get"), ("/metrics", "get")} <= routes
    for path, method in documented:
        op = spec["paths"][path][method]
        assert op.get("summary") and "200" in op["responses"], (path, method)
    record = spec["components"]["schemas"]["PredictRecord"]
    assert list(record["properties"]) == [*FEATURES, "txn_id"]
    assert sorted(record["required"]) == sorted(FEATURES)
    assert record["properties"]["V1"]["type"] == "number"
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert len(body["schema"]["oneOf"]) == 2
    assert {"400", "415", "422", "503"} <= set(spec["paths"]["/v1/predict"]["post"]["responses"])


def test_docs_page_is_served_and_points_at_the_spec(shared_url, session):
    r = session.get(f"{shared_url}/docs")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in r.text and "swagger-ui" in r.text.lower()
    # Every script and stylesheet the page loads is served by the API itself: /docs
    # works without internet access.
    import re

    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', r.text)
    assert len(assets) >= 3, r.text
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        got = session.get(f"{shared_url}{asset}")
        assert got.status_code == 200 and len(got.content) > 1000, asset


@pytest.mark.slow
def test_docs_page_can_load_swagger_ui_from_another_url(base_registry):
    app = create_app(
        ApiConfig(
            registry=base_registry,
            model=MODEL,
            swagger_ui_url="https://cdn.example/swagger-ui-dist@5/",
        )
    )
    with serve(app) as url:
        page = requests.get(f"{url}/docs", timeout=5).text
        assert "https://cdn.example/swagger-ui-dist@5/swagger-ui-bundle.js" in page
        assert requests.get(f"{url}/docs/assets/swagger-ui.css", timeout=5).status_code == 404


# -- configuration and CLI ------------------------------------------------------------
def test_config_from_env_and_overrides(tmp_path):
    env = {"API_REGISTRY": str(tmp_path), "API_MODEL": "other", "API_MAX_BATCH": "7"}
    cfg = ApiConfig.from_env(env, max_batch=9)
    assert (cfg.registry, cfg.model, cfg.max_batch, cfg.alias) == (
        tmp_path,
        "other",
        9,
        "production",
    )
    assert ApiConfig.from_env({"API_SWAGGER_UI_URL": "/ui/"}).swagger_ui_url == "/ui/"
    with pytest.raises(ValueError, match="API_MAX_BATCH"):
        ApiConfig.from_env({"API_MAX_BATCH": "many"})
    with pytest.raises(ValueError, match="max_batch"):
        ApiConfig(max_batch=0)
    with pytest.raises(ValueError, match="unknown API config keys: colour"):
        create_app({"colour": "blue"})


def test_cli_bad_number_in_the_environment_is_a_usage_error(monkeypatch, capsys):
    from api.__main__ import main

    monkeypatch.setenv("API_MAX_BATCH", "many")
    with pytest.raises(SystemExit) as info:
        main(["--port", "0"])
    assert info.value.code == 2
    assert "--max-batch: invalid int value: 'many'" in capsys.readouterr().err


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}: {err.decode()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.mark.slow
def test_cli_serves_and_stops_on_sigterm(registry_dir, estimators):
    from conftest import eventually, free_port

    port = free_port()
    env = {**os.environ, "API_MODEL": MODEL, "API_MAX_BATCH": "3", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--registry", str(registry_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        X, _ = make_data(21, n=3)
        r = requests.post(f"{url}/v1/predict", json=records(X), timeout=5)
        assert r.status_code == 200
        np.testing.assert_allclose(
            [p["score"] for p in r.json()["predictions"]],
            estimators["1"].predict_proba(X)[:, 1],
            rtol=1e-12,
        )
        # API_MAX_BATCH from the environment applies.
        X4, _ = make_data(21, n=4)
        r = requests.post(f"{url}/v1/predict", json=records(X4), timeout=5)
        assert r.status_code == 422 and "maximum of 3" in r.json()["problems"][0]["message"]
        Registry(registry_dir).promote(MODEL, "2", "production")
        # the CLI's default reload interval is 0.5 s: a later request sees the new version
        eventually(
            lambda: (
                requests.post(f"{url}/v1/predict", json=records(X), timeout=30).json()[
                    "model_version"
                ]
                == "2"
            ),
            what="the promoted version",
            interval=0.2,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    log = err.decode()
    assert proc.returncode == 0, log[-2000:]
    assert "event=listening" in log and f"port={port}" in log
    assert "event=model_switch" in log and "to_version=2" in log
    assert "event=stopped" in log


@pytest.mark.slow
def test_gunicorn_reads_registry_from_env(registry_dir):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed next to this interpreter")
    from conftest import free_port

    port = free_port()
    env = {
        **os.environ,
        "API_REGISTRY": str(registry_dir),
        "API_MODEL": MODEL,
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "-c",
            "python:api.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "api:create_app()",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        assert requests.get(f"{url}/health", timeout=5).json()["registry"] == str(registry_dir)
        X, _ = make_data(22, n=2)
        r = requests.post(f"{url}/v1/predict", json=records(X), timeout=5)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    # api.gunicorn_conf routes the service's own log lines to stderr.
    assert "event=model_switch model=creditcard alias=production" in err.decode()
    assert "logger=api.app event=app_created" in err.decode()


@pytest.mark.slow
def test_concurrent_requests_during_promotions_all_succeed(registry_dir, estimators):
    app = create_app(ApiConfig(registry=registry_dir, model=MODEL, reload_interval=0))
    X, _ = make_data(31, n=8)
    expected = {v: est.predict_proba(X)[:, 1] for v, est in estimators.items()}
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    failures: list[BaseException] = []

    def client() -> None:
        try:
            run_client()
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    def run_client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                r = s.post(f"{url}/v1/predict", json=records(X), timeout=10)
                version = r.json().get("model_version") if r.status_code == 200 else None
                if version is not None:
                    scores = [p["score"] for p in r.json()["predictions"]]
                    # Never a mix: every score comes from the version that is reported.
                    np.testing.assert_allclose(scores, expected[version], rtol=1e-12)
                seen.append((r.status_code, version))

    reg = Registry(registry_dir)
    with serve(app) as url:
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(10):
            reg.promote(MODEL, "2" if i % 2 == 0 else "1", "production")
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not failures, failures[0]
    assert seen and {status for status, _ in seen} == {200}
    assert {version for _, version in seen} == {"1", "2"}
