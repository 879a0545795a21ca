"""Message classes for TF Serving's gRPC API, built from the committed descriptor.

The classes live in a private descriptor pool, so the official ``tensorflow_serving``
modules can be imported in the same process without a duplicate-symbol clash.
"""

from __future__ import annotations

from models.proto import message_class, private_pool

from ._descriptor import SERIALIZED_FILE_DESCRIPTOR_SET

__all__ = [
    "DT_DOUBLE",
    "DT_FLOAT",
    "GET_MODEL_METADATA_METHOD",
    "PREDICT_METHOD",
    "SIGNATURE_DEF_MAP_TYPE_URL",
    "GetModelMetadataRequest",
    "GetModelMetadataResponse",
    "ModelSpec",
    "PredictRequest",
    "PredictResponse",
    "SignatureDefMap",
    "TensorProto",
    "dtype_name",
    "dtype_value",
    "pool",
]

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

pool = private_pool(SERIALIZED_FILE_DESCRIPTOR_SET)


def _cls(name: str):
    return message_class(pool, f"tensorflow.serving.{name}")


TensorProto = _cls("TensorProto")
ModelSpec = _cls("ModelSpec")
PredictRequest = _cls("PredictRequest")
PredictResponse = _cls("PredictResponse")
SignatureDefMap = _cls("SignatureDefMap")
GetModelMetadataRequest = _cls("GetModelMetadataRequest")
GetModelMetadataResponse = _cls("GetModelMetadataResponse")

_DTYPE = pool.FindEnumTypeByName("tensorflow.serving.DataType")
DT_FLOAT = _DTYPE.values_by_name["DT_FLOAT"].number
DT_DOUBLE = _DTYPE.values_by_name["DT_DOUBLE"].number


def dtype_name(value: int) -> str:
    """``1`` → ``"DT_FLOAT"``; unknown numbers as ``"DT_<n>"``."""
    v = _DTYPE.values_by_number.get(value)
    return v.name if v is not None else f"DT_{value}"


def dtype_value(name: str) -> int:
    """``"DT_FLOAT"`` → ``1``; raises KeyError for names outside the subset."""
    return _DTYPE.values_by_name[name].number
