"""``python -m udf_agent.replay``: drive an agent exactly like Kapacitor does.

Opens an info connection (then closes it, as Kapacitor does at start-up), opens a task
connection that starts with ``init``, streams CSV rows as ``transactions`` points of
the data contract while sending keepalives through the same writer, reads responses
concurrently, half-closes at the end and waits for the agent to flush and close. Checks
that every point comes back exactly once with its metadata, and reports throughput,
latency percentiles and keepalive round trips. Exits non-zero on a protocol violation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import contract
from models.profile import Profile

from .protocol import messages as pb
from .protocol.codec import FrameDecoder, encode_frame, encode_varint

__all__ = [
    "ReplayError",
    "ReplayReport",
    "ScoredPoint",
    "build_payloads",
    "main",
    "query_info",
    "run_replay",
]

log = logging.getLogger("udf_agent.replay")


class ReplayError(Exception):
    """The agent refused init or broke the protocol."""


@dataclass
class ScoredPoint:
    txn_id: str
    time: int
    score: float | None
    is_anomaly: bool | None
    threshold: float | None
    label: int | None
    amount: float | None
    model: str
    model_version: str
    score_error: str | None
    score_challenger: float | None = None


@dataclass
class ReplayReport:
    sent: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: int = 0
    metadata_mismatches: int = 0
    score_errors: int = 0
    anomalies: int = 0
    error_responses: list[str] = field(default_factory=list)
    seconds: float = 0.0
    throughput: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    keepalives_sent: int = 0
    keepalives_answered: int = 0
    keepalive_rtt_ms: dict[str, float] = field(default_factory=dict)
    added_fields: list[str] = field(default_factory=list)
    added_tags: list[str] = field(default_factory=list)
    error_reasons: dict[str, int] = field(default_factory=dict)
    closed_by_agent: bool = False
    batches_sent: int = 0
    batches_received: int = 0
    framing_error_count: int = 0
    framing_errors: list[str] = field(default_factory=list)  # the first few
    points: list[ScoredPoint] = field(default_factory=list, repr=False)

    @property
    def violations(self) -> list[str]:
        v = []
        if self.missing:
            v.append(f"{self.missing} point(s) never came back")
        if self.duplicates:
            v.append(f"{self.duplicates} point(s) came back more than once")
        if self.unexpected:
            v.append(f"{self.unexpected} point(s) that were never sent")
        if self.metadata_mismatches:
            v.append(f"{self.metadata_mismatches} point(s) lost metadata")
        if self.error_responses:
            v.append(f"error response(s): {self.error_responses[:3]}")
        if self.keepalives_answered < self.keepalives_sent:
            v.append(f"{self.keepalives_sent - self.keepalives_answered} keepalive(s) unanswered")
        if not self.closed_by_agent:
            v.append("agent did not close the connection after the half-close")
        if self.framing_error_count:
            v.append(f"{self.framing_error_count} framing error(s): {self.framing_errors[:3]}")
        if self.batches_received != self.batches_sent:
            v.append(f"{self.batches_received} of {self.batches_sent} batch(es) came back")
        return v

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("points")
        d["violations"] = self.violations
        return d


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}


# -- building points -----------------------------------------------------------
def build_payloads(
    rows: Sequence[dict[str, Any]],
    *,
    source: str = "replay-1",
    features: Sequence[str] = contract.FEATURES,
    profile: Profile | None = None,
) -> list[bytes]:
    """Serialized input points without their time field (added when sent), as Kapacitor
    forwards them from InfluxDB.

    Without ``profile``: ``transactions`` points of the credit-card contract; each row is a
    mapping with the features, ``txn_id`` and ``Class``/``label``. With a profile: its
    measurement, database and retention policy; float features as double fields, int
    features as integer fields, categorical ones as string fields, the profile's tags as
    tags, the id as a string field and the label as an integer field (``label_field``),
    read from the row under its CSV column name.
    """
    if profile is not None:
        return [_profile_point(row, i, source, profile) for i, row in enumerate(rows)]
    out = []
    for i, row in enumerate(rows):
        p = pb.Point()
        p.name = contract.INPUT_MEASUREMENT
        p.database = contract.DATABASE
        p.retentionPolicy = contract.RETENTION_POLICY
        p.tags[contract.SOURCE_TAG] = source
        for f in features:
            if f in row and row[f] is not None:
                p.fieldsDouble[f] = float(row[f])
        p.fieldsString[contract.TXN_ID] = str(row.get(contract.TXN_ID, f"r{i}"))
        label = row.get(contract.LABEL, row.get("Class"))
        if label is not None and not (isinstance(label, float) and math.isnan(label)):
            p.fieldsInt[contract.LABEL] = int(label)
        out.append(p.SerializeToString())
    return out


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _profile_point(row: dict[str, Any], i: int, source: str, profile: Profile) -> bytes:
    p = pb.Point()
    p.name = profile.measurement
    p.database = profile.database
    p.retentionPolicy = profile.retention_policy
    p.tags[contract.SOURCE_TAG] = source
    for t in profile.tags:
        if _present(row.get(t)):
            p.tags[t] = str(row[t])
    for f in profile.features:
        v = row.get(f.name)
        if not _present(v):
            continue  # a missing feature: the agent passes the point on with score_error
        if f.categorical:
            p.fieldsString[f.name] = str(v)
        elif f.type == "int":
            p.fieldsInt[f.name] = int(v)
        else:
            p.fieldsDouble[f.name] = float(v)
    ident = row.get(profile.id) if profile.id is not None else None
    p.fieldsString[profile.id_column] = str(ident) if _present(ident) else f"r{i}"
    if profile.label is not None and _present(row.get(profile.label)):
        p.fieldsInt[profile.label_field] = int(row[profile.label])
    return p.SerializeToString()


def _point_frame(payload: bytes, t: int) -> bytes:
    body = b"\x08" + encode_varint(t) + payload  # field 1 (time) prepended
    inner = b"\x8a\x01" + encode_varint(len(body)) + body
    return encode_varint(len(inner)) + inner


def _request_frame(req: Any) -> bytes:
    return encode_frame(req.SerializeToString())


def _wait_sliced(wait: Callable[[float], bool], timeout: float) -> bool:
    """``wait(timeout)`` in short slices: the main thread returns to the interpreter
    regularly, so a signal delivered to another thread still interrupts it."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return wait(0)
        if wait(min(left, 0.2)):
            return True


