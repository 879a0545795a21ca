"""Framing and message codec, without sockets; checked against bytes recorded from Kapacitor."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from udf_agent.errors import FrameTooLarge, MalformedFrame, TruncatedFrame
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import (
    FrameDecoder,
    PointEncoder,
    decode_varint,
    encode_frame,
    encode_varint,
    point_payload,
)

SHARED_FIXTURES = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "kapacitor-udf-socket"
)
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kapacitor-udf-socket"
FIXTURES = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else LOCAL_FIXTURES


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**32, b"\x80\x80\x80\x80\x10"),
        (2**63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
        (2**64 - 1, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    ],
)
def test_varint_known_encodings(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(encoded) == (value, len(encoded))


def test_negative_int64_uses_twos_complement():
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_roundtrip(value):
    enc = encode_varint(value)
    assert decode_varint(enc + b"\x05") == (value, len(enc))
    # every strict prefix is incomplete, never misread
    for cut in range(len(enc)):
        assert decode_varint(enc[:cut]) is None


def test_varint_longer_than_ten_bytes_is_malformed():
    with pytest.raises(MalformedFrame):
        decode_varint(b"\x80" * 11)


def test_decoder_handles_byte_by_byte_feeding():
    bodies = [b"", b"a", b"x" * 127, b"y" * 128, b"z" * 70000]
    stream = b"".join(encode_frame(b) for b in bodies)
    dec = FrameDecoder()
    out = []
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        out.extend(dec.frames())
    assert out == bodies
    dec.close()  # nothing left over


def test_decoder_truncated_frame_at_close():
    dec = FrameDecoder()
    dec.feed(encode_frame(b"hello world")[:-3])
    assert list(dec.frames()) == []
    with pytest.raises(TruncatedFrame, match="inside a frame"):
        dec.close()


def test_decoder_truncated_length_prefix_at_close():
    dec = FrameDecoder()
    dec.feed(b"\x80")
    assert list(dec.frames()) == []
    with pytest.raises(TruncatedFrame):
        dec.close()


def test_decoder_rejects_oversize_length_before_reading_body():
    dec = FrameDecoder(max_frame_bytes=1024)
    dec.feed(encode_varint(2**40))
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 1024"):
        list(dec.frames())


def test_decoder_rejects_overlong_varint():
    dec = FrameDecoder()
    dec.feed(b"\xff" * 12)
    with pytest.raises(MalformedFrame):
        list(dec.frames())


def _recorded(name: str) -> tuple[list[bytes], list[dict]]:
    data = (FIXTURES / f"{name}.bin").read_bytes()
    dec = FrameDecoder()
    dec.feed(data)
    frames = list(dec.frames())
    dec.close()
    decoded = [
        json.loads(line)
        for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return frames, decoded


@pytest.mark.parametrize("name", ["info-connection", "task-connection"])
def test_recorded_kapacitor_frames_decode_exactly(name):
    frames, expected = _recorded(name)
    assert len(frames) == len(expected)
    for body, exp in zip(frames, expected):
        req = pb.Request.FromString(body)
        assert json_format.MessageToDict(req) == exp
        # and we re-encode them byte for byte
        assert (
            req.SerializeToString(deterministic=True) == body
            or pb.Request.FromString(req.SerializeToString()) == req
        )


def test_recorded_task_connection_starts_with_init_and_typed_options():
    frames, _ = _recorded("task-connection")
    first = pb.Request.FromString(frames[0])
    assert first.WhichOneof("message") == "init"
    types = {o.name: o.values[0].type for o in first.init.options}
    assert types == {
        "model": pb.STRING,
        "threshold": pb.DOUBLE,
        "maxDelay": pb.DURATION,
        "maxBatch": pb.INT,
        "shadow": pb.BOOL,
    }
    assert [o.values[0].durationValue for o in first.init.options if o.name == "maxDelay"] == [
        5_000_000
    ]


def test_point_payload_extracts_the_point_bytes():
    frames, _ = _recorded("task-connection")
    point_frames = [f for f in frames if pb.Request.FromString(f).WhichOneof("message") == "point"]
    assert point_frames
    for body in point_frames:
        payload = point_payload(body)
        assert payload is not None
        assert pb.Point.FromString(payload) == pb.Request.FromString(body).point
    # not a point request
    assert point_payload(frames[0]) is None


def test_point_encoder_equals_protobuf_merge():
    """Appending entries is what protobuf's own API would produce, including overrides."""
    src = pb.Point(
        time=123,
        name="transactions",
        database="fraud",
        retentionPolicy="autogen",
        group="source=a",
        dimensions=["source"],
        byName=True,
    )
    src.tags["source"] = "a"
    src.fieldsDouble["V1"] = 1.5
    src.fieldsDouble["score"] = 0.1  # overridden by the appended entry
    src.fieldsInt["label"] = 1
    src.fieldsString["txn_id"] = "t1"
    extra = (
        PointEncoder.double("score", 0.75)
        + PointEncoder.boolean("is_anomaly", True)
        + PointEncoder.boolean("other", False)
        + PointEncoder.string("score_error", "missing V2 ✓")
        + PointEncoder.integer("neg", -5)
        + PointEncoder.tag("model", "creditcard")
        + PointEncoder.tag("model_version", "3")
    )
    frame = PointEncoder.frame(src.SerializeToString(), extra)
    dec = FrameDecoder()
    dec.feed(frame)
    (body,) = list(dec.frames())
    got = pb.Response.FromString(body)
    expected = pb.Point()
    expected.CopyFrom(src)
    expected.fieldsDouble["score"] = 0.75
    expected.fieldsBool["is_anomaly"] = True
    expected.fieldsBool["other"] = False
    expected.fieldsString["score_error"] = "missing V2 ✓"
    expected.fieldsInt["neg"] = -5
    expected.tags["model"] = "creditcard"
    expected.tags["model_version"] = "3"
    assert got.WhichOneof("message") == "point"
    assert got.point == expected


def test_double_prefix_is_followed_by_eight_value_bytes():
    raw = PointEncoder.double_prefix("score") + struct.pack("<d", 0.25)
    p = pb.Point.FromString(raw)
    assert dict(p.fieldsDouble) == {"score": 0.25}


def test_committed_descriptor_matches_udf_proto():
    """`make proto` output is committed; it must match a fresh compile of udf.proto."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2

    from udf_agent.protocol import _descriptor, _generate

    fresh = descriptor_pb2.FileDescriptorSet.FromString(_generate.compile_descriptor())
    committed = descriptor_pb2.FileDescriptorSet.FromString(
        _descriptor.SERIALIZED_FILE_DESCRIPTOR_SET
    )
    assert fresh == committed


def test_wire_numbers_match_the_documented_table():
    fields = {f.name: f.number for f in pb.Point.DESCRIPTOR.fields}
    assert fields == {
        "time": 1,
        "name": 2,
        "database": 3,
        "retentionPolicy": 4,
        "group": 5,
        "dimensions": 6,
        "tags": 7,
        "fieldsDouble": 8,
        "fieldsInt": 9,
        "fieldsString": 10,
        "byName": 11,
        "fieldsBool": 12,
    }
    req = {f.name: f.number for f in pb.Request.DESCRIPTOR.fields}
    assert req == {
        "info": 1,
        "init": 2,
        "keepalive": 3,
        "snapshot": 4,
        "restore": 5,
        "begin": 16,
        "point": 17,
        "end": 18,
    }
    resp = {f.name: f.number for f in pb.Response.DESCRIPTOR.fields}
    assert resp == {**req, "error": 6}
    assert pb.Point.DESCRIPTOR.file.package == "agent"
