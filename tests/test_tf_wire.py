"""The backend's wire messages against the official tensorflow-serving-api ones, and the
light import path (no TensorFlow in the agent process)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require_module

from models.backends.tfserving import messages as wire

# slow: importing TensorFlow for the official descriptors takes seconds
pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def official():
    require_module("tensorflow_serving")
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2

    return {
        "TensorShapeProto": tensor_shape_pb2.TensorShapeProto,
        "TensorShapeProto.Dim": tensor_shape_pb2.TensorShapeProto.Dim,
        "TensorProto": tensor_pb2.TensorProto,
        "ModelSpec": model_pb2.ModelSpec,
        "PredictRequest": predict_pb2.PredictRequest,
        "PredictResponse": predict_pb2.PredictResponse,
        "TensorInfo": meta_graph_pb2.TensorInfo,
        "SignatureDef": meta_graph_pb2.SignatureDef,
        "SignatureDefMap": get_model_metadata_pb2.SignatureDefMap,
        "GetModelMetadataRequest": get_model_metadata_pb2.GetModelMetadataRequest,
        "GetModelMetadataResponse": get_model_metadata_pb2.GetModelMetadataResponse,
        "DataType": types_pb2.DataType,
    }


def _ours(name: str):
    return wire.pool.FindMessageTypeByName(f"tensorflow.serving.{name}")


@pytest.mark.parametrize(
    "name",
    [
        "TensorShapeProto",
        "TensorShapeProto.Dim",
        "TensorProto",
        "ModelSpec",
        "PredictRequest",
        "PredictResponse",
        "TensorInfo",
        "SignatureDef",
        "SignatureDefMap",
        "GetModelMetadataRequest",
        "GetModelMetadataResponse",
    ],
)
def test_every_field_matches_the_official_descriptor(official, name):
    theirs = {f.name: f for f in official[name].DESCRIPTOR.fields}
    ours = _ours(name)
    assert ours.fields, name
    for f in ours.fields:
        assert f.name in theirs, f"{name}.{f.name} is not in the official message"
        t = theirs[f.name]
        assert (f.number, f.type) == (t.number, t.type), f"{name}.{f.name}"
        assert f.is_repeated == t.is_repeated, f"{name}.{f.name}"
        if f.message_type is not None:
            assert f.message_type.name == t.message_type.name
        if f.containing_oneof is not None:
            assert t.containing_oneof is not None
            assert f.containing_oneof.name == t.containing_oneof.name


def test_data_type_numbers_match(official):
    enum = wire.pool.FindEnumTypeByName("tensorflow.serving.DataType")
    for v in enum.values:
        assert official["DataType"].Value(v.name) == v.number


def test_predict_request_bytes_parse_as_the_official_message(official):
    import tensorflow as tf

    X = np.random.default_rng(0).normal(size=(7, 30))
    req = wire.PredictRequest()
    req.model_spec.name = "creditcard_tf"
    req.model_spec.version.value = 3
    req.model_spec.signature_name = "serving_default"
    t = req.inputs["features"]
    t.dtype = wire.DT_FLOAT
    for d in X.shape:
        t.tensor_shape.dim.add().size = d
    t.tensor_content = X.astype("<f4").tobytes()
    parsed = official["PredictRequest"].FromString(req.SerializeToString())
    assert parsed.model_spec.name == "creditcard_tf"
    assert parsed.model_spec.WhichOneof("version_choice") == "version"
    assert parsed.model_spec.version.value == 3
    np.testing.assert_array_equal(tf.make_ndarray(parsed.inputs["features"]), X.astype(np.float32))


def test_official_response_and_metadata_parse_with_ours(official):
    import tensorflow as tf

    scores = np.linspace(0, 1, 11, dtype=np.float32)
    resp = official["PredictResponse"]()
    resp.outputs["score"].CopyFrom(tf.make_tensor_proto(scores))
    ours = wire.PredictResponse.FromString(resp.SerializeToString())
    np.testing.assert_array_equal(
        np.frombuffer(ours.outputs["score"].tensor_content, "<f4"), scores
    )

    md = official["GetModelMetadataResponse"]()
    sig_map = official["SignatureDefMap"]()
    info = sig_map.signature_def["serving_default"].inputs["features"]
    info.name = "serving_default_features:0"
    info.dtype = 1
    info.tensor_shape.dim.add().size = -1
    info.tensor_shape.dim.add().size = 30
    md.metadata["signature_def"].Pack(sig_map)
    ours_md = wire.GetModelMetadataResponse.FromString(md.SerializeToString())
    anyv = ours_md.metadata["signature_def"]
    assert anyv.type_url == wire.SIGNATURE_DEF_MAP_TYPE_URL
    got = wire.SignatureDefMap.FromString(anyv.value).signature_def["serving_default"]
    assert got.inputs["features"].name == "serving_default_features:0"
    assert [d.size for d in got.inputs["features"].tensor_shape.dim] == [-1, 30]


def test_committed_descriptor_is_up_to_date():
    require_module("grpc_tools")
    # protoc runs in a child process: its bundled protobuf and TensorFlow's (loaded by
    # other tests in this process) must not share an address space.
    code = (
        "from models.backends.tfserving import _generate\n"
        "from models.backends.tfserving._descriptor import SERIALIZED_FILE_DESCRIPTOR_SET as S\n"
        "print(_generate.compile_descriptor() == S)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True", "run make proto"


def test_importing_the_backend_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from models.backends import serving_factory\n"
        "from models.backends.tfserving import TFServingConfig\n"
        "factory = serving_factory(TFServingConfig())\n"
        "assert {'sklearn', 'savedmodel', 'tfserving'} == set(factory.kinds()), factory\n"
        "print(sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