def _read_responses(
    sock: socket.socket, on_response: Callable[[Any], None], timeout: float | None
) -> None:
    dec = FrameDecoder()
    sock.settimeout(timeout)
    while True:
        data = sock.recv(1 << 18)
        if not data:
            dec.close()
            return
        dec.feed(data)
        for body in dec.frames():
            on_response(pb.Response.FromString(body))


def query_info(socket_path: str | os.PathLike[str], timeout: float = 10.0) -> Any:
    """Open an info-only connection (as Kapacitor does at start-up) and return InfoResponse."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall(_request_frame(pb.Request(info=pb.InfoRequest())))
        dec = FrameDecoder()
        while True:
            data = s.recv(65536)
            if not data:
                raise ReplayError("agent closed the info connection without answering")
            dec.feed(data)
            for body in dec.frames():
                resp = pb.Response.FromString(body)
                if resp.WhichOneof("message") == "info":
                    return resp.info
                raise ReplayError(f"expected an info response, got {resp.WhichOneof('message')}")


def typed_options(info: Any, options: dict[str, str]) -> list[Any]:
    """Convert ``name=value`` strings to typed Options using the agent's InfoResponse."""
    out = []
    for name, raw in options.items():
        if name not in info.options:
            raise ReplayError(f"agent has no option {name!r}; it offers {sorted(info.options)}")
        vt = list(info.options[name].valueTypes)
        values = raw.split(",") if len(vt) > 1 else [raw]
        opt = pb.Option(name=name)
        for t, v in zip(vt, values):
            ov = opt.values.add()
            ov.type = t
            if t == pb.STRING:
                ov.stringValue = v
            elif t == pb.DOUBLE:
                ov.doubleValue = float(v)
            elif t == pb.INT:
                ov.intValue = int(v)
            elif t == pb.BOOL:
                ov.boolValue = v.lower() in ("1", "true", "yes")
            elif t == pb.DURATION:
                ov.durationValue = parse_duration_ns(v)
        out.append(opt)
    return out


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "u": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration_ns(text: str) -> int:
    """Kapacitor duration literal (``5ms``, ``1s``, ``2m``) to nanoseconds."""
    text = text.strip()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * _UNITS[unit])
    return int(text)


