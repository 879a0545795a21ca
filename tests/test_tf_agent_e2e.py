"""End to end through a real agent Unix socket: the agent scores through the TF Serving
backend against the in-process TF Serving peer; a stalled or absent server never loses a
point and never delays keepalives."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from agent_helpers import Client, close_clients, register_tiny, req, row_point
from conftest import free_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from models.backends.tfserving import TFServingConfig
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.replay import build_payloads, run_replay
from udf_agent.server import AgentConfig, AgentServer

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tf_served):
    return tf_served


@pytest.fixture
def registry(served, tmp_path) -> Registry:
    """The bundle's TF model plus a local scikit-learn model to fall back on."""
    bundle, _ = served
    reg = Registry(tmp_path / "registry")
    shutil.copytree(bundle.registry.root / bundle.name, reg.root / bundle.name)
    register_tiny(reg, "creditcard", seed=0)
    return reg


def _agent(tmp_path, registry, **tfserving) -> AgentServer:
    cfg = AgentConfig(
        socket_path=tmp_path / "udf.sock",
        registry=registry.root,
        reload_interval=0.0,
        tfserving=TFServingConfig(
            **{
                "transport": "grpc",
                "timeout": 0.3,
                "breaker_failures": 2,
                "breaker_cooldown": 60.0,
                **tfserving,
            }
        ),
    )
    return AgentServer(cfg, registry=registry).start()


@pytest.fixture(autouse=True)
def _cleanup(served):
    _, peer = served
    peer.reset()
    yield
    close_clients()
    peer.reset()


def _backend_samples(srv: AgentServer) -> dict[tuple, float]:
    """Samples of the agent's udf_agent_backend_* metrics: (name, labels...) -> value."""
    text = generate_latest(srv.metrics.registry).decode()
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        if fam.name.startswith("udf_agent_backend_")
        for s in fam.samples
    }


def _sample(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, *sorted(labels.items()))]


def _send_rows(c: Client, X: np.ndarray) -> None:
    c.send(b"".join(req(point=row_point(row, t=i + 1, txn=f"t{i}")) for i, row in enumerate(X)))


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_points_scored_through_tf_serving_equal_keras_predictions(
    served, registry, tmp_path, transport
):
    bundle, peer = served
    srv = _agent(
        tmp_path, registry, target=peer.target, rest_url=peer.rest_url,
        transport=transport,
    )  # fmt: skip
    try:
        c = Client(srv.config.socket_path)
        init = c.init({"model": bundle.name, "maxBatch": 64})
        assert init.success, init.error
        X = bundle.X_test
        before = peer.predict_requests
        _send_rows(c, X)
        got = c.recv_points(len(X))
        assert [p.fieldsString["txn_id"] for p in got] == [f"t{i}" for i in range(len(X))]
        scores = np.array([p.fieldsDouble["score"] for p in got])
        np.testing.assert_allclose(scores, bundle.keras_scores("2", X), rtol=1e-5)
        assert {(p.tags["model"], p.tags["model_version"]) for p in got} == {(bundle.name, "2")}
        assert all(p.fieldsBool["is_anomaly"] == (p.fieldsDouble["score"] >= 0.5) for p in got)
        # Micro-batched: a handful of Predict calls for 240 points, not one per point.
        assert 1 <= peer.predict_requests - before <= math.ceil(len(X) / 64) + 4
        # The backend's own counters reach the agent's Prometheus metrics.
        m = _backend_samples(srv)
        who = {"model": bundle.name, "version": "2", "backend": transport}
        assert _sample(m, "udf_agent_backend_rows_total", **who) == len(X)
        assert _sample(m, "udf_agent_backend_requests_total", **who) == (
            peer.predict_requests - before
        )
        assert _sample(m, "udf_agent_backend_failed_batches_total", **who) == 0
        assert _sample(m, "udf_agent_backend_breaker_state", **who, state="closed") == 1
        assert _sample(m, "udf_agent_backend_breaker_state", **who, state="open") == 0
    finally:
        srv.stop()


