"""Hyperparameter search with Optuna over stratified cross-validation, maximising AUPRC.

Each trial builds the candidate's pipeline, fits it on every training fold (the
resampler inside sees that fold only) and scores the held-out fold with average
precision. A trial budget and a time budget bound the search; one progress line per
trial goes to ``progress`` (stderr by default).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .errors import TrainingError
from .pipelines import Candidate, fit_estimator

__all__ = ["TuneResult", "check_cv", "cross_val_ap", "tune"]


@dataclass
class TuneResult:
    candidate: str
    best_params: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_complete(self) -> int:
        return sum(1 for t in self.trials if t["state"] == "COMPLETE")


def check_cv(cv: int) -> None:
    """Refuse a fold count cross-validation cannot use (before Optuna would swallow it)."""
    if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2:
        raise TrainingError(f"cv must be an integer of at least 2 folds, got {cv!r}")


def _folds(y: np.ndarray, cv: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    check_cv(cv)
    n_pos = int(np.sum(y == 1))
    if n_pos < cv:
        raise TrainingError(f"{n_pos} positives cannot fill {cv} stratified folds; use more rows")
    return list(StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(y, y))


def cross_val_ap(
    candidate: Candidate,
    params: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    cv: int = 3,
    seed: int = 0,
    trial: Any = None,
) -> float:
    """Mean average precision over stratified folds (reports to ``trial`` for pruning)."""
    import optuna
    from sklearn.metrics import average_precision_score

    scores = []
    for k, (tr, te) in enumerate(_folds(y, cv, seed)):
        est = fit_estimator(candidate.make(params, seed=seed), X[tr], y[tr], name=candidate.name)
        scores.append(average_precision_score(y[te], est.predict_proba(X[te])[:, 1]))
        if trial is not None:
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return float(np.mean(scores))


def tune(
    candidate: Candidate,
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_trials: int = 5,
    timeout: float | None = None,
    cv: int = 3,
    seed: int = 0,
    progress: TextIO | None = None,
    fixed_params: Mapping[str, Any] | None = None,
) -> TuneResult:
    """Search ``candidate.space`` with TPE; returns the best parameters and every trial.

    With no search space or ``n_trials == 0`` nothing is searched: the candidate keeps
    ``fixed_params`` (its defaults when None), scored once by cross-validation when
    ``n_trials > 0`` so the table still has a CV figure for the model that is fitted.
    """
    import optuna

    out = progress if progress is not None else sys.stderr
    start = time.perf_counter()
    if candidate.space is None or n_trials <= 0:
        params = dict(fixed_params or {})
        score = math.nan
        if n_trials > 0:
            score = cross_val_ap(candidate, params, X, y, cv=cv, seed=seed)
            print(
                f"tune candidate={candidate.name} trial=1/1 state=COMPLETE cv_ap={score:.4f} "
                f"best={score:.4f} seconds={time.perf_counter() - start:.1f} "
                f"params={'fixed' if params else 'defaults'}",
                file=out,
                flush=True,
            )
        return TuneResult(candidate.name, params, score, [], time.perf_counter() - start)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        study_name=candidate.name,
    )

    def objective(trial: optuna.Trial) -> float:
        params = candidate.space(trial)
        return cross_val_ap(candidate, params, X, y, cv=cv, seed=seed, trial=trial)

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:
            best = "nan"
        value = f"{trial.value:.4f}" if trial.value is not None else "nan"
        secs = trial.duration.total_seconds() if trial.duration else 0.0
        print(
            f"tune candidate={candidate.name} trial={trial.number + 1}/{n_trials} "
            f"state={trial.state.name} cv_ap={value} best={best} seconds={secs:.1f} "
            f"params={_short(trial.params)}",
            file=out,
            flush=True,
        )

    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        callbacks=[report],
        catch=(ValueError, np.linalg.LinAlgError),
    )
    trials = [
        {
            "candidate": candidate.name,
            "trial": t.number + 1,
            "state": t.state.name,
            "cv_ap": t.value if t.value is not None else math.nan,
            "seconds": t.duration.total_seconds() if t.duration else math.nan,
            "params": dict(t.params),
        }
        for t in study.trials
    ]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        print(
            f"tune candidate={candidate.name} no trial completed; keeping defaults",
            file=out,
            flush=True,
        )
        return TuneResult(candidate.name, {}, math.nan, trials, time.perf_counter() - start)
    # Rebuild the parameter dict through the space so derived keys stay consistent.
    best = study.best_trial
    params = candidate.space(optuna.trial.FixedTrial(best.params))
    return TuneResult(
        candidate.name, params, float(best.value), trials, time.perf_counter() - start
    )


def _short(params: Mapping[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ",".join(parts) or "-"
