"""Scoring through TensorFlow Serving: ``PredictionService`` over gRPC, or its REST API.

Importing this package does not import TensorFlow: the request and response messages
are built from a committed descriptor (``tfserving_apis.proto``), wire-identical to
``tensorflow_serving.apis``, whose modules would pull in all of TensorFlow. gRPC is
imported when a gRPC transport is created.
"""

from __future__ import annotations

from .backend import TFServingBackend
from .breaker import CircuitBreaker
from .config import MAX_ROWS_PER_REQUEST, MIN_RETRY_BUDGET, RETRYABLE, TFServingConfig
from .grpc_transport import ROUND_ROBIN_SERVICE_CONFIG, GrpcTransport
from .rest_transport import RestTransport
from .spec import ServingSpec

__all__ = [
    "MAX_ROWS_PER_REQUEST",
    "MIN_RETRY_BUDGET",
    "RETRYABLE",
    "ROUND_ROBIN_SERVICE_CONFIG",
    "CircuitBreaker",
    "GrpcTransport",
    "RestTransport",
    "ServingSpec",
    "TFServingBackend",
    "TFServingConfig",
]
