"""Regenerate ``_descriptor.py`` from ``tfserving_apis.proto`` (``make proto``).

The backend builds its message classes from the committed descriptor in a private pool
(``messages.py``), so it needs neither TensorFlow (whose ``tensorflow_serving.apis``
modules import all of TensorFlow, several seconds and hundreds of MB) nor a particular
protobuf version.
"""

from __future__ import annotations

from pathlib import Path

from models import proto

HERE = Path(__file__).resolve().parent
PROTO = HERE / "tfserving_apis.proto"


def compile_descriptor() -> bytes:
    """The descriptor set of ``tfserving_apis.proto`` with the files it imports."""
    return proto.compile_descriptor(PROTO, include_imports=True)


def main() -> int:
    proto.write_module(
        PROTO,
        HERE / "_descriptor.py",
        generator="models/backends/tfserving/_generate.py",
        include_imports=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
