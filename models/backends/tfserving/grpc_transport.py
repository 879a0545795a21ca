"""TF Serving's ``PredictionService`` over gRPC: one reused channel, round_robin over every
address the target resolves to."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ...errors import BackendError, BackendUnavailable
from .spec import ServingSpec

__all__ = ["ROUND_ROBIN_SERVICE_CONFIG", "GrpcTransport"]

#: gRPC service config of the channel: client-side round_robin over every address the
#: target resolves to. With ``dns:///tfserving:8500`` and a headless Service, each TF
#: Serving replica gets its share of the calls (pick_first, gRPC's default, would send
#: them all to one); a target with a single address behaves as before.
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


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

        from . import messages as m

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
