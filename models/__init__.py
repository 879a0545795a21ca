"""Model library: datasets, pipelines, tuning, ensembles, evaluation, registry."""

from .backends import BackendError, ScoringBackend, SklearnBackend, load_backend
from .errors import DataError, ModelsError, SchemaError, TrainingError
from .registry import ChecksumMismatch, ModelCard, ModelNotFound, Registry, RegistryError

__all__ = [
    "BackendError",
    "ChecksumMismatch",
    "DataError",
    "ModelCard",
    "ModelNotFound",
    "ModelsError",
    "Registry",
    "RegistryError",
    "SchemaError",
    "ScoringBackend",
    "SklearnBackend",
    "TrainingError",
    "load_backend",
]
