"""Training pipelines: scaling, resampling and a classifier in one imbalanced-learn Pipeline.

Resamplers (SMOTE, ADASYN, random under/over-sampling, SMOTE-Tomek) are pipeline
steps, so they run in ``fit`` only: cross-validation resamples each training fold and
never the held-out fold, and ``predict_proba`` on validation or test data sees every
row untouched.

A :class:`Candidate` names one pipeline family with its Optuna search space; the
catalogue :data:`CANDIDATES` holds the base models and the ensembles
(``models.ensembles``).

Categorical features (a profile's ``categorical`` type) are one-hot encoded by the first
step of the same pipeline (:func:`encode_categoricals`), before any scaler or resampler,
so a registered model takes the raw category labels, and a label it never saw in
training is encoded as none of the known ones instead of failing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import TrainingError

__all__ = [
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
    "FULL_CANDIDATES",
    "RESAMPLERS",
    "Candidate",
    "build_pipeline",
    "encode_categoricals",
    "fit_estimator",
    "get_candidate",
    "make_classifier",
    "make_resampler",
    "quiet_convergence",
]

log = logging.getLogger("models.pipelines")

RESAMPLERS = ("none", "smote", "adasyn", "under", "over", "smotetomek")
CLASSIFIERS = ("lr", "rf", "hgb", "mlp")


def make_resampler(kind: str, *, ratio: float = 0.1, seed: int = 0, k_neighbors: int = 5):
    """A resampler bringing the minority class to ``ratio`` × the majority (None for "none")."""
    if kind == "none":
        return None
    from imblearn.combine import SMOTETomek
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    if kind == "smote":
        return SMOTE(sampling_strategy=ratio, k_neighbors=k_neighbors, random_state=seed)
    if kind == "adasyn":
        return ADASYN(sampling_strategy=ratio, n_neighbors=k_neighbors, random_state=seed)
    if kind == "under":
        return RandomUnderSampler(sampling_strategy=ratio, random_state=seed)
    if kind == "over":
        return RandomOverSampler(sampling_strategy=ratio, random_state=seed)
    if kind == "smotetomek":
        return SMOTETomek(
            sampling_strategy=ratio,
            smote=SMOTE(sampling_strategy=ratio, k_neighbors=k_neighbors, random_state=seed),
            random_state=seed,
        )
    raise TrainingError(f"unknown resampler {kind!r} (choose from {', '.join(RESAMPLERS)})")


def make_classifier(kind: str, *, seed: int = 0, **params: Any):
    """A scikit-learn classifier with defaults suited to 0.2 % positives."""
    if kind == "lr":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**{"C": 1.0, "max_iter": 2000, **params})
    if kind == "rf":
        from sklearn.ensemble import RandomForestClassifier

        defaults = {"n_estimators": 150, "min_samples_leaf": 2, "n_jobs": -1}
        return RandomForestClassifier(random_state=seed, **{**defaults, **params})
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        defaults = {"learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 15}
        defaults |= {"l2_regularization": 1.0, "early_stopping": False}
        return HistGradientBoostingClassifier(random_state=seed, **{**defaults, **params})
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        defaults = {"hidden_layer_sizes": (64, 32), "alpha": 1e-3, "max_iter": 60}
        defaults |= {"early_stopping": True, "batch_size": 256, "learning_rate_init": 1e-3}
        return MLPClassifier(random_state=seed, **{**defaults, **params})
    raise TrainingError(f"unknown classifier {kind!r} (choose from {', '.join(CLASSIFIERS)})")


def build_pipeline(
    classifier: str | Any = "lr",
    resampler: str | Any = "smote",
    *,
    scale: bool = True,
    seed: int = 0,
    ratio: float = 0.1,
    k_neighbors: int = 5,
    classifier_params: Mapping[str, Any] | None = None,
):
    """``[scale] -> [resample] -> clf`` as an imblearn Pipeline (steps named so)."""
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = []
    if scale:
        steps.append(("scale", StandardScaler()))
    if isinstance(resampler, str):
        resampler = make_resampler(resampler, ratio=ratio, seed=seed, k_neighbors=k_neighbors)
    if resampler is not None:
        steps.append(("resample", resampler))
    if isinstance(classifier, str):
        classifier = make_classifier(classifier, seed=seed, **dict(classifier_params or {}))
    steps.append(("clf", classifier))
    return Pipeline(steps)


#: a resampling ratio at or below the data's own minority ratio is raised to this much
#: above it (resampling then barely touches the data; the margin covers the inner folds
#: of stacking, whose ratios differ slightly)
RATIO_MARGIN = 1.05
#: wider margins: ADASYN spreads its new rows over the minority by density and refuses
#: to generate none; a balanced bag under-samples a bootstrap draw, whose own ratio
#: varies around the data's
WIDE_MARGINS = {"ADASYN": 1.5, "BalancedBaggingClassifier": 1.5}


def fit_estimator(est, X, y, *, name: str = "estimator"):
    """Fit ``est``; resamplers are adapted to the data first.

    SMOTE/ADASYN need more minority rows than neighbours; on small samples (and in the
    inner folds of stacking) the configured count can exceed that, so it is reduced. A
    resampling ratio (minority / majority after resampling) below the data's own ratio
    cannot be reached by over- or under-sampling (imbalanced-learn refuses it): on data
    with, say, 10 % positives, a ratio of 0.05 becomes just above the data's ratio.
    """
    import numpy as np

    y_arr = np.asarray(y)
    n_pos = int(np.sum(y_arr == 1))
    n_neg = int(np.sum(y_arr == 0))
    limit = max(1, int(n_pos * 0.6) - 1)  # leaves room for the inner folds of stacking
    params = est.get_params(deep=True)
    changes = {
        k: limit
        for k, v in params.items()
        if k.rsplit("__", 1)[-1] in ("k_neighbors", "n_neighbors")
        and "resample" in k
        and isinstance(v, int)
        and v > limit
    }
    if changes:
        log.info("capped_neighbours estimator=%s positives=%d k=%d", name, n_pos, limit)
    if n_neg:
        natural = n_pos / n_neg
        raised = {}
        for k, v in params.items():
            if k.rsplit("__", 1)[-1] != "sampling_strategy" or not isinstance(v, float):
                continue
            owner = params.get(k.rsplit("__", 1)[0]) if "__" in k else est
            margin = WIDE_MARGINS.get(type(owner).__name__, RATIO_MARGIN)
            floor = min(1.0, natural * margin)
            if v < floor:
                raised[k] = floor
        if raised:
            changes |= raised
            log.info(
                "raised_resampling_ratio estimator=%s data_ratio=%.4f ratio=%.4f",
                name,
                natural,
                max(raised.values()),
            )
    if changes:
        est.set_params(**changes)
    with quiet_convergence(name):
        est.fit(X, y)
    # Fit in parallel, predict serially: a thread pool per predict_proba call costs
    # ~20 ms, far more than scoring one micro-batch in the streaming path.
    parallel = {
        k: None
        for k, v in est.get_params(deep=True).items()
        if k.endswith("n_jobs") and v not in (None, 1)
    }
    if parallel:
        est.set_params(**parallel)
    return est


@contextmanager
def quiet_convergence(what: str) -> Iterator[None]:
    """Turn scikit-learn ConvergenceWarnings into one log line instead of warning spam."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield
    n = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if n:
        log.info("convergence_warnings estimator=%s count=%d", what, n)


