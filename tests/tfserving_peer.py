"""An in-process TensorFlow Serving peer for tests and benchmarks.

TF Serving itself cannot run here, so this serves the real exported SavedModels the way
``tensorflow_model_server --model_base_path=<serving_dir>/<name>`` does, through the
official generated ``PredictionService`` servicer (gRPC) and the documented REST API:

- every integer version directory under ``<serving_dir>/<name>/`` is loaded with
  ``tf.saved_model.load``; a request without a version gets the latest; a pinned
  ``version`` or ``version_label`` that is not loaded answers ``NOT_FOUND``;
- ``Predict`` converts the input ``TensorProto`` with ``tf.make_ndarray``, calls the
  named signature and answers ``tf.make_tensor_proto`` outputs;
- ``GetModelMetadata`` (``signature_def``) answers the SavedModel's own SignatureDefs
  read from ``saved_model.pb``, packed in ``Any`` as TF Serving does.

Faults for tests: ``stall`` (seconds every call sleeps first), ``fail_code`` (a gRPC
status code every call answers), ``stop()``. Counters: ``predict_requests``,
``metadata_requests``, ``rows``.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from http_serving import serve_in_thread
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

__all__ = ["ServedModel", "TFServingPeer"]


class PeerError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ServedModel:
    """One loaded version: the callable signatures and their SignatureDef protos."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.loaded = tf.saved_model.load(str(path))
        sm = saved_model_pb2.SavedModel.FromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = sm.meta_graphs[0].signature_def


