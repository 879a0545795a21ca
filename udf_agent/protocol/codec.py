"""Framing of the socket-UDF stream, without I/O.

Each message is preceded by its length as an unsigned protobuf varint. ``FrameDecoder``
turns received bytes into frame bodies; ``encode_frame`` does the reverse. The
``PointEncoder`` writes a scored point by appending the new map entries to the
incoming point's bytes: protobuf merges repeated map entries (last one wins), so the
emitted point keeps every byte of the original metadata (time, name, group,
dimensions, tags, byName, database, retentionPolicy) without re-encoding it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..errors import FrameTooLarge, MalformedFrame, TruncatedFrame

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FrameDecoder",
    "PointEncoder",
    "decode_varint",
    "encode_frame",
    "encode_varint",
    "point_payload",
]

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
_MAX_VARINT_BYTES = 10

# Tags of the oneof field `point` (17, length-delimited) in Request and Response.
_POINT_TAG = b"\x8a\x01"
# Point map fields (field number << 3 | 2).
_TAGS, _FIELDS_DOUBLE, _FIELDS_INT, _FIELDS_STRING, _FIELDS_BOOL = 0x3A, 0x42, 0x4A, 0x52, 0x62

_pack_double = struct.Struct("<d").pack


def encode_varint(value: int) -> bytes:
    """Unsigned varint; negative int64 values use their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Return ``(value, next_pos)``, or None when ``buf`` ends inside the varint.

    Raises MalformedFrame for a varint longer than 10 bytes.
    """
    result = 0
    shift = 0
    end = len(buf)
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            return None
        b = buf[pos + i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + i + 1
        shift += 7
    raise MalformedFrame("length prefix is not a valid varint (more than 10 bytes)")


def encode_frame(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


class FrameDecoder:
    """Incremental splitter of a byte stream into frame bodies."""

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def frames(self) -> Iterator[bytes]:
        """Yield every complete frame body buffered so far."""
        buf = self._buf
        pos = 0
        end = len(buf)
        limit = self.max_frame_bytes
        try:
            while pos < end:
                b = buf[pos]
                if b < 0x80:  # one-byte length: the common case for small messages
                    length, start = b, pos + 1
                else:
                    decoded = decode_varint(buf, pos)
                    if decoded is None:
                        break
                    length, start = decoded
                if length > limit:
                    raise FrameTooLarge(
                        f"frame of {length} bytes exceeds the limit of {limit} bytes"
                    )
                stop = start + length
                if stop > end:
                    break
                yield bytes(buf[start:stop])
                pos = stop
        finally:
            if pos:
                del buf[:pos]

    def close(self) -> None:
        """Call at end of stream: raises TruncatedFrame if a partial frame is left."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise TruncatedFrame(f"connection closed inside a frame ({n} bytes left over)")


def point_payload(request_body: bytes) -> bytes | None:
    """The serialized Point inside a ``Request{point: ...}`` body, or None if the body is
    not exactly one point field (then the caller re-serializes the parsed message)."""
    if request_body[:2] != _POINT_TAG or len(request_body) < 3:
        return None
    b = request_body[2]
    if b < 0x80:  # inlined one- and two-byte lengths: this runs once per point
        length, start = b, 3
    elif len(request_body) > 3 and request_body[3] < 0x80:
        length, start = (b & 0x7F) | (request_body[3] << 7), 4
    else:
        decoded = decode_varint(request_body, 2)
        if decoded is None:
            return None
        length, start = decoded
    if start + length != len(request_body):
        return None
    return request_body[start:]


def _entry(field_tag: int, key: bytes, value: bytes) -> bytes:
    inner = b"\x0a" + encode_varint(len(key)) + key + value
    return bytes((field_tag,)) + encode_varint(len(inner)) + inner


def _str_value(s: str) -> bytes:
    raw = s.encode()
    return b"\x12" + encode_varint(len(raw)) + raw


class PointEncoder:
    """Builds ``Response{point}`` frames: original point bytes + appended output entries."""

    @staticmethod
    def double_prefix(key: str) -> bytes:
        """Bytes of a fieldsDouble entry for ``key`` up to its 8-byte value."""
        k = key.encode()
        inner_len = 1 + len(encode_varint(len(k))) + len(k) + 1 + 8
        return (
            bytes((_FIELDS_DOUBLE,))
            + encode_varint(inner_len)
            + b"\x0a"
            + encode_varint(len(k))
            + k
            + b"\x11"
        )

    @staticmethod
    def double(key: str, value: float) -> bytes:
        return PointEncoder.double_prefix(key) + _pack_double(value)

    @staticmethod
    def boolean(key: str, value: bool) -> bytes:
        return _entry(_FIELDS_BOOL, key.encode(), b"\x10\x01" if value else b"\x10\x00")

    @staticmethod
    def string(key: str, value: str) -> bytes:
        return _entry(_FIELDS_STRING, key.encode(), _str_value(value))

    @staticmethod
    def integer(key: str, value: int) -> bytes:
        return _entry(_FIELDS_INT, key.encode(), b"\x10" + encode_varint(value))

    @staticmethod
    def tag(key: str, value: str) -> bytes:
        return _entry(_TAGS, key.encode(), _str_value(value))

    @staticmethod
    def frame(point_bytes: bytes, extra: bytes) -> bytes:
        """Length-prefixed ``Response{point: point_bytes + extra}``."""
        inner_len = len(point_bytes) + len(extra)
        head = _POINT_TAG + encode_varint(inner_len)
        return encode_varint(len(head) + inner_len) + head + point_bytes + extra