def test_stalled_server_points_fall_back_and_keepalives_are_answered(served, registry, tmp_path):
    bundle, peer = served
    srv = _agent(tmp_path, registry, target=peer.target)
    fallback = registry.load_artifact(registry.card("creditcard"))
    try:
        c = Client(srv.config.socket_path)
        init = c.init({"model": bundle.name, "maxBatch": 32, "fallback": "creditcard@production"})
        assert init.success, init.error
        peer.stall = 10.0
        X = bundle.X_test[:96]
        _send_rows(c, X)
        # keepalives are answered while the stalled calls run out their deadline
        for i in range(15):
            c.send(req(keepalive=pb.KeepaliveRequest(time=i)))
            assert c.recv_kind("keepalive").keepalive.time == i
        got = c.recv_points(len(X))
        assert all(p.tags["model"] == "creditcard" for p in got)
        assert all(p.tags["fallback_for"] == bundle.name for p in got)
        np.testing.assert_allclose(
            [p.fieldsDouble["score"] for p in got], fallback.predict_proba(X)[:, 1]
        )
        assert peer.predict_requests >= 1  # TF Serving was really tried first
        # Two timed-out batches opened the breaker; the third was rejected at once.
        m = _backend_samples(srv)
        who = {"model": bundle.name, "version": "2", "backend": "grpc"}
        assert _sample(m, "udf_agent_backend_failed_batches_total", **who) == 2
        assert _sample(m, "udf_agent_backend_rejected_batches_total", **who) == 1
        assert _sample(m, "udf_agent_backend_breaker_opened_total", **who) == 1
        assert _sample(m, "udf_agent_backend_breaker_state", **who, state="open") == 1
        assert _sample(m, "udf_agent_backend_rows_total", **who) == 0
    finally:
        peer.stall = 0.0
        srv.stop()


def test_absent_server_without_fallback_passes_points_on_with_score_error(
    served, registry, tmp_path
):
    bundle, _ = served
    srv = _agent(tmp_path, registry, target=f"127.0.0.1:{free_port()}")
    try:
        c = Client(srv.config.socket_path)
        # Unreachable at start-up: the task still starts (breaker open).
        init = c.init({"model": bundle.name, "maxBatch": 16})
        assert init.success, init.error
        X = bundle.X_test[:48]
        _send_rows(c, X)
        got = c.recv_points(len(X))
        assert [p.fieldsString["txn_id"] for p in got] == [f"t{i}" for i in range(len(X))]
        assert all("score" not in p.fieldsDouble for p in got)
        errors = {p.fieldsString["score_error"] for p in got}
        assert all(f"backend {bundle.name} v2" in e for e in errors)
        assert any("CircuitOpen" in e for e in errors)
    finally:
        srv.stop()


def test_signature_mismatch_fails_the_task_init(served, registry, tmp_path):
    import json

    bundle, peer = served
    card_path = registry.root / bundle.name / "2" / "model.json"
    card = json.loads(card_path.read_text())
    card["serving"]["signature_name"] = "predict_v2"
    card_path.write_text(json.dumps(card))
    srv = _agent(tmp_path, registry, target=peer.target)
    try:
        c = Client(srv.config.socket_path)
        init = c.init({"model": bundle.name})
        assert not init.success
        assert "no signature 'predict_v2' (served: serving_default)" in init.error
    finally:
        srv.stop()


def test_replay_driver_through_the_agent(served, registry, tmp_path):
    bundle, peer = served
    srv = _agent(tmp_path, registry, target=peer.target)
    try:
        rows = [
            {**dict(zip(bundle.feature_names, map(float, x), strict=True)), "txn_id": f"r{i}"}
            for i, x in enumerate(bundle.X_test)
        ]
        report = run_replay(
            srv.config.socket_path,
            build_payloads(rows),
            {"model": bundle.name, "maxBatch": "128"},
            collect=True,
        )
        assert report.violations == []
        assert report.received == len(rows) and report.score_errors == 0
        by_txn = {p.txn_id: p.score for p in report.points}
        scores = np.array([by_txn[f"r{i}"] for i in range(len(rows))])
        np.testing.assert_allclose(scores, bundle.keras_scores("2", bundle.X_test), rtol=1e-5)
    finally:
        srv.stop()
