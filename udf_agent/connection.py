"""One Kapacitor connection: a reader thread that answers management requests at once
(keepalives never wait behind a model call) and a scorer thread that micro-batches
points and writes them back in arrival order.

Flow control: the points read but not yet written back are bounded per connection
(about ``drain_seconds`` of scoring, at most ``max_inflight``) and across connections
(:class:`~udf_agent.flow.InflightBudget`). At the bound the reader stops reading, so
Kapacitor's writes block instead of the agent buffering. A Kapacitor batch is scored in
one call, a batch larger than the bound in chunks, so it never has to be held whole.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from models.provider import ModelProvider

from .drift import DriftSession, drift_info_response, parse_drift_options
from .errors import MalformedFrame, OptionError, ProtocolError
from .flow import InflightBudget, adaptive_limit
from .metrics import AgentMetrics
from .options import info_response, parse_init_options
from .protocol import messages as pb
from .protocol.codec import FrameDecoder, encode_frame, point_payload
from .scoring import ScoringSession

__all__ = ["Connection", "ConnectionConfig"]

log = logging.getLogger("udf_agent.connection")

RECV_BYTES = 256 * 1024
#: longest stretch of scoring without letting the reader thread run (seconds)
YIELD_EVERY = 0.002
#: how often a waiting reader re-checks for a stop request (seconds)
_WAIT_TICK = 0.5
#: how often a blocked write re-checks its deadline and an abort (seconds)
_SEND_TICK = 0.25


@dataclass(frozen=True, kw_only=True)
class ConnectionConfig:
    """Per-connection limits (seconds, bytes, points)."""

    edge: int = pb.STREAM
    #: which UDF the socket serves: ``score`` (stream or batch edge) or ``drift``
    kind: str = "score"
    max_frame_bytes: int = 16 * 1024 * 1024
    #: last resort for a backend that hangs: points that waited longer than this are passed
    #: on unscored (score_error); back-pressure keeps normal overload far below it
    max_backlog_age: float = 10.0
    #: most points one connection holds between reading and writing them back
    max_inflight: int = 4096
    #: the per-connection bound adapts to about this much scoring work (seconds), so a
    #: full queue drains well inside Kapacitor's keepalive budget (timeout/2, 5 s default)
    drain_seconds: float = 1.0
    #: a peer that has not read for this long is cut off (its writes would block forever)
    write_timeout: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


@dataclass
class _Unit:
    """Points scored together: a stream micro-batch or a chunk of a Kapacitor batch."""

    points: list[Any] = field(default_factory=list)
    payloads: list[bytes | None] = field(default_factory=list)
    since: float = 0.0  # first point received
    ready: float = 0.0  # complete (full, due, or ended): the backlog age counts from here
    begin: bytes | None = None  # raw Request{begin} body: the first chunk of a batch
    end: bytes | None = None  # raw Request{end} body: the last chunk of a batch
    #: options and models in force when the points arrived (a re-init applies to later ones)
    session: ScoringSession | None = None


def _response_frame(resp: Any) -> bytes:
    return encode_frame(resp.SerializeToString())


class _WriteTimeout(OSError):
    """The peer read nothing for ``write_timeout`` seconds."""


def _set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_SNDTIMEO: a blocking send that makes no progress for ``seconds`` returns what
    it wrote, or fails with EAGAIN, instead of blocking forever. Reads are unaffected."""
    sec = int(seconds)
    usec = int((seconds - sec) * 1_000_000)
    with contextlib.suppress(OSError):  # not every socket type supports it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, usec))


