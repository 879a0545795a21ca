"""The training job: split, tune, fit, choose thresholds, compare, report, register.

Every candidate is tuned by cross-validation on the training split, refitted on the
whole training split, given a threshold on the validation split and measured once on
the test split. The best candidate by validation AUPRC (never by test figures) is
registered with its model card and optionally promoted. Reports (comparison table as
markdown and CSV, trials, plots) go to ``runs/train-<timestamp>/``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .contract import FEATURES
from .data import Splits, X_y, load_split, prepare_splits
from .errors import DataError, TrainingError
from .evaluation import (
    THRESHOLD_STRATEGIES,
    choose_threshold,
    comparison_markdown,
    evaluate_scores,
    plot_calibration,
    plot_cost_curve,
    plot_pr_curves,
    plot_roc_curves,
)
from .pipelines import DEFAULT_CANDIDATES, FULL_CANDIDATES, fit_estimator, get_candidate
from .registry import ModelCard, Registry
from .tuning import check_cv, tune

__all__ = [
    "TABLE_COLUMNS",
    "CandidateResult",
    "TrainConfig",
    "TrainResult",
    "evaluate_registered",
    "new_run_dir",
    "train",
]

log = logging.getLogger("models.train")

TABLE_COLUMNS = [
    "rank",
    "candidate",
    "resampling",
    "cv_auprc",
    "val_auprc",
    "test_auprc",
    "test_roc_auc",
    "threshold",
    "precision",
    "recall",
    "f1",
    "alerts",
    "money_caught",
    "expected_cost",
    "fit_s",
]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What ``python -m models train`` does; every field has its CLI flag."""

    name: str = "creditcard"
    csv: str | None = None
    synthetic_rows: int | None = None
    candidates: Sequence[str] | None = None
    search: str = "default"
    trials: int = 4
    timeout: float | None = None
    cv: int = 3
    seed: int = 42
    threshold_strategy: str = "f1"
    review_cost: float = 5.0
    time_split: bool = False
    promote: str | None = None
    registry: str | None = None
    data_dir: str = "data"
    runs_dir: str = "runs"
    mlflow: bool = False
    register: bool = True

    def candidate_names(self) -> list[str]:
        if self.candidates:
            return list(self.candidates)
        return list(FULL_CANDIDATES if self.search == "full" else DEFAULT_CANDIDATES)


@dataclass
class CandidateResult:
    name: str
    description: str
    resampling: str
    params: dict[str, Any]
    cv_auprc: float
    fit_seconds: float
    threshold: float
    validation: dict[str, Any]
    test: dict[str, Any]
    estimator: Any = field(repr=False)
    val_scores: np.ndarray = field(repr=False)
    test_scores: np.ndarray = field(repr=False)

    def row(self) -> dict[str, Any]:
        t = self.test
        return {
            "candidate": self.name,
            "resampling": self.resampling,
            "cv_auprc": self.cv_auprc,
            "val_auprc": self.validation["auprc"],
            "test_auprc": t["auprc"],
            "test_roc_auc": t["roc_auc"],
            "threshold": self.threshold,
            "precision": t["precision"],
            "recall": t["recall"],
            "f1": t["f1"],
            "alerts": t["alerts"],
            "money_caught": t.get("money_caught", math.nan),
            "expected_cost": t.get("expected_cost", math.nan),
            "fit_s": self.fit_seconds,
        }


@dataclass
class TrainResult:
    run_dir: Path
    results: list[CandidateResult]
    best: CandidateResult
    card: ModelCard | None
    table_markdown: str
    splits_summary: dict[str, Any]
    trials: list[dict[str, Any]]
    config: TrainConfig

    def rows(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, **r.row()} for i, r in enumerate(self.results)]


