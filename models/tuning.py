"""Hyperparameter search with Optuna over stratified cross-validation, maximising AUPRC.

Each trial builds the candidate's pipeline, fits it on every training fold (the
resampler inside sees that fold only) and scores the held-out fold with average
precision. A trial budget and a time budget bound the search; one progress line per
trial goes to ``progress`` (stderr by default). ``X`` is a float array, or a DataFrame
for models with categorical features (folds are taken by position either way). The
out-of-fold scores of the best trial come back with it, so the trainer can choose a
threshold from them without fitting the candidate again.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .errors import TrainingError
from .pipelines import Candidate, fit_estimator

__all__ = [
    "TuneResult",
    "check_cv",
    "corrected_lead",
    "cross_val_ap",
    "cross_val_scores",
    "tune",
]


@dataclass
class TuneResult:
    candidate: str
    best_params: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: out-of-fold scores of the best parameters (None when nothing was cross-validated)
    oof: np.ndarray | None = field(default=None, repr=False)
    #: average precision of each fold for the best parameters
    fold_scores: list[float] = field(default_factory=list)
    #: why the best trial or the first one was kept, when they differed ("" otherwise)
    note: str = ""

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


def _rows(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def _cross_validate(
    candidate: Candidate,
    params: Mapping[str, Any],
    X: Any,
    y: np.ndarray,
    *,
    cv: int,
    seed: int,
    trial: Any,
    categorical: Sequence[str],
    oof: np.ndarray | None,
    fold_scores: list[float],
    fold_seed: int | None = None,
) -> float:
    import optuna
    from sklearn.metrics import average_precision_score

    y = np.asarray(y)
    for k, (tr, te) in enumerate(_folds(y, cv, seed if fold_seed is None else fold_seed)):
        est = candidate.make(params, seed=seed, categorical=categorical)
        est = fit_estimator(est, _rows(X, tr), y[tr], name=candidate.name)
        s = est.predict_proba(_rows(X, te))[:, 1]
        if oof is not None:
            oof[te] = s
        fold_scores.append(float(average_precision_score(y[te], s)))
        if trial is not None:
            trial.report(float(np.mean(fold_scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return float(np.mean(fold_scores))


def cross_val_ap(
    candidate: Candidate,
    params: Mapping[str, Any],
    X: Any,
    y: np.ndarray,
    *,
    cv: int = 3,
    seed: int = 0,
    trial: Any = None,
    categorical: Sequence[str] = (),
    oof: np.ndarray | None = None,
    fold_scores: list[float] | None = None,
) -> float:
    """Mean average precision over stratified folds (reports to ``trial`` for pruning).

    ``oof`` (an array of ``len(y)``) receives each row's out-of-fold score and
    ``fold_scores`` each fold's average precision, when given."""
    return _cross_validate(
        candidate,
        params,
        X,
        y,
        cv=cv,
        seed=seed,
        trial=trial,
        categorical=categorical,
        oof=oof,
        fold_scores=[] if fold_scores is None else fold_scores,
    )


