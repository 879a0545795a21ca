"""Watch Kapacitor's tasks, re-enable the scoring tasks whose UDF died, backfill their gap.

Facts this rests on (Kapacitor 1.5-1.8, checked against its source and a real 1.5):

- When the agent goes away, a task calling it keeps ``executing: true`` until the next
  point reaches the UDF node; then the task stops with ``error`` set (``score2: stopping
  UDF server: write error: ... broken pipe``) and stays ``enabled`` and not executing.
- PATCHing ``enabled`` onto that task does nothing (only a status *change* starts a
  task). Re-enabling is ``disabled`` then ``enabled``.
- A socket UDF started while its socket is missing keeps dialling for up to 5 minutes and
  shows ``executing: true`` all the while, scoring nothing: so the socket is probed (an
  info request, as Kapacitor sends at start-up) before a task is re-enabled.
- The API does not say *when* a task failed; the gap's start comes from the data: the
  newest point the task's model wrote into its output measurement since the task was
  last enabled (see :meth:`Supervisor.gap_start`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.lineprotocol import LineProtocolError

from ..protocol import messages as pb
from ..protocol.codec import FrameDecoder, encode_frame
from .errors import (
    BackfillError,
    InfluxError,
    KapacitorError,
    KapacitorUnavailable,
    ScriptError,
    SupervisorError,
)
from .influx import EVENTS_MEASUREMENT, InfluxClient, line
from .kapacitor import KapacitorClient, format_time, parse_time
from .metrics import SupervisorMetrics
from .tickscript import ScoringTask, backfill_script, read_scoring_task, udfs_used

__all__ = [
    "BACKFILL_PREFIX",
    "Backoff",
    "Gap",
    "Supervisor",
    "SupervisorConfig",
    "probe_socket",
]

log = logging.getLogger("udf_agent.supervise")

#: id prefix of the temporary batch tasks (and their replays) that backfill a gap
BACKFILL_PREFIX = "udf_supervisor_backfill"
NS = 1_000_000_000
#: shortest pause between two polls: the loop never spins
MIN_WAIT = 0.05
#: after a Kapacitor outage, look this far before the last good poll for unscored points
OUTAGE_MARGIN = 5.0
#: after an InfluxDB outage: Kapacitor's influxDBOut holds up to 10 s of points (its
#: default flush interval) and drops them when the write fails
INFLUX_OUTAGE_MARGIN = 15.0


@dataclass(frozen=True, kw_only=True)
class SupervisorConfig:
    """Supervisor settings (times in seconds)."""

    #: UDF name -> the agent socket Kapacitor uses for it (probed before a re-enable)
    sockets: Mapping[str, Path] = field(default_factory=dict)
    #: UDFs whose tasks are watched
    udfs: tuple[str, ...] = ("score", "score_batch")
    #: stream UDF -> the batch UDF a backfill of its tasks calls
    batch_udfs: Mapping[str, str] = field(default_factory=lambda: {"score": "score_batch"})
    #: watched UDFs whose tasks are re-enabled but never backfilled (the drift UDF: a
    #: window it missed is judged again as part of the next ones)
    reenable_only: frozenset[str] = frozenset()
    poll_interval: float = 1.0
    backoff_min: float = 0.2
    backoff_max: float = 4.0
    probe_timeout: float = 2.0
    #: database of the udf_events annotations
    events_database: str = "fraud"
    backfill: bool = True
    #: length of one backfill query (one Kapacitor batch per series)
    backfill_chunk: float = 10.0
    #: the gap runs this long past the re-enable (points still in flight, clock skew)
    backfill_overlap: float = 1.0
    backfill_timeout: float = 600.0
    backfill_attempts: int = 5
    #: a gap longer than this is cut to its last max_gap seconds
    max_gap: float = 86_400.0
    max_pending: int = 100
    max_events: int = 1_000

    def __repr__(self) -> str:
        socks = ",".join(f"{k}={v}" for k, v in self.sockets.items())
        return (
            f"SupervisorConfig(udfs={','.join(self.udfs)}, sockets={socks or 'none'}, "
            f"poll={self.poll_interval:g}s, backoff={self.backoff_min:g}-{self.backoff_max:g}s, "
            f"backfill={'on' if self.backfill else 'off'})"
        )


class Backoff:
    """Capped exponential back-off with jitter: attempt n waits between half and all of
    ``min(cap, base * 2**(n-1))``."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = max(base, 0.001)
        self.cap = max(cap, self.base)
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, min(attempt, 60) - 1)))
        return ceiling * (0.5 + 0.5 * self.rng.random())


