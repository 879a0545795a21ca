"""Kapacitor's HTTP API (v1), the parts the supervisor uses.

- ``GET /kapacitor/v1/tasks?fields=...&offset=&limit=`` lists tasks, at most ``limit``
  (default 100) per page.
- ``PATCH /kapacitor/v1/tasks/ID {"status": ...}`` starts or stops a task only when the
  status *changes*: PATCHing ``enabled`` onto an enabled task that stopped executing
  does nothing. Re-enabling is therefore ``disabled`` then ``enabled``, as Kapacitor's
  own load service reloads a task. A start that fails answers 500 with the error, and the
  task stays ``enabled``, not executing, with that ``error``.
- ``POST /kapacitor/v1/tasks``, ``DELETE /kapacitor/v1/tasks/ID``: the backfill task.
- ``POST /kapacitor/v1/replays/batch {"task", "start", "stop", "recording-time",
  "clock"}`` runs a batch task over a past range on an isolated task master whose
  ``influxDBOut`` writes into InfluxDB; ``GET /kapacitor/v1/replays/ID`` reports
  ``status`` running/finished/failed and ``error``; ``DELETE`` removes it.

Errors come back as ``{"error": "..."}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from .errors import KapacitorError, KapacitorUnavailable

__all__ = ["KapacitorClient", "parse_time", "format_time"]

log = logging.getLogger("udf_agent.supervise.kapacitor")

BASE = "/kapacitor/v1"
#: fields the supervisor reads from the task list (Kapacitor always adds id and link);
#: every one is known to 1.5 (which refuses "template-id" here) through 1.8
TASK_FIELDS = (
    "type",
    "dbrps",
    "script",
    "vars",
    "status",
    "executing",
    "error",
    "last-enabled",
)
PAGE = 100  # Kapacitor's default and our page size


def parse_time(text: str | None) -> int | None:
    """An RFC 3339 time from Kapacitor (nanoseconds kept) to ns since the epoch; None for
    absent or Go's zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    body, _, frac_tz = text.partition(".")
    if frac_tz:
        digits = ""
        for ch in frac_tz:
            if not ch.isdigit():
                break
            digits += ch
        tz = frac_tz[len(digits) :]
    else:
        for i, ch in enumerate(text[10:], 10):
            if ch in "Z+-":
                body, tz = text[:i], text[i:]
                break
        else:
            body, tz = text, "Z"
        digits = ""
    tz = "+00:00" if tz in ("Z", "z", "") else tz
    base = dt.datetime.fromisoformat(body + tz)
    return int(base.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def format_time(ns: int) -> str:
    """ns since the epoch as RFC 3339 with nanoseconds, UTC (what Go's time parses)."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


class KapacitorClient:
    """A small client: one ``requests`` session, a timeout on every call, errors wrapped."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if username:
            self.session.auth = (username, password or "")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"KapacitorClient(url={self.url!r})"

    def close(self) -> None:
        self.session.close()

    # -- plumbing -----------------------------------------------------------------------
    def _call(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Any:
        url = self.url + BASE + path
        try:
            r = self.session.request(
                method,
                url,
                params=params,
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise KapacitorUnavailable(f"{method} {path}: {exc}") from exc
        if r.status_code == 204 or not r.content:
            if r.status_code >= 400:
                raise KapacitorError(f"{method} {path}: HTTP {r.status_code}", status=r.status_code)
            return None
        try:
            data = r.json()
        except ValueError as exc:
            raise KapacitorError(
                f"{method} {path}: HTTP {r.status_code}, not JSON: {r.text[:200]!r}",
                status=r.status_code,
            ) from exc
        if r.status_code >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise KapacitorError(
                f"{method} {path}: HTTP {r.status_code}: {msg or r.text[:200]}",
                status=r.status_code,
            )
        return data

    # -- tasks --------------------------------------------------------------------------
    def ping(self) -> None:
        self._call("GET", "/ping")

    def tasks(self, fields: tuple[str, ...] = TASK_FIELDS) -> Iterator[dict[str, Any]]:
        """Every task, page by page."""
        offset = 0
        while True:
            params = [("fields", f) for f in fields] + [("offset", offset), ("limit", PAGE)]
            data = self._call("GET", "/tasks", params=params)
            page = (data or {}).get("tasks") or []
            yield from page
            if len(page) < PAGE:
                return
            offset += len(page)

    def task(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{quote(task_id, safe='')}")

    def set_status(self, task_id: str, status: str) -> dict[str, Any]:
        return self._call("PATCH", f"/tasks/{quote(task_id, safe='')}", body={"status": status})

    def define_task(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/tasks", body=body)

    def delete_task(self, task_id: str) -> None:
        self._call("DELETE", f"/tasks/{quote(task_id, safe='')}")

    # -- replays ------------------------------------------------------------------------
    def replay_batch(
        self, *, replay_id: str, task_id: str, start_ns: int, stop_ns: int
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            "/replays/batch",
            body={
                "id": replay_id,
                "task": task_id,
                "start": format_time(start_ns),
                "stop": format_time(stop_ns),
                "recording-time": True,  # keep the points' own times
                "clock": "fast",
            },
        )

    def replay(self, replay_id: str) -> dict[str, Any]:
        return self._call("GET", f"/replays/{quote(replay_id, safe='')}")

    def delete_replay(self, replay_id: str) -> None:
        self._call("DELETE", f"/replays/{quote(replay_id, safe='')}")
