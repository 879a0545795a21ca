"""The agent as users run it: ``python -m udf_agent`` and ``python -m udf_agent.replay``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pandas as pd
import pytest
from agent_helpers import AgentProcess, Client, close_clients, register_tiny, req, row_point
from conftest import free_port

from models import contract
from models.registry import Registry
from udf_agent.protocol import messages as pb

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture
def setup(tmp_path):
    reg = Registry(tmp_path / "registry")
    register_tiny(reg)
    X = np.random.default_rng(1).normal(size=(400, len(contract.FEATURES)))
    df = pd.DataFrame(X, columns=contract.FEATURES)
    df["Class"] = (X[:, 0] > 1.5).astype(int)
    df["txn_id"] = [f"t{i}" for i in range(len(df))]
    csv = tmp_path / "test.csv"
    df.to_csv(csv, index=False)
    return reg, csv


def test_cli_replay_reports_json_and_metrics_endpoint(tmp_path, setup):
    reg, csv = setup
    port = free_port()
    agent = AgentProcess(
        tmp_path, reg.root, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"
    )
    with agent:
        sock = agent.socket
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "udf_agent.replay",
                "--socket",
                str(sock),
                "--csv",
                str(csv),
                "--option",
                "model=creditcard",
                "--option",
                "maxBatch=64",
                "--option",
                "maxDelay=2ms",
                "--n",
                "2000",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["sent"] == report["received"] == 2000
        assert report["violations"] == []
        expected = ["is_anomaly", "score", "threshold"]
        if report["anomalies"]:  # explained, these only
            expected.append("top_features")
        assert report["added_fields"] == expected
        assert report["latency_ms"]["p99"] > 0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "udf_agent_points_in_total 2000.0" in text
        assert "udf_agent_points_out_total 2000.0" in text
        # a bad option makes the replay driver exit non-zero with the agent's message
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "udf_agent.replay",
                "--socket",
                str(sock),
                "--csv",
                str(csv),
                "--option",
                "model=missing",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "unknown model 'missing'" in bad.stderr


def test_sigterm_flushes_buffered_points_and_removes_the_socket(tmp_path, setup):
    reg, _ = setup
    agent = AgentProcess(tmp_path, reg.root).start()
    try:
        c = Client(agent.socket, timeout=60)
        assert c.init(
            {"model": "creditcard", "maxBatch": 10000, "maxDelay": ("duration", 60 * 10**9)}
        ).success
        X = np.random.default_rng(2).normal(size=(40, len(contract.FEATURES)))
        for i, row in enumerate(X):
            c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
        # A keepalive after the points: once it is answered, the agent has read them all
        # and they sit in the micro-batch (maxDelay 60 s).
        c.send(req(keepalive=pb.KeepaliveRequest(time=7)))
        assert c.recv_kind("keepalive").keepalive.time == 7
        assert agent.stop(signal.SIGTERM) == 0, agent.output()
        responses = c.read_until_eof()
    finally:
        agent.kill()
    pts = [r.point for r in responses if r.WhichOneof("message") == "point"]
    assert [p.time for p in pts] == list(range(1, 41))
    assert all("score" in p.fieldsDouble for p in pts)
    out = agent.output()
    assert "signal SIGTERM received" in out
    # the operator learns which tasks (task/node from init) will need re-enabling
    assert "these tasks will stop executing until re-enabled: t/score1" in out
    assert not agent.socket.exists()


def test_agent_refuses_a_socket_in_use(tmp_path, setup):
    reg, _ = setup
    with AgentProcess(tmp_path, reg.root) as agent:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "udf_agent",
                "--socket",
                str(agent.socket),
                "--registry",
                str(reg.root),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert "another agent is already listening" in second.stderr
        # the first one still serves
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(agent.socket))
        s.close()
        assert agent.stop(signal.SIGINT) == 0, agent.output()


def test_keepalives_are_answered_while_a_per_point_backlog_is_scored(tmp_path, setup):
    """One predict_proba per point (.maxBatch(1)) and a backlog of points: CPU-bound
    scoring must not keep the reading path from answering keepalives. How fast they are
    answered is measured by bench/bench_agent.py (keepalive round trips under load)."""
    from udf_agent.replay import build_payloads, run_replay

    reg, csv = setup
    with AgentProcess(tmp_path, reg.root) as agent:
        rows = pd.read_csv(csv).to_dict("records")
        report = run_replay(
            agent.socket,
            build_payloads(rows),
            {"model": "creditcard", "maxBatch": "1", "maxDelay": "0s"},
            n=3000,
            keepalive_interval=0.02,
        )
        assert not report.violations, report.violations
        assert report.received == 3000
        assert report.keepalives_answered == report.keepalives_sent >= 10
