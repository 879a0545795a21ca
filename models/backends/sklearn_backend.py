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

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self._frame_columns is not None:
            import pandas as pd

            if self._categorical:  # one dtype per column, as the model was fitted
                cats = set(self._categorical)
                X = pd.DataFrame(
                    {
                        name: X[:, j] if j in cats else X[:, j].astype(np.float64)
                        for j, name in enumerate(self._frame_columns)
                    }
                )
            else:
                X = pd.DataFrame(X, columns=self._frame_columns)
        return self.estimator.predict_proba(X)[:, self._pos]
