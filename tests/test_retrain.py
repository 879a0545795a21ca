"""`python -m models retrain` end to end from a CSV: the first model is promoted, a
challenger trained on shuffled labels is kept (and gets the challenger alias), the report
says which metric decided and why; bad input exits 2; MLflow aliases follow the decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

from models.__main__ import main
from models.data import make_synthetic
from models.registry import Registry

FAST = ["--candidates", "lr_balanced", "--trials", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fresh")
    df = make_synthetic(3000, seed=3, fraud_rate=0.04)
    df.to_csv(d / "fresh.csv", index=False)
    shuffled = df.copy()
    shuffled["Class"] = np.random.default_rng(1).permutation(shuffled["Class"].to_numpy())
    shuffled.to_csv(d / "shuffled.csv", index=False)
    return {"fresh": d / "fresh.csv", "shuffled": d / "shuffled.csv"}


def _report(runs: Path, index: int = -1) -> dict:
    reports = sorted(runs.glob("retrain-*/retrain.json"))
    return json.loads(reports[index].read_text())


def _retrain(tmp_path, *args: str) -> int:
    return main(
        [
            "retrain",
            "--registry",
            str(tmp_path / "registry"),
            "--runs-dir",
            str(tmp_path / "runs"),
            *FAST,
            *args,
        ]
    )


@pytest.mark.slow
def test_first_model_promoted_then_shuffled_labels_kept_as_challenger(tmp_path, data, capsys):
    registry = Registry(tmp_path / "registry")
    runs = tmp_path / "runs"

    assert _retrain(tmp_path, "--csv", str(data["fresh"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("promoted: no champion yet: the first model is promoted")
    assert registry.aliases("creditcard") == {"production": "1"}
    first = _report(runs)
    d = first["decision"]
    assert d["event"] == "promoted" and d["promote"] is True
    # credit cards have a value column (Amount): the expected cost decides, and says so
    assert d["metric"] == "cost" and first["gate"]["metric"] == "cost"
    assert d["challenger_value"] < d["baseline_cost"]
    assert first["data"]["holdout_rows"] == 600 and first["data"]["training_rows"] == 2400
    assert first["champion_version"] is None and first["challenger_version"] == "1"
    png = Path(first["run_dir"]) / "retrain.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # the fresh rows and the holdout are not left behind unless asked for
    assert not (Path(first["run_dir"]) / "data").exists()

    # labels shuffled: the new model ranks no better than chance on its holdout
    assert _retrain(tmp_path, "--csv", str(data["shuffled"])) == 3
    out = capsys.readouterr().out
    assert out.startswith("kept: the challenger ranks no better than chance")
    assert registry.aliases("creditcard") == {"production": "1", "challenger": "2"}
    second = _report(runs)
    assert second["decision"]["event"] == "kept"
    assert second["champion_version"] == "1" and second["challenger_version"] == "2"
    # the champion was scored on the same holdout
    assert second["decision"]["champion_value"] is not None
    assert second["aliases"] == {"production": "1", "challenger": "2"}

    # real labels again but an unreachable margin: kept, the gain figures reported
    assert _retrain(tmp_path, "--csv", str(data["fresh"]), "--min-gain", "5", "--keep-data") == 3
    third = _report(runs)
    d = third["decision"]
    assert d["gain"] is not None and d["gain"] < 5 and "does not beat champion v1" in d["reason"]
    assert registry.aliases("creditcard") == {"production": "1", "challenger": "3"}
    kept = Path(third["run_dir"]) / "data"
    assert (kept / "fresh.csv").is_file()


@pytest.mark.slow
def test_a_profile_without_value_column_is_judged_on_auprc(tmp_path):
    rc = _retrain(tmp_path, "--profile", "machine_failure", "--synthetic-rows", "4000")
    report = _report(tmp_path / "runs")
    assert report["decision"]["metric"] == "auprc"
    assert report["model"] == "machine_failure"
    assert rc == (0 if report["decision"]["promote"] else 3)
    assert report["decision"]["challenger_value"] == report["decision"]["challenger_auprc"]


def test_bad_input_exits_2_and_names_the_problem(tmp_path, capsys):
    assert _retrain(tmp_path) == 2
    assert "no data: pass --csv FILE" in capsys.readouterr().err
    assert _retrain(tmp_path, "--csv", str(tmp_path / "missing.csv")) == 2
    assert "no such file" in capsys.readouterr().err
    assert _retrain(tmp_path, "--profile", "nope", "--synthetic-rows", "100") == 2
    assert "nope" in capsys.readouterr().err
    assert (
        _retrain(
            tmp_path, "--profile", "machine_failure", "--synthetic-rows", "100", "--metric", "cost"
        )
        == 2  # fmt: skip
    )
    assert "has none: use --metric auprc" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,V1\n1,2\n")
    assert _retrain(tmp_path, "--csv", str(bad)) == 2
    assert "missing columns" in capsys.readouterr().err
    # nothing was registered
    assert not (tmp_path / "registry" / "creditcard").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mlflow_aliases_follow_the_decision(tmp_path, data, monkeypatch):
    require_module("mlflow")
    from mlflow import MlflowClient

    from models.mlflow_registry import VERSION_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("creditcard", artifact_location=(tmp_path / "art").as_uri())

    def project_version(alias: str) -> str:
        mv = client.get_model_version_by_alias("creditcard", alias)
        return client.get_run(mv.run_id).data.tags[VERSION_TAG]

    assert _retrain(tmp_path, "--csv", str(data["fresh"]), "--mlflow") == 0
    assert project_version("production") == "1" and project_version("champion") == "1"
    assert _retrain(tmp_path, "--csv", str(data["shuffled"]), "--mlflow") == 3
    assert project_version("challenger") == "2"
    assert project_version("production") == "1" and project_version("champion") == "1"
    # the decision is on the training run of the new version
    mv = client.get_model_version_by_alias("creditcard", "challenger")
    run = client.get_run(mv.run_id)
    assert run.data.tags["retrain.decision"] == "kept"
    assert "no better than chance" in run.data.tags["retrain.reason"]
    report = _report(tmp_path / "runs")
    assert report["mlflow"]["aliases"] == ["challenger"]
    assert report["mlflow"]["run_id"] == mv.run_id


@pytest.mark.slow
def test_sigterm_stops_a_retrain_within_seconds_and_says_so(tmp_path):
    import subprocess
    import sys
    import time

    from conftest import WAIT, eventually

    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "models", "retrain", "--synthetic-rows", "8000",
             "--candidates", "hgb", "--trials", "200", "--registry", str(tmp_path / "registry"),
             "--runs-dir", str(tmp_path / "runs")],
            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        try:
            eventually(lambda: "tune candidate=hgb trial=1/" in log.read_text(),
                       timeout=WAIT * 3, what="tuning under way")  # fmt: skip
            t0 = time.monotonic()
            proc.terminate()
            rc = proc.wait(timeout=WAIT)
            stopped_in = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 130, log.read_text()[-2000:]
    assert stopped_in < 10, f"took {stopped_in:.1f}s"
    report = _report(tmp_path / "runs")
    assert report["error"] == "interrupted (SIGTERM)"
    assert not (tmp_path / "registry" / "creditcard").exists()
