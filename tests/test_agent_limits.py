"""The agent under load and abuse: back-pressure with bounded memory, a peer that never
reads, too many connections, a connection that never inits, a bounded stop, outputs
that would overwrite inputs, and scores that are not probabilities."""

from __future__ import annotations

import select
import socket
import threading
import time

import numpy as np
import pytest
from agent_helpers import (
    Client,
    SlowBackend,
    close_clients,
    factory_with_test_kinds,
    register_tiny,
    req,
    row_point,
)
from conftest import WAIT, eventually

from models import contract
from models.backends import SklearnBackend
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame
from udf_agent.server import AgentConfig, AgentServer


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture
def registry(tmp_path) -> Registry:
    reg = Registry(tmp_path / "registry")
    register_tiny(reg, "creditcard", seed=0)
    return reg


def _server(tmp_path, registry, **kw) -> AgentServer:
    cfg = AgentConfig(socket_path=tmp_path / "udf.sock", registry=registry.root, **kw)
    factory = factory_with_test_kinds(bad_scores=_BadScores.from_card)
    return AgentServer(cfg, registry=registry, factory=factory).start()


def _metric(server: AgentServer, name: str, labels: dict | None = None) -> float:
    v = server.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def _eventually(check, timeout: float = WAIT) -> None:
    eventually(check, timeout)


def _point_frames(n: int, start: int = 0, seed: int = 3) -> list[bytes]:
    X = np.random.default_rng(seed).normal(size=(min(n, 500), len(contract.FEATURES)))
    return [
        encode_frame(
            pb.Request(
                point=row_point(X[i % len(X)], t=start + i + 1, txn=f"p{i}")
            ).SerializeToString()
        )
        for i in range(n)
    ]


