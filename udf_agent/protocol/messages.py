"""Message classes of the ``agent`` protobuf package, built from the committed descriptor.

Classes live in a private descriptor pool so that another copy of Kapacitor's
``agent`` package in the same process cannot clash with ours.
"""

from __future__ import annotations

from models.proto import message_class, private_pool

from ._descriptor import SERIALIZED_FILE_DESCRIPTOR_SET

__all__ = [
    "BATCH",
    "BOOL",
    "DOUBLE",
    "DURATION",
    "INT",
    "STREAM",
    "STRING",
    "VALUE_TYPE_NAMES",
    "BeginBatch",
    "EndBatch",
    "ErrorResponse",
    "InfoRequest",
    "InfoResponse",
    "InitRequest",
    "InitResponse",
    "KeepaliveRequest",
    "KeepaliveResponse",
    "Option",
    "OptionInfo",
    "OptionValue",
    "Point",
    "Request",
    "Response",
    "RestoreRequest",
    "RestoreResponse",
    "SnapshotRequest",
    "SnapshotResponse",
    "pool",
]

pool = private_pool(SERIALIZED_FILE_DESCRIPTOR_SET)


def _cls(name: str):
    return message_class(pool, f"agent.{name}")


InfoRequest = _cls("InfoRequest")
InfoResponse = _cls("InfoResponse")
OptionInfo = _cls("OptionInfo")
InitRequest = _cls("InitRequest")
Option = _cls("Option")
OptionValue = _cls("OptionValue")
InitResponse = _cls("InitResponse")
SnapshotRequest = _cls("SnapshotRequest")
SnapshotResponse = _cls("SnapshotResponse")
RestoreRequest = _cls("RestoreRequest")
RestoreResponse = _cls("RestoreResponse")
KeepaliveRequest = _cls("KeepaliveRequest")
KeepaliveResponse = _cls("KeepaliveResponse")
ErrorResponse = _cls("ErrorResponse")
BeginBatch = _cls("BeginBatch")
Point = _cls("Point")
EndBatch = _cls("EndBatch")
Request = _cls("Request")
Response = _cls("Response")

_edge = pool.FindEnumTypeByName("agent.EdgeType").values_by_name
STREAM = _edge["STREAM"].number
BATCH = _edge["BATCH"].number

_vt = pool.FindEnumTypeByName("agent.ValueType").values_by_name
BOOL = _vt["BOOL"].number
INT = _vt["INT"].number
DOUBLE = _vt["DOUBLE"].number
STRING = _vt["STRING"].number
DURATION = _vt["DURATION"].number
VALUE_TYPE_NAMES = {v.number: name for name, v in _vt.items()}
