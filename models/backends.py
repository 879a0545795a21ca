"""The scoring-backend contract shared by every model kind.

A backend is built from a model card, names its ordered input features and turns a
2-D float batch (rows in card feature order) into positive-class probabilities. The
UDF agent and the REST API score through this interface only; the scikit-learn backend
lives here, the TF Serving backend in ``udf_agent.backends.tfserving``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .registry import ModelCard, Registry, RegistryError

__all__ = [
    "BackendError",
    "ScoringBackend",
    "SklearnBackend",
    "backend_kinds",
    "load_backend",
    "load_local_backend",
    "register_backend_kind",
]

log = logging.getLogger("models.backends")


class BackendError(Exception):
    """A backend could not load or score; the message says why."""


class ScoringBackend(abc.ABC):
    """Load from a card, name features, score a batch."""

    #: short name used in logs, metrics and the ``model`` tag suffix
    kind: str = "abstract"

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @classmethod
    @abc.abstractmethod
    def from_card(cls, registry: Registry, card: ModelCard, **options: Any) -> ScoringBackend:
        """Build a ready-to-score backend (verifies the artifact)."""

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def feature_names(self) -> list[str]:
        return self.card.features

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @abc.abstractmethod
    def score(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability for each row of ``X`` (shape ``(n, n_features)``)."""

    def close(self) -> None:
        """Release connections or memory; the default holds nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} v{self.version})"


class SklearnBackend(ScoringBackend):
    """A joblib-saved scikit-learn / imbalanced-learn estimator with ``predict_proba``."""

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
    def from_card(cls, registry: Registry, card: ModelCard, **options: Any) -> SklearnBackend:
        try:
            estimator = registry.load_artifact(card)
        except RegistryError:
            raise
        except Exception as exc:  # joblib/pickle raise many types for a bad file
            raise BackendError(f"cannot load {card.name} v{card.version}: {exc}") from exc
        return cls(card, estimator)

    def score(self, X: np.ndarray) -> np.ndarray:
        if self._frame_columns is not None:
            import pandas as pd

            X = pd.DataFrame(X, columns=self._frame_columns)
        return np.asarray(self.estimator.predict_proba(X)[:, self._pos], dtype=np.float64)


def _savedmodel(registry: Registry, card: ModelCard, **options: Any) -> ScoringBackend:
    # Imported on use: TensorFlow is an optional extra.
    from .tf_keras import SavedModelBackend

    return SavedModelBackend.from_card(registry, card, **options)


_KINDS: dict[str, Callable[..., ScoringBackend]] = {
    "sklearn": SklearnBackend.from_card,
    "savedmodel": _savedmodel,
}


def register_backend_kind(framework: str, factory: Callable[..., ScoringBackend]) -> None:
    """Make ``load_backend`` build ``factory(registry, card, **options)`` for a framework."""
    _KINDS[framework] = factory


def load_local_backend(
    registry: Registry, name: str, ref: str | int = "production"
) -> ScoringBackend:
    """The backend that scores ``name@ref`` in this process: the joblib estimator of a
    scikit-learn model, the SavedModel of a TF model (needs the tf extra; the UDF agent
    sends TF models to TF Serving instead)."""
    version = registry.resolve(name, ref)  # once, so a moving alias cannot split the two
    kind = "savedmodel" if registry.card(name, version).framework == "tf" else None
    return load_backend(registry, name, version, kind=kind)


def backend_kinds() -> list[str]:
    return sorted(_KINDS)


def load_backend(
    registry: Registry,
    name: str,
    ref: str | int = "production",
    *,
    kind: str | None = None,
    **options: Any,
) -> ScoringBackend:
    """Resolve ``name@ref`` and build its backend (``kind`` overrides the card's framework)."""
    card = registry.card(name, ref)
    framework = kind or card.framework
    factory = _KINDS.get(framework)
    if factory is None:
        raise BackendError(
            f"no backend for framework {framework!r} of {name} v{card.version} "
            f"(available: {', '.join(backend_kinds())})"
        )
    return factory(registry, card, **options)
