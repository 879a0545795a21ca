"""InfluxDB 1.x over HTTP: where a gap starts, which fields are integers, and the
``udf_events`` annotations."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import requests

from models import lineprotocol as lp

from .errors import InfluxError

__all__ = ["EVENTS_MEASUREMENT", "EVENT_FIELDS", "EVENT_TAGS", "InfluxClient", "line"]

log = logging.getLogger("udf_agent.supervise.influx")

EVENTS_MEASUREMENT = "udf_events"
#: tags of a udf_events point: the Kapacitor task, and what happened to it
#: (failed, reenabled, backfilled, backfill_skipped, backfill_failed)
EVENT_TAGS = ("task", "event")
#: its fields: text (the annotation), error (the task's last error), gap_start_ns and
#: gap_end_ns (the unscored stretch), end_ms (the same end in ms, a region's end for
#: Grafana), points (newly scored by a backfill), unscored (left without a score)
EVENT_FIELDS = ("text", "error", "gap_start_ns", "gap_end_ns", "end_ms", "points", "unscored")


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _field_value(value: Any) -> str:
    if isinstance(value, bool):
        return lp.format_bool(value)
    if isinstance(value, int):
        return lp.format_int(value)
    if isinstance(value, float):
        return lp.format_float(value)
    # an annotation's text quotes an error that may span lines: line protocol carries none
    return lp.escape_string(_CONTROL.sub(" ", str(value)))


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], t_ns: int) -> str:
    """One point in line protocol (tags sorted, empty tag values left out)."""
    tags = {k: _CONTROL.sub(" ", str(v)) for k, v in tags.items()}
    return lp.line(measurement, tags, [(k, _field_value(v)) for k, v in fields.items()], t_ns)


class InfluxClient:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if username:
            self.session.auth = (username, password or "")

    def __repr__(self) -> str:
        return f"InfluxClient(url={self.url!r})"

    def close(self) -> None:
        self.session.close()

    def ping(self) -> None:
        try:
            r = self.session.get(self.url + "/ping", timeout=self.timeout)
        except requests.RequestException as exc:
            raise InfluxError(f"ping {self.url}: {exc}") from exc
        if r.status_code != 204:
            raise InfluxError(f"ping {self.url}: HTTP {r.status_code}")

    def query(self, q: str, *, db: str) -> list[dict[str, Any]]:
        """Run InfluxQL (one or more statements); the ``results`` list."""
        try:
            r = self.session.post(
                self.url + "/query",
                data={"q": q, "db": db, "epoch": "ns"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise InfluxError(f"query on {self.url}: {exc}") from exc
        if r.status_code != 200:
            raise InfluxError(f"query {q!r}: HTTP {r.status_code} {r.text[:200]}")
        results = r.json().get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(f"query {q!r}: {res['error']}")
        return results

    def write(self, db: str, lines: Iterable[str], *, rp: str = "") -> None:
        params = {"db": db, "precision": "ns"}
        if rp:
            params["rp"] = rp
        try:
            r = self.session.post(
                self.url + "/write",
                params=params,
                data="\n".join(lines).encode(),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise InfluxError(f"write to {self.url}: {exc}") from exc
        if r.status_code != 204:
            raise InfluxError(f"write: HTTP {r.status_code} {r.text[:200]}")

    # -- what the supervisor asks ---------------------------------------------------------
    def last_scored(
        self,
        *,
        db: str,
        rp: str,
        measurement: str,
        model: str,
        score_field: str,
        since_ns: int,
        before_ns: int | None = None,
    ) -> int | None:
        """Time (ns) of the newest point ``model`` scored (or passed on with
        ``score_error``) into the measurement at or after ``since_ns``; None if none."""
        source = f"{_ident(rp)}.{_ident(measurement)}" if rp else _ident(measurement)
        where = (
            f"({_ident('model')} = {_literal(model)} OR {_ident('fallback_for')} = "
            f"{_literal(model)}) AND time >= {int(since_ns)}"
        )
        if before_ns is not None:
            where += f" AND time < {int(before_ns)}"
        # one selector per statement: two selectors in one SELECT report time 0
        q = ";".join(
            f"SELECT last({_ident(f)}) FROM {source} WHERE {where}"
            for f in (score_field, "score_error")
        )
        newest = None
        for res in self.query(q, db=db):
            for series in res.get("series") or []:
                for row in series.get("values") or []:
                    t = int(row[0])
                    newest = t if newest is None else max(newest, t)
        return newest

    def integer_fields(self, *, db: str, rp: str, measurements: Iterable[str]) -> set[str]:
        """Fields stored as integers in any of the measurements."""
        out: set[str] = set()
        for m in measurements:
            source = f"{_ident(rp)}.{_ident(m)}" if rp else _ident(m)
            for res in self.query(f"SHOW FIELD KEYS FROM {source}", db=db):
                for series in res.get("series") or []:
                    for key, kind in series.get("values") or []:
                        if kind == "integer":
                            out.add(key)
        return out

    def events(self, *, db: str, since_ns: int, limit: int = 10_000) -> list[dict[str, Any]]:
        """``udf_events`` points since ``since_ns``, oldest first (tags merged in)."""
        q = (
            f"SELECT * FROM {_ident(EVENTS_MEASUREMENT)} WHERE time >= {int(since_ns)} "
            f"ORDER BY time ASC LIMIT {int(limit)}"
        )
        out = []
        for res in self.query(q, db=db):
            for series in res.get("series") or []:
                cols = series["columns"]
                for values in series.get("values") or []:
                    row = dict(zip(cols, values))
                    row.update(series.get("tags") or {})
                    out.append(row)
        return out