def cross_val_scores(
    candidate: Candidate,
    params: Mapping[str, Any],
    X: Any,
    y: np.ndarray,
    *,
    cv: int = 3,
    seed: int = 0,
    categorical: Sequence[str] = (),
    fold_seed: int | None = None,
) -> tuple[list[float], np.ndarray]:
    """Average precision of each stratified fold and every row's out-of-fold score.

    The folds are shuffled with ``fold_seed`` (``seed`` when None); the models are seeded
    with ``seed`` either way."""
    oof = np.full(len(y), np.nan)
    folds: list[float] = []
    _cross_validate(
        candidate,
        params,
        X,
        y,
        cv=cv,
        seed=seed,
        trial=None,
        categorical=categorical,
        oof=oof,
        fold_scores=folds,
        fold_seed=fold_seed,
    )
    return folds, oof


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
    categorical: Sequence[str] = (),
    first_trial: Mapping[str, Any] | None = None,
) -> TuneResult:
    """Search ``candidate.space`` with TPE; returns the best parameters and every trial.

    With no search space or ``n_trials == 0`` nothing is searched: the candidate keeps
    ``fixed_params`` (its defaults when None), scored once by cross-validation when
    ``n_trials > 0`` so the table still has a CV figure for the model that is fitted.
    ``first_trial`` (parameters of the space) is tried first, so the search never ends
    below that point, and it is kept unless the best trial beats it by more than one
    standard error of their paired fold differences (the folds are the same for every
    trial): on small data a tuned lead within the fold-to-fold noise does no better on new
    data, and a few trials of TPE can overfit the folds. A lead beyond that noise must
    then hold on folds shuffled another way, which did not choose the trial (see
    :func:`_confirm`). ``categorical`` names the DataFrame columns to one-hot encode.
    """
    import optuna

    out = progress if progress is not None else sys.stderr
    start = time.perf_counter()
    if candidate.space is None or n_trials <= 0:
        params = dict(fixed_params or {})
        score = math.nan
        oof, folds = None, []
        if n_trials > 0:
            oof, folds = np.full(len(y), np.nan), []
            score = cross_val_ap(
                candidate,
                params,
                X,
                y,
                cv=cv,
                seed=seed,
                categorical=categorical,
                oof=oof,
                fold_scores=folds,
            )
            print(
                f"tune candidate={candidate.name} trial=1/1 state=COMPLETE cv_ap={score:.4f} "
                f"best={score:.4f} seconds={time.perf_counter() - start:.1f} "
                f"params={'fixed' if params else 'defaults'}",
                file=out,
                flush=True,
            )
        return TuneResult(
            candidate.name, params, score, [], time.perf_counter() - start, oof, folds
        )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        study_name=candidate.name,
    )

    if first_trial:
        study.enqueue_trial(dict(first_trial))
    # out-of-fold scores of the best trial so far (one array kept, not one per trial),
    # and of the first trial when it was given
    best_oof: dict[int, tuple[float, list[float], np.ndarray]] = {}
    first_oof: list[tuple[float, list[float], np.ndarray]] = []

    def objective(trial: optuna.Trial) -> float:
        params = candidate.space(trial)
        oof, folds = np.full(len(y), np.nan), []
        value = cross_val_ap(
            candidate,
            params,
            X,
            y,
            cv=cv,
            seed=seed,
            trial=trial,
            categorical=categorical,
            oof=oof,
            fold_scores=folds,
        )
        kept = next(iter(best_oof.values()), None)
        if kept is None or value > kept[0]:
            best_oof.clear()
            best_oof[trial.number] = (value, folds, oof)
        if first_trial and trial.number == 0:
            first_oof.append((value, folds, oof))
        return value

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
    value = float(best.value)
    _, folds, oof = best_oof.get(best.number, (None, [], None))
    note = ""
    if best.number != 0 and first_oof:
        first_value, first_folds, first_scores = first_oof[0]
        label = f"trial {best.number + 1}"
        why = first_trial_kept(folds, first_folds)
        if why is None:
            held, figures = _confirm(
                candidate,
                candidate.space(optuna.trial.FixedTrial(best.params)),
                candidate.space(optuna.trial.FixedTrial(study.trials[0].params)),
                X,
                y,
                cv=cv,
                seed=seed,
                categorical=categorical,
                out=out,
                label=label,
            )
            if held:
                note = (
                    f"{label} kept over the first trial: its lead held on other folds ({figures})"
                )
            else:
                why = f"lead did not hold on other folds ({figures})"
        if why is not None:
            note = f"first trial kept (cv_ap={first_value:.4f}): {label}'s {why}"
            print(f"tune candidate={candidate.name} {note}", file=out, flush=True)
            best = study.trials[0]
            value, folds, oof = first_value, first_folds, first_scores
    params = candidate.space(optuna.trial.FixedTrial(best.params))
    return TuneResult(
        candidate.name,
        params,
        value,
        trials,
        time.perf_counter() - start,
        oof,
        list(folds),
        note,
    )


#: rounds of freshly shuffled folds on which a tuned trial's lead over the first trial
#: must hold (see :func:`_confirm`)
CONFIRM_ROUNDS = 3
#: a lead beyond this many corrected standard errors ends the confirmation early
CLEAR_LEAD = 4.0


