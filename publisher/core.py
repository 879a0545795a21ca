"""The publishing loop: rate control, batching, a bounded send buffer and retries.

Two threads. The producer (the caller of :meth:`Publisher.run`) stamps samples with the
current time and groups them into batches; a sender thread writes batches to InfluxDB.
They share a bounded queue: when InfluxDB is slow or down the queue fills and the
producer waits (back-pressure) instead of dropping points. Transient failures are
retried with exponential backoff until they succeed or the shutdown grace period ends;
a 4xx answer stops the run with an error naming the problem.

Rate control schedules point ``i`` at ``t0 + (i + jitter_i) / rate`` on a monotonic
clock, so the long-run rate does not drift; after a stall longer than ``catchup_limit``
the schedule is re-anchored instead of bursting the backlog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import PublisherConfig
from .errors import InfluxRejectedError, InfluxUnavailableError, InfluxWriteError
from .source import SampleSource
from .writer import InfluxWriter

__all__ = ["PublishResult", "Publisher"]

log = logging.getLogger("publisher.core")

_STOP = object()


@dataclass(frozen=True)
class PublishResult:
    produced: int
    written: int
    retries: int
    elapsed: float
    error: str | None = None

    @property
    def unsent(self) -> int:
        return self.produced - self.written

    @property
    def ok(self) -> bool:
        return self.error is None and self.unsent == 0


class Publisher:
    """Replays samples into InfluxDB; see the module docstring."""

    def __init__(
        self,
        config: PublisherConfig,
        *,
        samples: SampleSource,
        writer: InfluxWriter,
        clock: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
        catchup_limit: float = 2.0,
    ) -> None:
        self.config = config
        self.samples = samples
        self.writer = writer
        self._clock = clock
        self._time_ns = time_ns
        self._catchup_limit = catchup_limit
        self._rng = np.random.default_rng(config.seed)
        self._queue: queue.Queue = queue.Queue(maxsize=config.max_pending_batches)
        self._stop = threading.Event()  # stop producing (signal, --count reached, fatal error)
        self._abort = threading.Event()  # stop retrying (shutdown grace period over)
        self._lock = threading.Lock()
        self._produced = 0
        self._written = 0
        self._retries = 0
        self._fatal: str | None = None
        self._last_ts = 0

    def __repr__(self) -> str:
        return f"Publisher({self.config!r})"

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to finish: stop producing, flush what was produced. Not from a signal
        handler on the thread that runs the publisher (it may hold the event's lock there):
        call it from another thread."""
        self._stop.set()

    @property
    def written(self) -> int:
        with self._lock:
            return self._written

    @property
    def produced(self) -> int:
        return self._produced

    # -- sender thread ---------------------------------------------------------------------
    def _sender(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                body, n = item
                if self._fatal is None and self._send(body, n):
                    with self._lock:
                        self._written += n
            except Exception as exc:  # a dead sender would leave the producer waiting forever
                log.exception("event=sender_failed error=%r", str(exc))
                self._fail(f"sender failed: {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _send(self, body: bytes, n: int) -> bool:
        delay = self.config.backoff_initial
        created = False
        while True:
            try:
                self.writer.write(body)
                return True
            except InfluxRejectedError as exc:
                if exc.status == 404 and not created:
                    # The database vanished (dropped, or a fresh server): recreate and retry.
                    log.warning(
                        "event=database_missing action=create database=%s", self.writer.database
                    )
                    created = True
                    try:
                        self.writer.ensure_database()
                    except InfluxWriteError as create_exc:
                        # the write's retry reports it (a second 404 stops the run)
                        log.warning("event=database_create_failed error=%r", str(create_exc))
                    continue
                log.error("event=write_rejected points=%d error=%r", n, str(exc))
                self._fail(str(exc))
                return False
            except InfluxUnavailableError as exc:
                with self._lock:
                    self._retries += 1
                log.warning(
                    "event=write_retry points=%d retry_in_s=%.2f error=%r", n, delay, str(exc)
                )
                if self._abort.wait(delay):
                    log.error("event=write_abandoned points=%d reason=shutdown_timeout", n)
                    return False
                delay = min(delay * 2, self.config.backoff_max)

    def _fail(self, error: str) -> None:
        self._fatal = error
        self._stop.set()

    def _ensure_database(self) -> None:
        """Create the database, waiting up to startup_timeout for InfluxDB to come up."""
        deadline = self._clock() + self.config.startup_timeout
        delay = self.config.backoff_initial
        while True:
            try:
                self.writer.ensure_database()
                return
            except InfluxRejectedError as exc:
                if exc.status != 403:
                    raise
                # A user with write rights only (least privilege) may not CREATE DATABASE;
                # the database is then expected to exist, which the first write tells.
                log.warning(
                    "event=database_not_created database=%s reason=%r "
                    "(no admin rights: writing into the existing database)",
                    self.config.database,
                    str(exc),
                )
                return
            except InfluxUnavailableError as exc:
                if self._clock() + delay > deadline or self._stop.is_set():
                    raise InfluxUnavailableError(
                        f"{exc} (gave up after --startup-timeout {self.config.startup_timeout:g}s)",
                        status=exc.status,
                    ) from exc
                log.warning("event=waiting_for_influxdb retry_in_s=%.2f error=%r", delay, str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.backoff_max)

    # -- producer --------------------------------------------------------------------------
    def _enqueue(self, batch: list[str]) -> None:
        body = ("\n".join(batch) + "\n").encode()
        give_up_at = None
        while self._fatal is None:
            try:
                self._queue.put((body, len(batch)), timeout=0.2)
                return
            except queue.Full:
                pass  # back-pressure: wait for the sender to catch up
            if self._stop.is_set():
                # a stop request waits on a full buffer only for the shutdown grace period
                now = time.monotonic()
                give_up_at = give_up_at or now + self.config.shutdown_timeout
                if now >= give_up_at:
                    self._abort.set()  # the sender stops retrying; the rest is unsent
                    return
        # a fatal error: nothing more will be written; the points stay counted as unsent

    def _timestamp(self) -> int:
        ts = self._time_ns()
        if ts <= self._last_ts:
            ts = self._last_ts + 1
        self._last_ts = ts
        return ts

    def run(self) -> PublishResult:
        cfg = self.config
        if cfg.create_database:
            self._ensure_database()
        sender = threading.Thread(target=self._sender, name="publisher-sender", daemon=True)
        sender.start()
        started = self._clock()
        log.info(
            "event=start url=%s database=%s retention_policy=%s measurement=%r mode=%s "
            "rate_pps=%s count=%s batch_size=%d samples=%d source=%s",
            self.writer.url,
            cfg.database,
            cfg.retention_policy or "default",
            self.samples.measurement,
            cfg.mode,
            cfg.rate or "unlimited",
            cfg.count if cfg.count is not None else "forever",
            cfg.batch_size,
            len(self.samples),
            self.samples.source,
        )
        try:
            self._produce(started)
        finally:
            result = self._drain(sender, started)
        return result

    def _produce(self, t0: float) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate if cfg.rate else 0.0
        half_jitter = cfg.jitter / 2.0
        jitters = iter(())
        indices = self.samples.indices(cfg.mode, self._rng)
        line_of = self.samples.line
        batch: list[str] = []
        deadline = 0.0
        next_progress = t0 + cfg.progress_interval
        last_report = (t0, 0, 0)
        i = 0
        jit = 0.0
        while not self._stop.is_set() and (cfg.count is None or i < cfg.count):
            now = self._clock()
            if now >= next_progress:
                last_report = self._progress(now, t0, last_report)
                next_progress = now + cfg.progress_interval
            if interval:
                due = t0 + (i + jit) * interval
                if now < due:
                    if batch and now >= deadline:
                        self._enqueue(batch)
                        batch = []
                        continue
                    wait = due - now
                    if batch:
                        wait = min(wait, deadline - now)
                    self._stop.wait(min(wait, max(next_progress - now, 0.0)))
                    continue
                if now - due > self._catchup_limit:
                    log.warning(
                        "event=schedule_reset behind_s=%.2f reason=stalled (back-pressure or slow host)",
                        now - due,
                    )
                    t0 = now - i * interval
            line = line_of(next(indices))
            batch.append(f"{line} {self._timestamp()}")
            i += 1
            self._produced = i
            if len(batch) == 1:
                deadline = now + cfg.flush_interval
            if len(batch) >= cfg.batch_size or (batch and now >= deadline):
                self._enqueue(batch)
                batch = []
            if half_jitter:
                try:
                    jit = next(jitters)
                except StopIteration:
                    jitters = iter(self._rng.uniform(-half_jitter, half_jitter, 4096).tolist())
                    jit = next(jitters)
        if batch:
            self._enqueue(batch)

    def _progress(self, now: float, t0: float, last: tuple[float, int, int]) -> tuple:
        t_last, produced_last, written_last = last
        written = self.written
        span = max(now - t_last, 1e-9)
        log.info(
            "event=progress produced=%d written=%d rate_pps=%.1f write_pps=%.1f avg_pps=%.1f "
            "target_pps=%s pending_batches=%d retries=%d",
            self._produced,
            written,
            (self._produced - produced_last) / span,
            (written - written_last) / span,
            self._produced / max(now - t0, 1e-9),
            self.config.rate or "unlimited",
            self._queue.qsize(),
            self._retries,
        )
        return (now, self._produced, written)

    def _drain(self, sender: threading.Thread, started: float) -> PublishResult:
        """Hand the stop marker to the sender and wait for it, at most shutdown_timeout."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        while sender.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        sender.join(max(deadline - time.monotonic(), 0.0))
        if sender.is_alive():
            self._abort.set()  # stop retrying; what is still queued is reported as unsent
            sender.join(5.0)
        elapsed = self._clock() - started
        result = PublishResult(
            produced=self._produced,
            written=self.written,
            retries=self._retries,
            elapsed=elapsed,
            error=self._fatal,
        )
        log.info(
            "event=finished produced=%d written=%d unsent=%d retries=%d elapsed_s=%.2f avg_pps=%.1f",
            result.produced,
            result.written,
            result.unsent,
            result.retries,
            elapsed,
            result.written / max(elapsed, 1e-9),
        )
        return result