# -- the run -------------------------------------------------------------------
def run_replay(
    socket_path: str | os.PathLike[str],
    payloads: Sequence[bytes],
    options: dict[str, str],
    *,
    n: int | None = None,
    rate: float = 0.0,
    keepalive_interval: float = 0.5,
    chunk: int = 256,
    collect: bool = False,
    edge: str = "stream",
    batch_size: int = 100,
    close_timeout: float = 60.0,
    on_progress: Callable[[int, int], None] | None = None,
    task_id: str = "replay",
    profile: Profile | None = None,
) -> ReplayReport:
    """Replay ``payloads`` (cycled up to ``n`` points) and return the report. ``profile``:
    the data set the payloads were built for (its id, label and value fields are read
    back from the scored points); None for credit cards."""
    if not payloads:
        raise ReplayError("nothing to replay")
    if profile is None:
        id_field, label_field, value_field = contract.TXN_ID, contract.LABEL, "Amount"
    else:
        id_field, label_field, value_field = profile.id_column, profile.label_field, profile.value
    total = n if n is not None else len(payloads)
    info = query_info(socket_path)
    want_edge = pb.BATCH if edge == "batch" else pb.STREAM
    if info.wants != want_edge:
        raise ReplayError(
            f"agent on {socket_path} serves {'batch' if info.wants else 'stream'} edges, not {edge}"
        )
    init = pb.Request()
    init.init.options.extend(typed_options(info, options))
    init.init.taskID = task_id
    init.init.nodeID = "score1"

    report = ReplayReport()
    t0 = time.time_ns() - total  # point i has time t0 + i: unique and ordered
    send_at = np.zeros(total)
    recv_at = np.full(total, np.nan)
    seen = np.zeros(total, dtype=np.int32)
    ka_rtts: list[float] = []
    added_fields: set[str] = set()
    added_tags: set[str] = set()
    reasons: Counter[str] = Counter()
    scored: list[ScoredPoint] = []
    init_done = threading.Event()
    init_error: list[str] = []
    n_payloads = len(payloads)
    expected_source = None
    lock = threading.Lock()
    # Batch edge: every point must come back inside begin..end, with the begin's size
    # and the end's tmax telling the truth about the points between them.
    batch: dict[str, Any] = {"open": False, "size": 0, "count": 0, "tmax": 0}

    def framing(problem: str) -> None:
        report.framing_error_count += 1
        if len(report.framing_errors) < 10:
            report.framing_errors.append(problem)

    def on_response(resp: Any) -> None:
        kind = resp.WhichOneof("message")
        now = time.perf_counter()
        if kind == "point":
            p = resp.point
            if edge == "batch":
                if not batch["open"]:
                    framing(f"point t={p.time} outside a batch")
                batch["count"] += 1
                batch["tmax"] = max(batch["tmax"], p.time)
            idx = p.time - t0
            if not (0 <= idx < total):
                report.unexpected += 1
                return
            if seen[idx]:
                report.duplicates += 1
            seen[idx] += 1
            recv_at[idx] = now
            fs = p.fieldsString
            if (
                p.name != first.name
                or p.database != first.database
                or p.retentionPolicy != first.retentionPolicy
                or fs.get(id_field) != txn_ids[idx % n_payloads]
                or p.tags.get(contract.SOURCE_TAG) != expected_source
            ):
                report.metadata_mismatches += 1
            err = fs.get(contract.SCORE_ERROR)
            if err is not None:
                report.score_errors += 1
                reasons[err.split(":")[0][:60]] += 1
            if p.fieldsBool.get(contract.IS_ANOMALY):
                report.anomalies += 1
            if len(added_fields) < 8 or collect:
                for k in (*p.fieldsDouble, *p.fieldsBool, *p.fieldsString):
                    if k not in original_fields:
                        added_fields.add(k)
                for k in p.tags:
                    if k != contract.SOURCE_TAG:
                        added_tags.add(k)
            if collect:
                fd = p.fieldsDouble
                scored.append(
                    ScoredPoint(
                        txn_id=fs.get(id_field, ""),
                        time=p.time,
                        score=fd.get(options.get("field", "score")),
                        is_anomaly=p.fieldsBool.get(contract.IS_ANOMALY),
                        threshold=fd.get(contract.THRESHOLD),
                        label=p.fieldsInt.get(label_field),
                        amount=fd.get(value_field) if value_field else None,
                        model=p.tags.get(contract.MODEL_TAG, ""),
                        model_version=p.tags.get(contract.MODEL_VERSION_TAG, ""),
                        score_error=err,
                        score_challenger=fd.get(contract.SCORE_CHALLENGER),
                    )
                )
        elif kind == "keepalive":
            with lock:
                ka_rtts.append((time.time_ns() - resp.keepalive.time) / 1e6)
        elif kind == "init":
            if not resp.init.success:
                init_error.append(resp.init.error)
            init_done.set()
        elif kind == "error":
            report.error_responses.append(resp.error.error)
            init_done.set()
        elif kind in ("begin", "end") and edge != "batch":
            framing(f"{kind} response on a stream edge")
        elif kind == "begin":
            if batch["open"]:
                framing("begin inside an open batch")
            batch.update(open=True, size=resp.begin.size, count=0, tmax=0)
        elif kind == "end":
            if not batch["open"]:
                framing("end without a begin")
            elif batch["count"] != batch["size"]:
                framing(f"begin said size={batch['size']}, {batch['count']} point(s) came")
            elif resp.end.tmax != batch["tmax"]:
                framing(f"end tmax={resp.end.tmax}, last point t={batch['tmax']}")
            batch["open"] = False
            report.batches_received += 1
        else:
            report.error_responses.append(f"unexpected {kind} response")

    first = pb.Point.FromString(payloads[0])
    expected_source = first.tags.get(contract.SOURCE_TAG)
    original_fields = {
        *first.fieldsDouble,
        *first.fieldsInt,
        *first.fieldsString,
        *first.fieldsBool,
    }
    txn_ids = [pb.Point.FromString(b).fieldsString.get(id_field) for b in payloads]

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path))
    try:
        reader_exc: list[BaseException] = []

        def reader() -> None:
            try:
                _read_responses(sock, on_response, timeout=None)
                report.closed_by_agent = True
            except BaseException as exc:  # reported after the run
                reader_exc.append(exc)
                init_done.set()

        rt = threading.Thread(target=reader, name="replay-reader", daemon=True)
        rt.start()
        sock.sendall(_request_frame(init))
        if not _wait_sliced(init_done.wait, 60):
            sock.close()
            raise ReplayError("no init response within 60 s")
        if init_error or report.error_responses:
            sock.close()
            raise ReplayError(f"agent refused init: {(init_error or report.error_responses)[0]}")

        def keepalive_frame() -> bytes:
            report.keepalives_sent += 1
            return _request_frame(pb.Request(keepalive=pb.KeepaliveRequest(time=time.time_ns())))

        started = time.perf_counter()
        next_ka = started + keepalive_interval
        sent = 0
        last_progress = started
        batch_begin = pb.Request()
        batch_begin.begin.name = first.name
        try:
            while sent < total:
                now = time.perf_counter()
                if rate > 0:
                    due = min(total, int((now - started) * rate) + 1)
                    if due <= sent:
                        time.sleep(min(0.001, (sent + 1) / rate - (now - started)))
                        continue
                    k = min(due - sent, chunk)
                else:
                    k = min(chunk, total - sent)
                parts = []
                if now >= next_ka:
                    parts.append(keepalive_frame())
                    next_ka = now + keepalive_interval
                if edge == "batch":
                    k = min(batch_size, total - sent)
                    batch_begin.begin.size = k
                    parts.append(_request_frame(batch_begin))
                for i in range(sent, sent + k):
                    parts.append(_point_frame(payloads[i % n_payloads], t0 + i))
                if edge == "batch":
                    end = pb.Request()
                    end.end.name = first.name
                    end.end.tmax = t0 + sent + k - 1
                    parts.append(_request_frame(end))
                    report.batches_sent += 1
                send_at[sent : sent + k] = time.perf_counter()
                sock.sendall(b"".join(parts))
                sent += k
                if on_progress is not None and now - last_progress >= 1.0:
                    on_progress(sent, int(np.count_nonzero(seen)))
                    last_progress = now
            # Keep the keepalives going until every point is back, like a running task.
            deadline = time.perf_counter() + close_timeout
            while (
                np.count_nonzero(seen) < total and time.perf_counter() < deadline and rt.is_alive()
            ):
                if time.perf_counter() >= next_ka:
                    sock.sendall(keepalive_frame())
                    next_ka = time.perf_counter() + keepalive_interval
                time.sleep(0.005)
            sock.sendall(keepalive_frame())
            time.sleep(0.05)
            sock.shutdown(socket.SHUT_WR)  # task stop: half-close and wait for the agent
        except OSError as exc:
            report.error_responses.append(f"write failed: {exc}")
        _wait_sliced(lambda t: rt.join(t) or not rt.is_alive(), close_timeout)
        with contextlib.suppress(OSError):
            sock.close()
    except BaseException:
        # Interrupted (Ctrl-C, a stop signal): close now, so the agent does not keep
        # writing to a peer that no longer reads.
        sock.close()
        raise
    finished = np.nanmax(recv_at) if np.any(~np.isnan(recv_at)) else time.perf_counter()
    if on_progress is not None:
        on_progress(sent, int(np.count_nonzero(seen)))
    if reader_exc:
        report.error_responses.append(f"reading responses failed: {reader_exc[0]}")

    report.sent = sent
    report.received = int(seen.sum())
    report.missing = int(np.count_nonzero(seen[:sent] == 0))
    report.seconds = float(finished - started)
    report.throughput = report.received / report.seconds if report.seconds > 0 else 0.0
    lat = (recv_at - send_at)[~np.isnan(recv_at)] * 1000.0
    report.latency_ms = _percentiles(lat)
    report.keepalives_answered = len(ka_rtts)
    report.keepalive_rtt_ms = _percentiles(np.array(ka_rtts))
    report.added_fields = sorted(added_fields)
    report.added_tags = sorted(added_tags)
    report.error_reasons = dict(reasons)
    report.points = scored
    return report


