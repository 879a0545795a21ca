"""The training job: split, tune, fit, choose thresholds, compare, report, register.

Any data set with a profile (``profile=``; credit cards without one). Model selection
(``selection``):

- ``cv`` (default): the training part is everything but the test part (``train.csv`` and
  ``validation.csv`` together). Each candidate is tuned by stratified k-fold CV over it;
  its CV AUPRC (mean over folds) ranks it; its decision threshold comes from the
  out-of-fold scores of those folds; the winner is refitted on the whole training part.
  No row is set aside for validation, which on small data costs more than it tells: a
  validation part of a few hundred rows holds a few dozen positives, too few to tell
  candidates apart or to place a threshold.
- ``validation``: tune by CV on ``train.csv``, refit on it, choose the threshold on and
  rank by AUPRC on ``validation.csv`` (a held-out period with ``--time-split``).

Either way the test part is scored once, at the chosen threshold, and never picks
anything. The best candidate is registered with its model card and optionally promoted.
Reports (comparison table as markdown and CSV, trials, plots) go to
``runs/train-<timestamp>/``.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .contract import FEATURES
from .data import X_y, load_split, prepare_splits, value_column
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
from .tuning import check_cv, cross_val_scores, paired_lead, tune

if TYPE_CHECKING:
    import pandas as pd

    from .data import Splits
    from .profile import Profile

__all__ = [
    "CV_TABLE_COLUMNS",
    "SELECTIONS",
    "TABLE_COLUMNS",
    "CandidateResult",
    "TrainConfig",
    "TrainResult",
    "evaluate_registered",
    "new_run_dir",
    "card_profile",
    "resolve_profile",
    "train",
]

log = logging.getLogger("models.train")

#: how the model and its threshold are chosen (see the module docstring)
SELECTIONS = ("cv", "validation")

#: comparison table with ``selection="validation"``
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
#: comparison table with ``selection="cv"``: CV mean and spread over folds, and the
#: AUPRC of the pooled out-of-fold scores the threshold is chosen on
CV_TABLE_COLUMNS = [
    "rank",
    "candidate",
    "resampling",
    "cv_auprc",
    "cv_std",
    "oof_auprc",
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


#: table columns that need the profile's value column
MONEY_COLUMNS = ("money_caught", "expected_cost")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What ``python -m models train`` does; every field has its CLI flag."""

    #: registered model name (None: the profile's name; creditcard without a profile)
    name: str | None = None
    #: profile name, path or Profile (None: credit cards, as always)
    profile: str | Path | Profile | None = None
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
    selection: str = "cv"
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
    #: metrics of the scores the threshold was chosen on: the validation part
    #: (selection "validation") or the out-of-fold scores (selection "cv")
    validation: dict[str, Any]
    test: dict[str, Any]
    estimator: Any = field(repr=False)
    val_scores: np.ndarray = field(repr=False)
    test_scores: np.ndarray = field(repr=False)
    selection: str = "validation"
    #: average precision of each CV fold (the best parameters)
    cv_folds: list[float] = field(default_factory=list)
    #: why tuning kept the parameters it kept over its first trial ("" when it had none)
    tuning_note: str = ""

    @property
    def cv_std(self) -> float:
        return float(np.std(self.cv_folds)) if len(self.cv_folds) > 1 else math.nan

    @property
    def rank_key(self) -> tuple[float, float, str]:
        """Sort key: the selection figure first (higher is better), then the other."""
        if self.selection == "cv":
            return (-_nan_low(self.cv_auprc), -_nan_low(self.validation["auprc"]), self.name)
        return (-_nan_low(self.validation["auprc"]), -_nan_low(self.cv_auprc), self.name)

    def row(self) -> dict[str, Any]:
        t = self.test
        out: dict[str, Any] = {
            "candidate": self.name,
            "resampling": self.resampling,
            "cv_auprc": self.cv_auprc,
        }
        if self.selection == "cv":
            out |= {"cv_std": self.cv_std, "oof_auprc": self.validation["auprc"]}
        else:
            out["val_auprc"] = self.validation["auprc"]
        return out | {
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
    #: the profile trained for, with the categorical levels seen in training (None:
    #: credit cards without a profile)
    profile: Profile | None = None
    #: rows the registered model was fitted on
    training_rows: int = 0
    #: why the best-ranked ensemble gave way to a single model, or kept its place
    selection_note: str = ""

    @property
    def columns(self) -> list[str]:
        cols = CV_TABLE_COLUMNS if self.config.selection == "cv" else TABLE_COLUMNS
        if self.best.test.get("money_caught") is None:
            cols = [c for c in cols if c not in MONEY_COLUMNS]
        return cols

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


def resolve_profile(ref: str | Path | Profile | None) -> Profile | None:
    """A profile from a name, a path or a Profile; None stays None (credit cards)."""
    if ref is None:
        return None
    from .profile import Profile, load_profile

    return ref if isinstance(ref, Profile) else load_profile(ref)


@dataclass
class _Part:
    """Features, labels and values of one part of the data."""

    X: Any
    y: np.ndarray
    value: np.ndarray | None

    @classmethod
    def of(cls, df: pd.DataFrame, profile: Profile | None) -> _Part:
        X, y = X_y(df, profile=profile)
        return cls(X, y, value_column(df, profile))


def _fit_candidate(
    name: str,
    fit_on: _Part,
    choose_on: _Part | None,
    test: _Part,
    config: TrainConfig,
    base_params: Mapping[str, dict[str, Any]],
    categorical: Sequence[str],
    progress: TextIO,
) -> tuple[CandidateResult, list[dict[str, Any]]]:
    """Tune, refit on ``fit_on``, choose the threshold on ``choose_on`` (validation
    selection) or on the out-of-fold scores over ``fit_on`` (CV selection), score the
    test part."""
    cand = get_candidate(name)
    # Stacking and voting search nothing: their members keep the parameters tuned above,
    # and the CV figure is measured on exactly that ensemble.
    fixed = {"base_params": dict(base_params)} if cand.ensemble and cand.space is None else None
    tuned = tune(
        cand,
        fit_on.X,
        fit_on.y,
        n_trials=config.trials,
        timeout=config.timeout,
        cv=config.cv,
        seed=config.seed,
        progress=progress,
        fixed_params=fixed,
        categorical=categorical,
        first_trial=cand.first_trial,
    )
    params = dict(tuned.best_params)
    cv_auprc, folds = tuned.best_score, list(tuned.fold_scores)
    if choose_on is None:
        oof = tuned.oof
        if oof is None or np.isnan(oof).any():
            # nothing (or not all of it) was cross-validated with these parameters
            t0 = time.perf_counter()
            folds, oof = cross_val_scores(
                cand, params, fit_on.X, fit_on.y, cv=config.cv, seed=config.seed,
                categorical=categorical,
            )  # fmt: skip
            cv_auprc = float(np.mean(folds))
            print(
                f"cv candidate={name} folds={config.cv} cv_ap={cv_auprc:.4f} "
                f"seconds={time.perf_counter() - t0:.1f} params="
                f"{'tuned' if params else 'defaults'}",
                file=progress,
                flush=True,
            )
        choose_y, choose_s, choose_value = fit_on.y, oof, fit_on.value
    est = cand.make(params, seed=config.seed, categorical=categorical)
    t0 = time.perf_counter()
    fit_estimator(est, fit_on.X, fit_on.y, name=name)
    fit_s = time.perf_counter() - t0
    if choose_on is not None:
        choose_y, choose_value = choose_on.y, choose_on.value
        choose_s = est.predict_proba(choose_on.X)[:, 1]
    s_te = est.predict_proba(test.X)[:, 1]
    choice = choose_threshold(
        choose_y,
        choose_s,
        strategy=config.threshold_strategy,
        amounts=choose_value,
        review_cost=config.review_cost,
    )
    kw = {"threshold": choice.threshold, "review_cost": config.review_cost}
    chosen = evaluate_scores(choose_y, choose_s, amounts=choose_value, **kw)
    test_m = evaluate_scores(test.y, s_te, amounts=test.value, **kw)
    where = "val_auprc" if choose_on is not None else f"cv_auprc={cv_auprc:.4f} oof_auprc"
    print(
        f"fit candidate={name} seconds={fit_s:.1f} {where}={chosen['auprc']:.4f} "
        f"threshold={choice.threshold:.4f} test_auprc={test_m['auprc']:.4f} "
        f"test_recall={test_m['recall']:.3f} test_precision={test_m['precision']:.3f}",
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
        cv_auprc=cv_auprc,
        fit_seconds=fit_s,
        threshold=choice.threshold,
        validation=chosen,
        test=test_m,
        estimator=est,
        val_scores=choose_s,
        test_scores=s_te,
        selection="validation" if choose_on is not None else "cv",
        cv_folds=folds,
        tuning_note=tuned.note,
    )
    return result, tuned.trials


def _check_config(config: TrainConfig, profile: Profile | None) -> None:
    if config.threshold_strategy not in THRESHOLD_STRATEGIES:
        raise TrainingError(
            f"unknown threshold strategy {config.threshold_strategy!r} "
            f"(choose from {', '.join(THRESHOLD_STRATEGIES)})"
        )
    if config.selection not in SELECTIONS:
        raise TrainingError(
            f"unknown selection {config.selection!r} (choose from {', '.join(SELECTIONS)})"
        )
    check_cv(config.cv)
    if config.promote and not config.register:
        raise TrainingError("nothing to promote: --promote needs registration (drop --no-register)")
    if profile is not None:
        if profile.label is None:
            raise TrainingError(
                f"profile {profile.name!r} names no label column (columns.label): training "
                "needs the 0/1 ground truth"
            )
        if config.threshold_strategy == "cost" and profile.value is None:
            raise TrainingError(
                f"the cost strategy weighs each missed positive by the profile's value column, "
                f"and profile {profile.name!r} has none (columns.value): use "
                "--threshold-strategy f1, or add a value column to the profile"
            )


def train(config: TrainConfig, *, progress: TextIO | None = None) -> TrainResult:
    """Run the whole job (see the module docstring)."""
    progress = progress if progress is not None else sys.stderr
    profile = resolve_profile(config.profile)
    if config.name is None:
        config = replace(config, name=profile.name if profile is not None else "creditcard")
    _check_config(config, profile)
    names = config.candidate_names()
    cands = [get_candidate(n) for n in names]  # fail fast on a typo
    started = time.perf_counter()
    splits = prepare_splits(
        config.data_dir,
        csv=config.csv,
        synthetic_rows=config.synthetic_rows,
        seed=config.seed,
        time_split=config.time_split,
        profile=profile,
    )
    summary = splits.summary()
    print(
        f"data source={splits.source} split={'time' if config.time_split else 'stratified'} "
        f"selection={config.selection} "
        + " ".join(f"{p}={v['rows']}/{v['positives']}" for p, v in summary.items()),
        file=progress,
        flush=True,
    )
    cv_mode = config.selection == "cv"
    fit_df = splits.training_part if cv_mode else splits.train
    fit_on = _Part.of(fit_df, profile)
    choose_on = None if cv_mode else _Part.of(splits.validation, profile)
    test = _Part.of(splits.test, profile)
    categorical = [f.name for f in profile.categorical] if profile is not None else []
    trained_profile = profile
    if profile is not None and categorical:
        # the levels the model's encoder learns: those of the rows it is fitted on
        trained_profile = profile.with_levels({c: set(fit_df[c]) for c in categorical})

    run_dir = new_run_dir(config.runs_dir, "train")
    results: list[CandidateResult] = []
    all_trials: list[dict[str, Any]] = []
    base_params: dict[str, dict[str, Any]] = {}
    # Base models first, so stacking and voting reuse their tuned parameters.
    for cand in sorted(cands, key=lambda c: c.ensemble):
        res, trials = _fit_candidate(
            cand.name, fit_on, choose_on, test, config, base_params, categorical, progress
        )
        if not cand.ensemble:
            base_params[cand.name] = res.params
        results.append(res)
        all_trials.extend(trials)
    results.sort(key=lambda r: r.rank_key)
    note = ""
    if cv_mode:
        results, note = prefer_single_model(results)
        if note:
            print(f"select {note}", file=progress, flush=True)
    best = results[0]

    columns = CV_TABLE_COLUMNS if cv_mode else TABLE_COLUMNS
    if test.value is None:  # no value column: no money figures
        columns = [c for c in columns if c not in MONEY_COLUMNS]
    rows = [{"rank": i + 1, **r.row()} for i, r in enumerate(results)]
    table = comparison_markdown(rows, columns)
    chosen = fit_on if choose_on is None else choose_on
    _write_reports(
        run_dir, config, splits, results, rows, table, all_trials, columns, test, chosen, note
    )

    card = None
    if config.register:
        card = _register(config, splits, best, run_dir, trained_profile, fit_df, note)
        if config.promote:
            Registry(config.registry).promote(config.name, card.version, config.promote)
            print(
                f"promote model={config.name} version={card.version} alias={config.promote}",
                file=progress,
                flush=True,
            )
    result = TrainResult(
        run_dir,
        results,
        best,
        card,
        table,
        summary,
        all_trials,
        config,
        profile=trained_profile,
        training_rows=len(fit_df),
        selection_note=note,
    )
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


def prefer_single_model(
    results: list[CandidateResult],
) -> tuple[list[CandidateResult], str]:
    """Keep the best single model ahead of a better-ranked ensemble unless the ensemble
    wins by more than the noise of the comparison: one standard error of their paired
    fold differences (the folds are the same for every candidate).

    An ensemble scores every point with all its members, so in a stream it costs several
    models' time; on small data its CV lead over its best member is often within the
    fold-to-fold noise, and then it does no better on new data. Returns the (re)ordered
    results and a note saying what was decided ("" when the order stands)."""
    top = results[0]
    if not get_candidate(top.name).ensemble:
        return results, ""
    singles = [r for r in results if not get_candidate(r.name).ensemble]
    if not singles:
        return results, ""
    single = singles[0]
    paired = paired_lead(top.cv_folds, single.cv_folds)
    if paired is None:
        return results, ""
    lead, se = paired
    if lead > se:
        return results, (
            f"ensemble={top.name} leads single={single.name} by cv_auprc={lead:.4f} "
            f"> one standard error {se:.4f}: the ensemble is kept"
        )
    rest = [r for r in results if r is not single]
    return [single, *rest], (
        f"single={single.name} kept ahead of ensemble={top.name}: its cv_auprc lead "
        f"{lead:.4f} is within one standard error ({se:.4f}) of the paired fold differences"
    )


def _nan_low(v: float) -> float:
    return -math.inf if v is None or math.isnan(v) else v


def _training_summary(
    config: TrainConfig, splits: Splits, best: CandidateResult, fit_df: pd.DataFrame
) -> dict:
    label = splits.label
    out = {
        "rows": len(fit_df),
        "positives": int(fit_df[label].sum()),
        "positive_rate": float(fit_df[label].mean()),
        "resampling": best.resampling,
        "selection": config.selection,
        "validation_rows": 0 if config.selection == "cv" else len(splits.validation),
        "test_rows": len(splits.test),
        "split": "time" if config.time_split else "stratified",
        "seed": config.seed,
        "source": splits.source,
        "cv_folds": config.cv,
        "trials": config.trials,
    }
    if config.selection == "cv":
        out["parts"] = ["train", "validation"]
    return out


def _numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _register(
    config: TrainConfig,
    splits: Splits,
    best: CandidateResult,
    run_dir: Path,
    profile: Profile | None,
    fit_df: pd.DataFrame,
    note: str = "",
):
    import sklearn

    registry = Registry(config.registry)
    extra: dict[str, Any] = {
        "description": best.description,
        "candidate": best.name,
        "params": _jsonable(best.params),
        "threshold_strategy": config.threshold_strategy,
        "review_cost": config.review_cost,
    }
    if config.selection == "cv":
        extra["cv_metrics"] = {
            **_numbers(best.validation),
            "auprc_folds_mean": best.cv_auprc,
            "auprc_folds_std": best.cv_std,
            "folds": config.cv,
        }
        extra["evaluated_on"] = (
            f"test split; model chosen by {config.cv}-fold CV AUPRC over the training part "
            "(train + validation), threshold from its out-of-fold scores"
        )
        if note:
            extra["selection_note"] = note
    else:
        extra["validation_metrics"] = _numbers(best.validation)
        extra["evaluated_on"] = "test split (threshold chosen on validation)"
    if best.tuning_note:
        extra["tuning_note"] = best.tuning_note
    extra["library"] = {"scikit-learn": sklearn.__version__}
    extra["run_dir"] = str(run_dir)
    if profile is not None:
        extra["profile"] = profile.card_section()
        if profile.path is not None:
            extra["profile_file"] = str(Path(profile.path).resolve())
    features = profile.feature_names if profile is not None else list(FEATURES)
    extra["reference"] = _reference(fit_df, features, profile, best.test_scores)
    card = registry.register(
        config.name,
        best.estimator,
        features=features,
        threshold=best.threshold,
        framework="sklearn",
        metrics=_numbers(best.test),
        training=_training_summary(config, splits, best, fit_df),
        extra=extra,
    )
    log.info("registered model=%s version=%s candidate=%s", card.name, card.version, best.name)
    return card


def _reference(
    fit_df: pd.DataFrame, features: list[str], profile: Profile | None, scores: np.ndarray
) -> dict[str, Any]:
    """Reference distributions for live drift monitoring: each feature over the rows the
    model was fitted on (categoricals: the levels its encoder knows), and the scores of
    the held-out test split, which is what live traffic is expected to look like."""
    from .drift import reference_profile

    if profile is None:
        types = ["float"] * len(features)
        levels = None
    else:
        kinds = {f.name: f.type for f in profile.features}
        types = [kinds[f] for f in features]
        levels = {f.name: list(f.levels or ()) for f in profile.categorical} or None
    return reference_profile(fit_df, features, types, scores, levels=levels)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write_reports(
    run_dir,
    config,
    splits,
    results,
    rows,
    table,
    trials,
    columns,
    test: _Part,
    chosen: _Part,
    note: str = "",
) -> None:
    cv_mode = config.selection == "cv"
    strategy = config.threshold_strategy + (
        f", review cost {config.review_cost:g}" if config.threshold_strategy == "cost" else ""
    )
    if cv_mode:
        how = (
            f"Ranked by {config.cv}-fold CV AUPRC over the training part (train + validation); "
            f"each threshold chosen on the out-of-fold scores ({strategy}); test figures at "
            "that threshold; an ensemble ranks first only when it beats the best single "
            "model by more than one standard error of their paired fold differences"
            + (f" ({note})" if note else "")
        )
    else:
        how = (
            f"Ranked by validation AUPRC; test figures at the threshold chosen on validation "
            f"({strategy})"
        )
    profile = f", profile {splits.profile.name}" if splits.profile is not None else ""
    tuning = "\n".join(f"- {r.name}: {r.tuning_note}" for r in results if r.tuning_note)
    (run_dir / "comparison.md").write_text(
        f"# Candidates ({config.name}{profile})\n\n{how}. Data: {splits.source}.\n\n{table}"
        + (f"\nTuning:\n\n{tuning}\n" if tuning else "")
    )
    with (run_dir / "comparison.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with (run_dir / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["candidate", "trial", "state", "cv_ap", "seconds", "params"]
        )
        w.writeheader()
        for t in trials:
            w.writerow({**t, "params": json.dumps(t["params"], default=str)})
    chosen_on = "out_of_fold" if cv_mode else "validation"
    metrics = {
        "config": _jsonable(asdict(config)),
        "profile": splits.profile.name if splits.profile is not None else None,
        "splits": splits.summary(),
        "source": splits.source,
        "candidates": {
            r.name: {
                "params": _jsonable(r.params),
                "cv_auprc": r.cv_auprc,
                "cv_folds": r.cv_folds,
                **({"tuning_note": r.tuning_note} if r.tuning_note else {}),
                chosen_on: r.validation,
                "test": r.test,
            }
            for r in results
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    curves = {r.name: (test.y, r.test_scores) for r in results}
    plot_pr_curves(curves, run_dir / "pr_curve.png")
    plot_roc_curves(curves, run_dir / "roc_curve.png")
    plot_calibration(curves, run_dir / "calibration.png")
    best = results[0]
    if chosen.value is not None:
        plot_cost_curve(
            chosen.y,
            best.val_scores,
            chosen.value,
            run_dir / "threshold_cost.png",
            review_cost=config.review_cost,
            threshold=best.threshold,
            title=f"{best.name}: threshold vs cost on "
            f"{'out-of-fold scores' if cv_mode else 'validation'} "
            f"(review cost {config.review_cost:g})",
        )


def card_profile(card: ModelCard) -> Profile | None:
    """The profile a card was trained for: by name from the profiles folder, else the
    file recorded at training time; None for a card without one (credit cards)."""
    name = card.profile.get("name")
    if not name:
        return None
    from .profile import ProfileError, load_profile

    try:
        return load_profile(name)
    except ProfileError as first:
        recorded = card.data.get("profile_file")
        if recorded:
            try:
                return load_profile(Path(recorded))
            except ProfileError:
                pass
        raise DataError(
            f"{card.name} v{card.version} was trained for profile {name!r}"
            + (f" ({recorded})" if recorded else "")
            + f", which cannot be loaded ({first}); pass --profile NAME|PATH"
        ) from None


def _profile_for_card(card: ModelCard, profile: Profile | None) -> Profile | None:
    """The profile to read a model's data with: the one given, else the one its card
    names (a card without a profile section is a credit-card model)."""
    if profile is None:
        profile = card_profile(card)
    features = profile.feature_names if profile is not None else FEATURES
    if list(features) != card.features:
        shown = profile.name if profile is not None else "creditcard (no profile)"
        raise DataError(
            f"{card.name} v{card.version} takes features {card.features[:6]}… which differ "
            f"from those of profile {shown} ({list(features)[:6]}…); pass the model's profile"
        )
    return profile


def evaluate_registered(
    registry: Registry,
    name: str,
    ref: str = "production",
    *,
    test_csv: str | os.PathLike[str],
    review_cost: float | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    profile: str | Path | Profile | None = None,
) -> tuple[dict[str, Any], Path]:
    """Score a split file with a registered model at its card threshold; write plots.

    The file is read with ``profile`` (default: the profile the card names; credit cards
    for a card without one)."""
    from .backends import load_local_backend

    path = Path(test_csv)
    if not path.is_file():
        raise DataError(
            f"{path} not found; create the splits with `python -m models split` "
            f"(or pass --test-csv)"
        )
    backend = load_local_backend(registry, name, ref)
    try:
        prof = _profile_for_card(backend.card, resolve_profile(profile))
        df = load_split(path, profile=prof)
        X = _backend_batch(df, backend.card)
        y = X_y(df, profile=prof)[1]
        scores = backend.score(X)
        version, threshold, card = backend.version, backend.threshold, backend.card
    finally:
        backend.close()
    cost = review_cost if review_cost is not None else card.data.get("review_cost", 5.0)
    amounts = value_column(df, prof)
    metrics = evaluate_scores(y, scores, threshold=threshold, amounts=amounts, review_cost=cost)
    metrics = {
        "model": name,
        "version": version,
        "data": str(path),
        **({"profile": prof.name} if prof is not None else {}),
        **metrics,
    }
    run_dir = new_run_dir(runs_dir, f"evaluate-{name}-v{version}")
    label = f"{name} v{version}"
    if 0 < y.sum() < len(y):
        plot_pr_curves({label: (y, scores)}, run_dir / "pr_curve.png")
        plot_roc_curves({label: (y, scores)}, run_dir / "roc_curve.png")
        plot_calibration({label: (y, scores)}, run_dir / "calibration.png")
        if amounts is not None:
            plot_cost_curve(
                y,
                scores,
                amounts,
                run_dir / "threshold_cost.png",
                review_cost=cost,
                threshold=threshold,
            )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics, run_dir


def _backend_batch(df: pd.DataFrame, card: ModelCard) -> np.ndarray:
    """Rows in card feature order, as a scoring backend takes them: floats, or an object
    array with the category labels as strings for a model with categorical features."""
    if not card.categorical:
        return np.ascontiguousarray(df[card.features].to_numpy(dtype=np.float64))
    cats = set(card.categorical)
    out = np.empty((len(df), len(card.features)), dtype=object)
    for j, f in enumerate(card.features):
        col = df[f]
        out[:, j] = col.astype(str).to_numpy(dtype=object) if f in cats else col.to_numpy(float)
    return out
