"""Every long-running command stops on SIGTERM and on SIGINT, every time, with its output
piped (as under systemd, docker or a CI runner), flushing what it holds.

Each service is started 20 times and signalled at a slightly different moment each time
(alternating SIGTERM and SIGINT). A stop that hangs is the defect this guards against:
Python runs signal handlers on the main thread only, so a main thread blocked in a wait
without timeout misses a signal the kernel delivered to another thread. How long the
stops take is printed (and measured in bench/bench_stop.py); the test itself only
refuses a stop that does not happen within a wide margin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from agent_helpers import Client, register_tiny, req, row_point

from models import contract
from models.registry import Registry
from udf_agent.protocol import messages as pb

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("TEST_SIGNAL_RUNS", "20"))  # fewer while developing
HANG = 60.0  # a stop slower than this is a hang, not a slow machine
READY = 180.0


class Piped:
    """A command with stdout and stderr on one pipe, read line by line by a thread."""

    def __init__(self, args: list[str], ready: str, env: dict | None = None) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._marker = ready
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self._marker in line:
                self.ready.set()
        self.ready.set()  # EOF: let a waiter see the exit

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> None:
        if not self.ready.wait(READY) or self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"{self.proc.args[2]} did not get ready: {self.output[-3000:]}")

    def stop(self, sig: int) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(HANG)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{' '.join(self.proc.args[1:4])} ignored {signal.Signals(sig).name} for "
                f"{HANG:g}s: {self.output[-3000:]}"
            ) from None
        took = time.monotonic() - started
        self._reader.join(HANG)
        return rc, took

    def kill(self) -> None:
        """Kill the process if it still runs, and release the pipe (always called)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(HANG)
        self.proc.stdout.close()


def _signal_of(i: int) -> int:
    return signal.SIGTERM if i % 2 == 0 else signal.SIGINT


def _repeat(name: str, run_once: Callable[[int, int], float]) -> None:
    took = [run_once(i, _signal_of(i)) for i in range(RUNS)]
    print(
        f"\n{name}: {RUNS} stops, seconds from signal to exit: "
        f"median {statistics.median(took):.2f}, max {max(took):.2f}"
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("signals") / "registry")
    register_tiny(reg)
    return reg


@pytest.mark.slow
def test_udf_agent_stops_every_time_and_flushes_what_it_holds(tmp_path, registry):
    X = np.random.default_rng(5).normal(size=(30, len(contract.FEATURES)))

    def once(i: int, sig: int) -> float:
        sock = tmp_path / f"a{i}.sock"
        p = Piped(
            [sys.executable, "-m", "udf_agent", "--socket", str(sock), "--registry",
             str(registry.root)],
            ready="agent ready",
        )  # fmt: skip
        try:
            p.wait_ready()
            c = Client(sock, timeout=HANG)
            # points held in a micro-batch that is not due for a minute
            assert c.init({"model": "creditcard", "maxBatch": 1000,
                           "maxDelay": ("duration", 60 * 10**9)}).success  # fmt: skip
            for j, row in enumerate(X[: 1 + i]):
                c.send(req(point=row_point(row, t=j + 1, txn=f"t{j}")))
            c.send(req(keepalive=pb.KeepaliveRequest(time=1)))
            assert c.recv_kind("keepalive").keepalive.time == 1
            time.sleep(0.01 * (i % 5))
            rc, took = p.stop(sig)
            back = [r for r in c.read_until_eof() if r.WhichOneof("message") == "point"]
            c.close()
        finally:
            p.kill()
        assert rc == 0, p.output[-3000:]
        assert [r.point.time for r in back] == list(range(1, 2 + i))
        assert all("score" in r.point.fieldsDouble for r in back)
        assert not sock.exists()
        return took

    _repeat("udf_agent", once)