def load_rows(csv: str | os.PathLike[str], profile: Profile | None = None) -> list[dict[str, Any]]:
    """CSV rows as mappings; categorical columns of ``profile`` stay text, ids are
    generated when the file has none."""
    import pandas as pd

    dtypes = {f.name: str for f in profile.categorical} if profile is not None else None
    df = pd.read_csv(csv, dtype=dtypes)
    id_col = contract.TXN_ID if profile is None else (profile.id or profile.id_field)
    if id_col not in df.columns:
        df[id_col] = [f"r{i}" for i in range(len(df))]
    return df.to_dict("records")


def _parse_options(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --option expects name=value, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def format_report(r: ReplayReport) -> str:
    lat = r.latency_ms
    ka = r.keepalive_rtt_ms
    lines = [
        f"points sent {r.sent}, received {r.received}, missing {r.missing}, duplicates {r.duplicates}, "
        f"metadata mismatches {r.metadata_mismatches}",
        f"throughput {r.throughput:,.0f} points/s over {r.seconds:.2f} s",
        "latency ms " + ", ".join(f"{k} {v:.2f}" for k, v in lat.items()),
        f"keepalives {r.keepalives_answered}/{r.keepalives_sent} answered; round trip ms "
        + ", ".join(f"{k} {v:.2f}" for k, v in ka.items()),
        f"anomalies {r.anomalies}, score errors {r.score_errors} {r.error_reasons or ''}",
        f"added fields {r.added_fields}, added tags {r.added_tags}",
    ]
    if r.batches_sent:
        lines.append(f"batches {r.batches_received}/{r.batches_sent} came back")
    if r.violations:
        lines.append("PROTOCOL VIOLATIONS: " + "; ".join(r.violations))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m udf_agent.replay", description=__doc__.splitlines()[0]
    )
    p.add_argument("--socket", required=True, help="agent's Unix socket")
    p.add_argument(
        "--csv",
        required=True,
        help="CSV of the data set (default profile: the Kaggle schema, optional txn_id)",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="data-set profile, a name in profiles/ or a TOML path (default: creditcard)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="@score() option, e.g. model=creditcard, maxBatch=512, maxDelay=5ms",
    )
    p.add_argument(
        "--n", type=int, default=None, help="points to send (rows are cycled); default: all rows"
    )
    p.add_argument(
        "--rate", type=float, default=0.0, help="points per second (0 = as fast as possible)"
    )
    p.add_argument(
        "--keepalive-interval", type=float, default=0.5, help="seconds between keepalives"
    )
    p.add_argument("--edge", choices=["stream", "batch"], default="stream")
    p.add_argument(
        "--batch-size", type=int, default=100, help="points per Kapacitor batch (batch edge)"
    )
    p.add_argument("--source", default="replay-1", help="value of the source tag")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    options = _parse_options(args.option)
    profile = None
    if args.profile:
        from models.profile import ProfileError, load_profile

        try:
            profile = load_profile(args.profile)
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if "model" not in options:
        options["model"] = profile.name if profile is not None else "creditcard"
    rows = load_rows(args.csv, profile)
    payloads = build_payloads(rows, source=args.source, profile=profile)

    def progress(sent: int, back: int) -> None:
        print(f"\rsent {sent:,} received {back:,}", end="", file=sys.stderr, flush=True)

    try:
        report = run_replay(
            Path(args.socket),
            payloads,
            options,
            n=args.n,
            rate=args.rate,
            keepalive_interval=args.keepalive_interval,
            edge=args.edge,
            batch_size=args.batch_size,
            on_progress=None if args.json else progress,
            profile=profile,
        )
    except (ReplayError, OSError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(file=sys.stderr)
        print(format_report(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
