"""Message classes from a committed, serialized descriptor set, in a private pool.

A private pool keeps our copies of Kapacitor's ``agent`` package and of TF Serving's
messages from clashing with other copies imported in the same process (e.g. the official
``tensorflow_serving`` modules), and building classes at import time works with every
protobuf runtime from 4.21 on.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

try:  # protobuf >= 4.21
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # pragma: no cover - very old runtimes
    from google.protobuf.message_factory import MessageFactory

    _message_class = MessageFactory().GetPrototype  # type: ignore[assignment]

__all__ = ["message_class", "private_pool"]


def private_pool(serialized_file_descriptor_set: bytes) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    fds = descriptor_pb2.FileDescriptorSet.FromString(serialized_file_descriptor_set)
    for file in fds.file:
        pool.Add(file)
    return pool


def message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> type:
    return _message_class(pool.FindMessageTypeByName(full_name))
