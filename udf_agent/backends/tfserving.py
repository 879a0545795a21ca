"""Score through TensorFlow Serving: ``PredictionService.Predict`` over gRPC, or REST.

One ``Predict`` call per micro-batch, the rows packed as little-endian float32
``tensor_content``; one channel per backend, reused; a deadline on every call; one retry
for ``UNAVAILABLE``/``DEADLINE_EXCEEDED`` inside the same deadline budget; and a circuit
breaker that fails fast after repeated failures and probes again after a cool-down.

Start-up checks ``GetModelMetadata`` (``signature_def``) against the card's ``serving``
section: a different signature, tensor name, dtype or shape fails ``from_card`` with
``SignatureMismatch``. When the server is unreachable at start-up the backend still
starts, with its breaker open: batches go to the agent's fallback model until the
half-open probe reaches the server, and that probe repeats the metadata check first.

Importing this module does not import TensorFlow: the request and response messages
are built from a committed descriptor (``tfserving_apis.proto``), wire-identical to
``tensorflow_serving.apis``, whose modules would pull in all of TensorFlow.
Importing registers the backend kinds ``tf`` and ``tfserving`` with
``models.backends.load_backend``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.backends import BackendError, ScoringBackend, register_backend_kind
from models.registry import ModelCard, Registry

from .errors import BackendUnavailable, CircuitOpen, SignatureMismatch

__all__ = [
    "CircuitBreaker",
    "GrpcTransport",
    "RestTransport",
    "ServingSpec",
    "TFServingBackend",
    "TFServingConfig",
]

log = logging.getLogger("udf_agent.backends.tfserving")

#: gRPC codes worth one retry inside the deadline budget
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
#: rows per request above which a batch is split (TF Serving's default gRPC receive
#: limit is 4 MiB; 16384 rows x 30 float32 = 1.9 MiB)
MAX_ROWS_PER_REQUEST = 16_384
#: do not start a retry with less than this left of the deadline budget (seconds)
MIN_RETRY_BUDGET = 0.005
#: gRPC service config of the channel: client-side round_robin over every address the
#: target resolves to. With ``dns:///tfserving:8500`` and a headless Service, each TF
#: Serving replica gets its share of the calls (pick_first, gRPC's default, would send
#: them all to one); a target with a single address behaves as before.
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


# -- configuration -------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TFServingConfig:
    """How to reach TF Serving (times in seconds)."""

    target: str = "localhost:8500"
    rest_url: str | None = None
    transport: str = "grpc"
    timeout: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    max_rows_per_request: int = MAX_ROWS_PER_REQUEST

    def __post_init__(self) -> None:
        if self.transport not in ("grpc", "rest"):
            raise BackendError(
                f"tfserving transport must be 'grpc' or 'rest', not {self.transport!r}"
            )
        if self.transport == "rest" and not self.rest_url:
            raise BackendError("tfserving transport 'rest' needs a REST URL (--tfserving-rest-url)")
        if not self.timeout > 0:
            raise BackendError(f"tfserving timeout must be > 0 seconds, not {self.timeout!r}")
        if self.breaker_failures < 1 or self.breaker_cooldown < 0:
            raise BackendError("tfserving breaker needs failures >= 1 and cooldown >= 0")


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """What to call and what the signature must look like (from the card's ``serving``)."""

    model_name: str
    version: int | None
    version_label: str | None
    signature_name: str
    input_name: str
    input_dtype: str
    input_shape: tuple[int, ...]
    output_name: str
    output_dtype: str | None
    output_shape: tuple[int, ...] | None

    @classmethod
    def from_card(cls, card: ModelCard) -> ServingSpec:
        s = card.serving
        inputs = dict(s.get("inputs") or {})
        outputs = dict(s.get("outputs") or {})
        where = f"model card {card.name} v{card.version}"
        if not s:
            raise BackendError(
                f"{where} (framework {card.framework}) has no serving section, so TF Serving "
                "cannot score it; train it with `python -m models train-tf`"
            )
        if len(inputs) != 1:
            raise BackendError(
                f"{where}: serving.inputs must name exactly one tensor, got {list(inputs)}"
            )
        if not outputs:
            raise BackendError(f"{where}: serving.outputs names no output tensor")
        if len(outputs) > 1 and "score" not in outputs:
            raise BackendError(f"{where}: serving.outputs has several tensors and none is 'score'")
        ((in_name, in_info),) = inputs.items()
        out_name = "score" if "score" in outputs else next(iter(outputs))
        out_info = outputs[out_name] or {}
        label = s.get("version_label")
        version = s.get("version")
        if label is None and version is None:
            version = card.version  # the registry version is the TF Serving version
        shape = tuple(int(d) for d in in_info.get("shape", [-1, len(card.features)]))
        if len(shape) != 2 or shape[1] != len(card.features):
            raise BackendError(
                f"{where}: serving input {in_name!r} shape {list(shape)} does not fit "
                f"{len(card.features)} features"
            )
        return cls(
            model_name=str(s.get("model_name") or card.name),
            version=None if label is not None else int(version),
            version_label=str(label) if label is not None else None,
            signature_name=str(s.get("signature_name") or "serving_default"),
            input_name=str(in_name),
            input_dtype=str(in_info.get("dtype", "DT_FLOAT")),
            input_shape=shape,
            output_name=str(out_name),
            output_dtype=out_info.get("dtype"),
            output_shape=tuple(int(d) for d in out_info["shape"]) if "shape" in out_info else None,
        )

    @property
    def describe(self) -> str:
        pin = f"label {self.version_label}" if self.version_label else f"v{self.version}"
        return f"{self.model_name} {pin} signature {self.signature_name!r}"


# -- circuit breaker -------------------------------------------------------------------
class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; after ``cooldown`` seconds one
    caller is let through as a half-open probe: success closes, failure re-opens."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self.opened = 0  # times it opened

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state}, failures={self.failures}, cooldown={self.cooldown}s)"

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May a call go out now? While open, only the first caller after the cool-down
        gets True (the probe); the rest fail fast until the probe reports."""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown:
                self._state = self.HALF_OPEN
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._state = self.CLOSED

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == self.HALF_OPEN or (
                self._state == self.CLOSED and self._consecutive >= self.failures
            ):
                self._trip()

    def force_open(self) -> None:
        with self._lock:
            self._trip()

    def _trip(self) -> None:
        self._state = self.OPEN
        self._opened_at = self._clock()
        self.opened += 1

    def retry_in(self) -> float:
        """Seconds until the next probe may go out (0 when not open)."""
        with self._lock:
            if self._state != self.OPEN:
                return 0.0
            return max(0.0, self.cooldown - (self._clock() - self._opened_at))


# -- tensors -------------------------------------------------------------------------
def _signature_from_json(sig: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one signature (REST metadata JSON) to ``{"inputs": {name: {dtype, shape}}}``."""

    def tensors(block: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for key, info in (block or {}).items():
            shape_info = info.get("tensor_shape") or {}
            shape = (
                None
                if shape_info.get("unknown_rank")
                else [int(d.get("size", -1)) for d in shape_info.get("dim", [])]
            )
            out[key] = {"dtype": info.get("dtype", "DT_INVALID"), "shape": shape}
        return out

    return {"inputs": tensors(sig.get("inputs")), "outputs": tensors(sig.get("outputs"))}


class GrpcTransport:
    """``PredictionService`` over one reused gRPC channel.

    ``target`` is any gRPC target: ``host:port``, ``dns:///host:port`` (every address the
    name resolves to, e.g. a headless Service's pods) or ``ipv4:a:p,b:p``; calls are spread
    over the resolved addresses with round_robin (``ROUND_ROBIN_SERVICE_CONFIG``).
    """

    name = "grpc"

    def __init__(
        self,
        target: str,
        *,
        reconnect_backoff: float = 5.0,
        channel_options: list[tuple[str, Any]] | None = None,
    ) -> None:
        import grpc

        from . import _tfs_messages as m

        self._grpc = grpc
        self._m = m
        self.target = target
        backoff_ms = int(reconnect_backoff * 1000)
        self._channel = grpc.insecure_channel(
            target,
            options=channel_options
            or [
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC's reconnect backoff grows to 120 s by default; while it waits every
                # call fails at once, so a server back up would stay unused long after the
                # breaker's probe. Cap it at the breaker's cool-down.
                ("grpc.initial_reconnect_backoff_ms", max(50, min(1000, backoff_ms))),
                ("grpc.max_reconnect_backoff_ms", max(100, backoff_ms)),
                ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
            ],
        )
        self._predict = self._channel.unary_unary(
            m.PREDICT_METHOD,
            request_serializer=m.PredictRequest.SerializeToString,
            response_deserializer=m.PredictResponse.FromString,
        )
        self._metadata = self._channel.unary_unary(
            m.GET_MODEL_METADATA_METHOD,
            request_serializer=m.GetModelMetadataRequest.SerializeToString,
            response_deserializer=m.GetModelMetadataResponse.FromString,
        )

    def __repr__(self) -> str:
        return f"GrpcTransport({self.target!r})"

    def _spec(self, msg, spec: ServingSpec, with_signature: bool = True) -> None:
        msg.name = spec.model_name
        if spec.version_label is not None:
            msg.version_label = spec.version_label
        elif spec.version is not None:
            msg.version.value = spec.version
        if with_signature:
            msg.signature_name = spec.signature_name

    def _call(self, fn, request, timeout: float, *, wait_for_ready: bool = False):
        try:
            return fn(request, timeout=timeout, wait_for_ready=wait_for_ready)
        except self._grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") and exc.code() else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise BackendUnavailable(f"{code}: {details}", code=code) from exc

    def signatures(self, spec: ServingSpec, timeout: float) -> dict[str, dict[str, Any]]:
        m = self._m
        req = m.GetModelMetadataRequest()
        self._spec(req.model_spec, spec, with_signature=False)
        req.metadata_field.append("signature_def")
        # Wait for the connection within the deadline: the server may be starting up.
        resp = self._call(self._metadata, req, timeout, wait_for_ready=True)
        anyv = resp.metadata.get("signature_def")
        if anyv is None or not anyv.type_url.endswith("tensorflow.serving.SignatureDefMap"):
            raise BackendError(f"GetModelMetadata for {spec.describe} returned no signature_def")
        sig_map = m.SignatureDefMap.FromString(anyv.value)
        out: dict[str, dict[str, Any]] = {}
        for sname, sig in sig_map.signature_def.items():
            entry: dict[str, Any] = {}
            for side in ("inputs", "outputs"):
                entry[side] = {
                    key: {
                        "dtype": m.dtype_name(info.dtype),
                        "shape": None
                        if info.tensor_shape.unknown_rank
                        else [int(d.size) for d in info.tensor_shape.dim],
                    }
                    for key, info in getattr(sig, side).items()
                }
            out[sname] = entry
        return out

    def predict(self, spec: ServingSpec, X32: np.ndarray, timeout: float) -> np.ndarray:
        m = self._m
        req = m.PredictRequest()
        self._spec(req.model_spec, spec)
        t = req.inputs[spec.input_name]
        t.dtype = m.DT_FLOAT
        for d in X32.shape:
            t.tensor_shape.dim.add().size = int(d)
        t.tensor_content = X32.astype("<f4", copy=False).tobytes()
        req.output_filter.append(spec.output_name)
        resp = self._call(self._predict, req, timeout)
        if spec.output_name not in resp.outputs:
            raise BackendError(
                f"Predict for {spec.describe} returned outputs {sorted(resp.outputs)}, "
                f"not {spec.output_name!r}"
            )
        return _tensor_to_array(resp.outputs[spec.output_name], m)

    def close(self) -> None:
        self._channel.close()


def _tensor_to_array(t, m) -> np.ndarray:
    if t.dtype == m.DT_FLOAT:
        arr = (
            np.frombuffer(t.tensor_content, dtype="<f4")
            if t.tensor_content
            else np.asarray(t.float_val, dtype=np.float32)
        )
    elif t.dtype == m.DT_DOUBLE:
        arr = (
            np.frombuffer(t.tensor_content, dtype="<f8")
            if t.tensor_content
            else np.asarray(t.double_val, dtype=np.float64)
        )
    else:
        raise BackendError(
            f"TF Serving returned a {m.dtype_name(t.dtype)} score tensor, expected DT_FLOAT"
        )
    return arr.astype(np.float64)


class RestTransport:
    """TF Serving's REST API (``:8501``) through one reused HTTP session."""

    name = "rest"

    def __init__(self, base_url: str, *, session: Any = None) -> None:
        import requests

        self._requests = requests
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"RestTransport({self.base_url!r})"

    def _model_url(self, spec: ServingSpec) -> str:
        url = f"{self.base_url}/v1/models/{spec.model_name}"
        if spec.version_label is not None:
            url += f"/labels/{spec.version_label}"
        elif spec.version is not None:
            url += f"/versions/{spec.version}"
        return url

    def _request(self, method: str, url: str, timeout: float, **kw: Any) -> Any:
        r = self._requests
        try:
            resp = self._session.request(method, url, timeout=timeout, **kw)
        except r.Timeout as exc:
            raise BackendUnavailable(f"DEADLINE_EXCEEDED: {url}", code="DEADLINE_EXCEEDED") from exc
        except r.ConnectionError as exc:
            raise BackendUnavailable(f"UNAVAILABLE: {url}: {exc}", code="UNAVAILABLE") from exc
        except r.RequestException as exc:
            raise BackendUnavailable(f"UNKNOWN: {url}: {exc}") from exc
        if resp.status_code != 200:
            code = {
                404: "NOT_FOUND",
                400: "INVALID_ARGUMENT",
                503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED",
            }.get(resp.status_code, "UNKNOWN")
            try:
                body = resp.json()
            except ValueError:
                body = None
            # TF Serving answers {"error": "..."}; a proxy in front may answer anything.
            detail = body.get("error", resp.text) if isinstance(body, dict) else resp.text
            raise BackendUnavailable(
                f"{code}: HTTP {resp.status_code}: {str(detail)[:200]}", code=code
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise BackendError(f"TF Serving REST answered non-JSON from {url}") from exc
        if not isinstance(body, dict):
            raise BackendError(
                f"TF Serving REST answered a JSON {type(body).__name__}, not an object, from {url}"
            )
        return body

    def signatures(self, spec: ServingSpec, timeout: float) -> dict[str, dict[str, Any]]:
        body = self._request("GET", self._model_url(spec) + "/metadata", timeout)
        sigs = ((body.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
        return {name: _signature_from_json(sig) for name, sig in sigs.items()}

    def predict(self, spec: ServingSpec, X32: np.ndarray, timeout: float) -> np.ndarray:
        payload = {"signature_name": spec.signature_name, "inputs": {spec.input_name: X32.tolist()}}
        body = self._request("POST", self._model_url(spec) + ":predict", timeout, json=payload)
        outputs = body.get("outputs")
        if isinstance(outputs, Mapping):  # several outputs: keyed by name
            outputs = outputs.get(spec.output_name)
        if outputs is None:
            raise BackendError(f"REST predict for {spec.describe} returned no {spec.output_name!r}")
        return np.asarray(outputs, dtype=np.float64).reshape(-1)

    def close(self) -> None:
        self._session.close()


# -- the backend -----------------------------------------------------------------------
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
        cls,
        registry: Registry,
        card: ModelCard,
        *,
        tfserving_target: str | None = None,
        tfserving_rest_url: str | None = None,
        tfserving_transport: str | None = None,
        tfserving_timeout: float | None = None,
        tfserving_breaker_failures: int | None = None,
        tfserving_breaker_cooldown: float | None = None,
        **_ignored: Any,
    ) -> TFServingBackend:
        """Build, connect and check the served signature (agent flags as keywords)."""
        defaults = TFServingConfig()
        config = TFServingConfig(
            target=tfserving_target or defaults.target,
            rest_url=tfserving_rest_url,
            transport=tfserving_transport or defaults.transport,
            timeout=float(tfserving_timeout) if tfserving_timeout else defaults.timeout,
            breaker_failures=int(tfserving_breaker_failures or defaults.breaker_failures),
            breaker_cooldown=float(
                defaults.breaker_cooldown
                if tfserving_breaker_cooldown is None
                else tfserving_breaker_cooldown
            ),
        )
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
                config.breaker_cooldown,
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
    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise BackendError(
                f"expected a (n, {len(self.feature_names)}) batch, got shape {list(X.shape)}"
            )
        if len(X) == 0:
            return np.empty(0, dtype=np.float64)
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

    def close(self) -> None:
        self.transport.close()


def _factory(registry: Registry, card: ModelCard, **options: Any) -> TFServingBackend:
    return TFServingBackend.from_card(registry, card, **options)


register_backend_kind("tfserving", _factory)
register_backend_kind("tf", _factory)
