"""The ``--influx`` path: publish the test split into InfluxDB and read it back in order."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import requests

from models import contract

from .errors import DemoError

__all__ = ["InfluxError", "count_points", "read_points"]

log = logging.getLogger("demo.influx")


class InfluxError(DemoError):
    """InfluxDB refused a query or could not be reached."""


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _query_lines(
    session: requests.Session,
    url: str,
    q: str,
    *,
    chunk_size: int,
    timeout: float,
    database: str = contract.DATABASE,
    retention_policy: str = contract.RETENTION_POLICY,
) -> Iterator[dict[str, Any]]:
    params = {
        "db": database,
        "rp": retention_policy,
        "q": q,
        "epoch": "ns",
        "chunked": "true",
        "chunk_size": str(chunk_size),
    }
    try:
        with session.get(
            url.rstrip("/") + "/query", params=params, stream=True, timeout=timeout
        ) as r:
            if r.status_code != 200:
                raise InfluxError(f"query {q!r} failed: HTTP {r.status_code} {r.text[:300]}")
            # chunked=true: one JSON object per line, each holding the next chunk of rows
            for line in r.iter_lines():
                if line:
                    yield json.loads(line)
    except requests.RequestException as exc:
        raise InfluxError(f"InfluxDB at {url} is unreachable: {exc}") from exc
    except ValueError as exc:
        raise InfluxError(f"InfluxDB at {url} answered with invalid JSON: {exc}") from exc


def read_points(
    url: str,
    *,
    source: str,
    session: requests.Session | None = None,
    chunk_size: int = 10_000,
    timeout: float = 60.0,
    on_chunk: Callable[[int], None] | None = None,
    database: str = contract.DATABASE,
    retention_policy: str = contract.RETENTION_POLICY,
    measurement: str = contract.INPUT_MEASUREMENT,
) -> list[dict[str, Any]]:
    """Every input point of ``source`` in time order (``transactions`` unless a data set's
    database, retention policy and measurement are given), as dicts with ``time`` (ns),
    the fields and the tags."""
    q = (
        f"SELECT * FROM {_ident(measurement)} "
        f'WHERE "{contract.SOURCE_TAG}" = {_quote(source)} ORDER BY time ASC'
    )
    own = session is None
    session = session or requests.Session()
    rows: list[dict[str, Any]] = []
    try:
        for chunk in _query_lines(
            session,
            url,
            q,
            chunk_size=chunk_size,
            timeout=timeout,
            database=database,
            retention_policy=retention_policy,
        ):
            for res in chunk.get("results", []):
                if "error" in res:
                    raise InfluxError(f"query {q!r} failed: {res['error']}")
                for series in res.get("series", []):
                    cols = series["columns"]
                    tags = series.get("tags", {})
                    for values in series["values"]:
                        row = dict(zip(cols, values, strict=True))
                        row.update(tags)
                        rows.append(row)
            if "error" in chunk:
                raise InfluxError(f"query {q!r} failed: {chunk['error']}")
            if on_chunk is not None:
                on_chunk(len(rows))
    finally:
        if own:
            session.close()
    return rows


def count_points(url: str, *, source: str, timeout: float = 30.0) -> int:
    q = (
        f'SELECT count("{contract.TXN_ID}") FROM "{contract.INPUT_MEASUREMENT}" '
        f'WHERE "{contract.SOURCE_TAG}" = {_quote(source)}'
    )
    with requests.Session() as s:
        for chunk in _query_lines(s, url, q, chunk_size=1000, timeout=timeout):
            for res in chunk.get("results", []):
                if "error" in res:
                    raise InfluxError(f"query {q!r} failed: {res['error']}")
                for series in res.get("series", []):
                    return int(series["values"][0][1])
    return 0
