"""``make demo PROFILE=machine_failure``: the demo for another data set, end to end, as real
processes; its alert bodies and its training step on their own."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score
from test_demo import assert_gone, only_run_dir, run_demo, started_pids

from alert_sink.payload import parse_alert
from alert_sink.routing import PROFILE_DOC_FIELDS, Router
from demo.config import DemoConfig
from demo.dataset import Dataset
from demo.kapacitor import ScoredRecord, alert_body, render_template
from demo.model import ensure_model
from demo.prepare import prepare_data
from demo.stage import Workspace
from models.data import X_y
from models.profile import load_profile
from models.profile_tasks import alert_texts
from udf_agent import replay

ROOT = Path(__file__).resolve().parent.parent
MF = load_profile("machine_failure")

profile_replay = pytest.mark.skipif(
    "profile" not in inspect.signature(replay.build_payloads).parameters,
    reason="the agent's replay driver of this checkout reads credit-card points only",
)


def record(i: int = 7) -> ScoredRecord:
    return ScoredRecord(
        time_ns=1_790_000_000_123_456_789 + i,
        tags={"model": "machine_failure", "model_version": "2", "source": "demo-x"},
        fields={
            "Air temperature [K]": 301.5,
            "Process temperature [K]": 310.0,
            "Rotational speed [rpm]": 1282,
            "Tool wear [min]": 212,
            "Torque [Nm]": 62.7,
            "Type": "L",
            "UDI": str(1000 + i),
            "label": 1,
            "score": 0.93,
            "is_anomaly": True,
            "threshold": 0.31,
        },
    )


def test_the_alert_body_shows_the_profiles_message_fields_and_reaches_its_index():
    body = alert_body(
        record(),
        level="CRITICAL",
        previous="OK",
        duration_ns=0,
        measurement=MF.scored_measurement,
        texts=alert_texts(MF),
    )
    raw = json.loads(body)
    assert raw["id"] == "machine_failure:machine_failure"
    assert raw["message"] == (
        "Anomaly in machine_failure: UDI 1007 scored 0.93 (threshold 0.31), Type L, "
        "Torque [Nm] 62.7, Tool wear [min] 212, model machine_failure v2"
    )
    assert raw["details"].startswith("UDI=1007 score=0.93 threshold=0.31 Type=L ")
    (doc,) = parse_alert(body, router=Router([MF], default_index="fraud-alerts"))
    assert doc.index == MF.alert_index and doc.source["id"] == "1007"
    assert list(doc.source)[: len(PROFILE_DOC_FIELDS)] == PROFILE_DOC_FIELDS
    assert doc.source["fields.Process temperature [K]"] == 310.0


def test_render_template_escapes_values_only_for_the_details():
    rec = record()
    rec.fields["Type"] = "L<&>'"
    text = '{{ index .Fields "Type" }} {{ index .Tags "model" }} {{ index .Fields "nope" }}'
    assert render_template(text, rec) == "L<&>' machine_failure <no value>"
    assert render_template(text, rec, html=True).startswith("L&lt;&amp;&gt;&#39; ")


def workspace(tmp_path: Path, **config) -> Workspace:
    ws = Workspace(
        DemoConfig(profile="machine_failure", registry=tmp_path / "registry",
                   data_dir=tmp_path / "data", **config),
        Dataset.load("machine_failure"), io.StringIO(), io.StringIO(),
        contextlib.ExitStack(), tmp_path / "tmp", tmp_path / "run",
    )  # fmt: skip
    ws.tmp.mkdir(exist_ok=True)
    ws.run_dir.mkdir(exist_ok=True)
    return ws


@pytest.mark.slow
def test_the_data_and_model_stages_of_a_profile(tmp_path):
    ws = workspace(tmp_path, synthetic_rows=3000, seed=3)
    data = prepare_data(ws)
    assert not data.reused and data.data_dir == tmp_path / "data" / "machine_failure"
    assert (data.data_dir / "test.csv").is_file()
    again = prepare_data(ws)
    assert again.reused and again.test["UDI"].tolist() == data.test["UDI"].tolist()

    model = ensure_model(ws, data)
    card = model.card
    assert model.trained is not None and card.name == "machine_failure"
    assert card.features == MF.feature_names
    assert card.data["profile"]["features"][0] == {
        "name": "Type",
        "type": "categorical",
        "levels": ["H", "L", "M"],
    }
    assert set(card.data["reference"]["features"]) == set(MF.feature_names)
    # the training job of `python -m models train` ran on the demo's own splits: the
    # model scores the test split the demo replays to exactly the card's test figures
    assert card.data["training"]["rows"] == len(data.splits.train)
    assert (Path(model.trained["reports"]) / "comparison.md").is_file()
    artifact = model.registry.load_artifact(card)
    X, y = X_y(data.test, profile=MF)
    scores = artifact.predict_proba(X)[:, 1]
    assert card.metrics["rows"] == len(y)
    assert card.metrics["auprc"] == pytest.approx(average_precision_score(y, scores))
    X.loc[0, "Type"] = "Z"  # a level the encoder never saw is no error
    assert artifact.predict_proba(X.head(5)).shape == (5, 2)

    again = ensure_model(ws, data)
    assert again.trained is None and again.card.version == card.version  # already there


def test_make_demo_passes_the_profile():
    r = subprocess.run(
        ["make", "-n", "demo", "PROFILE=machine_failure", "BIN=.venv/bin", "STAMP="],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "-m demo --profile machine_failure" in r.stdout
    r = subprocess.run(
        ["make", "-n", "demo", "STAMP="], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "--profile" not in r.stdout


@pytest.mark.slow
def test_a_profile_without_a_generator_asks_for_a_csv(tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(MF.to_toml().replace('name = "machine_failure"', 'name = "other"'))
    r = run_demo("--profile", str(other), "--small", "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "prepare data" in r.stderr and "pass --csv FILE" in r.stderr


@pytest.mark.slow
@profile_replay
def test_demo_with_the_machine_failure_profile(tmp_path):
    dirs = {k: tmp_path / k for k in ("registry", "data", "out")}
    proc = run_demo(
        "--profile", "machine_failure", "--small", "--registry", str(dirs["registry"]),
        "--data-dir", str(dirs["data"]), "--out", str(dirs["out"]),
        timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_gone(started_pids(proc.stdout))
    run_dir = only_run_dir(dirs["out"])
    report = json.loads((run_dir / "report.json").read_text())
    assert report["profile"]["name"] == "machine_failure"
    assert report["model"]["name"] == "machine_failure" and report["model"]["trained"]
    test = pd.read_csv(dirs["data"] / "machine_failure" / "test.csv")
    assert report["replay"]["points"] == len(test) and report["replay"]["score_errors"] == 0
    with sqlite3.connect(run_dir / "alerts.db") as c:
        stored = [(i, json.loads(d)) for i, d in c.execute("SELECT index_name, doc FROM alerts")]
    assert stored and {i for i, _ in stored} == {MF.alert_index}
    assert len(stored) == report["alerts"]["posted"] == report["alerts"]["sink_documents"]
    for _, doc in stored:
        assert list(doc)[: len(PROFILE_DOC_FIELDS)] == PROFILE_DOC_FIELDS
        assert {f"fields.{f}" for f in MF.feature_names} <= set(doc)
        assert doc["alert.message"].startswith(f"Anomaly in machine_failure: UDI {doc['id']} ")
    # precision and recall from the sink's documents and the test split's labels alone
    labels = dict(zip(test["UDI"].astype(str), test["Machine failure"], strict=True))
    alerted = {doc["id"] for _, doc in stored}
    tp = sum(labels[u] == 1 for u in alerted)
    assert report["quality"]["precision"] == pytest.approx(tp / len(alerted))
    assert report["quality"]["recall"] == pytest.approx(tp / int(test["Machine failure"].sum()))
    assert report["quality"]["recall"] > 0.3  # the model finds failures, not noise
