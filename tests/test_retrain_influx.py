"""`models retrain --influx-url --since` against a real influxd with authentication: the
publisher writes labelled points (with replays of the same rows) and live points without a
label; retrain reads the labelled window back, trains, promotes, and writes a
`model_events` point that the dashboards' annotation query finds; a failed run writes a
`failed` event."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_binary

from models.data import make_synthetic
from models.influx import EVENTS_MEASUREMENT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.influxdb]

AUTH = ("admin", "s3cret-pass")


@pytest.fixture
def influx_auth(tmp_path):
    from influxdb_server import InfluxDBServer

    server = InfluxDBServer(
        binary=require_binary("influxd"), base_dir=tmp_path / "influxdb", auth=AUTH
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


def _annotation_query(profile: str) -> str:
    """The model_events annotation of the profile's live-scoring dashboard, as generated."""
    sys.path.insert(0, str(ROOT / "compose" / "scripts"))
    try:
        import gen_dashboards
    finally:
        sys.path.pop(0)
    from models.profile import load_profile

    dash = gen_dashboards.live_scoring(gen_dashboards.Names(load_profile(profile)))
    (ann,) = [a for a in dash["annotations"]["list"] if "model_events" in a["query"]]
    return ann["query"]


def test_retrain_from_the_influx_window_promotes_and_annotates(
    influx_auth, tmp_path, monkeypatch, capsys
):
    df = make_synthetic(2500, seed=5, fraud_rate=0.05)
    df["txn_id"] = [f"t{i:05d}" for i in range(len(df))]
    csv = tmp_path / "labelled.csv"
    df.to_csv(csv, index=False)
    env = {**os.environ, "PUBLISHER_USERNAME": AUTH[0], "PUBLISHER_PASSWORD": AUTH[1]}
    # random mode with more points than rows: rows are replayed (the same txn_id again)
    result = subprocess.run(
        [sys.executable, "-m", "publisher", "--influx-url", influx_auth.url, "--csv", str(csv),
         "--mode", "random", "--seed", "7", "--rate", "0", "--count", "4000",
         "--log-level", "warning"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    distinct = influx_auth.rows('SELECT count(distinct("txn_id")) FROM "transactions"', db="fraud")[
        0
    ]["count"]
    assert 1500 < distinct < 2500
    # live traffic whose ground truth is not known yet: no label field
    now = time.time_ns()
    unlabelled = "\n".join(
        "transactions,source=live Time=1,"
        + ",".join(f"V{i}=0.5" for i in range(1, 29))
        + f',Amount=3,txn_id="live{i}" {now + i}'
        for i in range(40)
    )
    influx_auth.write("fraud", unlabelled)

    from models.__main__ import main

    monkeypatch.setenv("MODELS_INFLUX_USERNAME", AUTH[0])
    monkeypatch.setenv("MODELS_INFLUX_PASSWORD", AUTH[1])
    argv = ["retrain", "--influx-url", influx_auth.url, "--since", "1h",
            "--registry", str(tmp_path / "registry"), "--runs-dir", str(tmp_path / "runs"),
            "--candidates", "lr_balanced", "--trials", "1"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(next((tmp_path / "runs").glob("retrain-*/retrain.json")).read_text())
    data = report["data"]
    assert data["rows"] == distinct  # one row per txn_id, unlabelled points left out
    assert "40 unlabelled" in data["source"] and f"{4000 - distinct} repeated" in data["source"]
    assert report["decision"]["event"] == "promoted"
    assert report["event"]["written"] is True

    events = influx_auth.rows(f'SELECT * FROM "{EVENTS_MEASUREMENT}"', db="fraud")
    (event,) = events
    assert event["model"] == "creditcard" and event["event"] == "promoted"
    assert event["challenger_version"] == "1" and event["metric"] == "cost"
    assert event["text"].startswith("creditcard v1 promoted")
    assert event["reason"] == report["decision"]["reason"]
    assert event["challenger_value"] == pytest.approx(report["decision"]["challenger_value"])

    # the dashboards' annotation query finds it, with the columns it maps
    query = _annotation_query("creditcard").replace("$timeFilter", "time > now() - 1h")
    query = query.replace("$model", "creditcard")
    (row,) = influx_auth.rows(query, db="fraud")
    assert row["text"] == event["text"] and row["event"] == "promoted"
    assert row["model"] == "creditcard"

    # a window with nothing in it: bad input (2), and a `failed` event in that database
    argv_mf = ["retrain", "--profile", "machine_failure", "--influx-url", influx_auth.url,
               "--since", "1h", "--registry", str(tmp_path / "registry"),
               "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv_mf) == 2
    err = capsys.readouterr().err
    assert re.search(r"maintenance", err)
    (failed,) = influx_auth.rows(f'SELECT * FROM "{EVENTS_MEASUREMENT}"', db="maintenance")
    assert failed["event"] == "failed" and failed["model"] == "machine_failure"
    assert "retrain failed" in failed["text"]


def test_unreachable_influxdb_is_a_failure_not_bad_input(tmp_path, capsys):
    from conftest import free_port

    from models.__main__ import main

    url = f"http://127.0.0.1:{free_port()}"
    rc = main(["retrain", "--influx-url", url, "--since", "1h",
               "--registry", str(tmp_path / "registry"), "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert rc == 1
    assert "unreachable" in capsys.readouterr().err