@dataclass(frozen=True)
class Candidate:
    """A named pipeline family: how to build it from parameters, and what to search.

    ``build(params, seed)`` returns an unfitted estimator; ``space(trial)`` draws a
    parameter dict from an Optuna trial (None: nothing to tune).
    """

    name: str
    description: str
    build: Callable[[Mapping[str, Any], int], Any] = field(repr=False)
    space: Callable[[Any], dict[str, Any]] | None = field(default=None, repr=False)
    resampling: str = "none"
    ensemble: bool = False
    #: parameters of ``space`` tuned first (a known-good starting point), or None
    first_trial: Mapping[str, Any] | None = field(default=None, repr=False)

    def make(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        categorical: Sequence[str] = (),
    ):
        """An unfitted estimator; with ``categorical`` (column names of a DataFrame
        input) its first step one-hot encodes those columns."""
        est = self.build(dict(params or {}), seed)
        return encode_categoricals(est, categorical) if categorical else est


#: name of the encoding step (first step of a pipeline with categorical features)
ENCODE_STEP = "encode"


def categorical_encoder(categorical: Sequence[str]):
    """One-hot encoding of the ``categorical`` columns of a DataFrame, the other columns
    passed through as numbers. Categories are learnt in ``fit``; an unseen one becomes
    all zeros (``handle_unknown="ignore"``)."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    return ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64),
                list(categorical),
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )


def encode_categoricals(estimator, categorical: Sequence[str]):
    """``estimator`` with the categorical encoder in front: prepended to an imblearn
    Pipeline (before its scaler and resampler), or a two-step Pipeline around any other
    estimator (an ensemble: one encoder for all its members). Fit it on a DataFrame
    whose columns are the model's features: ``feature_names_in_`` then names them."""
    from imblearn.pipeline import Pipeline

    encoder = categorical_encoder(categorical)
    if isinstance(estimator, Pipeline):
        return Pipeline([(ENCODE_STEP, encoder), *estimator.steps])
    return Pipeline([(ENCODE_STEP, encoder), ("model", estimator)])


