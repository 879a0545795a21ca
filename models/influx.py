"""InfluxDB 1.x for the model jobs: a data set's labelled window read back, its rows
written as points, and the ``model_events`` annotations of ``models retrain``.

- :func:`read_window` reads a profile's input measurement over the last ``since``
  (``7d``, ``12h``) with a chunked query (InfluxDB streams ``chunk_size`` rows per JSON
  document, so no single answer holds the whole window), keeps the points that carry the
  label, drops repeats of a row id (the publisher replays rows: one row is one sample,
  however often it was published) and returns the frame validated against the profile,
  with the profile's column names (the label field back to the label column).
- :func:`profile_lines` turns a validated frame into points exactly as the publisher
  writes them (same measurement, tags, field names, field types and order), with the
  timestamps the caller chose, so writing them again overwrites instead of doubling.
- :class:`InfluxClient` is the HTTP client: ping, ``CREATE DATABASE``, ``/write`` with
  bounded retries of transient failures, streamed ``/query``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import requests

from .errors import DataError, ModelsError
from .lineprotocol import (
    LineProtocolError,
    escape_field_key,
    escape_measurement,
    escape_string,
    escape_tag,
    format_bool,
    format_float,
    format_int,
)

if TYPE_CHECKING:
    from .profile import Profile

__all__ = [
    "EVENTS_MEASUREMENT",
    "InfluxClient",
    "InfluxError",
    "InfluxUnavailable",
    "SOURCE_TAG",
    "WindowRead",
    "event_line",
    "parse_duration",
    "profile_lines",
    "read_window",
]

log = logging.getLogger("models.influx")

#: measurement of the retrain decisions (Grafana annotations)
EVENTS_MEASUREMENT = "model_events"
#: the tag naming who wrote a point (the publisher's ``source``)
SOURCE_TAG = "source"
_DURATION = re.compile(r"(\d+)(ns|us|µs|u|ms|s|m|h|d|w)")
_DURATION_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3_600 * 1_000_000_000,
    "d": 86_400 * 1_000_000_000,
    "w": 7 * 86_400 * 1_000_000_000,
}


class InfluxError(ModelsError):
    """InfluxDB refused a request (bad query, unknown database, no rights)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InfluxUnavailable(InfluxError):
    """InfluxDB did not answer, or answered 5xx: worth retrying later."""


def parse_duration(text: str) -> int:
    """An InfluxQL duration literal (``7d``, ``12h``, ``90m``) in nanoseconds."""
    m = _DURATION.fullmatch(str(text).strip())
    if not m or int(m.group(1)) <= 0:
        raise DataError(
            f"{text!r} is not a duration: a positive whole number and a unit "
            "(ns, us, ms, s, m, h, d, w), e.g. 7d or 12h"
        )
    return int(m.group(1)) * _DURATION_NS[m.group(2)]


def _ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _error_text(r: requests.Response) -> str:
    try:
        return str(r.json().get("error", r.text)).strip()
    except ValueError:
        return r.text.strip()[:300]