def new_run_dir(runs_dir: str | os.PathLike[str], prefix: str, *, now=None) -> Path:
    """``<runs_dir>/<prefix>-YYYYmmdd-HHMMSS`` (suffixed when taken)."""
    now = now or _dt.datetime.now()
    base = Path(runs_dir) / f"{prefix}-{now:%Y%m%d-%H%M%S}"
    for i in range(1, 1000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a run folder under {runs_dir}")


def _fit_candidate(
    name: str,
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: TrainConfig,
    base_params: Mapping[str, dict[str, Any]],
    progress: TextIO,
) -> tuple[CandidateResult, list[dict[str, Any]]]:
    cand = get_candidate(name)
    X_tr, y_tr, _ = arrays["train"]
    X_va, y_va, a_va = arrays["validation"]
    X_te, y_te, a_te = arrays["test"]
    # Stacking and voting search nothing: their members keep the parameters tuned above,
    # and the CV figure is measured on exactly that ensemble.
    fixed = {"base_params": dict(base_params)} if cand.ensemble and cand.space is None else None
    tuned = tune(
        cand,
        X_tr,
        y_tr,
        n_trials=config.trials,
        timeout=config.timeout,
        cv=config.cv,
        seed=config.seed,
        progress=progress,
        fixed_params=fixed,
    )
    params = dict(tuned.best_params)
    est = cand.make(params, seed=config.seed)
    t0 = time.perf_counter()
    fit_estimator(est, X_tr, y_tr, name=name)
    fit_s = time.perf_counter() - t0
    s_va = est.predict_proba(X_va)[:, 1]
    s_te = est.predict_proba(X_te)[:, 1]
    choice = choose_threshold(
        y_va,
        s_va,
        strategy=config.threshold_strategy,
        amounts=a_va,
        review_cost=config.review_cost,
    )
    kw = {"threshold": choice.threshold, "review_cost": config.review_cost}
    val = evaluate_scores(y_va, s_va, amounts=a_va, **kw)
    test = evaluate_scores(y_te, s_te, amounts=a_te, **kw)
    print(
        f"fit candidate={name} seconds={fit_s:.1f} val_auprc={val['auprc']:.4f} "
        f"threshold={choice.threshold:.4f} test_auprc={test['auprc']:.4f} "
        f"test_recall={test['recall']:.3f} test_precision={test['precision']:.3f}",
        file=progress,
        flush=True,
    )
    shown = {k: v for k, v in params.items() if k != "base_params"}
    resampling = cand.resampling
    if "base_params" in params:
        from .ensembles import ENSEMBLE_MEMBERS

        # members keep their own tuned parameters (defaults when not tuned in this run)
        shown["members"] = {m: params["base_params"].get(m, "defaults") for m in ENSEMBLE_MEMBERS}
        resampling = "; ".join(f"{m}: {get_candidate(m).resampling}" for m in ENSEMBLE_MEMBERS)
    result = CandidateResult(
        name=name,
        description=cand.description,
        resampling=resampling,
        params=shown,
        cv_auprc=tuned.best_score,
        fit_seconds=fit_s,
        threshold=choice.threshold,
        validation=val,
        test=test,
        estimator=est,
        val_scores=s_va,
        test_scores=s_te,
    )
    return result, tuned.trials


def train(config: TrainConfig, *, progress: TextIO | None = None) -> TrainResult:
    """Run the whole job (see the module docstring)."""
    progress = progress if progress is not None else sys.stderr
    if config.threshold_strategy not in THRESHOLD_STRATEGIES:
        raise TrainingError(
            f"unknown threshold strategy {config.threshold_strategy!r} "
            f"(choose from {', '.join(THRESHOLD_STRATEGIES)})"
        )
    check_cv(config.cv)
    if config.promote and not config.register:
        raise TrainingError("nothing to promote: --promote needs registration (drop --no-register)")
    names = config.candidate_names()
    cands = [get_candidate(n) for n in names]  # fail fast on a typo
    started = time.perf_counter()
    splits = prepare_splits(
        config.data_dir,
        csv=config.csv,
        synthetic_rows=config.synthetic_rows,
        seed=config.seed,
        time_split=config.time_split,
    )
    summary = splits.summary()
    print(
        f"data source={splits.source} split={'time' if config.time_split else 'stratified'} "
        + " ".join(f"{p}={v['rows']}/{v['positives']}" for p, v in summary.items()),
        file=progress,
        flush=True,
    )
    arrays = {}
    for part, df in zip(("train", "validation", "test"), splits, strict=True):
        X, y = X_y(df)
        arrays[part] = (X, y, df["Amount"].to_numpy(dtype=np.float64))

    run_dir = new_run_dir(config.runs_dir, "train")
    results: list[CandidateResult] = []
    all_trials: list[dict[str, Any]] = []
    base_params: dict[str, dict[str, Any]] = {}
    # Base models first, so stacking and voting reuse their tuned parameters.
    for cand in sorted(cands, key=lambda c: c.ensemble):
        res, trials = _fit_candidate(cand.name, arrays, config, base_params, progress)
        if not cand.ensemble:
            base_params[cand.name] = res.params
        results.append(res)
        all_trials.extend(trials)
    results.sort(key=lambda r: (-_nan_low(r.validation["auprc"]), -_nan_low(r.cv_auprc), r.name))
    best = results[0]

    rows = [{"rank": i + 1, **r.row()} for i, r in enumerate(results)]
    table = comparison_markdown(rows, TABLE_COLUMNS)
    _write_reports(run_dir, config, splits, results, rows, table, all_trials)

    card = None
    if config.register:
        card = _register(config, splits, best, run_dir)
        if config.promote:
            Registry(config.registry).promote(config.name, card.version, config.promote)
            print(
                f"promote model={config.name} version={card.version} alias={config.promote}",
                file=progress,
                flush=True,
            )
    result = TrainResult(run_dir, results, best, card, table, summary, all_trials, config)
    if config.mlflow or os.environ.get("MLFLOW_TRACKING_URI"):
        from .tracking import log_training_run

        log_training_run(result)
    log.info(
        "train done best=%s version=%s seconds=%.1f run_dir=%s",
        best.name,
        card.version if card else "-",
        time.perf_counter() - started,
        run_dir,
    )
    return result


def _nan_low(v: float) -> float:
    return -math.inf if v is None or math.isnan(v) else v


def _training_summary(config: TrainConfig, splits: Splits, best: CandidateResult) -> dict:
    tr = splits.train
    return {
        "rows": len(tr),
        "positives": int(tr["Class"].sum()),
        "positive_rate": float(tr["Class"].mean()),
        "resampling": best.resampling,
        "validation_rows": len(splits.validation),
        "test_rows": len(splits.test),
        "split": "time" if config.time_split else "stratified",
        "seed": config.seed,
        "source": splits.source,
        "cv_folds": config.cv,
        "trials": config.trials,
    }


def _register(config: TrainConfig, splits: Splits, best: CandidateResult, run_dir: Path):
    import sklearn

    registry = Registry(config.registry)
    metrics = {k: v for k, v in best.test.items() if isinstance(v, (int, float))}
    card = registry.register(
        config.name,
        best.estimator,
        features=FEATURES,
        threshold=best.threshold,
        framework="sklearn",
        metrics=metrics,
        training=_training_summary(config, splits, best),
        extra={
            "description": best.description,
            "candidate": best.name,
            "params": _jsonable(best.params),
            "threshold_strategy": config.threshold_strategy,
            "review_cost": config.review_cost,
            "validation_metrics": {
                k: v for k, v in best.validation.items() if isinstance(v, (int, float))
            },
            "evaluated_on": "test split (threshold chosen on validation)",
            "library": {"scikit-learn": sklearn.__version__},
            "run_dir": str(run_dir),
        },
    )
    log.info("registered model=%s version=%s candidate=%s", card.name, card.version, best.name)
    return card


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write_reports(run_dir, config, splits, results, rows, table, trials) -> None:
    (run_dir / "comparison.md").write_text(
        f"# Candidates ({config.name})\n\nRanked by validation AUPRC; test figures at the "
        f"threshold chosen on validation ({config.threshold_strategy}"
        f"{', review cost ' + format(config.review_cost, 'g') if config.threshold_strategy == 'cost' else ''}"
        f"). Data: {splits.source}.\n\n{table}"
    )
    with (run_dir / "comparison.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with (run_dir / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["candidate", "trial", "state", "cv_ap", "seconds", "params"]
        )
        w.writeheader()
        for t in trials:
            w.writerow({**t, "params": json.dumps(t["params"], default=str)})
    metrics = {
        "config": _jsonable(asdict(config)),
        "splits": splits.summary(),
        "source": splits.source,
        "candidates": {
            r.name: {
                "params": _jsonable(r.params),
                "cv_auprc": r.cv_auprc,
                "validation": r.validation,
                "test": r.test,
            }
            for r in results
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    y_te = X_y(splits.test)[1]
    curves = {r.name: (y_te, r.test_scores) for r in results}
    plot_pr_curves(curves, run_dir / "pr_curve.png")
    plot_roc_curves(curves, run_dir / "roc_curve.png")
    plot_calibration(curves, run_dir / "calibration.png")
    best = results[0]
    plot_cost_curve(
        X_y(splits.validation)[1],
        best.val_scores,
        splits.validation["Amount"].to_numpy(),
        run_dir / "threshold_cost.png",
        review_cost=config.review_cost,
        threshold=best.threshold,
        title=f"{best.name}: threshold vs cost on validation (review cost {config.review_cost:g})",
    )


def evaluate_registered(
    registry: Registry,
    name: str,
    ref: str = "production",
    *,
    test_csv: str | os.PathLike[str],
    review_cost: float | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
) -> tuple[dict[str, Any], Path]:
    """Score a split file with a registered model at its card threshold; write plots."""
    from .backends import load_local_backend

    path = Path(test_csv)
    if not path.is_file():
        raise DataError(
            f"{path} not found; create the splits with `python -m models split` "
            f"(or pass --test-csv)"
        )
    df = load_split(path)
    backend = load_local_backend(registry, name, ref)
    try:
        X = np.ascontiguousarray(df[backend.feature_names].to_numpy(dtype=np.float64))
        y = df["Class"].to_numpy(dtype=np.int64)
        scores = backend.score(X)
    finally:
        backend.close()
    cost = review_cost if review_cost is not None else backend.card.data.get("review_cost", 5.0)
    metrics = evaluate_scores(
        y, scores, threshold=backend.threshold, amounts=df["Amount"].to_numpy(), review_cost=cost
    )
    metrics = {"model": name, "version": backend.version, "data": str(path), **metrics}
    run_dir = new_run_dir(runs_dir, f"evaluate-{name}-v{backend.version}")
    label = f"{name} v{backend.version}"
    if 0 < y.sum() < len(y):
        plot_pr_curves({label: (y, scores)}, run_dir / "pr_curve.png")
        plot_roc_curves({label: (y, scores)}, run_dir / "roc_curve.png")
        plot_calibration({label: (y, scores)}, run_dir / "calibration.png")
        plot_cost_curve(
            y,
            scores,
            df["Amount"].to_numpy(),
            run_dir / "threshold_cost.png",
            review_cost=cost,
            threshold=backend.threshold,
        )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics, run_dir
