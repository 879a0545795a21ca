"""Model library: datasets, pipelines, tuning, ensembles, evaluation, registry, scoring
backends.

The names below are imported on first use, so importing a module of names only (say
``models.contract`` or ``models.errors``) does not pull in numpy, pandas or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackendError": "models.errors",
    "ChecksumMismatch": "models.errors",
    "DataError": "models.errors",
    "InvalidCard": "models.errors",
    "ModelNotFound": "models.errors",
    "ModelsError": "models.errors",
    "RegistryError": "models.errors",
    "SchemaError": "models.errors",
    "TrainingError": "models.errors",
    "ModelCard": "models.card",
    "Registry": "models.registry",
    "BackendFactory": "models.backends",
    "ScoringBackend": "models.backends",
    "SklearnBackend": "models.backends",
    "load_backend": "models.backends",
    "local_factory": "models.backends",
    "ModelProvider": "models.provider",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
