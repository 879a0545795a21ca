"""The TF Serving backend: one ``Predict`` call per batch, the rows packed as
little-endian float32 ``tensor_content``; a deadline on every call; one retry for
``UNAVAILABLE``/``DEADLINE_EXCEEDED`` inside the same deadline budget; and a circuit
breaker that fails fast after repeated failures and probes again after a cool-down.

Start-up checks ``GetModelMetadata`` (``signature_def``) against the card's ``serving``
section: a different signature, tensor name, dtype or shape fails ``from_card`` with
``SignatureMismatch``. When the server is unreachable at start-up the backend still
starts, with its breaker open: batches fail fast (the agent scores them with its fallback
model) until the half-open probe reaches the server, and that probe repeats the metadata
check first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...card import ModelCard
from ...errors import BackendError, BackendUnavailable, CircuitOpen, SignatureMismatch
from ...registry import Registry
from ..base import ScoringBackend
from .breaker import CircuitBreaker
from .config import MIN_RETRY_BUDGET, RETRYABLE, TFServingConfig
from .grpc_transport import GrpcTransport
from .rest_transport import RestTransport
from .spec import ServingSpec

__all__ = ["TFServingBackend"]

log = logging.getLogger("models.backends.tfserving")


class TFServingBackend(ScoringBackend):
    """A registered TF model scored by a TF Serving instance."""

    kind = "tfserving"

    def __init__(
        self,
        card: ModelCard,
        *,
        config: TFServingConfig | None = None,
        transport: GrpcTransport | RestTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(card)
        self.config = config or TFServingConfig()
        self.spec = ServingSpec.from_card(card)
        self._clock = clock
        if transport is None:
            transport = (
                RestTransport(self.config.rest_url)  # type: ignore[arg-type]
                if self.config.transport == "rest"
                else GrpcTransport(
                    self.config.target, reconnect_backoff=self.config.breaker_cooldown
                )
            )
        self.transport = transport
        self.breaker = CircuitBreaker(
            failures=self.config.breaker_failures,
            cooldown=self.config.breaker_cooldown,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._counts = {
            "requests": 0,
            "rows": 0,
            "failures": 0,
            "retries": 0,
            "rejected": 0,
            "metadata_checks": 0,
        }
        self.metadata_verified = False
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"TFServingBackend({self.spec.describe} via {self.transport!r}, "
            f"breaker={self.breaker.state})"
        )

    @classmethod
    def from_card(
        cls, registry: Registry, card: ModelCard, *, config: TFServingConfig
    ) -> TFServingBackend:
        """Check the registered SavedModel (path, signature, sha256: TF Serving serves a
        copy of it), connect, and check the served signature against the card."""
        registry.verify(card)
        backend = cls(card, config=config)
        try:
            backend.check_metadata()
        except BackendUnavailable as exc:
            if exc.code not in RETRYABLE:
                backend.close()
                raise BackendError(
                    f"TF Serving at {backend._where} does not serve {backend.spec.describe}: {exc}"
                ) from exc
            # Unreachable: start anyway; the agent scores with its fallback until the
            # half-open probe reaches the server and passes this check.
            backend.breaker.force_open()
            backend.last_error = str(exc)
            log.warning(
                "tfserving_unreachable model=%s target=%s error=%r breaker=open retry_in=%.1fs",
                backend.spec.describe,
                backend._where,
                str(exc),
                backend.config.breaker_cooldown,
            )
        except BackendError:
            backend.close()
            raise
        return backend

    @property
    def _where(self) -> str:
        return self.config.rest_url if self.transport.name == "rest" else self.config.target  # type: ignore[return-value]

    # -- metadata ------------------------------------------------------------------
    def check_metadata(self, timeout: float | None = None) -> None:
        """Compare the served signature with the card; raise SignatureMismatch on a difference."""
        with self._lock:
            self._counts["metadata_checks"] += 1
        sigs = self.transport.signatures(self.spec, timeout or self.config.timeout)
        s = self.spec
        where = f"TF Serving model {s.describe} at {self._where}"
        mismatch = f"{where} does not match model card {self.card.name} v{self.card.version}"
        if s.signature_name not in sigs:
            served = ", ".join(sorted(sigs)) or "none"
            raise SignatureMismatch(
                f"{mismatch}: no signature {s.signature_name!r} (served: {served})"
            )
        sig = sigs[s.signature_name]
        problems = []
        inp = sig["inputs"].get(s.input_name)
        if inp is None:
            problems.append(
                f"no input {s.input_name!r} (inputs: {', '.join(sorted(sig['inputs']))})"
            )
        else:
            if inp["dtype"] != s.input_dtype:
                problems.append(
                    f"input {s.input_name!r} dtype {inp['dtype']}, card says {s.input_dtype}"
                )
            if inp["shape"] is not None and tuple(inp["shape"]) != s.input_shape:
                problems.append(
                    f"input {s.input_name!r} shape {inp['shape']}, card says {list(s.input_shape)}"
                )
        if len(sig["inputs"]) > 1:
            problems.append(f"signature takes {len(sig['inputs'])} inputs, the card names one")
        out = sig["outputs"].get(s.output_name)
        if out is None:
            problems.append(
                f"no output {s.output_name!r} (outputs: {', '.join(sorted(sig['outputs']))})"
            )
        else:
            if s.output_dtype and out["dtype"] != s.output_dtype:
                problems.append(
                    f"output {s.output_name!r} dtype {out['dtype']}, card says {s.output_dtype}"
                )
            if (
                s.output_shape is not None
                and out["shape"] is not None
                and tuple(out["shape"]) != s.output_shape
            ):
                problems.append(
                    f"output {s.output_name!r} shape {out['shape']}, card says {list(s.output_shape)}"
                )
        if problems:
            raise SignatureMismatch(f"{mismatch}: " + "; ".join(problems))
        self.metadata_verified = True
        log.info("tfserving_metadata_ok model=%s target=%s", s.describe, self._where)

    # -- scoring -------------------------------------------------------------------
    def _score(self, X: np.ndarray) -> np.ndarray:
        if not self.breaker.allow():
            with self._lock:
                self._counts["rejected"] += 1
            raise CircuitOpen(
                f"circuit open after repeated TF Serving failures (last: {self.last_error}); "
                f"next probe in {self.breaker.retry_in():.1f}s"
            )
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        deadline = self._clock() + self.config.timeout
        try:
            try:
                if not self.metadata_verified:  # start-up check postponed: server was down
                    self.check_metadata(timeout=self._remaining(deadline))
                step = self.config.max_rows_per_request
                parts = [
                    self._predict_with_retry(X32[i : i + step], deadline)
                    for i in range(0, len(X32), step)
                ]
            except BackendError:
                raise
            except Exception as exc:  # an unexpected error must still settle the breaker
                raise BackendError(f"TF Serving call failed: {type(exc).__name__}: {exc}") from exc
        except BackendError as exc:
            self.breaker.record_failure()
            with self._lock:
                self._counts["failures"] += 1
            self.last_error = str(exc)
            log.warning(
                "tfserving_failure model=%s rows=%d error=%r breaker=%s",
                self.spec.describe,
                len(X),
                str(exc),
                self.breaker.state,
            )
            raise
        self.breaker.record_success()
        scores = parts[0] if len(parts) == 1 else np.concatenate(parts)
        with self._lock:
            self._counts["rows"] += len(X)
        return scores

    def _remaining(self, deadline: float) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise BackendUnavailable(
                "DEADLINE_EXCEEDED: no time left in the deadline budget", code="DEADLINE_EXCEEDED"
            )
        return left

    def _predict_with_retry(self, X32: np.ndarray, deadline: float) -> np.ndarray:
        attempt = 0
        while True:
            with self._lock:
                self._counts["requests"] += 1
            try:
                out = self.transport.predict(self.spec, X32, self._remaining(deadline))
            except BackendUnavailable as exc:
                left = deadline - self._clock()
                if attempt == 0 and exc.code in RETRYABLE and left > MIN_RETRY_BUDGET:
                    attempt += 1
                    with self._lock:
                        self._counts["retries"] += 1
                    continue
                raise
            if out.shape != (len(X32),):
                raise BackendError(
                    f"TF Serving returned {out.size} scores for {len(X32)} rows "
                    f"(output {self.spec.output_name!r} shape {list(out.shape)})"
                )
            return out

    # -- introspection -------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for metrics: requests (RPCs incl. retries), rows scored, failed
        batches, retries, batches rejected while open, breaker state and opens."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["breaker_state"] = self.breaker.state
        out["breaker_opened"] = self.breaker.opened
        out["metadata_verified"] = self.metadata_verified
        out["transport"] = self.transport.name
        out["last_error"] = self.last_error
        return out

    def _close(self) -> None:
        self.transport.close()
