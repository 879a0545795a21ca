"""The agent on a real Unix socket, driven like Kapacitor drives it."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import (
    Client,
    GateBackend,
    SlowBackend,
    close_clients,
    factory_with_test_kinds,
    init_req,
    register_tiny,
    req,
    row_point,
    train_tiny,
    unframe,
)
from conftest import WAIT, eventually
from prometheus_client import generate_latest

from models import contract
from models.backends import SklearnBackend
from models.provider import ModelProvider
from models.registry import Registry
from udf_agent.errors import AgentError
from udf_agent.options import ScoreOptions
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import FrameDecoder, encode_varint
from udf_agent.replay import build_payloads, run_replay
from udf_agent.scoring import ScoringSession
from udf_agent.server import AgentConfig, AgentServer

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "kapacitor-udf-socket"


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture
def registry(tmp_path) -> Registry:
    reg = Registry(tmp_path / "registry")
    register_tiny(reg, "creditcard", seed=0)
    return reg


@pytest.fixture
def server(tmp_path, registry):
    cfg = AgentConfig(
        socket_path=tmp_path / "udf.sock",
        batch_socket_path=tmp_path / "udf-batch.sock",
        registry=registry.root,
        reload_interval=0.0,
    )
    srv = AgentServer(cfg, registry=registry, factory=factory_with_test_kinds()).start()
    yield srv
    srv.stop()


def _rows(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(contract.FEATURES)))


def _eventually(check, timeout: float = WAIT) -> None:
    """Counters are bumped right after the write, so a reader may see the data first."""
    eventually(check, timeout)


def _metric(server: AgentServer, name: str, labels: dict | None = None) -> float:
    v = server.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def test_info_on_its_own_connection_declares_typed_options(server):
    c = Client(server.config.socket_path)
    c.send(req(info=pb.InfoRequest()))
    info = c.recv_kind("info").info
    assert info.wants == pb.STREAM and info.provides == pb.STREAM
    types = {k: list(v.valueTypes) for k, v in info.options.items()}
    assert types["model"] == [pb.STRING]
    assert types["version"] == [pb.STRING]
    assert types["field"] == [pb.STRING]
    assert types["threshold"] == [pb.DOUBLE]
    assert types["challenger"] == [pb.STRING]
    assert types["maxBatch"] == [pb.INT]
    assert types["maxDelay"] == [pb.DURATION]
    c.close()
    b = Client(server.config.batch_socket_path)
    b.send(req(info=pb.InfoRequest()))
    binfo = b.recv_kind("info").info
    assert binfo.wants == pb.BATCH and binfo.provides == pb.BATCH
    b.close()


def test_scores_equal_the_models_own_predictions_and_metadata_is_kept(server, registry):
    model = registry.load_artifact(registry.card("creditcard"))
    X = _rows(50)
    c = Client(server.config.socket_path)
    assert c.init(
        {"model": "creditcard", "maxBatch": 16, "maxDelay": ("duration", 2_000_000)}
    ).success
    sent = []
    for i, row in enumerate(X):
        p = row_point(row, t=1_000 + i, txn=f"t{i}", label=i % 2)
        p.group = "source=test"
        p.dimensions.append("source")
        p.byName = bool(i % 2)
        sent.append(p)
        c.send(req(point=p))
    got = c.recv_points(len(X))
    expected = model.predict_proba(X)[:, 1]
    for i, (p_in, p_out) in enumerate(zip(sent, got)):
        assert p_out.time == p_in.time  # arrival order kept
        for attr in ("name", "database", "retentionPolicy", "group", "byName"):
            assert getattr(p_out, attr) == getattr(p_in, attr)
        assert list(p_out.dimensions) == ["source"]
        assert p_out.tags["source"] == "test"
        assert p_out.tags["model"] == "creditcard" and p_out.tags["model_version"] == "1"
        assert dict(p_out.fieldsInt) == {"label": i % 2}
        assert p_out.fieldsString["txn_id"] == f"t{i}"
        for f in contract.FEATURES:
            assert p_out.fieldsDouble[f] == p_in.fieldsDouble[f]
        assert p_out.fieldsDouble["score"] == pytest.approx(expected[i], rel=1e-12)
        assert p_out.fieldsDouble["threshold"] == 0.5
        assert p_out.fieldsBool["is_anomaly"] == (expected[i] >= 0.5)
        assert "score_error" not in p_out.fieldsString
    # 50 points at maxBatch 16: scored in vectorized calls, not one per point
    assert _metric(server, "udf_agent_batch_size_count") <= 5
    assert (
        _metric(server, "udf_agent_points_scored_total", {"model": "creditcard", "version": "1"})
        == 50
    )


def test_custom_field_and_threshold_options(server, registry):
    model = registry.load_artifact(registry.card("creditcard"))
    X = _rows(20, seed=3)
    c = Client(server.config.socket_path)
    assert c.init(
        {"model": "creditcard", "field": "fraud_p", "threshold": 0.05, "version": "1"}
    ).success
    for i, row in enumerate(X):
        c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
    got = c.recv_points(20)
    expected = model.predict_proba(X)[:, 1]
    for i, p in enumerate(got):
        assert "score" not in p.fieldsDouble
        assert p.fieldsDouble["fraud_p"] == pytest.approx(expected[i])
        assert p.fieldsDouble["threshold"] == 0.05
        assert p.fieldsBool["is_anomaly"] == (expected[i] >= 0.05)


def test_features_from_fieldsint_are_used(server, registry):
    model = registry.load_artifact(registry.card("creditcard"))
    row = np.round(_rows(1, seed=5)[0])
    p = row_point(row, t=5, txn="int")
    for f in ("Time", "Amount", "V3"):
        v = p.fieldsDouble[f]
        del p.fieldsDouble[f]
        p.fieldsInt[f] = int(v)
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
    c.send(req(point=p))
    (out,) = c.recv_points(1)
    assert out.fieldsDouble["score"] == pytest.approx(model.predict_proba(row.reshape(1, -1))[0, 1])


def test_bad_points_are_passed_on_with_score_error_and_counted(server):
    X = _rows(6, seed=9)
    points = [row_point(r, t=10 + i, txn=f"t{i}") for i, r in enumerate(X)]
    del points[1].fieldsDouble["V7"]
    points[2].fieldsDouble["V3"] = math.nan
    points[3].fieldsDouble["Amount"] = math.inf
    del points[4].fieldsDouble["V9"]
    points[4].fieldsString["V9"] = "abc"
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "maxBatch": 6}).success
    for p in points:
        c.send(req(point=p))
    got = c.recv_points(6)
    assert [p.time for p in got] == [p.time for p in points]
    assert "score" in got[0].fieldsDouble and "score" in got[5].fieldsDouble
    assert got[1].fieldsString["score_error"] == "missing V7"
    assert got[2].fieldsString["score_error"] == "V3 is nan"
    assert got[3].fieldsString["score_error"] == "Amount is inf"
    assert got[4].fieldsString["score_error"] == "V9 is not numeric"
    for p in got[1:5]:
        assert "score" not in p.fieldsDouble and "is_anomaly" not in p.fieldsBool
        assert p.tags["model"] == "creditcard"
    assert _metric(server, "udf_agent_errors_total", {"reason": "missing_feature"}) == 1
    assert _metric(server, "udf_agent_errors_total", {"reason": "non_finite_feature"}) == 2
    assert _metric(server, "udf_agent_errors_total", {"reason": "non_numeric_feature"}) == 1
    _eventually(lambda: _metric(server, "udf_agent_points_out_total") == 6)


def test_init_errors_are_actionable(server, registry):
    register_tiny(registry, "other", seed=1)
    c = Client(server.config.socket_path)
    r = c.init({"model": "nope"})
    assert not r.success
    assert "unknown model 'nope'" in r.error and "creditcard, other" in r.error
    r = c.init({"model": "creditcard", "version": "staging"})
    assert not r.success and "no alias 'staging'" in r.error and "production->1" in r.error
    r = c.init({"model": "creditcard", "maxBatch": 0, "threshold": 2.0})
    assert not r.success and ".maxBatch(0)" in r.error and ".threshold(2.0)" in r.error
    # wrong argument type: Kapacitor would send exactly what the script said
    r = c.init({"model": "creditcard", "maxBatch": "512"})
    assert not r.success and ".maxBatch() takes (INT), got (STRING)" in r.error
    # the connection is still usable for a good init
    assert c.init({"model": "creditcard"}).success


def test_recorded_kapacitor_task_connection(server):
    """Bytes recorded from Kapacitor 1.5: its init names an option we do not declare
    (shadow), so init fails with a message; points still come back; keepalives echo."""
    data = (FIXTURE_DIR / "task-connection.bin").read_bytes()
    c = Client(server.config.socket_path)
    c.send(data)
    r = c.recv_kind("init").init
    assert not r.success and "unknown option .shadow()" in r.error
    pts = c.recv_points(3)
    assert [p.fieldsString["txn_id"] for p in pts] == ["t1", "t2", "t3"]
    assert all(p.fieldsString["score_error"] == "agent not initialized" for p in pts)
    kas = [c.recv_kind("keepalive").keepalive.time for _ in range(11)]
    assert kas[0] == 1795381000987085387


def test_recorded_points_with_a_valid_init_are_scored(server):
    """The recorded points (only V1, V2, Amount, Time, label=0i, txn_id) lack most
    features: each comes back with a score_error naming them."""
    data = (FIXTURE_DIR / "task-connection.bin").read_bytes()
    # drop the recorded init frame (first frame) and send ours instead
    dec = FrameDecoder()
    dec.feed(data)
    frames = list(dec.frames())
    c = Client(server.config.socket_path)
    assert c.init(
        {"model": "creditcard", "maxDelay": ("duration", 5_000_000), "maxBatch": 512}
    ).success
    for body in frames[1:4]:
        c.send(encode_varint(len(body)) + body)
    pts = c.recv_points(3)
    for p in pts:
        assert p.fieldsString["score_error"].startswith("missing V3, V4, V5 (+")
        assert p.database == "fraud" and p.retentionPolicy == "autogen"


def test_snapshot_and_restore(server):
    c = Client(server.config.socket_path)
    c.send(req(snapshot=pb.SnapshotRequest()))
    assert c.recv_kind("snapshot").snapshot.snapshot == b""
    assert c.init({"model": "creditcard", "maxBatch": 64}).success
    c.send(req(snapshot=pb.SnapshotRequest()))
    snap = c.recv_kind("snapshot").snapshot.snapshot
    assert b'"model_version": "1"' in snap and b'"max_batch": 64' in snap
    c.send(req(restore=pb.RestoreRequest(snapshot=snap)))
    assert c.recv_kind("restore").restore.success
    c.send(req(restore=pb.RestoreRequest(snapshot=b"")))
    assert c.recv_kind("restore").restore.success
    c.send(req(restore=pb.RestoreRequest(snapshot=b"\xff\x00garbage")))
    r = c.recv_kind("restore").restore
    assert not r.success and "invalid snapshot" in r.error


def test_restore_after_init_on_a_new_connection_like_kapacitor(server):
    c1 = Client(server.config.socket_path)
    assert c1.init({"model": "creditcard"}).success
    c1.send(req(snapshot=pb.SnapshotRequest()))
    snap = c1.recv_kind("snapshot").snapshot.snapshot
    c1.close()
    c2 = Client(server.config.socket_path)
    assert c2.init({"model": "creditcard"}).success
    c2.send(req(restore=pb.RestoreRequest(snapshot=snap)))
    assert c2.recv_kind("restore").restore.success


def test_half_close_flushes_buffered_points(server):
    c = Client(server.config.socket_path)
    # a long maxDelay and large maxBatch: nothing would be flushed by size or time
    assert c.init(
        {"model": "creditcard", "maxBatch": 10000, "maxDelay": ("duration", 30 * 10**9)}
    ).success
    for i, row in enumerate(_rows(25)):
        c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
    c.sock.shutdown(socket.SHUT_WR)
    responses = c.read_until_eof()
    pts = [r.point for r in responses if r.WhichOneof("message") == "point"]
    assert [p.time for p in pts] == list(range(1, 26))
    assert all("score" in p.fieldsDouble for p in pts)


def test_batch_edge_scores_a_whole_batch_in_one_call(server, registry):
    model = registry.load_artifact(registry.card("creditcard"))
    X = _rows(30, seed=11)
    c = Client(server.config.batch_socket_path)
    assert c.init({"model": "creditcard", "maxBatch": 8}).success
    begin = pb.BeginBatch(name="transactions", group="source=x", size=30, byName=False)
    begin.tags["source"] = "x"
    c.send(req(begin=begin))
    for i, row in enumerate(X):
        c.send(req(point=row_point(row, t=100 + i, txn=f"b{i}")))
    end = pb.EndBatch(name="transactions", group="source=x", tmax=129)
    end.tags["source"] = "x"
    c.send(req(end=end))
    first = c.recv()
    assert first.WhichOneof("message") == "begin" and first.begin == begin
    pts = [c.recv() for _ in range(30)]
    assert all(r.WhichOneof("message") == "point" for r in pts)
    last = c.recv()
    assert last.WhichOneof("message") == "end" and last.end == end
    scores = [r.point.fieldsDouble["score"] for r in pts]
    np.testing.assert_allclose(scores, model.predict_proba(X)[:, 1], rtol=1e-12)
    assert _metric(server, "udf_agent_batch_size_count") == 1  # one call, despite maxBatch 8
    # an empty batch is re-emitted as begin/end
    c.send(
        req(begin=pb.BeginBatch(name="transactions", size=0))
        + req(end=pb.EndBatch(name="transactions"))
    )
    assert c.recv().WhichOneof("message") == "begin"
    assert c.recv().WhichOneof("message") == "end"


def test_challenger_is_shadow_scored(server, registry):
    card2, model2 = register_tiny(registry, "creditcard", seed=42, alias="challenger", shift=0.5)
    model1 = registry.load_artifact(registry.card("creditcard", "production"))
    X = _rows(10, seed=13)
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "challenger": "challenger"}).success
    for i, row in enumerate(X):
        c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
    got = c.recv_points(10)
    np.testing.assert_allclose(
        [p.fieldsDouble["score"] for p in got], model1.predict_proba(X)[:, 1]
    )
    np.testing.assert_allclose(
        [p.fieldsDouble["score_challenger"] for p in got], model2.predict_proba(X)[:, 1]
    )
    assert all(p.tags["model_version"] == "1" for p in got)


def _set_aliases(registry: Registry, name: str, aliases: dict[str, str]) -> None:
    time.sleep(0.01)  # distinct aliases.json mtime
    path = registry.aliases_path(name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(aliases))
    os.replace(tmp, path)


def test_challenger_alias_promoted_after_init_is_picked_up_and_dropped_when_removed(
    server, registry, caplog
):
    caplog.set_level("INFO", logger="udf_agent.scoring")
    X = _rows(3, seed=21)
    c = Client(server.config.socket_path)
    # the alias does not exist yet: init succeeds and the champion scores alone
    assert c.init(
        {"model": "creditcard", "challenger": "challenger", "maxDelay": ("duration", 0)}
    ).success
    c.send(req(point=row_point(X[0], t=1, txn="a")))
    (p1,) = c.recv_points(1)
    assert "score" in p1.fieldsDouble and "score_challenger" not in p1.fieldsDouble
    assert any("challenger not available" in r.message for r in caplog.records)
    # promoted later: shadow-scored from the next batch, with its own card's threshold
    card2, model2 = register_tiny(registry, "creditcard", seed=42, alias=None, threshold=0.3)
    _set_aliases(registry, "creditcard", {"production": "1", "challenger": card2.version})
    c.send(req(point=row_point(X[1], t=2, txn="b")))
    (p2,) = c.recv_points(1)
    assert p2.fieldsDouble["score_challenger"] == pytest.approx(
        model2.predict_proba(X[1:2])[0, 1], rel=1e-12
    )
    assert p2.fieldsDouble["threshold_challenger"] == 0.3
    assert p2.fieldsDouble["threshold"] == 0.5  # the champion keeps its own
    assert p2.tags["model_version"] == "1"
    assert any("challenger active" in r.message for r in caplog.records)
    # alias removed: shadow scoring stops, the champion goes on
    _set_aliases(registry, "creditcard", {"production": "1"})
    c.send(req(point=row_point(X[2], t=3, txn="c")))
    (p3,) = c.recv_points(1)
    assert "score" in p3.fieldsDouble and "score_challenger" not in p3.fieldsDouble
    assert any("challenger removed" in r.message for r in caplog.records)


def test_an_unusable_challenger_never_stops_the_champion(server, registry):
    # features the champion does not have: refused, counted, and the task still scores
    model, X, y = train_tiny(3)
    reg_card = registry.register(
        "creditcard", model, features=[f"f{i}" for i in range(X.shape[1])], threshold=0.5
    )
    registry.promote("creditcard", reg_card.version, "challenger")
    c = Client(server.config.socket_path)
    assert c.init(
        {"model": "creditcard", "challenger": "challenger", "maxDelay": ("duration", 0)}
    ).success
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="a")))
    (p,) = c.recv_points(1)
    assert "score" in p.fieldsDouble and "score_challenger" not in p.fieldsDouble
    assert _metric(server, "udf_agent_errors_total", {"reason": "challenger_failed"}) == 1
    # not retried on every batch while the alias stays where it is
    c.send(req(point=row_point(_rows(1)[0], t=2, txn="b")))
    c.recv_points(1)
    assert _metric(server, "udf_agent_errors_total", {"reason": "challenger_failed"}) == 1


def test_an_explicit_threshold_applies_to_champion_and_challenger(server, registry):
    card2, _ = register_tiny(registry, "creditcard", seed=42, alias="challenger", threshold=0.3)
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "challenger": "challenger", "threshold": 0.7}).success
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="a")))
    (p,) = c.recv_points(1)
    assert p.fieldsDouble["threshold"] == 0.7 and p.fieldsDouble["threshold_challenger"] == 0.7


def test_hot_reload_switches_version_without_dropping_the_connection(server, registry, caplog):
    card2, model2 = register_tiny(registry, "creditcard", seed=99, alias=None, shift=1.0)
    X = _rows(5, seed=17)
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
    c.send(req(point=row_point(X[0], t=1, txn="a")))
    (p1,) = c.recv_points(1)
    assert p1.tags["model_version"] == "1"
    caplog.set_level("INFO", logger="udf_agent.scoring")
    time.sleep(0.01)  # distinct aliases.json mtime
    registry.promote("creditcard", card2.version, "production")
    c.send(req(point=row_point(X[1], t=2, txn="b")))
    (p2,) = c.recv_points(1)
    assert p2.tags["model_version"] == card2.version
    assert p2.fieldsDouble["score"] == pytest.approx(model2.predict_proba(X[1:2])[0, 1])
    assert any("model switch" in r.message and "to_version=2" in r.message for r in caplog.records)
    assert _metric(server, "udf_agent_model_reloads_total", {"model": "creditcard"}) == 1


def test_hot_reload_to_a_corrupt_version_keeps_the_old_one(server, registry):
    card2, _ = register_tiny(registry, "creditcard", seed=5, alias=None)
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
    (registry.root / "creditcard" / card2.version / "model.joblib").write_bytes(b"tampered")
    registry.promote("creditcard", card2.version, "production")
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="a")))
    (p,) = c.recv_points(1)
    assert p.tags["model_version"] == "1" and "score" in p.fieldsDouble
    assert _metric(server, "udf_agent_errors_total", {"reason": "reload_failed"}) >= 1


def test_keepalives_are_answered_while_a_model_call_runs(server, registry):
    """A model call that never returns until the test says so: every keepalive sent
    meanwhile is answered, so Kapacitor's watchdog never fires behind a slow model."""
    register_tiny(registry, "gated", framework="gate")
    GateBackend.reset()
    c = Client(server.config.socket_path, timeout=WAIT)
    assert c.init({"model": "gated", "maxDelay": ("duration", 1_000_000)}).success
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="slow")))
    assert GateBackend.entered.wait(WAIT)  # the scorer is inside the call
    for i in range(30):
        c.send(req(keepalive=pb.KeepaliveRequest(time=i)))
        assert c.recv_kind("keepalive").keepalive.time == i
    assert not GateBackend.gate.is_set() and not c.pending  # all while the call ran
    GateBackend.gate.set()
    (p,) = c.recv_points(1)
    assert "score" in p.fieldsDouble