class Connection:
    """Serve one connected socket until the peer closes it or ``shutdown()`` is called."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        provider: ModelProvider,
        metrics: AgentMetrics,
        config: ConnectionConfig,
        conn_id: int = 0,
        budget: InflightBudget | None = None,
    ) -> None:
        self.sock = sock
        self.provider = provider
        self.metrics = metrics
        self.config = config
        self.id = conn_id
        self.budget = budget if budget is not None else InflightBudget(config.max_inflight)
        self.session: ScoringSession | None = None
        self._sessions: list[ScoringSession] = []  # closed when the connection ends
        self.accepted_at = config.clock()
        self.task = ""  # task and node of the last successful init, for logs at stop
        self.node = ""
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stream: _Unit | None = None  # open stream micro-batch
        self._ready: deque[_Unit] = deque()  # complete units waiting for the scorer
        self._batch: _Unit | None = None  # chunk of the Kapacitor batch being received
        self._closing = False
        self._broken = False
        self._stopping = False
        self._stop_deadline: float | None = None
        self._inflight = 0  # guarded by budget.cond
        self._resume_at: int | None = None  # the waiting reader's low-water mark
        self._rate: float | None = None  # scorer throughput (points/s), EWMA
        self._undelivered = 0
        self._outputs_checked: ScoringSession | None = None
        self._scorer = threading.Thread(
            target=self._score_loop, name=f"udf-scorer-{conn_id}", daemon=True
        )
        self._decoder = FrameDecoder(max_frame_bytes=config.max_frame_bytes)
        self._aborted = False
        _set_send_timeout(sock, min(_SEND_TICK, config.write_timeout))

    @property
    def initialized(self) -> bool:
        return self.session is not None

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- writing -------------------------------------------------------------
    def _send(self, data: bytes) -> bool:
        """Write ``data``; False (and the connection marked broken) if it cannot be."""
        if self._broken:
            return False
        with self._write_lock:
            if self._broken:
                return False
            try:
                self._sendall(data)
                return True
            except OSError as exc:
                self._broken = True
                if isinstance(exc, _WriteTimeout):
                    self.metrics.errors.labels("write_timeout").inc()
                    log.error(
                        "conn=%d closing: the peer read nothing for %gs (write timeout) task=%s",
                        self.id,
                        self.config.write_timeout,
                        self.task,
                    )
                else:
                    log.warning("conn=%d write failed, peer gone: %s", self.id, exc)
        # Wake the reader (blocked in recv or waiting for room) so the connection ends.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self.budget.cond:
            self.budget.cond.notify_all()
        return False

    def _sendall(self, data: bytes) -> None:
        """``sendall`` that gives up when the peer has read nothing for ``write_timeout``
        (or the connection is aborted). SO_SNDTIMEO makes each blocked ``send`` return
        every tick, so progress is judged here rather than per kernel call."""
        view = memoryview(data)
        clock = self.config.clock
        last_progress = clock()
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                sent = 0
            if sent:
                view = view[sent:]
                last_progress = clock()
            elif self._aborted:
                raise BrokenPipeError(errno.EPIPE, "connection aborted")
            elif clock() - last_progress >= self.config.write_timeout:
                raise _WriteTimeout(errno.EAGAIN, "peer read nothing")

    # -- reading -------------------------------------------------------------
    def run(self) -> None:
        """Reader loop; returns when the connection is finished and closed."""
        self._scorer.start()
        reason = "peer closed"
        try:
            while True:
                try:
                    data = self.sock.recv(RECV_BYTES)
                except OSError as exc:
                    reason = f"read failed: {exc}"
                    break
                if not data:
                    if self._broken:
                        reason = "write failed"
                        break
                    self._decoder.close()  # raises TruncatedFrame on a partial frame
                    break
                self._decoder.feed(data)
                self._dispatch_frames()
                self._wait_for_room()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.metrics.errors.labels(type(exc).__name__).inc()
            log.error("conn=%d closing: %s", self.id, exc)
            self._fatal = str(exc)
        except Exception as exc:  # a bug in a handler ends this connection only
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.metrics.errors.labels("internal_error").inc()
            log.exception("conn=%d closing after an internal error", self.id)
            self._fatal = reason
        finally:
            self._finish(reason)

    _fatal: str | None = None

    def _dispatch_frames(self) -> None:
        stream_points: list[Any] = []
        stream_payloads: list[bytes | None] = []
        self._points_seen = 0
        try:
            self._dispatch_loop(stream_points, stream_payloads)
        finally:
            # Points decoded before a bad frame are still scored and delivered.
            if stream_points:
                self._enqueue_stream(stream_points, stream_payloads)
            self.metrics.points_in.inc(self._points_seen)

    _points_seen = 0

    def _dispatch_loop(self, stream_points: list[Any], stream_payloads: list[bytes | None]) -> None:
        parse_point = pb.Point.FromString
        for body in self._decoder.frames():
            # Fast path: a body that is exactly one `point` field is a point request;
            # parse only the Point and keep its bytes for the response.
            payload = point_payload(body)
            try:
                if payload is not None:
                    point = parse_point(payload)
                    kind = "point"
                else:
                    req = pb.Request.FromString(body)
                    kind = req.WhichOneof("message")
                    if kind == "point":
                        point = req.point
            except DecodeError as exc:
                raise MalformedFrame(f"frame of {len(body)} bytes is not a Request: {exc}") from exc
            if kind == "point":
                self._points_seen += 1
                batch = self._batch
                if batch is not None:
                    batch.points.append(point)
                    batch.payloads.append(payload)
                    self._admit(1)
                    if len(batch.points) >= self.config.max_inflight:
                        self._hand_over_batch_chunk()
                else:
                    stream_points.append(point)
                    stream_payloads.append(payload)
                continue
            if stream_points:  # keep order relative to batch edges and init
                self._enqueue_stream(stream_points, stream_payloads)
                stream_points.clear()
                stream_payloads.clear()
            if kind == "keepalive":
                resp = pb.Response()
                resp.keepalive.time = req.keepalive.time
                self._send(_response_frame(resp))
                self.metrics.keepalives.inc()
            elif kind == "init":
                self._on_init(req.init)
            elif kind == "info":
                info = (
                    drift_info_response()
                    if self.config.kind == "drift"
                    else info_response(self.config.edge)
                )
                self._send(_response_frame(info))
            elif kind == "snapshot":
                self._on_snapshot()
            elif kind == "restore":
                self._on_restore(req.restore.snapshot)
            elif kind == "begin":
                if self._batch is not None:
                    raise ProtocolError("begin batch received inside an open batch")
                self._batch = _Unit(since=self.config.clock(), begin=body, session=self.session)
            elif kind == "end":
                if self._batch is None:
                    raise ProtocolError("end batch received without a begin")
                unit, self._batch = self._batch, None
                unit.end = body
                self._enqueue_unit(unit)
            else:
                self.metrics.errors.labels("unknown_request").inc()
                log.warning(
                    "conn=%d ignoring a request of unknown type (%d bytes)", self.id, len(body)
                )

    def _chunk_size(self) -> int:
        session = self.session
        return getattr(getattr(session, "options", None), "max_batch", 512)

    def _enqueue_unit(self, unit: _Unit) -> None:
        unit.ready = self.config.clock()
        with self._cond:
            self._ready.append(unit)
            self._cond.notify()

    def _hand_over_batch_chunk(self) -> None:
        """Score the points of the open Kapacitor batch received so far; later points
        follow in a chunk without a begin (the begin is written with the first one)."""
        unit = self._batch
        if unit is None or not unit.points:
            return
        self._batch = _Unit(since=self.config.clock(), session=unit.session)
        self._enqueue_unit(unit)

    def _enqueue_stream(self, points: list[Any], payloads: list[bytes | None]) -> None:
        session = self.session
        if session is None:
            # Points before init cannot be scored; pass them on rather than drop them.
            self.metrics.errors.labels("not_initialized").inc(len(points))
            self._send(b"".join(_unscored_frames(points, payloads, "agent not initialized")))
            self.metrics.points_out.inc(len(points))
            return
        self._admit(len(points))
        max_batch = session.options.max_batch
        with self._cond:
            while points:
                unit = self._stream
                if unit is None:
                    unit = self._stream = _Unit(since=self.config.clock(), session=session)
                room = max_batch - len(unit.points)
                unit.points.extend(points[:room])
                unit.payloads.extend(payloads[:room])
                points, payloads = points[room:], payloads[room:]
                if len(unit.points) >= max_batch:
                    unit.ready = self.config.clock()
                    self._ready.append(unit)
                    self._stream = None
            self._cond.notify()

    # -- flow control ----------------------------------------------------------
    def _admit(self, n: int) -> None:
        b = self.budget
        with b.cond:
            self._inflight += n
            b.total += n

    def _release(self, n: int) -> None:
        b = self.budget
        with b.cond:
            self._inflight -= n
            b.total -= n
            # Wake readers only when they may resume (below their low-water mark): a
            # wake-up per point written would make reader and scorer trade the GIL.
            resume = self._resume_at
            if (resume is not None and self._inflight <= resume) or (
                b.waiting and b.total <= b.resume_total
            ):
                b.cond.notify_all()

    def limit(self) -> int:
        """Points this connection may hold now (adapts to the measured scoring rate)."""
        return adaptive_limit(
            self._rate,
            drain_seconds=self.config.drain_seconds,
            max_batch=self._chunk_size(),
            ceiling=self.config.max_inflight,
        )

    def _over(self, limit: int) -> bool:
        b = self.budget
        own = self._inflight
        return own >= limit or (own > 0 and b.total >= b.limit)

    def _wait_for_room(self) -> None:
        """Block the reader while this connection (or the agent) holds its bound, so
        Kapacitor's writes wait in the socket instead of piling up here."""
        limit = self.limit()
        b = self.budget
        with b.cond:
            if not self._over(limit):
                return
        # What is read must reach the scorer, or a not-yet-due micro-batch (maxDelay
        # up to 60 s) would hold the bound and nothing would drain.
        self._flush_all()
        if self._batch is not None:
            self._hand_over_batch_chunk()
        started = self.config.clock()
        with b.cond:
            # Hysteresis: once at the bound, resume at half of it, so the reader reads in
            # large steps instead of a point at a time.
            self._resume_at = limit // 2
            b.waiting += 1
            try:
                while not (self._stopping or self._broken) and (
                    self._inflight > self._resume_at
                    or (self._inflight > 0 and b.total > b.resume_total)
                ):
                    b.cond.wait(_WAIT_TICK)
                    self._resume_at = self.limit() // 2
            finally:
                self._resume_at = None
                b.waiting -= 1
        self.metrics.backpressure_seconds.inc(self.config.clock() - started)

    # -- management ----------------------------------------------------------
    def _on_init(self, init: Any) -> None:
        resp = pb.Response()
        try:
            if self.config.kind == "drift":
                options = parse_drift_options(init.options)
                session = DriftSession(
                    options, self.provider, metrics=self.metrics, task=init.taskID, node=init.nodeID
                )
            else:
                options = parse_init_options(init.options)
                session = ScoringSession(
                    options, self.provider, metrics=self.metrics, task=init.taskID, node=init.nodeID
                )
        except OptionError as exc:
            resp.init.success = False
            resp.init.error = str(exc)
            self.metrics.errors.labels("init_failed").inc()
            log.error(
                "conn=%d init failed task=%s node=%s: %s", self.id, init.taskID, init.nodeID, exc
            )
        else:
            self._flush_all()  # a re-init must not mix old and new options in one batch
            self.session = session
            # Units already queued keep the old session's models: it is closed at the end.
            self._sessions.append(session)
            self.task, self.node = init.taskID, init.nodeID
            resp.init.success = True
            log.info(
                "conn=%d init udf=%s task=%s node=%s model=%s version=%s threshold=%s",
                self.id,
                self.config.kind,
                init.taskID,
                init.nodeID,
                options.model,
                session.primary.version,
                session.threshold,
            )
        self._send(_response_frame(resp))

    def _on_snapshot(self) -> None:
        resp = pb.Response()
        resp.snapshot.snapshot = self.session.snapshot() if self.session is not None else b""
        self._send(_response_frame(resp))

    def _on_restore(self, data: bytes) -> None:
        resp = pb.Response()
        if not data:
            resp.restore.success = True
        elif self.session is None:
            resp.restore.success = False
            resp.restore.error = "restore before init: send init first"
        else:
            try:
                self.session.restore(data)
                resp.restore.success = True
            except (ValueError, UnicodeDecodeError) as exc:
                resp.restore.success = False
                resp.restore.error = f"invalid snapshot: {exc}"
        self._send(_response_frame(resp))

    # -- scoring -------------------------------------------------------------
    def _score_loop(self) -> None:
        clock = time.perf_counter
        yielded = clock()
        busy = 0.0
        done = 0
        while True:
            with self._cond:
                unit = self._next_unit_locked()
                if unit is None:
                    return
            started = clock()
            self._process(unit)
            now = clock()
            busy += now - started
            done += len(unit.points)
            if busy >= 0.1:  # a throughput sample every 100 ms of work
                rate = done / busy
                self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
                busy, done = 0.0, 0
            # Back-to-back scoring starves the reader thread of the GIL: with .maxBatch(1)
            # under load, keepalive round trips reached 0.3 s. A voluntary yield every
            # few ms lets the reader in (measured: max ~6 ms) at no visible throughput cost.
            if now - yielded >= YIELD_EVERY:
                time.sleep(0)
                yielded = clock()

    def _next_unit_locked(self) -> _Unit | None:
        while True:
            if self._ready:
                return self._ready.popleft()
            stream = self._stream
            if stream is not None and stream.points:
                due = stream.since + stream.session.options.max_delay
                now = self.config.clock()
                if now >= due or self._closing:
                    stream.ready = min(due, now)
                    self._stream = None
                    return stream
                self._cond.wait(due - now)
                continue
            if self._closing:
                return None
            self._cond.wait()

    def _process(self, unit: _Unit) -> None:
        try:
            self._write_unit(unit)
        finally:
            if unit.points:
                self._release(len(unit.points))

    def _write_unit(self, unit: _Unit) -> None:
        session = unit.session
        n = len(unit.points)
        if self._broken:
            # The peer cannot be written to: nothing to score for. Counted, not silent.
            self._count_undelivered(n)
            return
        if isinstance(session, DriftSession):
            self._write_drift(session, unit)
            return
        try:
            now = self.config.clock()
            if session is None:
                frames = _unscored_frames(unit.points, unit.payloads, "agent not initialized")
            elif self._stop_deadline is not None and now > self._stop_deadline:
                self.metrics.errors.labels("stopping").inc(n)
                frames = session.passthrough(
                    unit.points, unit.payloads, "not scored: the agent was stopping"
                )
            elif now - unit.ready > self.config.max_backlog_age:
                self.metrics.errors.labels("backlog_timeout").inc(n)
                frames = session.passthrough(
                    unit.points,
                    unit.payloads,
                    f"not scored: waited over {self.config.max_backlog_age:g}s behind a slow backend",
                )
            else:
                if session is not self._outputs_checked:
                    self._check_outputs(session, unit.points[0])
                frames = session.score(unit.points, unit.payloads)
        except Exception as exc:  # never drop the batch because of a bug
            log.exception("conn=%d scoring a batch of %d failed", self.id, n)
            self.metrics.errors.labels("internal_error").inc()
            frames = _unscored_frames(
                unit.points, unit.payloads, f"internal error: {type(exc).__name__}"
            )
        if unit.begin is not None:
            frames.insert(0, encode_frame(unit.begin))
        if unit.end is not None:
            frames.append(encode_frame(unit.end))
        if self._send(b"".join(frames)):
            self.metrics.points_out.inc(n)
        else:
            self._count_undelivered(n)

    def _check_outputs(self, session: ScoringSession, point: Any) -> None:
        """Once per init: warn (and count) when the points already carry a field or tag
        this node writes, since the output would overwrite it in the emitted point."""
        self._outputs_checked = session
        present = session.check_point_outputs(point)
        if present:
            self.metrics.errors.labels("output_collision").inc()
            log.error(
                "conn=%d task=%s: the points already carry %s; this node's output overwrites "
                "them (set .field() to another name, or drop them upstream)",
                self.id,
                self.task,
                ", ".join(repr(p) for p in present),
            )

    def _write_drift(self, session: DriftSession, unit: _Unit) -> None:
        """A ``@drift()`` batch: its points are binned, not passed on; one new point is
        written at the batch's end (none is lost: the input stays in InfluxDB)."""
        try:
            frames = session.consume(unit.points, unit.begin, unit.end)
        except Exception:  # a bug ends this window only
            log.exception("conn=%d drift window of %d point(s) failed", self.id, len(unit.points))
            self.metrics.errors.labels("internal_error").inc()
            return
        if frames and self._send(b"".join(frames)):
            self.metrics.points_out.inc(len(frames))

    def _count_undelivered(self, n: int) -> None:
        if n:
            self._undelivered += n
            self.metrics.errors.labels("undelivered").inc(n)

    def _flush_all(self) -> None:
        """Hand every buffered stream point to the scorer (before a re-init or a wait)."""
        with self._cond:
            if self._stream is not None and self._stream.points:
                self._stream.ready = self.config.clock()
                self._ready.append(self._stream)
                self._stream = None
            self._cond.notify()

    # -- shutdown ------------------------------------------------------------
    def shutdown(self, score_deadline: float | None = None) -> None:
        """Stop reading; what is held is still written back, then the socket is closed.
        Points not scored by ``score_deadline`` (``clock()`` time) are passed on unscored
        with a score_error, so a stop ends in bounded time without losing them."""
        self._stop_deadline = score_deadline
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        with self.budget.cond:
            self.budget.cond.notify_all()

    def abort(self, reason: str) -> None:
        """Cut the connection now (init timeout, or a stop past its deadline)."""
        log.warning("conn=%d aborted: %s task=%s", self.id, reason, self.task)
        self._aborted = True
        self._broken = True
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self.budget.cond:
            self.budget.cond.notify_all()

    def _finish(self, reason: str) -> None:
        unit = self._batch
        if unit is not None and unit.points:
            # An unterminated Kapacitor batch: score its points rather than lose them
            # (without a begin that no end would follow, if nothing of it went out yet).
            self._batch = None
            unit.begin = None
            self._enqueue_unit(unit)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._scorer.join()
        for session in self._sessions:
            session.close()
        if self._fatal is not None:
            resp = pb.Response()
            resp.error.error = self._fatal
            self._send(_response_frame(resp))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._undelivered:
            log.error(
                "conn=%d %d point(s) could not be written back (peer gone) task=%s",
                self.id,
                self._undelivered,
                self.task,
            )
        log.info("conn=%d closed: %s task=%s", self.id, reason, self.task)


def _unscored_frames(points: list[Any], payloads: list[bytes | None], reason: str) -> list[bytes]:
    from models import contract

    from .protocol.codec import PointEncoder

    extra = PointEncoder.string(contract.SCORE_ERROR, reason)
    return [
        PointEncoder.frame(body if body is not None else p.SerializeToString(), extra)
        for p, body in zip(points, payloads)
    ]