class TFServingPeer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Serve ``serving_dir/<name>/<version>/`` SavedModels over gRPC (and REST on demand)."""

    def __init__(
        self,
        serving_dir: Path,
        *,
        labels: dict[str, dict[str, int]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 8,
    ) -> None:
        self.serving_dir = Path(serving_dir)
        self.models: dict[str, dict[int, ServedModel]] = {}
        for model_dir in sorted(p for p in self.serving_dir.iterdir() if p.is_dir()):
            versions = {
                int(v.name): ServedModel(v)
                for v in model_dir.iterdir()
                if v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file()
            }
            if versions:
                self.models[model_dir.name] = versions
        self._initial_labels = dict(labels or {})
        self.labels = dict(self._initial_labels)
        self.stall = 0.0
        self.fail_code: grpc.StatusCode | None = None
        self.predict_requests = 0
        self.metadata_requests = 0
        self.rows = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, self._server)
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.target = f"{host}:{self.port}"
        self._rest: ThreadingHTTPServer | None = None
        self.rest_url: str | None = None
        self._rest_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> TFServingPeer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._released.set()  # wake stalled handlers
        self._server.stop(grace=0).wait(5)
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest_thread.join(5)  # type: ignore[union-attr]
            self._rest = None

    def reset(self) -> None:
        with self._lock:
            self._released.set()  # wake handlers still stalled by a previous test
            self._released = threading.Event()
            self.stall = 0.0
            self.fail_code = None
            self.labels = dict(self._initial_labels)
            self.predict_requests = self.metadata_requests = self.rows = 0

    def start_rest(self) -> str:
        """Start the REST API on a free loopback port; returns its base URL."""
        peer = self

        class Handler(_RestHandler):
            pass

        Handler.peer = peer
        self._rest = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._rest.daemon_threads = True
        self._rest_thread = serve_in_thread(self._rest)
        self.rest_url = f"http://127.0.0.1:{self._rest.server_address[1]}"
        return self.rest_url

    # -- model resolution, as TF Serving does it ------------------------------------
    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[int, ServedModel]:
        versions = self.models.get(name)
        if not versions:
            raise PeerError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        if label:
            if label not in self.labels.get(name, {}):
                raise PeerError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Unrecognized servable version label: {label}",
                )
            version = self.labels[name][label]
        if version is None:
            version = max(versions)
        if version not in versions:
            raise PeerError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        return version, versions[version]

    def _spec_of(self, model_spec) -> tuple[int, ServedModel]:
        which = model_spec.WhichOneof("version_choice")
        return self.resolve(
            model_spec.name,
            model_spec.version.value if which == "version" else None,
            model_spec.version_label if which == "version_label" else None,
        )

    def _faults(self) -> None:
        if self.stall:
            self._released.wait(self.stall)
        if self.fail_code is not None:
            raise PeerError(self.fail_code, "injected failure")

    def run(self, served: ServedModel, signature: str, inputs: dict[str, np.ndarray]):
        signature = signature or "serving_default"
        if signature not in served.loaded.signatures:
            raise PeerError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature}" not found.',
            )
        fn = served.loaded.signatures[signature]
        expected = set(fn.structured_input_signature[1])
        if set(inputs) != expected:
            raise PeerError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input keys {sorted(inputs)} do not match signature inputs {sorted(expected)}",
            )
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as exc:
            raise PeerError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        return {k: v.numpy() for k, v in out.items()}

    # -- gRPC ------------------------------------------------------------------------
    def Predict(self, request, context):
        with self._lock:
            self.predict_requests += 1
        try:
            self._faults()
            version, served = self._spec_of(request.model_spec)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.run(served, request.model_spec.signature_name, inputs)
        except PeerError as exc:
            context.abort(exc.code, str(exc))
        with self._lock:
            self.rows += len(next(iter(inputs.values())))
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = request.model_spec.name
        resp.model_spec.version.value = version
        resp.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        wanted = list(request.output_filter) or list(outputs)
        for key in wanted:
            if key not in outputs:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter {key} not found")
            resp.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return resp

    def GetModelMetadata(self, request, context):
        with self._lock:
            self.metadata_requests += 1
        try:
            self._faults()
            if list(request.metadata_field) != ["signature_def"]:
                raise PeerError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Metadata field signature_def must be the only field requested",
                )
            version, served = self._spec_of(request.model_spec)
        except PeerError as exc:
            context.abort(exc.code, str(exc))
        return self.metadata_response(request.model_spec.name, version, served)

    @staticmethod
    def metadata_response(name: str, version: int, served: ServedModel):
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        resp.model_spec.name = name
        resp.model_spec.version.value = version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in served.signature_defs.items():
            if key.startswith("__"):  # __saved_model_init_op is not a serving signature
                continue
            sig_map.signature_def[key].CopyFrom(sig)
        resp.metadata["signature_def"].Pack(sig_map)
        return resp


_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>:predict|/metadata)?$"
)


class _RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API: ``:predict`` (row ``instances`` or columnar ``inputs``) and
    ``/metadata``, with TF Serving's response shapes and ``{"error": ...}`` bodies."""

    peer: TFServingPeer
    protocol_version = "HTTP/1.1"
    # Buffer the response so headers and body leave in one segment (flushed after each
    # request); unbuffered writes meet Nagle + delayed ACK and add ~40 ms per call.
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        m = _URL.match(self.path)
        if not m:
            raise PeerError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.path}")
        version = int(m["version"]) if m["version"] else None
        v, served = self.peer.resolve(m["name"], version, m["label"])
        return m, v, served

    def _error(self, exc: PeerError) -> None:
        status = {
            grpc.StatusCode.NOT_FOUND: 404,
            grpc.StatusCode.INVALID_ARGUMENT: 400,
            grpc.StatusCode.FAILED_PRECONDITION: 400,
            grpc.StatusCode.UNAVAILABLE: 503,
        }.get(exc.code, 500)
        self._send(status, {"error": str(exc)})

    def do_GET(self) -> None:
        with self.peer._lock:
            self.peer.metadata_requests += 1
        try:
            self.peer._faults()
            m, version, served = self._route()
            if m["verb"] != "/metadata":
                raise PeerError(grpc.StatusCode.NOT_FOUND, "only /metadata is served on GET")
        except PeerError as exc:
            self._error(exc)
            return
        resp = self.peer.metadata_response(m["name"], version, served)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)
        self._send(
            200,
            {
                "model_spec": json_format.MessageToDict(resp.model_spec),
                "metadata": {
                    "signature_def": json_format.MessageToDict(
                        sig_map, preserving_proto_field_name=True
                    )
                },
            },
        )

    def do_POST(self) -> None:
        with self.peer._lock:
            self.peer.predict_requests += 1
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.peer._faults()
            m, _version, served = self._route()
            if m["verb"] != ":predict":
                raise PeerError(grpc.StatusCode.NOT_FOUND, "only :predict is served on POST")
            signature = body.get("signature_name", "serving_default")
            fn = served.loaded.signatures.get(signature)
            if fn is None:
                raise PeerError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f'Serving signature key "{signature}" not found.',
                )
            specs = fn.structured_input_signature[1]
            if "instances" in body:  # row format: one input → list of rows
                (key,) = specs
                inputs = {key: np.asarray(body["instances"], dtype=np.float32)}
                row_format = True
            else:
                inputs = {
                    k: np.asarray(v, dtype=specs[k].dtype.as_numpy_dtype)
                    for k, v in body["inputs"].items()
                }
                row_format = False
            outputs = self.peer.run(served, signature, inputs)
        except PeerError as exc:
            self._error(exc)
            return
        except (ValueError, KeyError) as exc:
            self._error(PeerError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)))
            return
        with self.peer._lock:
            self.peer.rows += len(next(iter(inputs.values())))
        lists = {k: v.tolist() for k, v in outputs.items()}
        if row_format:
            preds = (
                next(iter(lists.values()))
                if len(lists) == 1
                else [
                    dict(zip(lists, row, strict=True)) for row in zip(*lists.values(), strict=True)
                ]
            )
            self._send(200, {"predictions": preds})
        else:
            self._send(200, {"outputs": next(iter(lists.values())) if len(lists) == 1 else lists})