def probe_socket(path: Path, timeout: float) -> str | None:
    """Ask the agent on ``path`` for its info, as Kapacitor does at start-up. None when it
    answered; else why not."""
    req = encode_frame(pb.Request(info=pb.InfoRequest()).SerializeToString())
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(req)
            dec = FrameDecoder()
            while time.monotonic() < deadline:
                data = s.recv(65536)
                if not data:
                    return "closed without answering"
                dec.feed(data)
                for body in dec.frames():
                    kind = pb.Response.FromString(body).WhichOneof("message")
                    return None if kind == "info" else f"answered {kind}, not info"
            return "no answer in time"
    except OSError as exc:
        return exc.strerror or str(exc)
    except Exception as exc:  # a garbled answer is a failed probe, not a crash
        return f"unreadable answer: {type(exc).__name__}"


@dataclass
class _Failing:
    task_id: str
    udf: str
    error: str
    seen_ns: int
    last_enabled_ns: int | None
    gap_start_ns: int | None = None
    attempts: int = 0
    next_try: float = 0.0
    socket_ok_at: float | None = None


@dataclass
class Gap:
    """Points of ``task_id`` in ``[start_ns, end_ns)`` were not scored live."""

    task_id: str
    start_ns: int
    end_ns: int
    attempts: int = 0
    next_try: float = 0.0
    note: str = ""


class _Stopping(BackfillError):
    """The supervisor stops while a replay runs; Kapacitor finishes it on its own."""


@dataclass
class _Event:
    t_ns: int
    tags: dict[str, str]
    fields: dict[str, Any]