def test_failing_backend_passes_points_on_and_fallback_scores_them(server, registry):
    register_tiny(registry, "slowmodel", framework="slow")
    SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.0, True
    fallback_model = registry.load_artifact(registry.card("creditcard"))
    X = _rows(4, seed=21)
    c = Client(server.config.socket_path)
    assert c.init({"model": "slowmodel", "maxBatch": 4}).success
    for i, row in enumerate(X):
        c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
    got = c.recv_points(4)
    assert all(
        p.fieldsString["score_error"].startswith("backend slowmodel v1: RuntimeError") for p in got
    )
    c2 = Client(server.config.socket_path)
    assert c2.init(
        {"model": "slowmodel", "maxBatch": 4, "fallback": "creditcard@production"}
    ).success
    for i, row in enumerate(X):
        c2.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
    got = c2.recv_points(4)
    np.testing.assert_allclose(
        [p.fieldsDouble["score"] for p in got], fallback_model.predict_proba(X)[:, 1]
    )
    assert all(
        p.tags["model"] == "creditcard" and p.tags["fallback_for"] == "slowmodel" for p in got
    )
    assert _metric(server, "udf_agent_fallback_batches_total") == 1


def test_a_failing_backend_is_counted_per_batch_but_not_logged_per_batch(server, registry, caplog):
    register_tiny(registry, "slowmodel", framework="slow")
    SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.0, True
    X = _rows(50, seed=22)
    c = Client(server.config.socket_path)
    assert c.init({"model": "slowmodel", "maxBatch": 1}).success
    with caplog.at_level(logging.WARNING, logger="udf_agent.scoring"):
        for i, row in enumerate(X):
            c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
        got = c.recv_points(len(X))
    assert all("score_error" in p.fieldsString for p in got)  # every point still passed on
    assert _metric(server, "udf_agent_errors_total", {"reason": "backend_failed"}) == len(X)
    warnings = [r for r in caplog.records if "scoring failed" in r.getMessage()]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]