def _write_until_blocked(sock: socket.socket, data: bytes, on_tick) -> int:
    """Write ``data`` without ever reading; return how far it got before the peer stopped
    reading (a writability wait of 5 s with no progress) or closed the connection."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    while sent < len(data):
        on_tick()
        _, w, _ = select.select([], [sock], [], 5.0)
        if not w:
            break
        try:
            sent += sock.send(view[sent : sent + 65536])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break  # the agent closed the connection
    sock.setblocking(True)
    return sent


@pytest.mark.slow
def test_a_peer_that_writes_without_reading_is_held_at_the_bound(tmp_path, registry):
    """The reader stops reading at the in-flight bound, so the peer's writes block; the
    agent never holds more than the bound plus one read. Then every point comes back
    exactly once, in order."""
    max_inflight = 256
    srv = _server(tmp_path, registry, max_inflight=max_inflight, write_timeout=300)
    try:
        c = Client(srv.config.socket_path, timeout=WAIT)
        assert c.init({"model": "creditcard", "maxBatch": 64}).success
        n = 20000
        frames = _point_frames(n)
        # one read (256 KiB) decodes at most this many points past the bound
        per_read = 256 * 1024 // min(len(f) for f in frames) + 1
        data = b"".join(frames)
        held = []
        sent = _write_until_blocked(c.sock, data, lambda: held.append(srv.budget.total))
        assert sent < len(data), "the agent read everything: no back-pressure"
        held.append(srv.budget.total)
        assert max(held) <= max_inflight + per_read, max(held)
        assert _metric(srv, "udf_agent_backpressure_seconds_total") >= 0
        # Now read: the agent drains, reads the rest, and every point comes back once.
        done = threading.Event()

        def write_rest() -> None:
            c.sock.sendall(data[sent:])
            done.set()

        writer = threading.Thread(target=write_rest, daemon=True)
        writer.start()
        times = [c.recv_kind("point").point.time for _ in range(n)]
        assert done.wait(WAIT)
        assert times == list(range(1, n + 1))
        _eventually(lambda: _metric(srv, "udf_agent_points_out_total") == n)
        _eventually(lambda: srv.budget.total == 0)
    finally:
        srv.stop()


@pytest.mark.slow
def test_the_total_bound_is_shared_by_every_connection(tmp_path, registry):
    srv = _server(tmp_path, registry, max_inflight=4096, max_inflight_total=300, write_timeout=300)
    try:
        frames = b"".join(_point_frames(6000))
        held = []
        clients = []
        for _ in range(2):
            c = Client(srv.config.socket_path, timeout=WAIT)
            assert c.init({"model": "creditcard", "maxBatch": 64}).success
            clients.append(c)
        per_read = 256 * 1024 // 600 + 1
        for c in clients:
            sent = _write_until_blocked(c.sock, frames, lambda: held.append(srv.budget.total))
            assert sent < len(frames)
        held.append(srv.budget.total)
        # each connection may overshoot by one read past the shared bound
        assert max(held) <= 300 + 2 * per_read, max(held)
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_peer_that_never_reads_is_disconnected_after_the_write_timeout(tmp_path, registry):
    srv = _server(tmp_path, registry, max_inflight=512, write_timeout=1.0)
    try:
        c = Client(srv.config.socket_path, timeout=WAIT)
        assert c.init({"model": "creditcard"}).success
        data = b"".join(_point_frames(20000))
        _write_until_blocked(c.sock, data, lambda: None)
        # the agent gives up on the peer: its side of the socket is shut down
        _eventually(lambda: _metric(srv, "udf_agent_errors_total", {"reason": "write_timeout"}))
        _eventually(lambda: srv.connection_count == 0)
        assert _metric(srv, "udf_agent_errors_total", {"reason": "undelivered"}) > 0
        assert srv.budget.total == 0
    finally:
        srv.stop()


def test_connections_over_the_limit_are_refused_with_a_reason(tmp_path, registry):
    srv = _server(tmp_path, registry, max_connections=2)
    try:
        first = Client(srv.config.socket_path, timeout=WAIT)
        assert first.init({"model": "creditcard"}).success
        second = Client(srv.config.socket_path, timeout=WAIT)
        assert second.init({"model": "creditcard"}).success
        third = Client(srv.config.socket_path, timeout=WAIT)
        err = third.recv_kind("error").error
        assert "--max-connections" in err.error and "2 connections" in err.error
        assert third.read_until_eof() == []
        assert _metric(srv, "udf_agent_connections_refused_total") == 1
        # a freed slot is usable again
        first.close()
        _eventually(lambda: srv.connection_count == 1)
        fourth = Client(srv.config.socket_path, timeout=WAIT)
        assert fourth.init({"model": "creditcard"}).success
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_connection_that_never_completes_init_is_closed(tmp_path, registry):
    srv = _server(tmp_path, registry, init_timeout=0.5)
    try:
        ready = Client(srv.config.socket_path, timeout=WAIT)
        assert ready.init({"model": "creditcard"}).success
        idle = Client(srv.config.socket_path, timeout=WAIT)
        failed = Client(srv.config.socket_path, timeout=WAIT)
        assert not failed.init({"model": "no-such-model"}).success
        assert idle.read_until_eof() == []  # closed by the agent
        assert failed.read_until_eof() == []  # a failed init does not count as one
        assert _metric(srv, "udf_agent_errors_total", {"reason": "init_timeout"}) == 2
        # the initialized connection, as old as the others, still works
        ready.send(req(keepalive=pb.KeepaliveRequest(time=42)))
        assert ready.recv_kind("keepalive").keepalive.time == 42
    finally:
        srv.stop()


@pytest.mark.slow
def test_stop_ends_in_bounded_time_and_passes_on_what_it_could_not_score(tmp_path):
    reg = Registry(tmp_path / "registry")
    register_tiny(reg, framework="slow")
    SlowBackend.delay, SlowBackend.fail, SlowBackend.calls = 2.0, False, []
    srv = _server(tmp_path, reg, shutdown_timeout=6.0)
    c = Client(srv.config.socket_path, timeout=WAIT)
    assert c.init({"model": "creditcard", "maxBatch": 10, "maxDelay": ("duration", 0)}).success
    for f in _point_frames(50):
        c.send(f)
    c.send(req(keepalive=pb.KeepaliveRequest(time=1)))
    assert c.recv_kind("keepalive").keepalive.time == 1  # all 50 were read
    started = time.monotonic()
    srv.stop()
    stop_seconds = time.monotonic() - started
    points = [r.point for r in c.read_until_eof() if r.WhichOneof("message") == "point"]
    assert [p.time for p in points] == list(range(1, 51))
    errors = [p.fieldsString.get(contract.SCORE_ERROR, "") for p in points]
    # Five units of 10 at 2 s each: scoring stops at half the 6 s budget, the unit in
    # progress finishes, the rest go out unscored, and nothing is cut off.
    assert any("stopping" in e for e in errors), errors
    assert all(("score" in p.fieldsDouble) != bool(e) for p, e in zip(points, errors))
    assert len(SlowBackend.calls) < 5, (SlowBackend.calls, stop_seconds)
    assert _metric(srv, "udf_agent_errors_total", {"reason": "undelivered"}) == 0


def test_an_output_that_would_overwrite_an_input_field_is_refused_at_init(tmp_path, registry):
    srv = _server(tmp_path, registry)
    try:
        c = Client(srv.config.socket_path, timeout=WAIT)
        resp = c.init({"model": "creditcard", "field": "Amount"})
        assert not resp.success
        assert ".field('Amount') would overwrite a feature of creditcard v1" in resp.error
        resp = c.init({"model": "creditcard", "field": "label"})
        assert not resp.success and "a field of the input measurement" in resp.error
        resp = c.init({"model": "creditcard", "field": "source"})
        assert not resp.success and "input tag 'source'" in resp.error
        assert c.init({"model": "creditcard", "field": "score_fraud"}).success
    finally:
        srv.stop()


def test_points_that_already_carry_an_output_are_reported(tmp_path, registry, caplog):
    srv = _server(tmp_path, registry)
    try:
        c = Client(srv.config.socket_path, timeout=WAIT)
        assert c.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
        p = row_point(np.zeros(len(contract.FEATURES)), t=1, txn="x")
        p.fieldsDouble["score"] = 0.123
        p.tags["model"] = "upstream"
        c.send(req(point=p))
        out = c.recv_kind("point").point
        assert out.fieldsDouble["score"] != 0.123  # the node's output, as documented
        _eventually(
            lambda: _metric(srv, "udf_agent_errors_total", {"reason": "output_collision"}) == 1
        )
        assert "already carry 'score', 'model'" in caplog.text
    finally:
        srv.stop()


_BAD = {101.0: np.nan, 102.0: np.inf, 103.0: -0.5, 104.0: 1.5}


class _BadScores(SklearnBackend):
    """Returns NaN, +inf, -0.5 and 1.5 for rows whose first feature is 101..104."""

    def _score(self, X):
        s = np.array(super()._score(X))
        for i, marker in enumerate(X[:, 0].tolist()):
            s[i] = _BAD.get(marker, s[i])
        return s


def test_a_score_that_is_not_a_probability_becomes_score_error(tmp_path):
    reg = Registry(tmp_path / "registry")
    register_tiny(reg, framework="bad_scores")
    srv = _server(tmp_path, reg)
    try:
        c = Client(srv.config.socket_path, timeout=WAIT)
        assert c.init({"model": "creditcard", "maxBatch": 6, "maxDelay": ("duration", 0)}).success
        X = np.random.default_rng(9).normal(size=(6, len(contract.FEATURES)))
        X[:4, 0] = list(_BAD)
        for i, row in enumerate(X):
            c.send(req(point=row_point(row, t=i + 1, txn=f"b{i}")))
        points = c.recv_points(6)
        for p in points[:4]:
            assert "score" not in p.fieldsDouble
            assert contract.IS_ANOMALY not in p.fieldsBool
            assert p.fieldsString[contract.SCORE_ERROR].startswith("bad_score")
        for p in points[4:]:
            assert 0.0 <= p.fieldsDouble["score"] <= 1.0
        _eventually(lambda: _metric(srv, "udf_agent_errors_total", {"reason": "bad_score"}) == 4)
    finally:
        srv.stop()


def test_a_large_kapacitor_batch_is_scored_in_chunks_inside_one_begin_end(tmp_path, registry):
    cfg = AgentConfig(
        socket_path=tmp_path / "udf.sock",
        batch_socket_path=tmp_path / "udf-batch.sock",
        registry=registry.root,
        max_inflight=50,
    )
    srv = AgentServer(cfg, registry=registry, factory=factory_with_test_kinds()).start()
    try:
        c = Client(cfg.batch_socket_path, timeout=WAIT)
        assert c.init({"model": "creditcard"}).success
        begin = pb.Request()
        begin.begin.name = "transactions"
        begin.begin.size = 200
        end = pb.Request()
        end.end.name = "transactions"
        end.end.tmax = 200
        c.send(encode_frame(begin.SerializeToString()))
        for f in _point_frames(200):
            c.send(f)
        c.send(encode_frame(end.SerializeToString()))
        kinds = [c.recv().WhichOneof("message") for _ in range(202)]
        assert kinds == ["begin", *["point"] * 200, "end"]
        assert _metric(srv, "udf_agent_batch_size_count") >= 4  # 200 points, 50 at a time
    finally:
        srv.stop()
