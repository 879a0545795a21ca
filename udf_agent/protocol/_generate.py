"""Regenerate ``_descriptor.py`` from ``udf.proto`` (``make proto``).

The module holds the serialized ``FileDescriptorSet`` that protoc produced; message
classes are built from it at import time (``models.proto``). Unlike checked-in ``_pb2``
code, that works with every protobuf runtime from 4.21 to 7.x, so the agent never forces
a protobuf version on TensorFlow or anything else installed beside it.
"""

from __future__ import annotations

from pathlib import Path

from models import proto

HERE = Path(__file__).resolve().parent
PROTO = HERE / "udf.proto"


def compile_descriptor() -> bytes:
    """The descriptor set of ``udf.proto``."""
    return proto.compile_descriptor(PROTO)


def main() -> int:
    proto.write_module(
        PROTO,
        HERE / "_descriptor.py",
        generator="udf_agent/protocol/_generate.py",
        include_imports=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