# -- a tiny registered model for tests and benchmarks ---------------------------------
class TinyBundle:
    """Two versions of a tiny Keras model, registered and exported for serving."""

    def __init__(self, root: Path, *, name: str = "creditcard_tf", rows: int = 1200) -> None:
        from models.contract import FEATURES
        from models.data import X_y, make_synthetic
        from models.registry import Registry
        from models.tf_keras import KerasConfig, register_keras_model, train_keras

        self.name = name
        self.feature_names = list(FEATURES)
        self.registry = Registry(Path(root) / "registry")
        self.serving_dir = Path(root) / "serving"
        X, y = X_y(make_synthetic(rows, seed=7))
        n_train, n_val = int(rows * 0.6), int(rows * 0.2)
        self.X_test = X[n_train + n_val :]
        self.models = {}
        self.cards = {}
        for seed in (1, 2):
            config = KerasConfig(hidden=(16, 8), epochs=2, batch_size=256, seed=seed)
            model, _ = train_keras(
                X[:n_train],
                y[:n_train],
                X[n_train : n_train + n_val],
                y[n_train : n_train + n_val],
                config,
            )
            card = register_keras_model(
                self.registry, name, model, threshold=0.5, serving_dir=self.serving_dir
            )
            self.models[card.version] = model
            self.cards[card.version] = card
        self.registry.promote(name, "2", "production")

    def keras_scores(self, version: str, X: np.ndarray) -> np.ndarray:
        """The Keras model's own predictions, float64 ``(n,)``."""
        out = self.models[version].predict(np.asarray(X, dtype=np.float32), verbose=0)
        return np.asarray(out, dtype=np.float64).reshape(-1)


_BUNDLES: dict[str, TinyBundle] = {}


def tiny_bundle(root: Path) -> TinyBundle:
    """Train once per process (tests in several modules share it)."""
    key = "default"
    if key not in _BUNDLES:
        _BUNDLES[key] = TinyBundle(Path(root))
    return _BUNDLES[key]
