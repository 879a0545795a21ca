"""A joblib-saved scikit-learn / imbalanced-learn estimator, scored in-process."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..card import ModelCard
from ..errors import BackendError, RegistryError
from ..registry import Registry
from .base import ScoringBackend

__all__ = ["SklearnBackend"]


class SklearnBackend(ScoringBackend):
    """An estimator with ``predict_proba``; the probability of class 1 is the score."""

    kind = "sklearn"

    def __init__(self, card: ModelCard, estimator: Any) -> None:
        super().__init__(card)
        if not hasattr(estimator, "predict_proba"):
            raise BackendError(f"{card.name} v{card.version}: artifact has no predict_proba")
        self.estimator = estimator
        classes = list(getattr(estimator, "classes_", [0, 1]))
        # Column of the positive class (label 1), whatever order the classes were seen in.
        self._pos = classes.index(1) if 1 in classes else len(classes) - 1
        names = getattr(estimator, "feature_names_in_", None)
        self._frame_columns = None
        if names is not None:
            if list(names) != card.features:
                raise BackendError(
                    f"{card.name} v{card.version}: estimator was fitted on features "
                    f"{list(names)[:5]}… which differ from the card's ordered feature list"
                )
            self._frame_columns = list(names)

    @classmethod
    def from_card(cls, registry: Registry, card: ModelCard) -> SklearnBackend:
        """Load the artifact (after the registry's path, signature and sha256 checks)."""
        try:
            estimator = registry.load_artifact(card)
        except RegistryError:
            raise
        except Exception as exc:  # joblib/pickle raise many types for a bad file
            raise BackendError(f"cannot load {card.name} v{card.version}: {exc}") from exc
        return cls(card, estimator)

    def explain(self, X: Any) -> np.ndarray:
        """Exact for a linear model at the end of the pipeline (coefficient x transformed
        value, in log-odds, one-hot columns summed back to their feature); tree models
        through ``shap``'s TreeExplainer when it is installed; else by occlusion."""
        linear = _linear_parts(self.estimator, self.card.features)
        if linear is not None:
            transform, coef, groups = linear
            frame = self._frame(np.asarray(X, dtype=object if self._categorical else np.float64))
            Z = np.asarray(transform(frame), dtype=np.float64)
            per_column = Z * coef[None, :]
            return np.stack([per_column[:, cols].sum(axis=1) for cols in groups], axis=1)
        shap_values = _tree_shap(self.estimator, self._frame, X, len(self.card.features))
        if shap_values is not None:
            return shap_values
        return super().explain(X)

    @property
    def explain_method(self) -> str:  # type: ignore[override]
        if _linear_parts(self.estimator, self.card.features) is not None:
            return "linear"
        return "shap" if _shap_available() and _final_is_tree(self.estimator) else "occlusion"

    def _frame(self, X: np.ndarray) -> Any:
        if self._frame_columns is None:
            return X
        import pandas as pd

        cats = set(self._categorical)
        return pd.DataFrame(
            {
                name: X[:, j] if j in cats else X[:, j].astype(np.float64)
                for j, name in enumerate(self._frame_columns)
            }
        )

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self._frame_columns is not None:
            if self._categorical:  # one dtype per column, as the model was fitted
                X = self._frame(X)
            else:
                import pandas as pd

                X = pd.DataFrame(X, columns=self._frame_columns)
        return self.estimator.predict_proba(X)[:, self._pos]


def _steps(estimator: Any) -> list[Any]:
    steps = getattr(estimator, "steps", None)
    return [s for _, s in steps] if steps else [estimator]


def _linear_parts(estimator: Any, features: list[str]) -> Any:
    """(transform, coefficients, columns of each feature) when the pipeline ends with a
    binary linear model (``coef_`` of one row); None otherwise. Samplers (SMOTE...) do
    nothing at prediction and are skipped."""
    steps = _steps(estimator)
    final = steps[-1]
    coef = getattr(final, "coef_", None)
    if coef is None or np.ndim(coef) != 2 or np.shape(coef)[0] != 1:
        return None
    if any(not hasattr(s, "transform") and not hasattr(s, "fit_resample") for s in steps[:-1]):
        return None
    # samplers (SMOTE...) only act when fitting
    transformers = [s for s in steps[:-1] if not hasattr(s, "fit_resample")]

    def transform(X: Any) -> Any:
        for t in transformers:
            X = t.transform(X)
        return X.toarray() if hasattr(X, "toarray") else X

    width = np.shape(coef)[1]
    if width == len(features):
        groups = [[j] for j in range(width)]
    else:
        names = None
        if transformers and hasattr(transformers[-1], "get_feature_names_out"):
            try:
                names = [str(n) for n in transformers[-1].get_feature_names_out()]
            except Exception:  # a transformer that cannot name its outputs
                names = None
        if names is None or len(names) != width:
            return None
        groups = [[] for _ in features]
        for col, name in enumerate(names):
            source = name.split("__", 1)[-1]
            owner = next(
                (i for i, f in enumerate(features) if source == f or source.startswith(f + "_")),
                None,
            )
            if owner is None:
                return None
            groups[owner].append(col)
    return transform, np.asarray(coef, dtype=np.float64)[0], groups


def _final_is_tree(estimator: Any) -> bool:
    final = _steps(estimator)[-1]
    return hasattr(final, "estimators_") or type(final).__name__.startswith(
        ("HistGradientBoosting", "GradientBoosting", "DecisionTree", "XGB", "LGBM")
    )


def _shap_available() -> bool:
    try:
        import shap  # noqa: F401
    except ImportError:
        return False
    return True


def _tree_shap(estimator: Any, frame: Any, X: Any, k: int) -> np.ndarray | None:
    """SHAP values of a tree model at the end of a 1:1 preprocessing (None when ``shap``
    is not installed, the model is no tree, or the preprocessing changes the width)."""
    if not (_final_is_tree(estimator) and _shap_available()):
        return None
    import shap

    steps = _steps(estimator)
    Z = frame(np.asarray(X, dtype=np.float64))
    for t in steps[:-1]:
        if hasattr(t, "fit_resample"):
            continue
        Z = t.transform(Z)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[1] != k:
        return None
    try:
        values = shap.TreeExplainer(steps[-1]).shap_values(Z)
    except Exception:  # a model shap does not support: the caller falls back to occlusion
        return None
    values = np.asarray(values[1] if isinstance(values, list) else values, dtype=np.float64)
    if values.ndim == 3:  # (n, k, classes)
        values = values[:, :, 1]
    return values