class InfluxClient:
    """The v1 HTTP API (InfluxDB 1.6-1.8): ``/ping``, ``/query``, ``/write``.

    Transient failures (no connection, timeout, 5xx) raise :class:`InfluxUnavailable`;
    refusals (4xx, a query error) raise :class:`InfluxError` naming the problem.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        if not str(url).startswith(("http://", "https://")):
            raise DataError(f"InfluxDB URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if username:
            self.session.auth = (username, password or "")

    def __repr__(self) -> str:
        return f"InfluxClient(url={self.url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise InfluxUnavailable(
                f"{what}: InfluxDB at {self.url} unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        if r.status_code >= 500:
            raise InfluxUnavailable(
                f"{what}: InfluxDB answered {r.status_code}: {_error_text(r)}",
                status=r.status_code,
            )
        if r.status_code >= 400:
            hint = {
                401: " (check the user and password: MODELS_INFLUX_USERNAME/PASSWORD)",
                403: " (the user lacks the rights for this)",
            }.get(r.status_code, "")
            raise InfluxError(
                f"{what}: InfluxDB at {self.url} answered {r.status_code}{hint}: {_error_text(r)}",
                status=r.status_code,
            )
        return r

    def ping(self) -> str:
        r = self._request("GET", "/ping", "ping")
        return r.headers.get("X-Influxdb-Version", "unknown")

    def ensure_database(self, database: str) -> None:
        """``CREATE DATABASE`` (idempotent); a user without admin rights (403) writes into
        the database someone else created."""
        try:
            r = self._request(
                "POST",
                "/query",
                f"create database {database!r}",
                data={"q": f"CREATE DATABASE {_ident(database)}"},
            )
        except InfluxError as exc:
            if exc.status == 403:
                log.info("event=database_not_created database=%s reason=no_admin_rights", database)
                return
            raise
        for res in r.json().get("results", []):
            if "error" in res:
                raise InfluxError(f"create database {database!r}: {res['error']}")

    def write(
        self,
        database: str,
        lines: Iterable[str],
        *,
        retention_policy: str | None = None,
        what: str = "write",
    ) -> None:
        body = ("\n".join(lines) + "\n").encode()
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        self._request(
            "POST",
            "/write",
            what,
            params=params,
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def write_retrying(
        self,
        database: str,
        lines: Sequence[str],
        *,
        retention_policy: str | None = None,
        attempts: int = 5,
        backoff: float = 0.5,
        stop: threading.Event | None = None,
        what: str = "write",
    ) -> None:
        """:meth:`write`, retrying transient failures ``attempts`` times with doubling
        waits (interrupted by ``stop``); the last failure is raised."""
        delay = backoff
        for attempt in range(1, attempts + 1):
            try:
                self.write(database, lines, retention_policy=retention_policy, what=what)
                return
            except InfluxUnavailable as exc:
                if attempt == attempts:
                    raise
                log.warning(
                    "event=write_retry attempt=%d/%d retry_in_s=%.1f error=%r",
                    attempt,
                    attempts,
                    delay,
                    str(exc),
                )
                if stop is not None:
                    if stop.wait(delay):
                        raise
                else:
                    time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def query_chunks(
        self, query: str, *, database: str, chunk_size: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        """Each series chunk of a streamed (``chunked=true``) query, as InfluxDB sends it:
        ``{"name", "tags", "columns", "values"}``. Timestamps in ns since the epoch."""
        params = {
            "db": database,
            "q": query,
            "chunked": "true",
            "chunk_size": str(int(chunk_size)),
            "epoch": "ns",
        }
        r = self._request("GET", "/query", f"query {database!r}", params=params, stream=True)
        try:
            try:
                for raw in r.iter_lines():
                    if not raw:
                        continue
                    try:
                        doc = json.loads(raw)
                    except ValueError as exc:
                        raise InfluxError(f"query {database!r}: not JSON: {raw[:200]!r}") from exc
                    if "error" in doc:
                        raise InfluxError(f"query {database!r}: {doc['error']}")
                    for res in doc.get("results", []):
                        if "error" in res:
                            hint = ""
                            if "database not found" in str(res["error"]):
                                hint = " (nothing was ever written there; check --influx-database)"
                            raise InfluxError(f"query {database!r}: {res['error']}{hint}")
                        yield from res.get("series", [])
            except requests.RequestException as exc:
                raise InfluxUnavailable(
                    f"query {database!r}: the answer broke off ({type(exc).__name__}: {exc})"
                ) from exc
        finally:
            r.close()


# -- a profile's window -------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRead:
    """What :func:`read_window` read and kept."""

    frame: pd.DataFrame
    #: points returned by the query
    points: int
    #: points without the label field (live traffic with no ground truth yet)
    unlabelled: int
    #: points lacking another field the profile needs
    incomplete: int
    #: later points of a row id already seen (replays)
    repeats: int
    source: str


def _window_columns(profile: Profile) -> tuple[list[str], list[str]]:
    """(fields, tags) to select: features, id, label, value and order columns; tags."""
    fields = [*profile.feature_names, profile.id_column]
    if profile.label is not None:
        fields.append(profile.label_field)
    for extra in (profile.value, profile.order):
        if extra is not None and extra not in fields and extra not in profile.tags:
            fields.append(extra)
    return list(dict.fromkeys(fields)), list(profile.tags)


def read_window(
    client: InfluxClient,
    profile: Profile,
    *,
    since: str,
    database: str | None = None,
    retention_policy: str | None = None,
    chunk_size: int = 10_000,
    max_rows: int = 5_000_000,
    now_ns: int | None = None,
) -> WindowRead:
    """The labelled points of ``profile``'s input measurement over the last ``since``.

    Returns the frame as :func:`models.data.validate_frame` types it (the profile's
    column names, its id column last). Raises :class:`DataError` when the window holds no
    labelled point, or more than ``max_rows`` points (shorten ``since``).
    """
    from .data import validate_frame

    if profile.label is None:
        raise DataError(
            f"profile {profile.name!r} names no label column: retraining needs labelled points"
        )
    span_ns = parse_duration(since)
    database = database or profile.database
    rp = retention_policy or profile.retention_policy
    fields, tags = _window_columns(profile)
    select = ", ".join(
        [*(f"{_ident(f)}::field" for f in fields), *(f"{_ident(t)}::tag" for t in tags)]
    )
    end = time.time_ns() if now_ns is None else int(now_ns)
    start = end - span_ns
    query = (
        f"SELECT {select} FROM {_ident(rp)}.{_ident(profile.measurement)} "
        f"WHERE time > {start} AND time <= {end}"
    )
    where = f"InfluxDB {client.url} {database}.{rp}.{profile.measurement} (last {since})"
    log.info("event=window_query database=%s query=%r", database, query)
    columns = ["time", *fields, *tags]
    parts: list[pd.DataFrame] = []
    points = 0
    for series in client.query_chunks(query, database=database, chunk_size=chunk_size):
        values = series.get("values") or []
        points += len(values)
        if points > max_rows:
            raise DataError(
                f"{where}: more than {max_rows:,} points; shorten --since or raise --max-rows"
            )
        chunk = pd.DataFrame(values, columns=series["columns"])
        for k, v in (series.get("tags") or {}).items():
            chunk[k] = v
        parts.append(chunk.reindex(columns=columns))
    if not parts:
        raise DataError(f"{where}: no points; is the publisher writing there?")
    raw = pd.concat(parts, ignore_index=True)
    label = raw[profile.label_field]
    labelled = label.notna()
    unlabelled = int((~labelled).sum())
    raw = raw[labelled]
    needed = [c for c in columns if c != "time" and c not in tags]
    present = raw[needed].notna()
    complete = present.all(axis=1)
    incomplete = int((~complete).sum())
    if incomplete:
        lacking = {c: int(n) for c, n in (~present).sum().items() if n}
        log.warning(
            "event=points_skipped where=%r count=%d reason=missing_fields fields=%s",
            where,
            incomplete,
            json.dumps(lacking, ensure_ascii=False)[:300],
        )
    raw = raw[complete]
    # one row per id: the latest point of a replayed row
    raw = raw.sort_values("time", kind="stable")
    before = len(raw)
    raw = raw.drop_duplicates(subset=[profile.id_column], keep="last")
    repeats = before - len(raw)
    if raw.empty:
        raise DataError(
            f"{where}: {points} point(s) but none with the label field "
            f"{profile.label_field!r} and every field of the profile"
        )
    frame = raw.drop(columns=["time"]).rename(columns={profile.label_field: profile.label})
    if profile.id is None:
        frame = frame.rename(columns={profile.id_column: profile.id_field})
    frame = frame.reset_index(drop=True)
    # numbers as InfluxDB's JSON gives them; text columns as strings
    for f in profile.features:
        if f.categorical:
            frame[f.name] = frame[f.name].astype(str)
    typed = validate_frame(frame, source=where, profile=profile)
    log.info(
        "event=window_read where=%r points=%d rows=%d unlabelled=%d incomplete=%d repeats=%d",
        where,
        points,
        len(typed),
        unlabelled,
        incomplete,
        repeats,
    )
    return WindowRead(typed, points, unlabelled, incomplete, repeats, where)


# -- points ----------------------------------------------------------------------------------
def profile_lines(
    frame: pd.DataFrame,
    profile: Profile,
    *,
    source: str,
    timestamps: Sequence[int] | np.ndarray,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Line protocol of a validated frame's rows, as the publisher writes a profile's
    points: tags ``source`` and the profile's tags (empty values left out); float
    features as floats, int features as integers, categoricals as strings; the id as a
    string field; the label as the integer field ``label_field``; the value and order
    columns as floats when they are no feature; fields in name order.

    ``ids``: the row ids when the frame has no id column.
    """
    n = len(frame)
    if len(timestamps) != n:
        raise DataError("one timestamp per row is needed")
    cols: list[tuple[str, list[str]]] = []
    try:
        for f in profile.features:
            values = frame[f.name]
            if f.type == "float":
                out = [format_float(v) for v in values.to_numpy(dtype=np.float64)]
            elif f.type == "int":
                out = [format_int(v) for v in values.to_numpy(dtype=np.int64)]
            else:
                out = [escape_string(str(v)) for v in values]
            cols.append((f.name, out))
        id_values = frame[profile.id_column] if profile.id_column in frame.columns else ids
        if id_values is None:
            raise DataError(f"rows need ids: the frame has no {profile.id_column!r} column")
        cols.append((profile.id_column, [escape_string(str(v)) for v in id_values]))
        if profile.label is not None and profile.label in frame.columns:
            labels = frame[profile.label].to_numpy(dtype=np.int64)
            cols.append((profile.label_field, [format_int(v) for v in labels]))
        sent = {name for name, _ in cols} | set(profile.tags)
        for extra in (profile.value, profile.order):
            if extra is not None and extra not in sent and extra in frame.columns:
                vals = frame[extra].to_numpy(dtype=np.float64)
                cols.append((extra, [format_float(v) for v in vals]))
                sent.add(extra)
        cols.sort(key=lambda c: c[0])
        keys = [escape_field_key(name) for name, _ in cols]
        tag_cols = sorted(
            [(SOURCE_TAG, None), *((t, frame[t].astype(str).tolist()) for t in profile.tags)],
            key=lambda t: escape_tag(t[0], "tag key"),
        )
        src = escape_tag(source, "source")
        head0 = escape_measurement(profile.measurement)
        tag_keys = [escape_tag(k, "tag key") for k, _ in tag_cols]
        lines = []
        for i in range(n):
            head = head0
            for key, (_, values) in zip(tag_keys, tag_cols, strict=True):
                value = src if values is None else (escape_tag(values[i]) if values[i] else "")
                if value:
                    head += f",{key}={value}"
            body = ",".join(f"{k}={col[i]}" for k, (_, col) in zip(keys, cols, strict=True))
            lines.append(f"{head} {body} {int(timestamps[i])}")
    except LineProtocolError as exc:
        raise DataError(f"cannot write a row as a point: {exc}") from exc
    return lines


def event_line(
    tags: dict[str, str], fields: dict[str, Any], *, timestamp_ns: int | None = None
) -> str:
    """One ``model_events`` point; None and non-finite numbers are left out."""
    parts = []
    for k, v in fields.items():
        if v is None:
            continue
        key = escape_field_key(k)
        if isinstance(v, bool):
            parts.append(f"{key}={format_bool(v)}")
        elif isinstance(v, (int, np.integer)):
            parts.append(f"{key}={format_int(int(v))}")
        elif isinstance(v, (float, np.floating)):
            if np.isfinite(v):
                parts.append(f"{key}={format_float(float(v))}")
        else:
            text = " ".join(str(v).split())  # line protocol carries no newline
            parts.append(f"{key}={escape_string(text)}")
    head = escape_measurement(EVENTS_MEASUREMENT)
    for k in sorted(tags):
        if tags[k]:
            head += f",{escape_tag(k, 'tag key')}={escape_tag(str(tags[k]))}"
    ts = time.time_ns() if timestamp_ns is None else int(timestamp_ns)
    return f"{head} {','.join(parts)} {ts}"
