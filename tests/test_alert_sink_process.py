"""The real ``python -m alert_sink`` process: SIGTERM, SIGKILL and restarts of both the
sink and Elasticsearch lose nothing and duplicate nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import WAIT, eventually, free_port
from es_peer import ElasticsearchPeer, synthetic_alert

from alert_sink.payload import parse_alert

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOKEN = "pr0cess-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def wait_until(condition, timeout: float = WAIT, what: str = "condition") -> None:
    eventually(condition, timeout, what, interval=0.05)


class SinkProcess:
    def __init__(self, tmp_path: Path, port: int, *args: str) -> None:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        env = {**os.environ, "ALERT_SINK_BACKOFF_MAX": "0.2"}
        env.pop("ALERT_SINK_TOKEN", None)
        self.log = open(tmp_path / f"sink-{time.monotonic_ns()}.log", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alert_sink",
                "--port",
                str(port),
                "--token-file",
                str(token_file),
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert self.proc.poll() is None, self.output()
            try:
                return requests.get(f"{self.url}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, what="sink listening")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def post(self, body: bytes) -> int:
        return requests.post(
            f"{self.url}/kapacitor", data=body, headers=AUTH, timeout=10
        ).status_code

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.log.close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def peer():
    p = ElasticsearchPeer(version="9.1.0").start()
    yield p
    p.stop()


def test_sigterm_with_es_down_then_restart_of_both_delivers_everything_once(tmp_path, peer):
    spool = tmp_path / "spool.db"
    port = free_port()
    sink = SinkProcess(tmp_path, port, "--es-url", peer.url, "--spool", str(spool))
    try:
        bodies = [synthetic_alert(n) for n in range(40)]
        for b in bodies[:10]:
            assert sink.post(b) == 202
        wait_until(lambda: sink.health()["spool"]["depth"] == 0, what="first ten shipped")
        assert len(peer.docs()) == 10

        peer.stop()
        for b in bodies[10:30]:
            assert sink.post(b) == 202
        assert sink.health()["spool"]["depth"] == 20
        assert sink.terminate() == 0
    finally:
        if sink.proc.poll() is None:
            sink.kill()

    # Sink comes back first, Elasticsearch still down: the old spool is kept, more arrives.
    sink = SinkProcess(tmp_path, port, "--es-url", peer.url, "--spool", str(spool))
    try:
        assert sink.health()["spool"]["depth"] == 20
        for b in bodies[30:]:
            assert sink.post(b) == 202
        peer.start()
        wait_until(lambda: sink.health()["spool"]["depth"] == 0, what="spool drained")
        docs = peer.docs()
        assert set(docs) == {parse_alert(b)[0].doc_id for b in bodies}
        assert sorted(d["txn_id"] for d in docs.values()) == sorted(f"s{n}" for n in range(40))
        assert sink.terminate() == 0
    finally:
        if sink.proc.poll() is None:
            sink.kill()


def test_sigkill_after_acknowledgement_loses_nothing(tmp_path, peer):
    spool = tmp_path / "spool.db"
    port = free_port()
    peer.unavailable_status = 503
    sink = SinkProcess(tmp_path, port, "--es-url", peer.url, "--spool", str(spool))
    bodies = [synthetic_alert(n) for n in range(25)]
    try:
        for b in bodies:
            assert sink.post(b) == 202
    finally:
        sink.kill()  # no chance to flush anything: only what was committed survives
    peer.unavailable_status = None
    sink = SinkProcess(tmp_path, port, "--es-url", peer.url, "--spool", str(spool))
    try:
        wait_until(lambda: sink.health()["spool"]["depth"] == 0, what="spool drained")
        assert set(peer.docs()) == {parse_alert(b)[0].doc_id for b in bodies}
    finally:
        sink.terminate()


def test_store_mode_process_and_cli_errors(tmp_path):
    port = free_port()
    sink = SinkProcess(tmp_path, port, "--store", f"sqlite:{tmp_path / 'alerts.db'}")
    try:
        assert sink.post(synthetic_alert(1)) == 202
        r = requests.get(f"{sink.url}/alerts", headers=AUTH, timeout=5).json()
        assert r["total"] == 1 and r["alerts"][0]["txn_id"] == "s1"
    finally:
        assert sink.terminate() == 0
    assert "event=stopped" in (tmp_path / sink.log.name).read_text()

    def run(*args: str, env_token: bool = False) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("ALERT_SINK_TOKEN", None)
        if env_token:
            env["ALERT_SINK_TOKEN"] = "t"
        return subprocess.run(
            [sys.executable, "-m", "alert_sink", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = run("--port", "1", "--store", "sqlite:x.db")
    assert r.returncode == 2 and "bearer token is required" in r.stderr
    r = run("--port", "1", env_token=True)
    assert r.returncode == 2 and "exactly one of --es-url" in r.stderr
    r = run("--port", "1", "--store", "mysql:x", env_token=True)
    assert r.returncode == 2 and "sqlite:PATH" in r.stderr


def test_a_bad_number_in_the_environment_is_a_usage_error(capsys):
    from alert_sink.cli import main

    env = {"ALERT_SINK_BATCH_SIZE": "many", "ALERT_SINK_TOKEN": "t"}
    with pytest.raises(SystemExit) as info:
        main(["--port", "1", "--store", "sqlite:unused.db"], env)
    assert info.value.code == 2
    assert "--batch-size: invalid int value: 'many'" in capsys.readouterr().err
