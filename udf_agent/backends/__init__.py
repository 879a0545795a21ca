"""Remote scoring backends of the agent (TF Serving). Imported lazily: nothing here is
loaded until a task asks for a ``tf``/``tfserving`` model."""

from __future__ import annotations

import importlib

__all__ = ["ensure_tfserving_registered"]


def ensure_tfserving_registered() -> None:
    """Register the ``tf`` and ``tfserving`` kinds with ``models.backends.load_backend``."""
    importlib.import_module("udf_agent.backends.tfserving")
