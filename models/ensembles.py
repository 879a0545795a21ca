"""Ensembles: bagging, boosting, stacking (out-of-fold) and soft voting.

Stacking and voting combine the base pipelines of :mod:`models.pipelines`; when the
trainer has tuned those, it passes their best parameters as ``base_params`` so the
ensemble reuses them. Each member keeps its own resampler inside its pipeline, so
resampling still touches training rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .pipelines import Candidate, build_pipeline

__all__ = ["ENSEMBLE_MEMBERS", "ensemble_candidates", "make_ensemble"]

#: base candidates combined by stacking and voting
ENSEMBLE_MEMBERS = ("lr_smote", "hgb", "rf_under")


def _members(p: Mapping[str, Any], seed: int) -> list[tuple[str, Any]]:
    from .pipelines import get_candidate

    base = p.get("base_params") or {}
    names = p.get("members") or ENSEMBLE_MEMBERS
    return [(n, get_candidate(n).make(base.get(n), seed=seed)) for n in names]


def make_ensemble(kind: str, params: Mapping[str, Any] | None = None, *, seed: int = 0):
    """Build an unfitted ensemble of the given kind."""
    p = dict(params or {})
    if kind == "bagging":
        from imblearn.ensemble import BalancedBaggingClassifier
        from sklearn.tree import DecisionTreeClassifier

        # Each bag is under-sampled on its own draw of the training rows.
        return BalancedBaggingClassifier(
            estimator=DecisionTreeClassifier(max_depth=p.get("max_depth", 8), random_state=seed),
            n_estimators=p.get("n_estimators", 40),
            sampling_strategy=p.get("ratio", 0.2),
            random_state=seed,
            n_jobs=-1,
        )
    if kind == "boosting":
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier

        ada = AdaBoostClassifier(
            estimator=DecisionTreeClassifier(max_depth=p.get("max_depth", 2), random_state=seed),
            n_estimators=p.get("n_estimators", 150),
            learning_rate=p.get("learning_rate", 0.5),
            random_state=seed,
        )
        return build_pipeline(ada, "under", scale=False, seed=seed, ratio=p.get("ratio", 0.1))
    if kind == "stacking":
        from sklearn.ensemble import StackingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        # cv: the meta-learner is fitted on out-of-fold predictions of the members.
        return StackingClassifier(
            estimators=_members(p, seed),
            final_estimator=LogisticRegression(C=p.get("C", 1.0), max_iter=2000),
            cv=StratifiedKFold(n_splits=p.get("cv", 3), shuffle=True, random_state=seed),
            stack_method="predict_proba",
        )
    if kind == "voting":
        from sklearn.ensemble import VotingClassifier

        return VotingClassifier(estimators=_members(p, seed), voting="soft")
    raise ValueError(f"unknown ensemble kind {kind!r}")


def _bagging_space(t) -> dict[str, Any]:
    return {
        "n_estimators": t.suggest_int("n_estimators", 20, 80, step=10),
        "max_depth": t.suggest_int("max_depth", 4, 14),
        "ratio": t.suggest_float("ratio", 0.05, 0.5, log=True),
    }


def _boosting_space(t) -> dict[str, Any]:
    return {
        "n_estimators": t.suggest_int("n_estimators", 50, 250, step=50),
        "learning_rate": t.suggest_float("learning_rate", 0.05, 1.0, log=True),
        "max_depth": t.suggest_int("max_depth", 1, 3),
        "ratio": t.suggest_float("ratio", 0.02, 0.3, log=True),
    }


def ensemble_candidates() -> dict[str, Candidate]:
    members = ", ".join(ENSEMBLE_MEMBERS)
    cands = [
        Candidate(
            "bagging",
            "BalancedBaggingClassifier(DecisionTree), each bag under-sampled",
            lambda p, s: make_ensemble("bagging", p, seed=s),
            _bagging_space,
            "under (per bag)",
            ensemble=True,
        ),
        Candidate(
            "boosting",
            "RandomUnderSampler -> AdaBoost(DecisionTree stumps)",
            lambda p, s: make_ensemble("boosting", p, seed=s),
            _boosting_space,
            "under",
            ensemble=True,
        ),
        Candidate(
            "stacking",
            f"StackingClassifier({members}; LogisticRegression on out-of-fold probabilities)",
            lambda p, s: make_ensemble("stacking", p, seed=s),
            None,
            "per member",
            ensemble=True,
        ),
        Candidate(
            "voting",
            f"VotingClassifier(soft; {members})",
            lambda p, s: make_ensemble("voting", p, seed=s),
            None,
            "per member",
            ensemble=True,
        ),
    ]
    return {c.name: c for c in cands}
