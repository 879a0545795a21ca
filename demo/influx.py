"""The ``--influx`` path: publish the test split into InfluxDB and read it back in order.

Stages ``publish to influxdb`` (``python -m publisher`` as a real process, into the data
set's database and measurement) and ``read from influxdb`` (the points of this run's
``source``, chunked, in time order): the replay then sends what InfluxDB holds, with its
timestamps, as Kapacitor would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from models import contract

from .errors import DemoError

if TYPE_CHECKING:
    import pandas as pd

    from .stage import Workspace

__all__ = ["InfluxError", "Published", "count_points", "publish", "read_back", "read_points"]

#: points per write request of the publisher
PUBLISH_BATCH = 5000

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


@dataclass(frozen=True)
class Published:
    points: int
    seconds: float


def publish(ws: Workspace, test: pd.DataFrame) -> Published:
    """The ``publish to influxdb`` stage: the rows to replay, through the publisher."""
    from .processes import ManagedProcess
    from .stage import PROJECT_ROOT

    config, profile = ws.config, ws.dataset.profile
    assert config.influx_url is not None
    test_csv = ws.tmp / "publish.csv"
    test.to_csv(test_csv, index=False)
    pub = ManagedProcess(
        "publisher",
        [ws.python, "-m", "publisher", *ws.dataset.publisher_args(),
         "--influx-url", config.influx_url, "--csv", str(test_csv),
         "--rate", "0", "--count", str(len(test)), "--mode", "sequential",
         "--batch-size", str(PUBLISH_BATCH), "--source", ws.source,
         "--startup-timeout", f"{config.influx_wait:g}",
         "--shutdown-timeout", "15", "--log-level", "info"],
        log_path=ws.run_dir / "publisher.log",
        env=ws.child_env(),
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    ws.stack.callback(pub.stop)
    t0 = time.perf_counter()
    pub.start()
    rc = pub.wait(timeout=600)
    if rc != 0:
        raise DemoError(
            f"the publisher exited with status {rc}; log {pub.log_path}:\n{pub.log_tail()}"
        )
    seconds = time.perf_counter() - t0
    ws.say(
        f"published {len(test):,} points to {config.influx_url} (database {profile.database}, "
        f"measurement {profile.measurement}, source={ws.source}) in {seconds:.1f} s"
    )
    return Published(len(test), seconds)


def read_back(ws: Workspace, published: Published) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``read from influxdb`` stage: (rows in time order, the report's ``influx``
    section). A row holds ``time`` (ns), the fields and the tags, the label also under
    the CSV's label column, as the replay reads rows."""
    config, profile = ws.config, ws.dataset.profile
    assert config.influx_url is not None
    t0 = time.perf_counter()
    rows = read_points(
        config.influx_url,
        source=ws.source,
        database=profile.database,
        retention_policy=profile.retention_policy,
        measurement=profile.measurement,
    )
    if len(rows) != published.points:
        raise DemoError(
            f"InfluxDB returned {len(rows):,} points of source {ws.source}, "
            f"but {published.points:,} were published"
        )
    label = profile.label
    for r in rows:
        if label is not None and profile.label_field in r:
            r[label] = r[profile.label_field]
    ws.say(
        f"read {len(rows):,} points back in time order (epoch=ns, chunked) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    info = {
        "url": config.influx_url,
        "database": profile.database,
        "measurement": profile.measurement,
        "source": ws.source,
        "published": published.points,
        "read_back": len(rows),
        "publish_seconds": round(published.seconds, 3),
    }
    return rows, info
