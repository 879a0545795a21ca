"""Alerts to the sink: the poster the replay feeds, and the ``post alerts`` stage."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import requests

from .errors import DemoError
from .progress import LiveLine
from .services import Sink
from .stage import Workspace

__all__ = ["AlertPoster", "confirm_alerts"]

log = logging.getLogger("demo")


class AlertPoster:
    """Posts alert bodies to the sink's webhook from a small thread pool (one HTTP
    session per thread); retries connection errors, 429 and 5xx with backoff."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        workers: int,
        line: LiveLine,
        attempts: int = 5,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.attempts = attempts
        self.timeout = timeout
        self.line = line
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-post")
        self.futures: list[tuple[str, Future[str | None]]] = []

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(s)
        return s

    def _post(self, body: bytes) -> str | None:
        """None when the sink accepted the alert, else the last error."""
        error = "not sent"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt))
            try:
                r = self._session().post(
                    self.url, data=body, headers=self.headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code in (200, 201, 202):
                self.line.add_alert(True)
                return None
            error = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code != 429 and r.status_code < 500:
                break  # the sink refused this alert; retrying would not change that
        self.line.add_alert(False)
        log.warning("event=alert_post_failed error=%r", error)
        return error

    def submit(self, key: str, body: bytes) -> None:
        self.futures.append((key, self._pool.submit(self._post, body)))

    def results(self) -> tuple[list[str], dict[str, str]]:
        """Wait for every post; (accepted keys, {key: error})."""
        ok, failed = [], {}
        for key, fut in self.futures:
            while True:  # in slices: a signal delivered to another thread still gets handled
                try:
                    err = fut.result(timeout=0.2)
                    break
                except FutureTimeout:
                    continue
            if err is None:
                ok.append(key)
            else:
                failed[key] = err
        return ok, failed

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self._sessions:
            s.close()


def confirm_alerts(ws: Workspace, sink: Sink, accepted: list[str], failed: dict[str, str]) -> int:
    """The ``post alerts`` stage: every alert accepted, and what the sink's store holds."""
    if failed:
        first_key, first_err = next(iter(failed.items()))
        raise DemoError(
            f"{len(failed)} of {len(failed) + len(accepted)} alert(s) were not accepted by "
            f"the sink (first: {ws.dataset.profile.id_column} {first_key}: {first_err}); "
            f"log {sink.process.log_path}"
        )
    documents = sink.documents()
    ws.say(
        f"{len(accepted):,} alerts accepted by {sink.webhook}; the sink's store holds {documents:,}"
    )
    return documents
