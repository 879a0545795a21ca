"""Scoring backends: the contract (:class:`ScoringBackend`), the in-process kinds, TF
Serving (``models.backends.tfserving``) and the explicit factory each service builds.

``load_backend(registry, name)`` is the shortcut for scripts and notebooks: it scores
in-process (:func:`local_factory`) unless given another factory.
"""

from __future__ import annotations

from ..errors import BackendError, BackendUnavailable, InvalidInput, InvalidScores
from ..registry import Registry
from .base import ScoringBackend
from .factory import (
    BackendFactory,
    Builder,
    local_factory,
    savedmodel_builder,
    serving_factory,
    sklearn_builder,
    tfserving_builder,
)
from .sklearn_backend import SklearnBackend

__all__ = [
    "BackendError",
    "BackendFactory",
    "BackendUnavailable",
    "Builder",
    "InvalidInput",
    "InvalidScores",
    "ScoringBackend",
    "SklearnBackend",
    "load_backend",
    "load_local_backend",
    "local_factory",
    "savedmodel_builder",
    "serving_factory",
    "sklearn_builder",
    "tfserving_builder",
]


def load_backend(
    registry: Registry,
    name: str,
    ref: str | int = "production",
    *,
    kind: str | None = None,
    factory: BackendFactory | None = None,
) -> ScoringBackend:
    """The backend of ``name@ref`` (an alias or a version), built by ``factory``
    (default: in-process scoring); ``kind`` overrides the card framework's kind."""
    card = registry.card(name, ref)  # resolves once, so a moving alias cannot split the two
    return (factory or local_factory()).build(registry, card, kind)


def load_local_backend(
    registry: Registry, name: str, ref: str | int = "production"
) -> ScoringBackend:
    """The backend that scores ``name@ref`` in this process (scikit-learn, or a TF
    model's SavedModel)."""
    return load_backend(registry, name, ref)
