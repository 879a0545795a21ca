"""The training job end to end: train -> register -> load_backend -> score, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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
    assert len(re.findall(r"^tune candidate=\S+ trial=", progress, re.M)) == 4
    assert "fit candidate=hgb" in progress
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


def test_tuning_note_reaches_the_card_and_the_reports(tmp_path, monkeypatch):
    """A tuned hgb trial made to lead by far on the search folds (0.2 added to its fold
    scores there) must still face the real scores of folds shuffled other ways; whichever
    way that goes, the decision is written to the card, comparison.md and metrics.json."""
    from optuna.trial import FixedTrial

    import models.tuning
    from models.pipelines import HGB_LIBRARY_DEFAULTS, get_candidate

    real = models.tuning._cross_validate

    def inflated(*args, trial, fold_scores, **kw):
        real(*args, trial=None, fold_scores=fold_scores, **kw)
        if trial is not None and trial.number > 0:
            fold_scores[:] = [f + 0.2 for f in fold_scores]
        return float(np.mean(fold_scores))

    monkeypatch.setattr(models.tuning, "_cross_validate", inflated)
    config = TrainConfig(
        synthetic_rows=4000,
        candidates=["hgb"],
        trials=3,
        seed=5,
        registry=str(tmp_path / "registry"),
        data_dir=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
    )
    out = io.StringIO()
    result = train(config, progress=out)
    note = result.best.tuning_note
    assert "confirm trial" in out.getvalue()
    if note.startswith("first trial kept"):
        assert "did not hold on other folds" in note
        assert result.best.params == get_candidate("hgb").space(FixedTrial(HGB_LIBRARY_DEFAULTS))
    else:
        assert "held on other folds" in note
    assert result.card.data["tuning_note"] == note
    assert f"- hgb: {note}" in (result.run_dir / "comparison.md").read_text()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["candidates"]["hgb"]["tuning_note"] == note


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


# -- model selection by CV, and training by profile ----------------------------------------
from models.data import load_csv  # noqa: E402
from models.evaluation import choose_threshold  # noqa: E402
from models.pipelines import fit_estimator, get_candidate  # noqa: E402
from models.profile import Profile, load_profile  # noqa: E402
from models.synthetic import make_machine_failure  # noqa: E402
from models.train import CV_TABLE_COLUMNS, _backend_batch  # noqa: E402


@pytest.fixture(scope="module")
def cv_trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    src = tmp / "cards.csv"
    make_synthetic(4000, seed=5, fraud_rate=0.05).to_csv(src, index=False)
    config = TrainConfig(
        csv=str(src),
        candidates=["lr_smote", "rf_under"],
        trials=2,
        seed=4,
        registry=str(tmp / "registry"),
        data_dir=str(tmp / "data"),
        runs_dir=str(tmp / "runs"),
    )
    return train(config, progress=io.StringIO()), tmp


def test_cv_selection_ranks_by_cv_and_thresholds_on_out_of_fold_scores(cv_trained):
    result, tmp = cv_trained
    assert result.config.selection == "cv"
    cvs = [r.cv_auprc for r in result.results]
    assert cvs == sorted(cvs, reverse=True) and result.best is result.results[0]
    # the training part is train + validation: no row set aside for validation
    parts = [load_split(tmp / "data" / f"{p}.csv") for p in ("train", "validation", "test")]
    fit = pd.concat(parts[:2], ignore_index=True)
    X, y = X_y(fit)
    best = result.best
    assert result.training_rows == len(fit) == 3400 and len(best.val_scores) == len(fit)
    assert not np.isnan(best.val_scores).any()
    # the out-of-fold scores are those of k-fold CV with the chosen parameters...
    from models.tuning import cross_val_scores

    folds, oof = cross_val_scores(get_candidate(best.name), best.params, X, y, cv=3, seed=4)
    np.testing.assert_allclose(oof, best.val_scores, atol=1e-12)
    assert best.cv_auprc == pytest.approx(np.mean(folds))
    # ...and the threshold is the best F1 on them
    assert best.threshold == choose_threshold(y, oof, strategy="f1").threshold
    # the registered model is refitted on the whole training part
    again = fit_estimator(get_candidate(best.name).make(best.params, seed=4), X, y)
    Xt, _ = X_y(parts[2])
    np.testing.assert_allclose(again.predict_proba(Xt)[:, 1], best.test_scores, atol=1e-12)

    card = result.card
    assert card.features == FEATURES and "profile" not in card.data  # credit cards as ever
    assert card.data["training"]["rows"] == 3400 and card.data["training"]["selection"] == "cv"
    cvm = card.data["cv_metrics"]
    assert cvm["auprc_folds_mean"] == pytest.approx(best.cv_auprc) and cvm["folds"] == 3
    assert cvm["rows"] == 3400 and card.metrics["rows"] == 600  # test metrics stay
    assert "validation_metrics" not in card.data and "out-of-fold" in card.data["evaluated_on"]
    with (result.run_dir / "comparison.csv").open() as f:
        assert next(csv.reader(f)) == CV_TABLE_COLUMNS


def test_resampling_ratio_below_the_data_s_own_is_raised():
    # 20 % positives: SMOTE to 10 % would have to remove minority rows, which
    # imbalanced-learn refuses; the pipeline resamples just above the data's ratio instead
    from models.pipelines import RATIO_MARGIN

    X, y = X_y(make_synthetic(2000, seed=1, fraud_rate=0.2))
    est = fit_estimator(get_candidate("lr_smote").make({"ratio": 0.05}), X, y)
    assert est.named_steps["resample"].sampling_strategy == pytest.approx(0.25 * RATIO_MARGIN)
    for name in ("rf_under", "bagging", "lr_adasyn"):
        fit_estimator(get_candidate(name).make({}), X, y, name=name)


@pytest.fixture(scope="module")
def machine_trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("machine")
    config = TrainConfig(
        name="machine",
        profile="machine_failure",
        synthetic_rows=3000,
        candidates=["lr_smote", "rf_under"],
        trials=1,
        seed=2,
        promote="production",
        registry=str(tmp / "registry"),
        data_dir=str(tmp / "data"),
        runs_dir=str(tmp / "runs"),
    )
    return train(config, progress=io.StringIO()), tmp


def test_profile_model_takes_raw_categories_and_an_unseen_one(machine_trained):
    result, tmp = machine_trained
    profile = load_profile("machine_failure")
    backend = load_backend(Registry(tmp / "registry"), "machine", "production")
    card = backend.card
    assert card.features == profile.feature_names
    assert card.feature_types == ["categorical", "float", "float", "int", "float", "int"]
    train_part = pd.concat(
        [load_split(tmp / "data" / f"{p}.csv", profile=profile) for p in ("train", "validation")]
    )
    assert card.categorical == {"Type": tuple(sorted(set(train_part["Type"])))}
    assert card.profile["name"] == "machine_failure" and card.profile["id"] == "UDI"
    # the encoder is the pipeline's first step, fitted on the card's feature columns
    est = backend.estimator
    assert est.steps[0][0] == "encode" and list(est.feature_names_in_) == card.features
    test = load_split(tmp / "data" / "test.csv", profile=profile)
    batch = _backend_batch(test, card)
    np.testing.assert_allclose(backend.score(batch), result.best.test_scores, rtol=1e-12)
    # a level never seen in training is scored, not refused: it encodes as no known level
    unseen = batch[:5].copy()
    unseen[:, 0] = "Z (new line)"
    s = backend.score(unseen)
    assert s.shape == (5,) and np.all((s >= 0) & (s <= 1))
    # a row whose level is unknown scores like the same row with every level switched off
    frame = pd.DataFrame(unseen, columns=card.features)
    enc = est.named_steps["encode"].transform(frame)
    assert enc[:, :3].sum() == 0
    # no value column: no money figures anywhere
    assert "money_caught" not in card.metrics
    assert "money_caught" not in result.table_markdown
    assert not (result.run_dir / "threshold_cost.png").exists()


def test_profile_training_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(TrainingError, match="cost strategy .* has none \\(columns.value\\)"):
        train(TrainConfig(profile="machine_failure", threshold_strategy="cost",
                          data_dir=str(tmp_path)))  # fmt: skip
    with pytest.raises(TrainingError, match="unknown selection 'holdout'"):
        train(TrainConfig(selection="holdout", data_dir=str(tmp_path)))
    unlabelled = Profile(**{**load_profile("machine_failure").__dict__, "label": None})
    with pytest.raises(TrainingError, match="names no label column"):
        train(TrainConfig(profile=unlabelled, data_dir=str(tmp_path)))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_train_split_evaluate_by_profile(tmp_path):
    r = _cli("train", "--profile", "machine_failure", "--synthetic-rows", "3000", "--trials", "1",
             "--candidates", "lr_smote", "rf_under", "--promote", "production", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "registered machine_failure v1" in r.stdout and "oof_auprc" in r.stdout
    assert "money_caught" not in r.stdout
    data = tmp_path / "data" / "machine_failure"  # its own folder: data/ stays the cards'
    assert sorted(p.name for p in data.iterdir()) == ["test.csv", "train.csv", "validation.csv"]
    header = (data / "test.csv").read_text().splitlines()[0]
    assert header.startswith("Type,Air temperature [K],Process temperature [K]")

    r = _cli("evaluate", "machine_failure", "--json", cwd=tmp_path)  # profile from the card
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["profile"] == "machine_failure" and m["rows"] == 450 and "money_caught" not in m

    r = _cli("split", "--profile", "machine_failure", "--synthetic-rows", "2000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data/machine_failure/test.csv: 300 rows" in r.stdout and "positive" in r.stdout

    r = _cli("train-tf", "--profile", "machine_failure", "--synthetic-rows", "2000", cwd=tmp_path)
    assert r.returncode == 2 and "train-tf takes numeric features only" in r.stderr
    assert "'Type'" in r.stderr and "Traceback" not in r.stderr

    # a data file that does not match the profile: one clear line
    bad = tmp_path / "bad.csv"
    make_machine_failure(100, seed=1).drop(columns=["Torque [Nm]"]).to_csv(bad, index=False)
    r = _cli("train", "--profile", "machine_failure", "--csv", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "missing columns: 'Torque [Nm]'" in r.stderr
    assert load_csv(tmp_path / "data" / "machine_failure" / "test.csv",
                    profile=load_profile("machine_failure")).shape[0] == 300  # fmt: skip


def _result(name: str, folds: list[float]):
    from models.train import CandidateResult

    return CandidateResult(
        name=name, description="", resampling="", params={}, cv_auprc=float(np.mean(folds)),
        fit_seconds=0.0, threshold=0.5, validation={"auprc": float(np.mean(folds))}, test={},
        estimator=None, val_scores=np.empty(0), test_scores=np.empty(0), selection="cv",
        cv_folds=folds,
    )  # fmt: skip


def test_an_ensemble_must_beat_the_best_single_model_by_more_than_the_noise():
    from models.train import prefer_single_model

    hgb = _result("hgb", [0.80, 0.85, 0.90])
    lr = _result("lr_smote", [0.70, 0.75, 0.80])
    # voting leads hgb by 0.01 on average, but one fold says the opposite
    noisy = _result("voting", [0.83, 0.84, 0.91])
    ordered, note = prefer_single_model([noisy, hgb, lr])
    assert [r.name for r in ordered] == ["hgb", "voting", "lr_smote"]
    assert "single=hgb kept ahead of ensemble=voting" in note
    # a lead of 0.01 on every fold is beyond the noise: the ensemble stays first
    steady = _result("voting", [0.81, 0.86, 0.91])
    ordered, note = prefer_single_model([steady, hgb, lr])
    assert [r.name for r in ordered] == ["voting", "hgb", "lr_smote"]
    assert "the ensemble is kept" in note
    # a single model first: nothing to decide
    assert prefer_single_model([hgb, noisy]) == ([hgb, noisy], "")