# -- base candidates ----------------------------------------------------------------
def _lr_build(resampler: str) -> Callable[[Mapping[str, Any], int], Any]:
    def build(p: Mapping[str, Any], seed: int):
        extra = {"class_weight": "balanced"} if resampler == "none" else {}
        return build_pipeline(
            "lr",
            resampler,
            seed=seed,
            ratio=p.get("ratio", 0.1),
            k_neighbors=p.get("k_neighbors", 5),
            classifier_params={"C": p.get("C", 0.1), **extra},
        )

    return build


def _lr_space(resampler: str) -> Callable[[Any], dict[str, Any]]:
    def space(t) -> dict[str, Any]:
        p = {"C": t.suggest_float("C", 1e-3, 10.0, log=True)}
        if resampler != "none":
            p["ratio"] = t.suggest_float("ratio", 0.02, 0.5, log=True)
        if resampler in ("smote", "adasyn", "smotetomek"):
            p["k_neighbors"] = t.suggest_int("k_neighbors", 3, 9)
        return p

    return space


def _hgb_build(p: Mapping[str, Any], seed: int):
    params = {k: p[k] for k in ("learning_rate", "max_leaf_nodes", "l2_regularization") if k in p}
    params["max_iter"] = p.get("max_iter", 200)
    if params.get("l2_regularization", 1.0) <= L2_NONE:
        params["l2_regularization"] = 0.0  # the low end of the log-scale search: none
    if p.get("balanced"):
        # Softened balancing: full inverse-frequency weights overshoot at 0.2 % positives.
        params["class_weight"] = {0: 1.0, 1: float(p.get("pos_weight", 10.0))}
    return build_pipeline("hgb", "none", scale=False, seed=seed, classifier_params=params)


#: an L2 penalty this low (the bottom of the log-scale search) means none
L2_NONE = 1e-3
#: scikit-learn's own defaults in the hgb search space: tuned first, so the search never
#: ends below an untuned HistGradientBoosting (without its early stopping, which scikit-learn
#: turns on above 10,000 rows)
HGB_LIBRARY_DEFAULTS = {
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": L2_NONE,
    "max_iter": 100,
    "balanced": False,
}


def _hgb_space(t) -> dict[str, Any]:
    p = {
        "learning_rate": t.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "max_leaf_nodes": t.suggest_int("max_leaf_nodes", 7, 31),
        "l2_regularization": t.suggest_float("l2_regularization", L2_NONE, 10.0, log=True),
        "max_iter": t.suggest_int("max_iter", 100, 300, step=50),
        "balanced": t.suggest_categorical("balanced", [False, True]),
    }
    if p["balanced"]:
        p["pos_weight"] = t.suggest_float("pos_weight", 2.0, 50.0, log=True)
    return p


def _rf_build(resampler: str) -> Callable[[Mapping[str, Any], int], Any]:
    def build(p: Mapping[str, Any], seed: int):
        params = {
            "n_estimators": p.get("n_estimators", 200),
            "max_depth": p.get("max_depth", 12),
            "min_samples_leaf": p.get("min_samples_leaf", 2),
            "max_features": p.get("max_features", "sqrt"),
        }
        if resampler == "none":
            params["class_weight"] = "balanced_subsample"
        return build_pipeline(
            "rf",
            resampler,
            scale=False,
            seed=seed,
            ratio=p.get("ratio", 0.1),
            classifier_params=params,
        )

    return build


