"""Background thread that drains the spool into Elasticsearch.

Rules: an item leaves the spool only when its bulk item succeeded (2xx) or when
Elasticsearch rejected it for good (4xx other than 408/429: moved to the dead-letter
table, counted and logged). Anything else — connection refused, timeouts, 429/5xx for
the whole request or one item — stays and is retried with capped exponential backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ElasticsearchError, ElasticsearchUnavailable, SpoolError
from .es import ElasticsearchTarget
from .metrics import SinkMetrics
from .storage import Spool

__all__ = ["Shipper", "ShipperState"]

log = logging.getLogger("alert_sink.shipper")


@dataclass
class ShipperState:
    index_ready: bool = False
    last_error: str | None = None
    last_success: float | None = None
    consecutive_failures: int = 0


class Shipper:
    def __init__(
        self,
        *,
        spool: Spool,
        target: ElasticsearchTarget,
        metrics: SinkMetrics,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.spool = spool
        self.target = target
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._jitter = jitter
        self.state = ShipperState()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="alert-sink-shipper", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New items are in the spool: ship them now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop after its current bulk; True when it has ended."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _backoff(self) -> float:
        n = max(0, self.state.consecutive_failures - 1)
        delay = min(self.backoff_max, self.backoff_initial * (2**n))
        # Full jitter in [delay/2, delay]: many sinks do not hammer a recovering cluster together.
        return delay * (0.5 + 0.5 * self._jitter())

    def _failed(self, error: str) -> None:
        self.state.consecutive_failures += 1
        if self.state.last_error != error or self.state.consecutive_failures in (1, 10, 100):
            log.warning(
                "event=elasticsearch_unavailable error=%r failures=%d",
                error,
                self.state.consecutive_failures,
            )
        self.state.last_error = error
        self.metrics.es_up.set(0)
        self._stop.wait(self._backoff())

    def _run(self) -> None:
        log.info(
            "event=shipper_started url=%s index=%s", self.target.url, ",".join(self.target.indices)
        )
        while not self._stop.is_set():
            try:
                self.run_once()
            except SpoolError as exc:
                # Disk trouble: keep the thread alive and keep the data where it is.
                log.error("event=spool_error error=%r", str(exc))
                self._failed(str(exc))
            except Exception as exc:
                # Anything unforeseen (an odd response, a client bug): a dead thread would
                # silently stop delivery until a restart, so log it and retry the batch.
                log.exception("event=shipper_error error=%r", str(exc))
                self._failed(f"{type(exc).__name__}: {exc}")
        log.info("event=shipper_stopped depth=%d", self.spool.depth())

    def run_once(self) -> int:
        """One step: install the index if needed, then ship one batch. Returns items delivered."""
        if not self.state.index_ready:
            try:
                self.target.ensure_index()
            except ElasticsearchError as exc:
                self._failed(str(exc))
                return 0
            self.state.index_ready = True
            log.info("event=index_ready index=%s", ",".join(self.target.indices))

        batch = self.spool.peek(self.batch_size)
        if not batch:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            return 0

        started = self._clock()
        try:
            outcome = self.target.bulk(batch)
        except ElasticsearchError as exc:
            # Unavailable or refused as a whole (e.g. bad credentials): keep everything.
            kind = "unavailable" if isinstance(exc, ElasticsearchUnavailable) else "rejected"
            self.metrics.bulk_requests.labels(outcome=kind).inc()
            self._failed(str(exc))
            return 0
        self.metrics.bulk_seconds.observe(self._clock() - started)
        self.spool.settle(delivered=outcome.delivered, retry=outcome.retry, dead=outcome.dead)

        self.metrics.shipped.inc(len(outcome.delivered))
        self.metrics.item_retries.inc(len(outcome.retry))
        self.metrics.dead_letters.inc(len(outcome.dead))
        for seq, (status, error) in outcome.dead.items():
            log.error("event=dead_letter seq=%d status=%s error=%r", seq, status, error)
        self.state.last_success = time.time()
        self.metrics.es_up.set(1)
        if outcome.retry:
            self.metrics.bulk_requests.labels(outcome="partial").inc()
            first = next(iter(outcome.retry.values()))
            self._failed(f"{len(outcome.retry)} bulk items to retry, first: {first}")
        else:
            self.metrics.bulk_requests.labels(outcome="ok").inc()
            if self.state.consecutive_failures:
                log.info("event=elasticsearch_recovered depth=%d", self.spool.depth())
            self.state.consecutive_failures = 0
            self.state.last_error = None
        return len(outcome.delivered)
