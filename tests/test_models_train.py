"""The training job end to end: train -> register -> load_backend -> score, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

from models.backends import SklearnBackend, load_backend
from models.contract import FEATURES, TXN_ID
from models.data import X_y, load_split, make_synthetic, split_stratified
from models.errors import TrainingError
from models.registry import Registry
from models.train import TABLE_COLUMNS, TrainConfig, train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    config = TrainConfig(
        synthetic_rows=20_000,
        candidates=["lr_smote", "hgb"],
        trials=2,
        seed=3,
        threshold_strategy="cost",
        review_cost=5.0,
        selection="validation",
        promote="production",
        registry=str(tmp / "registry"),
        data_dir=str(tmp / "data"),
        runs_dir=str(tmp / "runs"),
    )
    out = io.StringIO()
    return train(config, progress=out), out.getvalue(), tmp


def test_round_trip_through_the_scoring_backend(trained):
    result, _, tmp = trained
    reg = Registry(tmp / "registry")
    backend = load_backend(reg, "creditcard", "production")
    assert isinstance(backend, SklearnBackend)
    assert backend.version == result.card.version and backend.feature_names == FEATURES
    assert not hasattr(backend.estimator, "feature_names_in_")  # fitted on plain arrays
    test = load_split(tmp / "data" / "test.csv")
    X, _ = X_y(test)
    np.testing.assert_allclose(backend.score(X), result.best.test_scores, rtol=1e-12)
    # one row at a time gives the same scores as the batch
    np.testing.assert_allclose(
        [backend.score(X[i : i + 1])[0] for i in range(20)], result.best.test_scores[:20]
    )
    assert backend.threshold == pytest.approx(result.best.threshold)


def test_card_and_reports(trained):
    result, progress, tmp = trained
    card = result.card
    assert card.data["candidate"] == result.best.name
    assert card.data["threshold_strategy"] == "cost" and card.data["review_cost"] == 5.0
    tr = card.data["training"]
    train_csv = load_split(tmp / "data" / "train.csv")
    assert tr["rows"] == len(train_csv) == 14_000
    assert tr["positive_rate"] == pytest.approx(train_csv["Class"].mean())
    assert tr["resampling"] == result.best.resampling
    for k in ("auprc", "roc_auc", "precision", "recall", "f1", "money_caught", "alerts"):
        assert k in card.metrics
    # validation and test keep their class counts: resampling touched training rows only
    summary = result.splits_summary
    assert result.best.validation["positives"] == summary["validation"]["positives"]
    assert result.best.test["rows"] == summary["test"]["rows"] == 3000
    assert (tmp / "registry" / "creditcard" / card.version / "architecture.md").is_file()
    run = result.run_dir
    for f in ("comparison.md", "comparison.csv", "trials.csv", "metrics.json", "pr_curve.png",
              "roc_curve.png", "threshold_cost.png", "calibration.png"):  # fmt: skip
        assert (run / f).stat().st_size > 0, f
    with (run / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == [r.name for r in result.results]
    assert list(rows[0]) == TABLE_COLUMNS
    # ranking is by validation AUPRC, and the registered model is rank 1
    vals = [float(r["val_auprc"]) for r in rows]
    assert vals == sorted(vals, reverse=True) and rows[0]["candidate"] == result.best.name
    # one progress line per trial (2 per tuned candidate)
    assert progress.count("tune candidate=") == 4 and "fit candidate=hgb" in progress
    # cost threshold is optimal on validation: alerting on everything costs more
    val = result.best.validation
    assert val["expected_cost"] <= val["fraud_amount"]


def test_bad_options_fail_before_any_work(tmp_path):
    with pytest.raises(TrainingError, match="unknown candidate"):
        train(TrainConfig(candidates=["nope"], data_dir=str(tmp_path)))
    with pytest.raises(TrainingError, match="unknown threshold strategy"):
        train(TrainConfig(threshold_strategy="youden", data_dir=str(tmp_path)))
    with pytest.raises(TrainingError, match="at least 2 folds"):
        train(TrainConfig(cv=1, data_dir=str(tmp_path)))
    with pytest.raises(TrainingError, match="--promote needs registration"):
        train(TrainConfig(promote="production", register=False, data_dir=str(tmp_path)))
    assert not list(tmp_path.iterdir())


def test_ensemble_cv_figure_is_measured_on_the_fitted_members(tmp_path, monkeypatch):
    import models.tuning

    seen: dict[str, dict] = {}

    def record(candidate, params, X, y, **kw):
        seen.setdefault(candidate.name, params)
        return 0.5

    monkeypatch.setattr(models.tuning, "cross_val_ap", record)
    config = TrainConfig(
        synthetic_rows=3000,
        candidates=["voting", "lr_smote"],
        trials=1,
        register=False,
        data_dir=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
    )
    result = train(config, progress=io.StringIO())
    tuned = next(r for r in result.results if r.name == "lr_smote").params
    assert tuned and seen["voting"] == {"base_params": {"lr_smote": tuned}}
    voting = next(r for r in result.results if r.name == "voting")
    assert voting.params["members"]["lr_smote"] == tuned
    members = dict(voting.estimator.named_estimators_)
    clf = members["lr_smote"].named_steps["clf"]
    assert tuned["C"] == clf.C


def _cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MODELS_REGISTRY": str(cwd / "reg"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_train_list_promote_evaluate(tmp_path):
    r = _cli("train", "--synthetic-rows", "5000", "--trials", "2", "--promote", "production",
             "--threshold-strategy", "cost", "--review-cost", "2.5", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| rank | candidate |" in r.stdout and "registered creditcard v1" in r.stdout
    assert "tune candidate=lr_smote trial=1/2" in r.stderr
    for f in ("train.csv", "validation.csv", "test.csv"):
        assert (tmp_path / "data" / f).is_file()
    assert list((tmp_path / "runs").glob("train-*/comparison.md"))

    r = _cli(
        "train",
        "--synthetic-rows",
        "5000",
        "--trials",
        "0",
        "--candidates",
        "lr_smote",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr

    r = _cli("list", "--json", cwd=tmp_path)
    rows = json.loads(r.stdout)
    assert [(x["version"], x["aliases"]) for x in rows] == [("1", ["production"]), ("2", [])]
    assert "production" in _cli("list", cwd=tmp_path).stdout

    r = _cli("promote", "creditcard", "2", "--alias", "production", cwd=tmp_path)
    assert r.returncode == 0 and "production -> v2" in r.stdout
    assert json.loads((tmp_path / "reg" / "creditcard" / "aliases.json").read_text()) == {
        "production": "2"
    }

    r = _cli("evaluate", "creditcard", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["version"] == "2" and m["rows"] == 750 and 0 <= m["auprc"] <= 1
    assert list((tmp_path / "runs").glob("evaluate-creditcard-v2-*/pr_curve.png"))
    r = _cli("evaluate", "creditcard", "1", cwd=tmp_path)
    assert r.returncode == 0 and "version: 1" in r.stdout


def test_cli_errors_are_one_clear_line(tmp_path):
    r = _cli("promote", "creditcard", "1", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model 'creditcard'")
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,V1\n0,1\n")
    r = _cli("split", "--csv", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "missing columns: V2" in r.stderr and "Traceback" not in r.stderr
    r = _cli("evaluate", "creditcard", cwd=tmp_path)
    assert r.returncode == 2 and "python -m models split" in r.stderr


def test_cli_split(tmp_path):
    r = _cli("split", "--synthetic-rows", "4000", "--time-split", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    parts = [load_split(tmp_path / "data" / f"{p}.csv") for p in ("train", "validation", "test")]
    assert parts[0]["Time"].max() <= parts[1]["Time"].min() <= parts[2]["Time"].min()
    assert "data/test.csv: 600 rows" in r.stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mlflow_tracking(trained, tmp_path):
    mlflow = require_module("mlflow")
    from models.tracking import log_training_run

    result = trained[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_training_run(result, tracking_uri=uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["best_candidate"] == result.best.name
    assert run.data.metrics["test_auprc"] == pytest.approx(result.best.test["auprc"])
    arts = {a.path for a in client.list_artifacts(run_id, "reports")}
    assert "reports/pr_curve.png" in arts and "reports/comparison.md" in arts
    versions = client.search_model_versions("name='creditcard'")
    assert len(versions) == 1
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.sklearn.load_model(f"models:/creditcard/{versions[0].version}")
    X, _ = X_y(load_split(trained[2] / "data" / "test.csv"))
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], result.best.test_scores)
    # the run carries the registry's version directory: MLflow's registry can serve it
    from models.mlflow_registry import MlflowRegistry

    client.set_registered_model_alias("creditcard", "champion", versions[0].version)
    served = MlflowRegistry(uri, tmp_path / "cache", poll_interval=0.0)
    card = served.card("creditcard", "champion")
    assert card.version == result.card.version and card.data["reference"]["features"]
    backend = load_backend(served, "creditcard", "champion")
    np.testing.assert_allclose(backend.score(X), result.best.test_scores, rtol=1e-12)


def test_train_tf_flags_are_the_shared_ones():
    from models.__main__ import COMMANDS, build_parser

    args = build_parser().parse_args(["train-tf", "--synthetic-rows", "100", "--epochs", "2"])
    assert (args.name, args.synthetic_rows, args.epochs, args.seed) == ("creditcard_tf", 100, 2, 42)
    assert (args.serving_dir, args.promote, args.registry, args.csv) == (
        "models/serving",
        None,
        None,
        None,
    )
    assert COMMANDS[args.command].__name__ == "cmd_train_tf"
    args = build_parser().parse_args(["train", "--promote", "production", "--mlflow"])
    assert args.name == "creditcard" and args.promote == "production" and args.mlflow


def test_train_tf_seed_zero_is_used(tmp_path, monkeypatch):
    import models.tf_keras

    used = {}

    def stop(X_tr, y_tr, X_va, y_va, config, **kw):
        used["seed"] = config.seed
        raise KeyboardInterrupt

    monkeypatch.setattr(models.tf_keras, "train_keras", stop)
    from models.__main__ import build_parser

    args = build_parser().parse_args(
        ["train-tf", "--synthetic-rows", "3000", "--seed", "0", "--data-dir", str(tmp_path),
         "--registry", str(tmp_path / "reg"), "--serving-dir", str(tmp_path / "serving")]
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        models.tf_keras.cli_train_tf(args)
    assert used["seed"] == 0
    # the split written is the seed-0 split, not the default seed's
    seed0 = split_stratified(make_synthetic(3000, seed=0), seed=0).test[TXN_ID]
    assert load_split(tmp_path / "test.csv")[TXN_ID].tolist() == seed0.tolist()