class Supervisor:
    """Poll Kapacitor, re-enable failed scoring tasks once their socket answers, backfill
    their gaps. ``start()`` runs it in threads; ``poll_once()`` and ``backfill_once()``
    run one step on the calling thread (tests, tools)."""

    def __init__(
        self,
        config: SupervisorConfig,
        kapacitor: KapacitorClient,
        *,
        influx: InfluxClient | None = None,
        metrics: SupervisorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        probe: Callable[[Path, float], str | None] = probe_socket,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.kapacitor = kapacitor
        self.influx = influx
        self.metrics = metrics or SupervisorMetrics()
        self.clock = clock
        self.monotonic = monotonic
        self.probe = probe
        self.backoff = Backoff(config.backoff_min, config.backoff_max, rng)
        self._udfs = set(config.udfs)
        self._failing: dict[str, _Failing] = {}
        self._disabled_by_us: set[str] = set()
        self._sockets: dict[Path, tuple[int, float]] = {}  # path -> (failures, next probe)
        #: identity of each socket file when its last probe failed (None: no file)
        self._socket_files: dict[Path, tuple[int, int] | None] = {}
        self._probed: dict[Path, bool] = {}  # sockets that answered in this pass
        self._kapacitor_failures = 0
        self._last_ok_poll_ns: int | None = None  # wall clock of the last task list read
        self._outage_since_ns: int | None = None  # Kapacitor unreachable since
        self._influx_ok_ns: int | None = None  # last time InfluxDB answered a ping
        self._influx_down_since: int | None = None
        self._unreadable: set[str] = set()
        self._gaps: dict[str, Gap] = {}
        self._gaps_lock = threading.Condition()
        self._events: deque[_Event] = deque()
        self._events_cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Supervisor:
        for name, target in (
            ("supervise-poll", self._poll_loop),
            ("supervise-backfill", self._backfill_loop),
            ("supervise-events", self._events_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 4.0) -> None:
        """Stop every thread; returns within ``timeout`` (a call in flight is abandoned:
        each has its own timeout, and a backfill left unfinished is resumed at the next
        start from its ``udf_events`` record)."""
        self._stop.set()
        with self._gaps_lock:
            self._gaps_lock.notify_all()
        with self._events_cond:
            self._events_cond.notify_all()
        deadline = self.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - self.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("stopped with %s still finishing a call", ",".join(alive))
        with self._events_cond:
            left = len(self._events)
        if left:
            log.warning("%d %s point(s) not written at stop", left, EVENTS_MEASUREMENT)
        log.info("stopped")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the poll loop ---------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.poll_once()
            except Exception:  # never let one bad answer end the supervision
                log.exception("poll failed")
                self.metrics.errors.labels("internal").inc()
                wait = self.config.poll_interval
            self._stop.wait(max(MIN_WAIT, wait))

    def poll_once(self) -> float:
        """One pass over the task list; returns how long to wait before the next."""
        cfg = self.config
        try:
            tasks = list(self.kapacitor.tasks())
        except KapacitorError as exc:
            self._kapacitor_failures += 1
            if self._kapacitor_failures == 1 and isinstance(exc, KapacitorUnavailable):
                self._outage_since_ns = self._last_ok_poll_ns
            self.metrics.polls.labels("error").inc()
            self.metrics.errors.labels("kapacitor").inc()
            delay = max(cfg.poll_interval, self.backoff.delay(self._kapacitor_failures))
            if self._kapacitor_failures == 1 or self._kapacitor_failures % 10 == 0:
                log.warning(
                    "cannot list tasks (%d failure(s) in a row; next try in %.1fs): %s",
                    self._kapacitor_failures,
                    delay,
                    exc,
                )
            return delay
        if self._kapacitor_failures:
            log.info("Kapacitor answers again after %d failure(s)", self._kapacitor_failures)
        self._kapacitor_failures = 0
        outage_since, self._outage_since_ns = self._outage_since_ns, None
        self._last_ok_poll_ns = int(self.clock() * NS)
        influx_outage = self._check_influx()
        self.metrics.polls.labels("ok").inc()
        self.metrics.last_poll.set(self.clock())

        counts = {"executing": 0, "failed": 0, "disabled": 0}
        seen: set[str] = set()
        for task in tasks:
            task_id = str(task.get("id", ""))
            if not task_id or task_id.startswith(BACKFILL_PREFIX):
                continue
            udf = self._watched_udf(task)
            if udf is None:
                continue
            seen.add(task_id)
            state = self._observe(task, udf)
            counts[state] += 1
            if udf in cfg.reenable_only:
                continue  # nothing to backfill after an outage either
            if state == "executing" and outage_since is not None:
                self._after_outage(task_id, outage_since - int(OUTAGE_MARGIN * NS), "Kapacitor")
            if state == "executing" and influx_outage is not None:
                self._after_outage(task_id, influx_outage, "InfluxDB")
        for task_id in list(self._failing):
            if task_id not in seen:
                log.info("task=%s no longer exists; forgotten", task_id)
                self._failing.pop(task_id)
                self._disabled_by_us.discard(task_id)
        for state, n in counts.items():
            self.metrics.tasks.labels(state).set(n)

        wait = cfg.poll_interval
        now = self.monotonic()
        self._probed.clear()
        for failing in list(self._failing.values()):
            if self._stop.is_set():
                break
            if failing.next_try <= now or self._socket_replaced(failing.udf):
                self._try_reenable(failing)
            wait = min(wait, max(0.0, failing.next_try - self.monotonic()))
        return max(wait, MIN_WAIT)

    def _watched_udf(self, task: Mapping[str, Any]) -> str | None:
        task_id = str(task.get("id"))
        try:
            used = udfs_used(task.get("script") or "") & self._udfs
        except ScriptError as exc:
            if task_id not in self._unreadable:
                self._unreadable.add(task_id)
                log.warning("task=%s: cannot read its TICKscript, not watched: %s", task_id, exc)
            return None
        return sorted(used)[0] if used else None

    def _observe(self, task: Mapping[str, Any], udf: str) -> str:
        task_id = str(task["id"])
        status = task.get("status")
        executing = bool(task.get("executing"))
        last_enabled = parse_time(task.get("last-enabled"))
        failing = self._failing.get(task_id)
        if status == "disabled" and task_id not in self._disabled_by_us:
            with contextlib.suppress(KeyError):
                self.metrics.task_up.remove(task_id)
            if failing is not None:
                log.info("task=%s was disabled by a person; left alone", task_id)
                self._failing.pop(task_id)
            return "disabled"
        if status == "enabled" and executing:
            self._disabled_by_us.discard(task_id)
            self.metrics.task_up.labels(task_id).set(1)
            if failing is not None:
                self._failing.pop(task_id)
                if last_enabled and (
                    failing.last_enabled_ns is None or last_enabled > failing.last_enabled_ns
                ):
                    log.info(
                        "task=%s was re-enabled outside the supervisor; its gap is backfilled",
                        task_id,
                    )
                    self._schedule_gap(failing, last_enabled, note="re-enabled by someone else")
            return "executing"
        # enabled and not executing, or disabled by us between our two PATCHes
        self.metrics.task_up.labels(task_id).set(0)
        if failing is None:
            error = str(task.get("error") or "")
            failing = _Failing(
                task_id=task_id,
                udf=udf,
                error=error,
                seen_ns=int(self.clock() * NS),
                last_enabled_ns=last_enabled,
            )
            self._failing[task_id] = failing
            self.metrics.failures.labels(task_id).inc()
            log.warning("task=%s udf=%s is enabled but not executing: %s", task_id, udf, error)
            self._emit(
                "failed",
                task_id,
                f"{task_id} stopped: {error or 'no error reported'}",
                failing.seen_ns,
                error=error,
            )
            if (
                self.influx is not None
                and self.config.backfill
                and udf not in self.config.reenable_only
            ):
                failing.gap_start_ns = self._safe_gap_start(task, last_enabled)
        return "failed"

    # -- re-enabling -----------------------------------------------------------------------
    def _socket_identity(self, path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_ctime_ns)

    def _socket_replaced(self, udf: str) -> bool:
        """A new socket file where the last probe failed: a new agent is listening, probe
        it now rather than at the end of the back-off (a stat per poll, no connection)."""
        path = self.config.sockets.get(udf)
        if path is None or path not in self._socket_files:
            return False
        now = self._socket_identity(path)
        if now is not None and now != self._socket_files[path]:
            self._sockets[path] = (self._sockets.get(path, (0, 0.0))[0], 0.0)
            return True
        return False

    def _socket_ready(self, failing: _Failing) -> bool:
        path = self.config.sockets.get(failing.udf)
        if path is None:
            return True  # nothing to probe: Kapacitor's own start is the probe
        if self._probed.get(path):
            return True  # answered earlier in this pass
        failures, next_probe = self._sockets.get(path, (0, 0.0))
        now = self.monotonic()
        if next_probe > now:
            failing.next_try = max(failing.next_try, next_probe)
            return False
        problem = self.probe(path, self.config.probe_timeout)
        if problem is None:
            self.metrics.probes.labels(str(path), "ok").inc()
            if failures:
                log.info("socket %s answers again after %d failed probe(s)", path, failures)
            self._sockets[path] = (0, 0.0)
            self._socket_files.pop(path, None)
            self._probed[path] = True
            return True
        failures += 1
        delay = self.backoff.delay(failures)
        self._sockets[path] = (failures, now + delay)
        self._socket_files[path] = self._socket_identity(path)
        failing.next_try = now + delay
        failing.socket_ok_at = None
        self.metrics.probes.labels(str(path), "refused").inc()
        if failures == 1 or failures % 20 == 0:
            log.info(
                "socket %s does not answer (%s); task=%s waits, next probe in %.1fs",
                path,
                problem,
                failing.task_id,
                delay,
            )
        return False

    def _try_reenable(self, failing: _Failing) -> None:
        task_id = failing.task_id
        if not self._socket_ready(failing):
            return
        if failing.socket_ok_at is None:
            failing.socket_ok_at = self.monotonic()
        try:
            # read it again: a person may have disabled it since the list was read
            current = self.kapacitor.task(task_id)
            status = current.get("status")
            if current.get("executing") or (
                status == "disabled" and task_id not in self._disabled_by_us
            ):
                failing.next_try = self.monotonic() + self.config.poll_interval
                return  # the next poll sees what changed
            if status == "enabled":
                # enabled -> enabled starts nothing: only a status change does
                self._disabled_by_us.add(task_id)
                self.kapacitor.set_status(task_id, "disabled")
            answer = self.kapacitor.set_status(task_id, "enabled")
        except KapacitorError as exc:
            self._reenable_failed(failing, str(exc))
            return
        self._disabled_by_us.discard(task_id)
        if not answer.get("executing"):
            self._reenable_failed(failing, str(answer.get("error") or "not executing"))
            return
        self._failing.pop(task_id, None)
        now_ns = int(self.clock() * NS)
        end_ns = parse_time(answer.get("last-enabled")) or now_ns
        delay = self.monotonic() - failing.socket_ok_at
        self.metrics.recoveries.labels(task_id).inc()
        self.metrics.task_up.labels(task_id).set(1)
        self.metrics.reenable_delay.observe(delay)
        start = failing.gap_start_ns
        if start is not None:
            self.metrics.downtime.observe(max(0.0, (end_ns - start) / NS))
        log.info(
            "recovered task=%s re-enabled %.2fs after its socket answered, %d attempt(s); "
            "last error: %s",
            task_id,
            delay,
            failing.attempts + 1,
            failing.error or "none",
        )
        self._schedule_gap(failing, end_ns, note="re-enabled by the supervisor")

    def _reenable_failed(self, failing: _Failing, why: str) -> None:
        failing.attempts += 1
        failing.error = why or failing.error
        delay = self.backoff.delay(failing.attempts)
        failing.next_try = self.monotonic() + delay
        self.metrics.reenable_errors.labels(failing.task_id).inc()
        log.warning(
            "task=%s re-enable attempt %d failed (next in %.1fs): %s",
            failing.task_id,
            failing.attempts,
            delay,
            why,
        )

    # -- gaps ------------------------------------------------------------------------------
    def _safe_gap_start(self, task: Mapping[str, Any], last_enabled: int | None) -> int | None:
        try:
            info = read_scoring_task(task, self._udfs)
            if info is None or not info.out_measurement:
                return None
            return self.gap_start(info, last_enabled)
        except SupervisorError as exc:
            self.metrics.errors.labels("influxdb").inc()
            log.warning("task=%s: cannot find where its gap starts yet: %s", task.get("id"), exc)
            return None

    def gap_start(self, info: ScoringTask, last_enabled_ns: int | None) -> int:
        """Where the unscored stretch of a failed task begins: just after the newest point
        its model wrote into its output measurement during its last run (since
        ``last-enabled``); the run's start if it wrote none. Never more than ``max_gap``
        back."""
        assert self.influx is not None
        floor = int((self.clock() - self.config.max_gap) * NS)
        since = max(floor, last_enabled_ns or floor)
        newest = self.influx.last_scored(
            db=info.out_database,
            rp=info.out_retention_policy,
            measurement=info.out_measurement,
            model=info.model,
            score_field=info.score_field,
            since_ns=since,
        )
        return newest + 1 if newest is not None else since

    def _check_influx(self) -> int | None:
        """Ping InfluxDB; when it answers again after failing, where its outage's gap
        starts (else None)."""
        if self.influx is None or not self.config.backfill:
            return None
        now = int(self.clock() * NS)
        try:
            self.influx.ping()
        except InfluxError as exc:
            if self._influx_down_since is None and self._influx_ok_ns is not None:
                self._influx_down_since = self._influx_ok_ns
                log.warning("InfluxDB does not answer: %s", exc)
            self.metrics.errors.labels("influxdb").inc()
            return None
        self._influx_ok_ns = now
        since, self._influx_down_since = self._influx_down_since, None
        if since is None:
            return None
        log.info("InfluxDB answers again; scored points written meanwhile are checked")
        return since - int(INFLUX_OUTAGE_MARGIN * NS)

    def _after_outage(self, task_id: str, start_ns: int, what: str) -> None:
        """Kapacitor or InfluxDB did not answer for a while: points may have missed the
        task (Kapacitor restarted) or its scores the database (writes refused). The
        stretch is queued as a gap; the backfill counts it first and replays only when
        points in it lack a score."""
        if self.influx is None or not self.config.backfill:
            return
        end = int(self.clock() * NS) + int(self.config.backfill_overlap * NS)
        self.add_gap(Gap(task_id, start_ns, end, note=f"{what} was unreachable"))

    def _schedule_gap(self, failing: _Failing, end_ns: int, *, note: str) -> None:
        if failing.udf in self.config.reenable_only:
            text = f"{failing.task_id} {note}; last error: {failing.error or 'none'}"
            self._emit("reenabled", failing.task_id, text, end_ns, error=failing.error)
            return
        start = failing.gap_start_ns
        if start is None and self.influx is not None and self.config.backfill:
            # InfluxDB was not reachable when the task failed: ask now, up to the re-enable
            try:
                task = self.kapacitor.task(failing.task_id)
                info = read_scoring_task(task, self._udfs)
                if info is not None and info.out_measurement:
                    floor = int((self.clock() - self.config.max_gap) * NS)
                    since = max(floor, failing.last_enabled_ns or floor)
                    assert self.influx is not None
                    newest = self.influx.last_scored(
                        db=info.out_database,
                        rp=info.out_retention_policy,
                        measurement=info.out_measurement,
                        model=info.model,
                        score_field=info.score_field,
                        since_ns=since,
                        before_ns=end_ns,
                    )
                    start = newest + 1 if newest is not None else since
            except SupervisorError as exc:
                log.warning("task=%s: gap start unknown, not backfilled: %s", failing.task_id, exc)
        end = end_ns + int(self.config.backfill_overlap * NS)
        if start is not None:
            start = max(int(start), end - int(self.config.max_gap * NS))
        text = f"{failing.task_id} {note}; last error: {failing.error or 'none'}"
        fields: dict[str, Any] = {"error": failing.error}
        if start is not None:
            text += f"; unscored from {format_time(start)} to {format_time(end)}"
            fields.update(gap_start_ns=int(start), gap_end_ns=int(end), end_ms=end // 1_000_000)
        self._emit(
            "reenabled", failing.task_id, text, start if start is not None else end_ns, **fields
        )
        if start is None or not self.config.backfill or self.influx is None:
            return
        self.add_gap(Gap(failing.task_id, int(start), int(end), note=note))

    def add_gap(self, gap: Gap) -> bool:
        """Queue a gap (merged with one already waiting for the same task). False when
        ``max_pending`` gaps wait already: refused, counted and logged."""
        with self._gaps_lock:
            old = self._gaps.get(gap.task_id)
            if old is not None:
                old.start_ns = min(old.start_ns, gap.start_ns)
                old.end_ns = max(old.end_ns, gap.end_ns)
            elif len(self._gaps) >= self.config.max_pending:
                self.metrics.refused.labels("backfill").inc()
                log.error(
                    "task=%s: %d gaps wait already; this one [%s, %s) is not backfilled",
                    gap.task_id,
                    len(self._gaps),
                    format_time(gap.start_ns),
                    format_time(gap.end_ns),
                )
                return False
            else:
                self._gaps[gap.task_id] = gap
            self.metrics.backfills_pending.set(len(self._gaps))
            self._gaps_lock.notify_all()
        return True

    def pending_gaps(self) -> list[Gap]:
        with self._gaps_lock:
            return [Gap(**vars(g)) for g in self._gaps.values()]

    def resume_gaps(self) -> int:
        """Queue the gaps a previous run re-enabled but did not backfill (its
        ``reenabled`` events without a later ``backfilled`` one)."""
        assert self.influx is not None
        since = int((self.clock() - self.config.max_gap) * NS)
        open_gaps: dict[tuple[str, int], Gap] = {}
        for row in self.influx.events(db=self.config.events_database, since_ns=since):
            task, event = row.get("task"), row.get("event")
            start, end = row.get("gap_start_ns"), row.get("gap_end_ns")
            if not task or start is None or end is None:
                continue
            key = (str(task), int(end))
            if event == "reenabled":
                open_gaps[key] = Gap(str(task), int(start), int(end), note="resumed")
            elif event in ("backfilled", "backfill_skipped"):
                open_gaps.pop(key, None)
        for gap in open_gaps.values():
            log.info(
                "task=%s: resuming the backfill of [%s, %s)",
                gap.task_id,
                format_time(gap.start_ns),
                format_time(gap.end_ns),
            )
            self.add_gap(gap)
        return len(open_gaps)

    # -- backfills ---------------------------------------------------------------------------
    def _backfill_loop(self) -> None:
        if self.influx is not None and self.config.backfill:
            try:
                self.resume_gaps()
            except SupervisorError as exc:
                log.warning("cannot read pending gaps from %s: %s", EVENTS_MEASUREMENT, exc)
        while not self._stop.is_set():
            with self._gaps_lock:
                gap, wait = self._next_gap_locked()
                if gap is None:
                    self._gaps_lock.wait(wait)
                    continue
            try:
                self.backfill_once(gap)
            except Exception:  # a bug must not end the backfills
                log.exception("backfill of task=%s failed", gap.task_id)
                self.metrics.errors.labels("internal").inc()
                self._gap_failed(gap, "internal error")

    def _next_gap_locked(self) -> tuple[Gap | None, float]:
        now = self.monotonic()
        wall = self.clock()
        settle = self.config.backfill_overlap + 1.0
        best, wait = None, 1.0
        for gap in self._gaps.values():
            # Kapacitor skips a replay query that ends after its own "now"
            ready_at = max(gap.next_try, now + (gap.end_ns / NS + settle - wall))
            if ready_at <= now and (best is None or gap.end_ns < best.end_ns):
                best = gap
            wait = min(wait, max(0.01, ready_at - now))
        return best, wait

    def backfill_once(self, gap: Gap, *, force: bool = False) -> bool:
        """Score the gap's points through the batch UDF (see :func:`backfill_script`) and
        check the result; True when done (or skipped for good). Unless ``force``, a gap
        whose points all have a score already is not replayed."""
        started = self.monotonic()
        task_id = gap.task_id
        try:
            task = self.kapacitor.task(task_id)
            info = read_scoring_task(task, self._udfs)
            if info is None or not info.backfillable:
                why = info.unsupported if info is not None else "it no longer calls the UDF"
                self._gap_skipped(gap, why)
                return True
            batch_udf = self.config.batch_udfs.get(info.udf) if info.type == "stream" else info.udf
            if batch_udf is None:
                self._gap_skipped(gap, f"no batch UDF configured for {info.udf}")
                return True
            path = self.config.sockets.get(batch_udf)
            if path is not None:
                problem = self.probe(path, self.config.probe_timeout)
                self.metrics.probes.labels(str(path), "ok" if problem is None else "refused").inc()
                if problem is not None:
                    raise BackfillError(f"batch socket {path} does not answer: {problem}")
            scored_before = self._count_scored(info, gap)
            total = self._count_input(info, gap)
            if not force and total is not None and scored_before >= total:
                self._finish_gap(gap)  # every point has its score: nothing to replay
                log.info(
                    "task=%s: no unscored point in [%s, %s) (%s)",
                    task_id,
                    format_time(gap.start_ns),
                    format_time(gap.end_ns),
                    gap.note or "gap",
                )
                self.metrics.backfills.labels(task_id, "nothing").inc()
                return True
            self._run_replay(task, info, batch_udf, gap)
            scored_after = self._count_scored(info, gap)
        except (SupervisorError, KapacitorError) as exc:
            self._gap_failed(gap, str(exc))
            return False
        done = self._finish_gap(gap)
        points = max(0, scored_after - scored_before)
        unscored = max(0, total - scored_after) if total is not None else 0
        seconds = self.monotonic() - started
        self.metrics.backfills.labels(task_id, "ok").inc()
        self.metrics.backfill_points.labels(task_id).inc(points)
        self.metrics.unscored.labels(task_id).set(unscored)
        self.metrics.backfill_seconds.observe(seconds)
        msg = (
            f"{task_id} gap backfilled: {points} point(s) newly scored in [{format_time(gap.start_ns)},"
            f" {format_time(gap.end_ns)}), {unscored} still unscored"
        )
        (log.warning if unscored else log.info)("%s (%.2fs)", msg, seconds)
        self._emit(
            "backfilled",
            task_id,
            msg,
            int(self.clock() * NS),
            gap_start_ns=gap.start_ns,
            gap_end_ns=gap.end_ns,
            points=points,
            unscored=unscored,
        )
        return done

    def _run_replay(self, task: Mapping[str, Any], info: ScoringTask, batch_udf: str, gap: Gap):
        cfg = self.config
        run_id = f"{BACKFILL_PREFIX}_{info.task_id}_{gap.end_ns // 1_000_000}"
        if info.type == "stream":
            assert self.influx is not None
            int_fields = self.influx.integer_fields(
                db=info.database, rp=info.retention_policy, measurements=[info.measurement]
            )
            int_fields |= self.influx.integer_fields(
                db=info.out_database,
                rp=info.out_retention_policy,
                measurements=[info.out_measurement],
            )
            chunk = max(int(cfg.backfill_chunk * NS), 1_000_000)
            script = backfill_script(
                info,
                batch_udf=batch_udf,
                start_ns=gap.start_ns,
                chunk_ns=chunk,
                int_fields=sorted(int_fields),
                header=(
                    f"backfill of task {info.task_id} over [{format_time(gap.start_ns)}, "
                    f"{format_time(gap.end_ns)}), written by udf_agent.supervise"
                ),
            )
            self._discard(run_id)
            self.kapacitor.define_task(
                {
                    "id": run_id,
                    "type": "batch",
                    "script": script,
                    "status": "disabled",
                    "vars": task.get("vars") or {},
                }
            )
            # queries [stop - k*chunk, stop - (k-1)*chunk): the last one ends at the gap's
            # end, the script's own "time >" cuts the first at its start
            n = max(1, -(-(gap.end_ns - gap.start_ns) // chunk))
            replay_task, start, stop = run_id, gap.end_ns - n * chunk, gap.end_ns
        else:
            with contextlib.suppress(KapacitorError):
                self.kapacitor.delete_replay(run_id)
            replay_task, start, stop = info.task_id, gap.start_ns, gap.end_ns
        try:
            self.kapacitor.replay_batch(
                replay_id=run_id, task_id=replay_task, start_ns=start, stop_ns=stop
            )
            deadline = self.monotonic() + cfg.backfill_timeout
            while True:
                if self._stop.wait(0.2):
                    raise _Stopping("stopping; the backfill resumes at the next start")
                replay = self.kapacitor.replay(run_id)
                status = replay.get("status")
                if status == "finished":
                    break
                if status == "failed":
                    raise BackfillError(f"replay failed: {replay.get('error') or 'no error'}")
                if self.monotonic() > deadline:
                    raise BackfillError(f"replay still {status} after {cfg.backfill_timeout:g}s")
        except _Stopping:
            raise
        except (BackfillError, KapacitorError):
            self._discard(run_id, task=replay_task == run_id)
            raise
        self._discard(run_id, task=replay_task == run_id)

    def _discard(self, run_id: str, *, task: bool = True) -> None:
        """Remove a backfill's replay and task (absent ones are fine)."""
        for call in (self.kapacitor.delete_replay, self.kapacitor.delete_task if task else None):
            if call is None:
                continue
            try:
                call(run_id)
            except KapacitorError as exc:
                if exc.status != 404:
                    log.warning("cannot remove %s: %s", run_id, exc)

    def _count_scored(self, info: ScoringTask, gap: Gap) -> int:
        assert self.influx is not None
        src = _source(info.out_retention_policy, info.out_measurement)
        where = (
            f'("model" = {_lit(info.model)} OR "fallback_for" = {_lit(info.model)}) AND '
            f"time >= {gap.start_ns} AND time < {gap.end_ns}"
        )
        q = ";".join(
            f'SELECT count("{f}") FROM {src} WHERE {where}'
            for f in (info.score_field, "score_error")
        )
        return sum(_first_count(res) for res in self.influx.query(q, db=info.out_database))

    def _count_input(self, info: ScoringTask, gap: Gap) -> int | None:
        if info.type != "stream":
            return None
        assert self.influx is not None
        src = _source(info.retention_policy, info.measurement)
        q = f"SELECT count(*) FROM {src} WHERE time >= {gap.start_ns} AND time < {gap.end_ns}"
        results = self.influx.query(q, db=info.database)
        best = 0
        for res in results:
            for series in res.get("series") or []:
                for row in series.get("values") or []:
                    best = max([best, *(int(v) for v in row[1:] if v is not None)])
        return best

    def _finish_gap(self, gap: Gap) -> bool:
        with self._gaps_lock:
            current = self._gaps.get(gap.task_id)
            if (
                current is not None
                and current.start_ns >= gap.start_ns
                and current.end_ns <= gap.end_ns
            ):
                self._gaps.pop(gap.task_id)
            self.metrics.backfills_pending.set(len(self._gaps))
        return True

    def _gap_failed(self, gap: Gap, why: str) -> None:
        with self._gaps_lock:
            current = self._gaps.get(gap.task_id)
            if current is None:
                log.warning("task=%s: backfill failed: %s", gap.task_id, why)
                return
            current.attempts += 1
            if current.attempts >= self.config.backfill_attempts:
                self._gaps.pop(gap.task_id)
                self.metrics.backfills_pending.set(len(self._gaps))
                given_up = True
            else:
                current.next_try = self.monotonic() + self.backoff.delay(current.attempts) * 5
                given_up = False
        self.metrics.backfills.labels(gap.task_id, "failed").inc()
        if self._stop.is_set():
            return
        if given_up:
            log.error(
                "task=%s: backfill of [%s, %s) given up after %d attempts: %s",
                gap.task_id,
                format_time(gap.start_ns),
                format_time(gap.end_ns),
                current.attempts,
                why,
            )
            self._emit(
                "backfill_failed",
                gap.task_id,
                f"{gap.task_id} gap not backfilled: {why}",
                int(self.clock() * NS),
                gap_start_ns=gap.start_ns,
                gap_end_ns=gap.end_ns,
                error=why,
            )
        else:
            log.warning(
                "task=%s: backfill attempt %d failed, retried: %s",
                gap.task_id,
                current.attempts,
                why,
            )

    def _gap_skipped(self, gap: Gap, why: str) -> None:
        with self._gaps_lock:
            self._gaps.pop(gap.task_id, None)
            self.metrics.backfills_pending.set(len(self._gaps))
        self.metrics.backfills.labels(gap.task_id, "skipped").inc()
        log.warning("task=%s: gap not backfilled: %s", gap.task_id, why)
        self._emit(
            "backfill_skipped",
            gap.task_id,
            f"{gap.task_id} gap not backfilled: {why}",
            int(self.clock() * NS),
            gap_start_ns=gap.start_ns,
            gap_end_ns=gap.end_ns,
            error=why,
        )

    # -- udf_events --------------------------------------------------------------------------
    def _emit(self, event: str, task_id: str, text: str, t_ns: int, **fields: Any) -> None:
        if self.influx is None:
            return
        ev = _Event(int(t_ns), {"task": task_id, "event": event}, {"text": text, **fields})
        with self._events_cond:
            if len(self._events) >= self.config.max_events:
                self._events.popleft()
                self.metrics.refused.labels("event").inc()
                log.warning("%s queue full; the oldest point is dropped", EVENTS_MEASUREMENT)
            self._events.append(ev)
            self.metrics.events_pending.set(len(self._events))
            self._events_cond.notify()

    def _events_loop(self) -> None:
        failures = 0
        while True:
            with self._events_cond:
                while not self._events and not self._stop.is_set():
                    self._events_cond.wait(1.0)
                if self._stop.is_set() and not self._events:
                    return
                batch = list(self._events)
            if not self.flush_events(batch):
                failures += 1
                if self._stop.wait(self.backoff.delay(failures)):
                    return
            else:
                failures = 0

    def flush_events(self, batch: list[_Event] | None = None) -> bool:
        """Write queued events; True when written (or nothing to write)."""
        if self.influx is None:
            return True
        with self._events_cond:
            batch = list(self._events) if batch is None else batch
        if not batch:
            return True
        lines = []
        for e in batch:
            try:
                lines.append(line(EVENTS_MEASUREMENT, e.tags, e.fields, e.t_ns))
            except LineProtocolError as exc:  # never writable: logged, counted, let go
                self.metrics.errors.labels("event").inc()
                log.warning("cannot encode a %s point %r: %s", EVENTS_MEASUREMENT, e.tags, exc)
        try:
            if lines:
                self.influx.write(self.config.events_database, lines)
        except InfluxError as exc:
            self.metrics.errors.labels("influxdb").inc()
            log.warning("cannot write %d %s point(s): %s", len(batch), EVENTS_MEASUREMENT, exc)
            return False
        written = {id(e) for e in batch}
        with self._events_cond:
            while self._events and id(self._events[0]) in written:
                self._events.popleft()
            self.metrics.events_pending.set(len(self._events))
        return True


def _lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _source(rp: str, measurement: str) -> str:
    m = '"' + measurement.replace('"', '\\"') + '"'
    return f'"{rp}".{m}' if rp else m


def _first_count(res: Mapping[str, Any]) -> int:
    for series in res.get("series") or []:
        for row in series.get("values") or []:
            return int(row[1] or 0)
    return 0
