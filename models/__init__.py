"""Model library: datasets, pipelines, tuning, ensembles, evaluation, registry."""

from .backends import BackendError, ScoringBackend, SklearnBackend, load_backend
from .registry import ChecksumMismatch, ModelCard, ModelNotFound, Registry, RegistryError

__all__ = [
    "BackendError",
    "ChecksumMismatch",
    "ModelCard",
    "ModelNotFound",
    "Registry",
    "RegistryError",
    "ScoringBackend",
    "SklearnBackend",
    "load_backend",
]
