"""``python -m demo`` as a real subprocess: the reduced mode, the InfluxDB path, failures
named by stage, and Ctrl-C; after each run nothing it started may be left running."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import free_port, require_binary

from models import contract
from models.registry import Registry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEMO_SMALL", None)
    return subprocess.run(
        [sys.executable, "-m", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def started_pids(stdout: str) -> list[int]:
    """Pids of the agent and the sink, as the demo prints them."""
    return [int(m) for m in re.findall(r"(?:udf_agent|alert_sink) pid (\d+)", stdout)]


def assert_gone(pids: list[int]) -> None:
    # The demo reaps its children, so not even a zombie may remain.
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    assert not alive, f"still running: {[psutil.Process(p).cmdline() for p in alive]}"


def only_run_dir(out: Path) -> Path:
    dirs = sorted(out.glob("demo-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def sink_alerts(db: Path) -> list[dict]:
    with sqlite3.connect(db) as c:
        return [json.loads(doc) for (doc,) in c.execute("SELECT doc FROM alerts")]


def recompute(alerts: list[dict], test_csv: Path) -> tuple[float, float]:
    """Precision and recall from the sink's alerts and the test split's labels alone."""
    test = pd.read_csv(test_csv, dtype={"txn_id": str})
    labels = dict(zip(test["txn_id"], test["Class"], strict=True))
    alerted = {a["txn_id"] for a in alerts}
    tp = sum(labels[t] == 1 for t in alerted)
    return tp / len(alerted), tp / int(test["Class"].sum())


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo-small")
    dirs = {k: base / k for k in ("registry", "data", "out")}
    proc = run_demo(
        "--small", "--registry", str(dirs["registry"]), "--data-dir", str(dirs["data"]),
        "--out", str(dirs["out"]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = only_run_dir(dirs["out"])
    report = json.loads((run_dir / "report.json").read_text())
    return dirs, proc, run_dir, report


def test_small_run_report_matches_the_sink_store(small_run):
    dirs, proc, run_dir, report = small_run
    assert_gone(started_pids(proc.stdout))
    assert_gone(list(report["processes"].values()))
    for name in ("report.png", "report.json", "alerts.db", "udf_agent.log", "alert_sink.log"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    test = pd.read_csv(dirs["data"] / "test.csv", dtype={"txn_id": str})
    assert report["replay"]["points"] == len(test) == report["data"]["test_rows"]
    assert report["data"]["source"] == "synthetic(n_rows=20000, seed=42)"
    assert report["model"]["trained"] is not None  # empty registry: a model was trained
    # ... by the training job of `python -m models train --profile creditcard`, on the
    # rows the demo replays: its card describes the data set and scores the same test split
    card = Registry(dirs["registry"]).card("creditcard", "production")
    assert card.data["profile"]["name"] == "creditcard" and card.features == contract.FEATURES
    assert set(card.data["reference"]["features"]) == set(contract.FEATURES)
    assert card.data["training"]["rows"] == report["data"]["splits"]["train"]["rows"]
    assert card.metrics["rows"] == len(test) and card.metrics["positives"] == test["Class"].sum()
    reports = Path(report["model"]["trained"]["reports"])
    assert reports.parent == run_dir and (reports / "comparison.md").is_file()
    assert "python -m models train --profile creditcard" in report["model"]["trained"]["command"]

    alerts = sink_alerts(run_dir / "alerts.db")
    assert len(alerts) == report["alerts"]["posted"] == report["alerts"]["sink_documents"] > 0
    assert sorted(a["txn_id"] for a in alerts) == report["alerts"]["txn_ids"]
    assert {a["alert.level"] for a in alerts} == {"CRITICAL"}
    assert {a["model.name"] for a in alerts} == {"creditcard"}
    assert all(a["score"] >= a["threshold"] for a in alerts)
    precision, recall = recompute(alerts, dirs["data"] / "test.csv")
    q = report["quality"]
    assert q["precision"] == pytest.approx(precision)
    assert q["recall"] == pytest.approx(recall)
    assert q["tp"] + q["fn"] == int(test["Class"].sum())
    fraud_amount = float(test.loc[test["Class"] == 1, "Amount"].sum())
    assert q["fraud_amount_caught"] + q["fraud_amount_missed"] == pytest.approx(fraud_amount)
    assert report["replay"]["throughput"] > 0
    assert 0 < report["replay"]["latency_ms"]["p50"] <= report["replay"]["latency_ms"]["p99"]
    assert "precision" in proc.stdout and "Run folder" in proc.stdout


def test_second_run_reuses_splits_and_model(small_run):
    dirs, _, first_dir, first = small_run
    out2 = dirs["out"].parent / "out2"
    proc = run_demo(
        "--small", "--registry", str(dirs["registry"]), "--data-dir", str(dirs["data"]),
        "--out", str(out2), "--n", "1000",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((only_run_dir(out2) / "report.json").read_text())
    assert report["data"]["splits_reused"] is True
    assert report["model"]["trained"] is None
    assert report["model"]["version"] == first["model"]["version"]
    assert report["replay"]["points"] == 1000
    assert len(sink_alerts(only_run_dir(out2) / "alerts.db")) == report["alerts"]["posted"]


@pytest.mark.influxdb
def test_influx_run_goes_through_influxdb(tmp_path, influxdb):
    require_binary("influxd")
    proc = run_demo(
        "--small", "--influx", influxdb.url, "--registry", str(tmp_path / "reg"),
        "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_gone(started_pids(proc.stdout))
    run_dir = only_run_dir(tmp_path / "out")
    report = json.loads((run_dir / "report.json").read_text())
    test = pd.read_csv(tmp_path / "data" / "test.csv", dtype={"txn_id": str})
    source = report["influx"]["source"]
    assert report["influx"]["published"] == report["influx"]["read_back"] == len(test)

    points = influxdb.rows(
        f"SELECT txn_id, label FROM transactions WHERE source = '{source}'", db="fraud"
    )
    assert sorted(p["txn_id"] for p in points) == sorted(test["txn_id"])
    time_of = {p["txn_id"]: p["time"] for p in points}

    alerts = sink_alerts(run_dir / "alerts.db")
    assert len(alerts) == report["alerts"]["posted"] > 0
    from alert_sink.payload import parse_rfc3339_ns

    for a in alerts:
        assert a["source"] == source
        # the alert carries the InfluxDB point's own timestamp, like Kapacitor's
        assert parse_rfc3339_ns(a["@timestamp"]) == time_of[a["txn_id"]]
    precision, recall = recompute(alerts, tmp_path / "data" / "test.csv")
    assert report["quality"]["precision"] == pytest.approx(precision)
    assert report["quality"]["recall"] == pytest.approx(recall)


def test_bad_csv_names_the_stage(tmp_path):
    proc = run_demo(
        "--csv", str(tmp_path / "missing.csv"), "--registry", str(tmp_path / "reg"),
        "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 1
    assert "demo failed at stage 'prepare data'" in proc.stderr
    assert "missing.csv" in proc.stderr
    assert started_pids(proc.stdout) == []


def test_failure_after_start_stops_agent_and_sink(tmp_path):
    # Nothing listens on this port: the publisher gives up after --influx-timeout and the
    # stage is named, while the agent and the sink, already running, must be stopped.
    # Their own start-up keeps its wide default (--startup-timeout): a busy machine may
    # take seconds to start them, and that is not what this test is about.
    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_demo(
        "--small", "--influx", dead, "--influx-timeout", "2", "--registry",
        str(tmp_path / "reg"), "--data-dir", str(tmp_path / "data"), "--out",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "demo failed at stage 'publish to influxdb'" in proc.stderr
    pids = started_pids(proc.stdout)
    assert len(pids) == 2
    assert_gone(pids)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# "inherited ignored": what a shell without job control does to a background command
@pytest.mark.parametrize("sigint", ["default", "inherited ignored"])
def test_ctrl_c_stops_everything(tmp_path, sigint):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", "--small", "--rate", "300", "--registry",
         str(tmp_path / "reg"), "--data-dir", str(tmp_path / "data"), "--out",
         str(tmp_path / "out")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if sigint != "default" else None,
    )  # fmt: skip
    seen = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("==> replay") or time.monotonic() > deadline:
                break
        time.sleep(1.0)  # mid-replay: 3,000 points at 300/s take 10 s
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    pids = started_pids(out)
    assert len(pids) == 2
    assert_gone(pids)
