"""SQLite persistence: the delivery spool (Elasticsearch mode) and the local alert store.

Both run SQLite in WAL mode. An alert is acknowledged to Kapacitor only after its
transaction commits. With ``synchronous=FULL`` (the default) WAL mode syncs the log on
every commit, so an acknowledged alert survives a power loss as well as a crash;
``NORMAL`` syncs only at checkpoints — it survives a crash of this process, but the last
commits may roll back after an OS crash or power loss. Readers never block the writer.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpoolError
from .payload import NS_MAX, NS_MIN, AlertDocument

__all__ = ["AlertStore", "DeadLetter", "Spool", "SpooledItem"]

log = logging.getLogger("alert_sink.spool")

_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    index_name TEXT
);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    status INTEGER,
    error TEXT NOT NULL,
    index_name TEXT
);
"""

_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL UNIQUE,
    ts_ns INTEGER NOT NULL,
    level TEXT NOT NULL,
    txn_id TEXT,
    model TEXT,
    doc TEXT NOT NULL,
    received_at REAL NOT NULL,
    index_name TEXT
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts_ns, rowid);
CREATE INDEX IF NOT EXISTS alerts_txn ON alerts (txn_id);
"""
#: columns added since the first release: (table, column, type), added to older files
_ADDED_COLUMNS = (
    ("spool", "index_name", "TEXT"),
    ("dead_letter", "index_name", "TEXT"),
    ("alerts", "index_name", "TEXT"),
)


@dataclass(frozen=True, slots=True)
class SpooledItem:
    seq: int
    doc_id: str
    doc: str  # the document as JSON text, sent as is
    enqueued_at: float
    attempts: int
    index: str | None = None  # None: the sink's default index


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    doc_id: str
    doc: dict[str, Any]
    status: int | None
    error: str
    failed_at: float


class _Database:
    """One serialized connection: SQLite has a single writer anyway, and a lock keeps the
    connection safe across the WSGI request threads and the shipper thread."""

    def __init__(self, path: Path, schema: str, *, synchronous: str, clock: Callable[[], float]):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.executescript(schema)
            self._add_columns()
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: cannot open SQLite database: {exc}") from exc

    def _add_columns(self) -> None:
        """A file written by an older sink lacks the newer columns: add them (NULL)."""
        for table, column, kind in _ADDED_COLUMNS:
            names = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if names and column not in names:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                log.info(
                    "event=schema_upgraded file=%s table=%s column=%s", self.path, table, column
                )

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: write failed: {exc}") from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: read failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: close failed: {exc}") from exc


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Spool(_Database):
    """Alerts accepted but not yet confirmed by Elasticsearch, oldest first."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(path, _SPOOL_SCHEMA, synchronous=synchronous, clock=clock)

    def enqueue(self, docs: list[AlertDocument]) -> int:
        """Commit all ``docs`` in one transaction (all or nothing)."""
        now = self._clock()
        rows = [(d.doc_id, _dumps(d.source), now, d.index) for d in docs]
        self._write(
            lambda c: c.executemany(
                "INSERT INTO spool (doc_id, doc, enqueued_at, index_name) VALUES (?, ?, ?, ?)",
                rows,
            )
        )
        return len(rows)

    def peek(self, limit: int) -> list[SpooledItem]:
        rows = self._read(
            "SELECT seq, doc_id, doc, enqueued_at, attempts, index_name FROM spool "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [SpooledItem(*row) for row in rows]

    def settle(
        self,
        *,
        delivered: Iterable[int] = (),
        retry: Mapping[int, str] | None = None,
        dead: Mapping[int, tuple[int | None, str]] | None = None,
    ) -> None:
        """Apply one bulk response: drop delivered items, note retries, move dead letters."""
        delivered = [(s,) for s in delivered]
        retry = retry or {}
        dead = dead or {}
        now = self._clock()

        def apply(c: sqlite3.Connection) -> None:
            if dead:
                c.executemany(
                    "INSERT OR REPLACE INTO dead_letter "
                    "(seq, doc_id, doc, enqueued_at, failed_at, status, error, index_name) "
                    "SELECT seq, doc_id, doc, enqueued_at, ?, ?, ?, index_name FROM spool "
                    "WHERE seq = ?",
                    [(now, status, error, seq) for seq, (status, error) in dead.items()],
                )
                c.executemany("DELETE FROM spool WHERE seq = ?", [(s,) for s in dead])
            if delivered:
                c.executemany("DELETE FROM spool WHERE seq = ?", delivered)
            if retry:
                c.executemany(
                    "UPDATE spool SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                    [(error, seq) for seq, error in retry.items()],
                )

        self._write(apply)

    def depth(self) -> int:
        return self._read("SELECT COUNT(*) FROM spool")[0][0]

    def oldest_age(self) -> float | None:
        """Seconds since the oldest undelivered alert was accepted; None when empty."""
        (oldest,) = self._read("SELECT MIN(enqueued_at) FROM spool")[0]
        return None if oldest is None else max(0.0, self._clock() - oldest)

    def dead_letter_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM dead_letter")[0][0]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._read(
            "SELECT seq, doc_id, doc, status, error, failed_at FROM dead_letter "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [DeadLetter(s, i, json.loads(d), st, e, f) for s, i, d, st, e, f in rows]


def encode_cursor(ts_ns: int, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{ts_ns}:{rowid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Raises ValueError on a cursor this service did not produce."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        ts, rowid = (int(part) for part in base64.urlsafe_b64decode(padded).decode().split(":"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if not (NS_MIN <= ts <= NS_MAX and NS_MIN <= rowid <= NS_MAX):  # SQLite integers: int64
        raise ValueError(f"invalid cursor {cursor!r}")
    return ts, rowid


class AlertStore(_Database):
    """Alerts kept locally (``--store sqlite:PATH``), queryable through ``GET /alerts``.

    A re-delivered alert has the same document id and replaces the stored row. Each row
    records the index the alert would go to in Elasticsearch mode (``default_index`` for
    the default route), so ``GET /alerts?index=`` tells the data sets apart.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        default_index: str = "fraud-alerts",
    ) -> None:
        super().__init__(path, _STORE_SCHEMA, synchronous=synchronous, clock=clock)
        self.default_index = default_index

    def upsert(self, docs: list[AlertDocument]) -> int:
        now = self._clock()
        rows = [
            (
                d.doc_id,
                d.timestamp_ns,
                d.source["alert.level"],
                d.row_id,
                d.source["model.name"],
                _dumps(d.source),
                now,
                d.index or self.default_index,
            )
            for d in docs
        ]
        self._write(
            lambda c: c.executemany(
                "INSERT INTO alerts "
                "(doc_id, ts_ns, level, txn_id, model, doc, received_at, index_name) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET "
                "ts_ns = excluded.ts_ns, level = excluded.level, txn_id = excluded.txn_id, "
                "model = excluded.model, doc = excluded.doc, index_name = excluded.index_name",
                rows,
            )
        )
        return len(rows)

    def count(self) -> int:
        return self._read("SELECT COUNT(*) FROM alerts")[0][0]

    def query(
        self,
        *,
        level: str | None = None,
        txn_id: str | None = None,
        model: str | None = None,
        index: str | None = None,
        kind: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 100,
        offset: int = 0,
        cursor: str | None = None,
    ) -> tuple[int, list[dict[str, Any]], str | None]:
        """Matching alerts in time order: (total matching, one page, cursor of the next page).

        ``since`` is inclusive, ``until`` exclusive. ``txn_id`` matches the row id of any
        data set; ``index`` the index the alert would go to; ``kind`` the document's
        ``alert.kind`` (``anomaly``, ``drift``). ``cursor`` (from a previous page) replaces
        ``offset`` and stays stable while new alerts arrive.
        """
        where, params = [], []
        for column, value in (("level", level), ("txn_id", txn_id), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if index is not None:
            # rows of a store written before routing existed went to the default index
            where.append("COALESCE(index_name, ?) = ?")
            params += [self.default_index, index]
        if kind is not None:
            # documents stored before alert.kind existed are anomalies
            where.append("COALESCE(json_extract(doc, '$.\"alert.kind\"'), 'anomaly') = ?")
            params.append(kind)
        if since_ns is not None:
            where.append("ts_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("ts_ns < ?")
            params.append(until_ns)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self._read(f"SELECT COUNT(*) FROM alerts {clause}", params)[0][0]
        page_where, page_params = list(where), list(params)
        if cursor is not None:
            ts, rowid = decode_cursor(cursor)
            page_where.append("(ts_ns > ? OR (ts_ns = ? AND rowid > ?))")
            page_params += [ts, ts, rowid]
            offset = 0
        page_clause = f"WHERE {' AND '.join(page_where)}" if page_where else ""
        rows = self._read(
            f"SELECT rowid, ts_ns, doc_id, doc FROM alerts {page_clause} "
            "ORDER BY ts_ns, rowid LIMIT ? OFFSET ?",
            [*page_params, limit + 1, offset],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [{"_id": doc_id, **json.loads(doc)} for _, _, doc_id, doc in rows]
        next_cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
        return total, items, next_cursor