@pytest.mark.slow
def test_alert_sink_stops_every_time_and_keeps_what_it_accepted(tmp_path):
    payload = (
        ROOT / "tests" / "fixtures" / "alerts" / "00-critical-prev-critical.json"
    ).read_bytes()
    token = tmp_path / "token"
    token.write_text("signals-token\n")
    db = tmp_path / "alerts.db"

    def once(i: int, sig: int) -> float:
        p = Piped(
            [sys.executable, "-m", "alert_sink", "--port", "0", "--token-file", str(token),
             "--store", f"sqlite:{db}"],
            ready="event=listening",
        )  # fmt: skip
        try:
            p.wait_ready()
            port = int(re.search(r"event=listening host=\S+ port=(\d+)", p.output).group(1))
            r = requests.post(
                f"http://127.0.0.1:{port}/kapacitor",
                data=payload.replace(b'"id":"', f'"id":"run{i}-'.encode(), 1),
                headers={"Authorization": "Bearer signals-token"},
                timeout=HANG,
            )
            assert r.status_code == 202, r.text
            time.sleep(0.01 * (i % 5))
            rc, took = p.stop(sig)
        finally:
            p.kill()
        assert rc == 0, p.output[-3000:]
        assert "event=stopped" in p.output
        return took

    _repeat("alert_sink", once)
    with sqlite3.connect(db) as conn:
        ids = {json.loads(d)["alert.id"] for (d,) in conn.execute("SELECT doc FROM alerts")}
    assert len([a for a in ids if a.startswith("run")]) == RUNS  # every accepted alert kept


@pytest.mark.slow
def test_api_stops_every_time(tmp_path, registry):
    def once(i: int, sig: int) -> float:
        p = Piped(
            [sys.executable, "-m", "api", "--port", "0", "--registry", str(registry.root)],
            ready="event=listening",
        )
        try:
            p.wait_ready()
            url = re.search(r"url=(http://\S+?)/docs", p.output).group(1)
            r = requests.post(
                f"{url}/v1/predict", json={f: 0.1 for f in contract.FEATURES}, timeout=HANG
            )
            assert r.status_code == 200, r.text
            time.sleep(0.01 * (i % 5))
            rc, took = p.stop(sig)
        finally:
            p.kill()
        assert rc == 0, p.output[-3000:]
        return took

    _repeat("api", once)


@pytest.mark.slow
@pytest.mark.influxdb
def test_publisher_stops_every_time_and_flushes_what_it_holds(tmp_path, influxdb):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.normal(size=(200, len(contract.FEATURES))), columns=contract.FEATURES)
    df["Class"] = 0
    df["txn_id"] = [f"s{i}" for i in range(len(df))]
    csv = tmp_path / "test.csv"
    df.to_csv(csv, index=False)

    def once(i: int, sig: int) -> float:
        db = f"signals{i}"
        p = Piped(
            [sys.executable, "-m", "publisher", "--influx-url", influxdb.url, "--database", db,
             "--csv", str(csv), "--rate", "2000", "--batch-size", "5000",
             "--flush-interval", "30", "--progress-interval", "0.2"],
            ready="event=progress",
        )  # fmt: skip
        try:
            p.wait_ready()  # points are being produced into a batch not due for 30 s
            time.sleep(0.01 * (i % 5))
            rc, took = p.stop(sig)
        finally:
            p.kill()
        assert rc == 0, p.output[-3000:]
        m = re.search(r"event=finished produced=(\d+) written=(\d+) unsent=0", p.output)
        assert m, p.output[-3000:]
        produced, written = int(m.group(1)), int(m.group(2))
        assert produced == written > 0
        assert influxdb.count(contract.INPUT_MEASUREMENT, contract.TXN_ID, db=db) == written
        return took

    _repeat("publisher", once)


@pytest.mark.slow
def test_demo_stops_every_time_and_leaves_nothing_running(tmp_path):
    common = ["--small", "--rate", "400", "--registry", str(tmp_path / "reg"), "--data-dir",
              str(tmp_path / "data")]  # fmt: skip
    # first run trains the model and prepares the data; later runs start from there
    first = subprocess.run(
        [sys.executable, "-m", "demo", *common, "--n", "200", "--out", str(tmp_path / "o0")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]

    def once(i: int, sig: int) -> float:
        p = Piped(
            [sys.executable, "-m", "demo", *common, "--out", str(tmp_path / f"o{i + 1}")],
            ready="==> replay",
        )
        try:
            p.wait_ready()
            time.sleep(0.05 * (i % 5))
            rc, took = p.stop(sig)
        finally:
            p.kill()
        assert rc == 130, p.output[-3000:]
        assert "interrupted" in p.output
        return took

    _repeat("demo", once)
