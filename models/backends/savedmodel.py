"""A registered TF model scored in-process from its checksummed SavedModel, through the
same signature TF Serving calls, so scoring needs TensorFlow (the ``tf`` extra) but no
TF Serving. TensorFlow is imported when a model is loaded, never at import time."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..card import ModelCard
from ..errors import BackendError
from ..registry import Registry
from .base import ScoringBackend

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "SIGNATURE_NAME", "SavedModelBackend", "tensorflow"]

#: the export format of ``models.tf_keras`` (and what a card's ``serving`` section names)
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "features"
OUTPUT_NAME = "score"


def tensorflow() -> Any:
    """The ``tensorflow`` module, or a BackendError saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError as exc:  # the optional extra
        raise BackendError(
            "TensorFlow is not installed; install the tf extra: pip install -e '.[tf]'"
        ) from exc
    return tf


class SavedModelBackend(ScoringBackend):
    """Scores through the SavedModel's serving signature."""

    kind = "savedmodel"

    def __init__(self, card: ModelCard, loaded: Any, signature: Any) -> None:
        super().__init__(card)
        self._loaded = loaded  # owns the variables the signature reads
        self._signature = signature
        spec = card.serving
        self._input = next(iter(spec.get("inputs") or {INPUT_NAME: None}))
        self._output = next(iter(spec.get("outputs") or {OUTPUT_NAME: None}))

    @classmethod
    def from_card(cls, registry: Registry, card: ModelCard) -> SavedModelBackend:
        tf = tensorflow()
        path = registry.verify(card)
        name = card.serving.get("signature_name", SIGNATURE_NAME)
        try:
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures[name]
        except KeyError as exc:
            raise BackendError(f"{path} has no signature {name!r}") from exc
        except Exception as exc:  # TF raises many types for a damaged SavedModel
            raise BackendError(f"cannot load {card.name} v{card.version}: {exc}") from exc
        return cls(card, loaded, signature)

    def _score(self, X: np.ndarray) -> np.ndarray:
        tf = tensorflow()
        out = self._signature(**{self._input: tf.constant(X.astype(np.float32))})
        return np.asarray(out[self._output].numpy(), dtype=np.float64).reshape(-1)

    def _close(self) -> None:
        self._signature = None
        self._loaded = None