def _rf_space(resampler: str) -> Callable[[Any], dict[str, Any]]:
    def space(t) -> dict[str, Any]:
        p = {
            "n_estimators": t.suggest_int("n_estimators", 100, 300, step=50),
            "max_depth": t.suggest_int("max_depth", 4, 20),
            "min_samples_leaf": t.suggest_int("min_samples_leaf", 1, 10),
            "max_features": t.suggest_categorical("max_features", ["sqrt", 0.5]),
        }
        if resampler != "none":
            p["ratio"] = t.suggest_float("ratio", 0.02, 0.5, log=True)
        return p

    return space


def _mlp_build(p: Mapping[str, Any], seed: int):
    width = int(p.get("width", 64))
    params = {
        "hidden_layer_sizes": (width, max(8, width // 2)),
        "alpha": p.get("alpha", 1e-3),
        "learning_rate_init": p.get("learning_rate_init", 1e-3),
    }
    return build_pipeline(
        "mlp",
        "smote",
        seed=seed,
        ratio=p.get("ratio", 0.1),
        classifier_params=params,
    )


def _mlp_space(t) -> dict[str, Any]:
    return {
        "width": t.suggest_categorical("width", [32, 64, 128]),
        "alpha": t.suggest_float("alpha", 1e-5, 1e-1, log=True),
        "learning_rate_init": t.suggest_float("learning_rate_init", 3e-4, 3e-3, log=True),
        "ratio": t.suggest_float("ratio", 0.02, 0.3, log=True),
    }


def _base_candidates() -> dict[str, Candidate]:
    cands = [
        Candidate("lr_smote", "StandardScaler -> SMOTE -> LogisticRegression",
                  _lr_build("smote"), _lr_space("smote"), "smote"),
        Candidate("lr_adasyn", "StandardScaler -> ADASYN -> LogisticRegression",
                  _lr_build("adasyn"), _lr_space("adasyn"), "adasyn"),
        Candidate("lr_smotetomek", "StandardScaler -> SMOTE-Tomek -> LogisticRegression",
                  _lr_build("smotetomek"), _lr_space("smotetomek"), "smotetomek"),
        Candidate("lr_under", "StandardScaler -> RandomUnderSampler -> LogisticRegression",
                  _lr_build("under"), _lr_space("under"), "under"),
        Candidate("lr_over", "StandardScaler -> RandomOverSampler -> LogisticRegression",
                  _lr_build("over"), _lr_space("over"), "over"),
        Candidate("lr_balanced", "StandardScaler -> LogisticRegression(class_weight=balanced)",
                  _lr_build("none"), _lr_space("none"), "class_weight"),
        Candidate("hgb", "HistGradientBoostingClassifier (optional positive class weight)",
                  _hgb_build, _hgb_space, "none", first_trial=HGB_LIBRARY_DEFAULTS),
        Candidate("rf_under", "RandomUnderSampler -> RandomForestClassifier",
                  _rf_build("under"), _rf_space("under"), "under"),
        Candidate("rf", "RandomForestClassifier(class_weight=balanced_subsample)",
                  _rf_build("none"), _rf_space("none"), "class_weight"),
        Candidate("mlp_smote", "StandardScaler -> SMOTE -> MLPClassifier(2 hidden layers)",
                  _mlp_build, _mlp_space, "smote"),
    ]  # fmt: skip
    return {c.name: c for c in cands}


def _all_candidates() -> dict[str, Candidate]:
    from .ensembles import ensemble_candidates

    return {**_base_candidates(), **ensemble_candidates()}


class _Catalogue(Mapping[str, Candidate]):
    """Lazy mapping so importing this module builds nothing."""

    _items: dict[str, Candidate] | None = None

    def _load(self) -> dict[str, Candidate]:
        if self._items is None:
            type(self)._items = _all_candidates()
        return self._items  # type: ignore[return-value]

    def __getitem__(self, key: str) -> Candidate:
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


CANDIDATES: Mapping[str, Candidate] = _Catalogue()
#: a default run: minutes on two cores
DEFAULT_CANDIDATES = ("lr_smote", "hgb", "rf_under", "voting")
#: ``--search full``
FULL_CANDIDATES = (
    "lr_smote",
    "lr_adasyn",
    "lr_smotetomek",
    "lr_under",
    "lr_balanced",
    "hgb",
    "rf_under",
    "rf",
    "mlp_smote",
    "bagging",
    "boosting",
    "stacking",
    "voting",
)


def get_candidate(name: str) -> Candidate:
    try:
        return CANDIDATES[name]
    except KeyError:
        raise TrainingError(
            f"unknown candidate {name!r} (choose from {', '.join(CANDIDATES)})"
        ) from None
