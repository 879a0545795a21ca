"""Pipelines, resampling without leakage, tuning and ensembles."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from sklearn.model_selection import StratifiedKFold

from models.data import X_y, make_synthetic, split_stratified
from models.errors import TrainingError
from models.pipelines import (
    CANDIDATES,
    FULL_CANDIDATES,
    RESAMPLERS,
    Candidate,
    build_pipeline,
    fit_estimator,
    get_candidate,
)
from models.tuning import cross_val_ap, tune


class RecordingSMOTE(SMOTE):
    """SMOTE that remembers every batch it was asked to resample."""

    seen: list[np.ndarray] = []

    def _fit_resample(self, X, y, **params):
        type(self).seen.append(np.array(X, copy=True))
        return super()._fit_resample(X, y, **params)


@pytest.fixture(scope="module")
def splits():
    return split_stratified(make_synthetic(12_000, seed=5), seed=1)


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a)}


@pytest.mark.slow
def test_resampler_sees_only_training_folds(splits):
    X, y = X_y(splits.train)
    RecordingSMOTE.seen = []
    cand = Candidate(
        "spy",
        "recording",
        lambda p, s: build_pipeline(
            "lr", RecordingSMOTE(sampling_strategy=0.2, random_state=s), scale=False, seed=s
        ),
    )
    cross_val_ap(cand, {}, X, y, cv=3, seed=7)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=7).split(X, y))
    assert len(RecordingSMOTE.seen) == 3
    for seen, (tr, te) in zip(RecordingSMOTE.seen, folds, strict=True):
        assert _rows(seen) == _rows(X[tr])  # exactly the training fold...
        assert not _rows(seen) & _rows(X[te])  # ...and nothing of the held-out fold


def test_predict_never_resamples_validation_or_test(splits):
    X, y = X_y(splits.train)
    RecordingSMOTE.seen = []
    pipe = build_pipeline("lr", RecordingSMOTE(sampling_strategy=0.2, random_state=0), seed=0)
    fit_estimator(pipe, X, y)
    resampled_len = len(RecordingSMOTE.seen[0])
    assert resampled_len == len(X)  # the sampler got the (scaled) training rows only
    for part in (splits.validation, splits.test):
        Xp, yp = X_y(part)
        before = np.bincount(yp, minlength=2).tolist()
        proba = pipe.predict_proba(Xp)
        assert proba.shape == (len(Xp), 2)
        assert np.bincount(X_y(part)[1], minlength=2).tolist() == before
    assert len(RecordingSMOTE.seen) == 1  # predict_proba did not call the sampler


@pytest.mark.parametrize("kind", RESAMPLERS)
def test_every_resampler_runs_in_a_pipeline(kind, splits):
    X, y = X_y(splits.train.iloc[:4000])
    pipe = fit_estimator(build_pipeline("lr", kind, seed=0, ratio=0.1), X, y)
    Xv, _ = X_y(splits.validation)
    assert pipe.predict_proba(Xv).shape == (len(Xv), 2)


def test_fitting_is_deterministic_by_seed(splits):
    X, y = X_y(splits.train)
    Xv, _ = X_y(splits.validation)
    a = fit_estimator(get_candidate("rf_under").make({"n_estimators": 30}, seed=3), X, y)
    b = fit_estimator(get_candidate("rf_under").make({"n_estimators": 30}, seed=3), X, y)
    # fitted in parallel, but predicts serially (no thread pool per streamed batch)
    assert a.named_steps["clf"].n_jobs is None
    # equal up to the summation order of parallel tree averaging
    np.testing.assert_allclose(a.predict_proba(Xv), b.predict_proba(Xv), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_tune_reports_progress_and_is_reproducible(splits):
    X, y = X_y(splits.train)
    runs = []
    for _ in range(2):
        out = io.StringIO()
        res = tune(get_candidate("lr_smote"), X, y, n_trials=3, cv=3, seed=11, progress=out)
        runs.append(res)
        lines = out.getvalue().splitlines()
        assert len(lines) == 3
        assert lines[0].startswith("tune candidate=lr_smote trial=1/3 state=COMPLETE cv_ap=")
    assert runs[0].best_params == runs[1].best_params
    assert runs[0].best_score == pytest.approx(runs[1].best_score)
    assert runs[0].n_complete == 3
    assert set(runs[0].best_params) == {"C", "ratio", "k_neighbors"}
    assert 0 < runs[0].best_score <= 1
    # the best score is the best completed trial's
    assert runs[0].best_score == max(t["cv_ap"] for t in runs[0].trials)


@pytest.mark.parametrize("cv", [1, 0])
def test_tune_refuses_a_fold_count_below_two(cv, splits):
    # Optuna would record every trial as failed and quietly keep the defaults
    X, y = X_y(splits.train)
    out = io.StringIO()
    with pytest.raises(TrainingError, match="at least 2 folds"):
        tune(get_candidate("lr_smote"), X, y, n_trials=2, cv=cv, seed=0, progress=out)
    with pytest.raises(TrainingError, match="at least 2 folds"):
        tune(get_candidate("voting"), X, y, n_trials=1, cv=cv, seed=0, progress=out)


def test_tune_without_space_keeps_defaults(splits):
    X, y = X_y(splits.train)
    out = io.StringIO()
    res = tune(get_candidate("voting"), X, y, n_trials=0, progress=out)
    assert res.best_params == {} and np.isnan(res.best_score) and out.getvalue() == ""


@pytest.mark.parametrize("name", ["bagging", "boosting", "stacking", "voting", "mlp_smote", "hgb"])
@pytest.mark.slow
def test_ensembles_and_models_fit_and_rank(name, splits):
    X, y = X_y(splits.train)
    Xt, yt = X_y(splits.test)
    est = fit_estimator(get_candidate(name).make({}, seed=0), X, y, name=name)
    s = est.predict_proba(Xt)[:, 1]
    assert s.shape == (len(Xt),) and np.all((s >= 0) & (s <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yt, s) > 0.75  # learns real signal, far above chance


def test_stacking_uses_out_of_fold_predictions():
    est = get_candidate("stacking").make({}, seed=0)
    assert isinstance(est.cv, StratifiedKFold) and est.cv.n_splits == 3
    assert est.stack_method == "predict_proba"


def test_small_minority_caps_smote_neighbours():
    df = make_synthetic(3000, seed=1)  # 5 fraud rows
    X, y = X_y(df)
    pipe = fit_estimator(build_pipeline("lr", "smote", k_neighbors=5), X, y)
    assert pipe.named_steps["resample"].k_neighbors < 5


def test_catalogue():
    assert set(FULL_CANDIDATES) <= set(CANDIDATES)
    with pytest.raises(TrainingError, match="unknown candidate 'svm'"):
        get_candidate("svm")
    with pytest.raises(TrainingError, match="unknown resampler"):
        build_pipeline("lr", "nearmiss")


def _scripted_candidate(monkeypatch, folds_of: dict[str, list[float]], confirm_of=None):
    """A candidate whose cross-validation gives scripted fold scores per parameter value,
    so tune()'s choice between the first trial and the best one is checked exactly.

    ``folds_of`` gives the search folds' scores; ``confirm_of`` those of the folds
    shuffled with another seed (the search folds' scores again when None). Returns the
    candidate and the list of (parameter value, fold seed) of every cross-validation."""
    import models.tuning as tuning
    from models.pipelines import Candidate

    calls: list[tuple[str, int]] = []

    def fake_cv(candidate, params, X, y, *, oof=None, fold_scores, seed, fold_seed=None, **kw):
        folds = seed if fold_seed is None else fold_seed
        calls.append((params["c"], folds))
        table = folds_of if folds == seed or confirm_of is None else confirm_of
        fold_scores.extend(table[params["c"]])
        if oof is not None:
            oof[:] = 0.5
        return float(np.mean(fold_scores))

    monkeypatch.setattr(tuning, "_cross_validate", fake_cv)
    cand = Candidate(
        name="scripted",
        description="",
        build=lambda params, seed: None,
        space=lambda trial: {"c": trial.suggest_categorical("c", sorted(folds_of))},
        first_trial={"c": "defaults"},
    )
    return cand, calls


@pytest.mark.parametrize(
    "tuned, confirm, kept, why, rounds",
    [
        # leads by 0.01 on average, but one fold says the opposite: within the noise, and
        # nothing more is fitted
        ([0.83, 0.84, 0.91], None, "defaults", "within one standard error", 0),
        # leads by exactly 0.01 on every fold, and on every other fold too: so far beyond
        # the noise that one round of other folds settles it
        ([0.81, 0.86, 0.91], None, "tuned", None, 1),
        # leads on every search fold, and by 0.005 to 0.015 on the other folds: beyond
        # their corrected standard error, but only clearly so after every round
        ([0.81, 0.86, 0.91], [0.815, 0.855, 0.91], "tuned", None, 3),
        # leads by 0.01 on every search fold, but by nothing on folds that chose nothing
        ([0.81, 0.86, 0.91], [0.80, 0.85, 0.90], "defaults", "other folds", 3),
    ],
)
def test_tune_keeps_the_first_trial_unless_the_best_beats_it_beyond_the_noise(
    monkeypatch, tuned, confirm, kept, why, rounds
):
    from models.tuning import CONFIRM_ROUNDS, first_trial_kept

    folds_of = {"defaults": [0.80, 0.85, 0.90], "tuned": tuned}
    confirm_of = None if confirm is None else {"defaults": folds_of["defaults"], "tuned": confirm}
    cand, calls = _scripted_candidate(monkeypatch, folds_of, confirm_of)
    X, y = np.zeros((30, 2)), np.array([0, 1] * 15)
    out = io.StringIO()
    res = tune(cand, X, y, n_trials=8, cv=3, seed=7, progress=out, first_trial=cand.first_trial)
    assert any(t["params"] == {"c": "tuned"} for t in res.trials)  # the search did try it
    assert res.best_params == {"c": kept}
    # the search folds' figures come back, whatever the confirmation said
    assert res.fold_scores == folds_of[kept]
    assert res.best_score == pytest.approx(np.mean(folds_of[kept]))
    assert ("first trial kept" in out.getvalue()) == (kept == "defaults")
    if why:
        assert why in out.getvalue() and why in res.note
    # the decision comes back with the result whenever the two differed
    assert res.note.startswith("first trial kept" if kept == "defaults" else "trial ")
    # the search folds' own verdict
    assert (first_trial_kept(tuned, folds_of["defaults"]) is None) == (
        why != "within one standard error"
    )
    # the confirmation runs only after a lead beyond the search folds' noise, on folds
    # shuffled with seeds the search did not use, for both trials
    assert rounds <= CONFIRM_ROUNDS
    confirmed = sorted(c for c in calls if c[1] != 7)
    assert confirmed == sorted(
        (p, 7 + r) for r in range(1, rounds + 1) for p in ("defaults", "tuned")
    )
    assert ("confirm trial" in out.getvalue()) == (rounds > 0)


def test_corrected_lead_widens_the_standard_error_for_overlapping_training_folds():
    from models.tuning import corrected_lead, paired_lead

    ahead = [0.81, 0.86, 0.92, 0.80, 0.86, 0.90]
    other = [0.80, 0.85, 0.90, 0.80, 0.85, 0.90]
    lead, se = corrected_lead(ahead, other, cv=3)
    d = np.subtract(ahead, other)
    assert lead == pytest.approx(d.mean())
    # (1/n + 1/(k-1)) s^2, with n = 6 paired folds and k = 3
    assert se == pytest.approx(np.sqrt((1 / 6 + 1 / 2) * d.var(ddof=1)))
    plain = paired_lead(ahead, other)
    assert plain is not None and se > plain[1]
    with pytest.raises(ValueError):
        corrected_lead([0.8], [0.7], cv=3)