def test_warn_throttle_reports_how_many_it_held_back(caplog):
    from udf_agent.scoring import _WarnThrottle

    now = [0.0]
    throttle = _WarnThrottle(every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="udf_agent.scoring"):
        for t in (0.0, 1.0, 2.0, 3.0, 12.0):
            now[0] = t
            throttle.warning("a", "failed %s", t)
        throttle.warning("b", "other key")  # another key is not held back by "a"
    assert [r.getMessage() for r in caplog.records] == [
        "failed 0.0",
        "failed 12.0 (3 like warnings held back)",
        "other key",
    ]


@pytest.mark.slow
def test_many_concurrent_connections_are_independent(server):
    X = _rows(300, seed=23)
    rows = [dict(zip(contract.FEATURES, r), txn_id=f"c{i}", Class=i % 2) for i, r in enumerate(X)]
    payloads = build_payloads(rows)
    reports = [None] * 6

    def go(k: int) -> None:
        reports[k] = run_replay(
            server.config.socket_path,
            payloads,
            {"model": "creditcard", "maxBatch": str(16 + k)},
            n=1500,
            keepalive_interval=0.05,
            task_id=f"task{k}",
        )

    threads = [threading.Thread(target=go, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in reports:
        assert r is not None
        assert r.violations == [], r.violations
        assert r.received == 1500 and r.score_errors == 0
        # top_features: on the anomalous points (some of these, at threshold 0.5)
        assert r.anomalies > 0
        assert r.added_fields == ["is_anomaly", "score", "threshold", "top_features"]
        assert r.added_tags == ["model", "model_version"]


def test_replay_on_the_batch_edge_checks_begin_size_and_end(server):
    X = _rows(230, seed=24)
    rows = [dict(zip(contract.FEATURES, r), txn_id=f"b{i}", Class=0) for i, r in enumerate(X)]
    report = run_replay(
        server.config.batch_socket_path,
        build_payloads(rows),
        {"model": "creditcard"},
        edge="batch",
        batch_size=50,
    )
    assert report.violations == [], report.violations
    assert report.batches_sent == report.batches_received == 5  # 4 x 50 + 30
    assert report.received == 230 and report.score_errors == 0


class _PeerThatLosesEnds:
    """A batch UDF that answers info and init, echoes points and begins, drops every end
    and opens a second batch without closing the first: what the replay must catch."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        from udf_agent.protocol.codec import FrameDecoder, encode_frame

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            dec = FrameDecoder()
            with conn:
                while data := conn.recv(1 << 16):
                    dec.feed(data)
                    for body in dec.frames():
                        r, out = pb.Request.FromString(body), pb.Response()
                        kind = r.WhichOneof("message")
                        if kind == "info":
                            out.info.wants = out.info.provides = pb.BATCH
                            out.info.options["model"].valueTypes.append(pb.STRING)
                        elif kind == "init":
                            out.init.success = True
                        elif kind == "keepalive":
                            out.keepalive.time = r.keepalive.time
                        elif kind == "begin":
                            out.begin.CopyFrom(r.begin)
                        elif kind == "point":
                            out.point.CopyFrom(r.point)
                        else:
                            continue  # the end is lost
                        conn.sendall(encode_frame(out.SerializeToString()))

    def close(self) -> None:
        self.listener.close()


def test_replay_reports_a_batch_peer_that_loses_its_end_messages(tmp_path):
    peer = _PeerThatLosesEnds(tmp_path / "bad.sock")
    X = _rows(20, seed=25)
    rows = [dict(zip(contract.FEATURES, r), txn_id=f"e{i}", Class=0) for i, r in enumerate(X)]
    try:
        report = run_replay(
            tmp_path / "bad.sock",
            build_payloads(rows),
            {"model": "x"},
            edge="batch",
            batch_size=10,
            close_timeout=2.0,
        )
    finally:
        peer.close()
    assert report.received == 20 and report.missing == 0  # the points themselves came back
    assert report.batches_sent == 2 and report.batches_received == 0
    assert report.framing_errors == ["begin inside an open batch"]
    assert any("0 of 2 batch(es) came back" in v for v in report.violations)


def _assert_healthy(server: AgentServer) -> None:
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="ok")))
    (p,) = c.recv_points(1)
    assert "score" in p.fieldsDouble
    c.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x05\xff\xff\xff\xff\xff", "not a Request"),
        (encode_varint(2**40) + b"x", "exceeds the limit"),
        (b"\xff" * 12, "not a valid varint"),
    ],
)
def test_malformed_frames_close_only_that_connection(server, payload, reason):
    good = Client(server.config.socket_path)
    assert good.init(
        {"model": "creditcard", "maxBatch": 10000, "maxDelay": ("duration", 30 * 10**9)}
    ).success
    good.send(req(point=row_point(_rows(1)[0], t=1, txn="before")))
    bad = Client(server.config.socket_path)
    assert bad.init(
        {"model": "creditcard", "maxBatch": 10000, "maxDelay": ("duration", 30 * 10**9)}
    ).success
    bad.send(req(point=row_point(_rows(1)[0], t=7, txn="pending")))
    bad.send(payload)
    responses = bad.read_until_eof()  # the agent closed it
    kinds = [r.WhichOneof("message") for r in responses]
    # the point buffered before the bad frame is still delivered, then an error explains why
    assert kinds == ["point", "error"]
    assert reason in responses[1].error.error
    good.send(req(point=row_point(_rows(1)[0], t=2, txn="after")))
    good.sock.shutdown(socket.SHUT_WR)
    pts = [r.point for r in good.read_until_eof() if r.WhichOneof("message") == "point"]
    assert [p.fieldsString["txn_id"] for p in pts] == ["before", "after"]
    _assert_healthy(server)


def test_truncated_message_and_unknown_oneof(server):
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard"}).success
    # an unknown oneof member (field 99) is ignored with a warning, the connection goes on
    unknown = b"\x9a\x06\x00"  # field 99, length-delimited, empty
    c.send(encode_varint(len(unknown)) + unknown)
    c.send(req(keepalive=pb.KeepaliveRequest(time=42)))
    assert c.recv_kind("keepalive").keepalive.time == 42
    # a frame cut short by the peer closing
    body = req(point=row_point(_rows(1)[0], t=1, txn="cut"))
    c.send(body[:-10])
    c.sock.shutdown(socket.SHUT_WR)
    rest = c.read_until_eof()
    assert [r.WhichOneof("message") for r in rest] == ["error"]
    assert "inside a frame" in rest[0].error.error
    assert _metric(server, "udf_agent_errors_total", {"reason": "unknown_request"}) == 1
    assert _metric(server, "udf_agent_errors_total", {"reason": "TruncatedFrame"}) == 1
    _assert_healthy(server)


def test_stale_socket_file_is_replaced_and_mode_applied(tmp_path, registry):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # leaves a socket file nobody listens on
    assert path.exists()
    with AgentServer(
        AgentConfig(socket_path=path, registry=registry.root, socket_mode=0o600), registry=registry
    ):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(AgentError, match="already listening"):
            AgentServer(
                AgentConfig(socket_path=path, registry=registry.root), registry=registry
            ).start()
    assert not path.exists()
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(AgentError, match="not a socket"):
        AgentServer(
            AgentConfig(socket_path=regular, registry=registry.root), registry=registry
        ).start()


def test_default_socket_mode_is_0660(server):
    assert stat.S_IMODE(os.stat(server.config.socket_path).st_mode) == 0o660


def test_metrics_exposition(server):
    _assert_healthy(server)
    text = generate_latest(server.metrics.registry).decode()
    for name in (
        "udf_agent_points_in_total",
        "udf_agent_points_out_total",
        "udf_agent_scoring_seconds_bucket",
        "udf_agent_batch_size_bucket",
        "udf_agent_connections",
        "udf_agent_model_version_info",
    ):
        assert name in text
    assert (
        'udf_agent_model_version_info{alias="production",model="creditcard",version="1"} 1.0'
        in text
    )


def test_train_tiny_is_deterministic():
    a, Xa, _ = train_tiny(3)
    b, Xb, _ = train_tiny(3)
    np.testing.assert_array_equal(a.predict_proba(Xa), b.predict_proba(Xb))


def test_points_before_init_are_passed_on(server):
    c = Client(server.config.socket_path)
    c.send(req(point=row_point(_rows(1)[0], t=3, txn="early")))
    (p,) = c.recv_points(1)
    assert p.fieldsString["score_error"] == "agent not initialized"
    assert p.fieldsString["txn_id"] == "early"


def test_init_request_helper_types():
    # guard the helper itself: option types go out as Kapacitor would type them
    r = pb.Request.FromString(
        unframe(init_req({"a": "s", "b": 1, "c": 1.5, "d": True, "e": ("duration", 5)}))
    )
    assert [v.values[0].type for v in r.init.options] == [
        pb.STRING,
        pb.INT,
        pb.DOUBLE,
        pb.BOOL,
        pb.DURATION,
    ]


@pytest.mark.slow
def test_backlog_age_counts_from_when_a_micro_batch_is_complete(tmp_path, registry):
    """The micro-batching window the task asked for is not backlog: a point held for a
    .maxDelay() longer than --max-backlog-age is scored, not passed on unscored."""
    cfg = AgentConfig(
        socket_path=tmp_path / "window.sock", registry=registry.root, max_backlog_age=0.2
    )
    with AgentServer(cfg, registry=registry, factory=factory_with_test_kinds()) as srv:
        c = Client(srv.config.socket_path)
        assert c.init({"model": "creditcard", "maxDelay": ("duration", 500_000_000)}).success
        c.send(req(point=row_point(_rows(1)[0], t=1, txn="held")))
        (p,) = c.recv_points(1)
        assert "score_error" not in p.fieldsString
        assert "score" in p.fieldsDouble
        # Points that queue behind a slow backend for longer than the age are passed on.
        register_tiny(registry, "slowmodel", framework="slow")
        SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.5, False
        s = Client(srv.config.socket_path)
        assert s.init({"model": "slowmodel", "maxBatch": 1}).success
        for i, row in enumerate(_rows(3)):
            s.send(req(point=row_point(row, t=i + 1, txn=f"q{i}")))
        first, *queued = s.recv_points(3)
        assert "score" in first.fieldsDouble
        assert all(
            p.fieldsString["score_error"].startswith("not scored: waited over 0.2s") for p in queued
        )
        assert SlowBackend.calls == [1]
        assert _metric(srv, "udf_agent_errors_total", {"reason": "backlog_timeout"}) == 2


@pytest.mark.slow
def test_points_received_before_a_re_init_keep_the_old_options(server, registry):
    register_tiny(registry, "slowmodel", framework="slow")
    SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.5, False
    c = Client(server.config.socket_path)
    assert c.init({"model": "slowmodel", "maxBatch": 1, "field": "old"}).success
    rows = _rows(3)
    c.send(req(point=row_point(rows[0], t=1, txn="a")))
    c.send(req(point=row_point(rows[1], t=2, txn="b")))  # queued behind the slow call
    time.sleep(0.1)
    assert c.init({"model": "creditcard", "maxBatch": 1, "field": "new"}).success
    c.send(req(point=row_point(rows[2], t=3, txn="c")))
    got = c.recv_points(3)
    assert [p.time for p in got] == [1, 2, 3]
    assert [p.tags["model"] for p in got] == ["slowmodel", "slowmodel", "creditcard"]
    assert ["old" in p.fieldsDouble for p in got] == [True, True, False]
    assert "new" in got[2].fieldsDouble


class _ChannelBackend(SklearnBackend):
    """A backend holding a connection (like TF Serving's channel): unusable once closed."""

    def _close(self):
        self.channel_closed = True


def test_a_backend_a_running_task_holds_is_never_closed_by_the_cache(registry):
    """The provider's LRU closes only backends nobody holds: a long-running task's model,
    the least recently loaded one, survives later loads beyond the cache size."""
    register_tiny(registry, "first", framework="channel")
    register_tiny(registry, "second", framework="channel", seed=3)
    register_tiny(registry, "third", framework="channel", seed=4)
    provider = ModelProvider(
        registry, factory_with_test_kinds(channel=_ChannelBackend.from_card), max_loaded=1
    )
    running = ScoringSession(ScoreOptions(model="first"), provider)
    done = ScoringSession(ScoreOptions(model="second"), provider)
    done.close()  # "second" is no longer held: the next load may close it
    ScoringSession(ScoreOptions(model="third"), provider)
    assert sorted(name for name, _, _ in provider.loaded()) == ["first", "third"]
    p = row_point(_rows(1)[0], t=1, txn="a")
    (frame,) = running.score([p], [None])
    out = pb.Response.FromString(unframe(frame)).point
    assert "score_error" not in out.fieldsString
    assert "score" in out.fieldsDouble
    assert not running.primary.backend.closed


def test_fallback_scores_are_judged_by_the_fallback_cards_threshold(server, registry):
    register_tiny(registry, "slowmodel", framework="slow", threshold=0.9)
    register_tiny(registry, "local", seed=4, threshold=0.05)
    SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.0, True
    X = _rows(8, seed=5)
    for options, threshold in (({}, 0.05), ({"threshold": 0.7}, 0.7)):
        c = Client(server.config.socket_path)
        assert c.init(
            {"model": "slowmodel", "maxBatch": 8, "fallback": "local@production", **options}
        ).success
        for i, row in enumerate(X):
            c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
        got = c.recv_points(8)
        assert all(p.tags["model"] == "local" for p in got)
        assert [p.fieldsDouble["threshold"] for p in got] == [threshold] * 8
        assert [p.fieldsBool["is_anomaly"] for p in got] == [
            p.fieldsDouble["score"] >= threshold for p in got
        ]


@pytest.mark.parametrize("snapshot", [b'{"options": []}', b'{"options": {"max_batch": 5}}'])
def test_a_foreign_json_snapshot_is_refused_and_the_connection_lives_on(server, snapshot):
    c = Client(server.config.socket_path)
    assert c.init({"model": "creditcard"}).success
    c.send(req(restore=pb.RestoreRequest(snapshot=snapshot)))
    r = c.recv_kind("restore").restore
    assert not r.success and "invalid snapshot" in r.error
    c.send(req(keepalive=pb.KeepaliveRequest(time=7)))
    assert c.recv_kind("keepalive").keepalive.time == 7


def test_hot_reload_reaches_the_fallback_model(server, registry):
    register_tiny(registry, "slowmodel", framework="slow")
    SlowBackend.calls, SlowBackend.delay, SlowBackend.fail = [], 0.0, True
    c = Client(server.config.socket_path)
    assert c.init(
        {"model": "slowmodel", "maxBatch": 1, "fallback": "creditcard@production"}
    ).success
    c.send(req(point=row_point(_rows(1)[0], t=1, txn="a")))
    (before,) = c.recv_points(1)
    card2, _ = register_tiny(registry, "creditcard", seed=5)  # promoted to production
    c.send(req(point=row_point(_rows(1)[0], t=2, txn="b")))
    (after,) = c.recv_points(1)
    assert [p.tags["model"] for p in (before, after)] == ["creditcard", "creditcard"]
    assert [p.tags["model_version"] for p in (before, after)] == ["1", card2.version]


def test_a_connection_accepted_while_stopping_is_closed_not_left_running(
    tmp_path, registry, monkeypatch
):
    import udf_agent.server as server_mod

    accepted, release = threading.Event(), threading.Event()
    real_connection = server_mod.Connection

    def slow_connection(*args, **kwargs):
        accepted.set()
        release.wait(10)  # hold the accept loop between accept() and registration
        return real_connection(*args, **kwargs)

    monkeypatch.setattr(server_mod, "Connection", slow_connection)
    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "udf.sock", registry=registry.root), registry=registry
    ).start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "udf.sock"))
    assert accepted.wait(60)
    stopper = threading.Thread(target=srv.stop, kwargs={"timeout": 10})
    stopper.start()
    time.sleep(0.3)  # stop() has listed the (still empty) connections by now
    release.set()
    stopper.join(60)
    client.settimeout(60)
    try:
        assert client.recv(1) == b""  # closed by the agent, not served after the stop
    finally:
        client.close()
    assert srv.connection_count == 0