def _confirm(
    candidate: Candidate,
    best_params: Mapping[str, Any],
    first_params: Mapping[str, Any],
    X: Any,
    y: np.ndarray,
    *,
    cv: int,
    seed: int,
    categorical: Sequence[str],
    out: TextIO,
    label: str,
) -> tuple[bool, str]:
    """Score the best trial and the first one again on :data:`CONFIRM_ROUNDS` rounds of
    folds shuffled other ways (``seed + 1``, ``seed + 2``, …): whether the best one's
    lead holds there, and the figures.

    The search folds picked the best trial out of several, so its lead on them is biased
    upward by that choice (the best of n noisy figures); folds that chose nothing give an
    unbiased look, and several rounds of them a steadier one. The lead must exceed the
    standard error of the paired differences corrected for the overlap of the training
    folds (:func:`corrected_lead`), which the plain standard error understates. Costs
    fitting both ``cv`` times per round; a lead beyond :data:`CLEAR_LEAD` corrected
    standard errors after a round ends it there."""
    t0 = time.perf_counter()
    best_all: list[float] = []
    first_all: list[float] = []
    rounds = 0
    try:
        for r in range(1, CONFIRM_ROUNDS + 1):
            for params, into in ((best_params, best_all), (first_params, first_all)):
                folds, _ = cross_val_scores(
                    candidate, params, X, y, cv=cv, seed=seed, categorical=categorical,
                    fold_seed=seed + r,
                )  # fmt: skip
                into.extend(folds)
            rounds = r
            lead, se = corrected_lead(best_all, first_all, cv=cv)
            if lead > CLEAR_LEAD * se:
                # far beyond the noise already (a tuned model that fixes what the defaults
                # get wrong): more rounds would only cost time
                break
    except (ValueError, np.linalg.LinAlgError) as exc:  # what the search itself tolerates
        return False, f"could not be scored: {exc}"
    held = lead > se
    figures = (
        f"lead {lead:.4f} on {rounds}x{cv} folds, corrected standard error {se:.4f}, "
        f"cv_ap {np.mean(best_all):.4f} against {np.mean(first_all):.4f}"
    )
    print(
        f"tune candidate={candidate.name} confirm {label} on other folds: {figures} "
        f"({'confirmed' if held else 'not confirmed'}) seconds={time.perf_counter() - t0:.1f}",
        file=out,
        flush=True,
    )
    return held, figures


def corrected_lead(
    ahead: Sequence[float], other: Sequence[float], *, cv: int
) -> tuple[float, float]:
    """Mean of the paired differences ``ahead - other`` over rounds of ``cv``-fold
    cross-validation, and its standard error corrected for the overlap of the training
    folds (Nadeau and Bengio's corrected resampled t-test): the variance of the mean is
    ``(1/n + n_test/n_train) * s^2`` rather than ``s^2 / n``, with ``n_test/n_train =
    1/(cv - 1)``: :func:`paired_lead`'s standard error times ``sqrt(1 + n/(cv - 1))``."""
    paired = paired_lead(ahead, other)
    if paired is None:
        raise ValueError("corrected_lead needs at least two paired scores, as many on each side")
    lead, se = paired
    return lead, se * math.sqrt(1.0 + len(ahead) / (cv - 1))


def paired_lead(ahead: Sequence[float], other: Sequence[float]) -> tuple[float, float] | None:
    """Mean and standard error of the paired fold differences ``ahead - other`` (the
    folds are the same for every candidate and trial); None when they cannot be paired
    (fewer than two folds, or different counts)."""
    k = len(ahead)
    if k < 2 or len(other) != k:
        return None
    diff = np.asarray(ahead, dtype=float) - np.asarray(other, dtype=float)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(k))


def first_trial_kept(best_folds: Sequence[float], first_folds: Sequence[float]) -> str | None:
    """Why the first trial stays ahead of the best one (their paired fold scores), or
    None when the best one leads by more than one standard error of the differences."""
    paired = paired_lead(best_folds, first_folds)
    if paired is None or paired[0] > paired[1]:
        return None
    lead, se = paired
    return f"lead {lead:.4f} is within one standard error ({se:.4f}) of the fold differences"


def _short(params: Mapping[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ",".join(parts) or "-"
