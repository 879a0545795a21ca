"""``python -m models watch``: CSV files dropped into a folder are validated against the
profile, published to InfluxDB and/or appended to the training store, then moved to
``processed/``; bad files go to ``rejected/`` with a ``.reason`` file beside them.

Layout (everything inside the watched folder, so every move is an atomic rename)::

    incoming/x.csv                  a dropped file
    incoming/x.csv.part             still being written: ignored (rename it when done)
    incoming/processed/x.csv        done (x.<claim>.csv when the name was taken)
    incoming/rejected/x.csv         refused, with x.csv.reason saying why
    incoming/.watch/lock            one watcher per folder (flock)
    incoming/.watch/claims/<claim>.csv, <claim>.json   a file being processed, its journal
    incoming/.watch/done/<sha256>.json                 contents already processed
    incoming/.watch/clock.json      the next free point timestamp
    <store>/<YYYY-MM-DD>/<stem>-<sha12>.csv            the training store (retrain --store)

**Complete files only.** Names ending in ``.part``, ``.tmp``, ``.partial`` or ``~`` and
dotfiles are never taken: an uploader writes ``x.csv.part`` and renames it to ``x.csv``
when done (an atomic rename, the safe way). A file written in place is taken once it has
not changed for ``--settle`` seconds (its modification time that old and, while
watching, its size and time equal over two polls). Complete files that are not ``.csv``
are rejected.

**Exactly once.** A file is first *claimed*: renamed into ``.watch/claims/`` (so it is
never taken twice) with a journal that records its sha256, its row count, the timestamps
its points get (reserved from ``clock.json`` before anything is written: row *i* is
``base + i µs``) and how many rows InfluxDB acknowledged. Killed at any point, the next
start resumes every claim from its journal: rows InfluxDB acknowledged are not sent
again, and rows sent again carry the same timestamps, tags and values, so InfluxDB
overwrites them instead of adding points; the store file is rewritten from the start
under a temporary name and renamed into place once whole. A content processed before
(same sha256) is rejected as a duplicate.

**Bounded.** Files are read ``--chunk-rows`` rows at a time (twice: validation first, so a
bad file has no effect at all, then the effects); a file of more than ``--max-rows`` rows
is rejected. SIGTERM/SIGINT stop within a chunk's time; the claim resumes at the next
start. ``--once`` processes what is complete now and exits (cron, Airflow).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError, ModelsError, SchemaError

if TYPE_CHECKING:
    import pandas as pd

    from .influx import InfluxClient
    from .profile import Profile

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "Watcher",
    "WatchConfig",
    "add_watch_parser",
    "cmd_watch",
]

log = logging.getLogger("models.watch")

EXIT_OK = 0
EXIT_FAILED = 1  # --once: a file could not be finished (InfluxDB unreachable...); it resumes
EXIT_BAD_INPUT = 2

#: spacing of a file's point timestamps
SPACING_NS = 1_000
#: names never taken: being written, temporary, hidden
_INCOMPLETE = (".part", ".tmp", ".partial", "~")
#: most lines in one write request
WRITE_BATCH = 5_000


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    profile: Profile
    dir: Path
    #: the training store (None: not written)
    store: Path | None = None
    influx_url: str | None = None
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    source: str = field(default_factory=lambda: f"watch-{socket.gethostname()}")
    once: bool = False
    poll_interval: float = 2.0
    settle: float = 5.0
    chunk_rows: int = 10_000
    #: points per second sent to InfluxDB (0: as fast as it takes them)
    rate: float = 0.0
    max_rows: int = 5_000_000
    write_attempts: int = 5
    #: how long to wait for another watcher of the folder to finish (0: fail at once)
    lock_wait: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.store is None and not self.influx_url:
            problems.append("nothing to do: give --influx-url (publish), a store (or both)")
        if self.poll_interval <= 0 or self.settle < 0:
            problems.append("--poll-interval must be > 0 and --settle >= 0")
        if self.chunk_rows < 1 or self.max_rows < 1:
            problems.append("--chunk-rows and --max-rows must be >= 1")
        if self.rate < 0 or self.lock_wait < 0:
            problems.append("--rate and --lock-wait must be >= 0")
        if problems:
            raise DataError("; ".join(problems))


class _Rejected(Exception):
    """A file that cannot be used; the message is its reason."""


class _Stopped(Exception):
    """A stop request arrived in the middle of a file."""


# -- small file helpers ------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelsError(f"cannot read {path}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_LINES = re.compile(r"\b(lines?) (\d+)(?: and (\d+))?")


def _shift_lines(message: str, offset: int) -> str:
    """A chunk's validation message with its line numbers made the file's."""

    def shift(m: re.Match) -> str:
        out = f"{m.group(1)} {int(m.group(2)) + offset}"
        if m.group(3):
            out += f" and {int(m.group(3)) + offset}"
        return out

    return _LINES.sub(shift, message) if offset else message


class Watcher:
    """One watched folder (see the module docstring). ``run()`` returns the exit status."""

    def __init__(
        self,
        config: WatchConfig,
        *,
        stop: threading.Event | None = None,
        client_factory: Callable[[], InfluxClient] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.dir = Path(config.dir)
        self.state_dir = self.dir / ".watch"
        self.claims = self.state_dir / "claims"
        self.done = self.state_dir / "done"
        self.processed = self.dir / "processed"
        self.rejected = self.dir / "rejected"
        self._client_factory = client_factory
        self._client: InfluxClient | None = None
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock_fd: int | None = None
        self._retry_at: dict[str, float] = {}
        self.counts = {"processed": 0, "rejected": 0, "failed": 0}

    # -- set-up ----------------------------------------------------------------------------
    def _open(self) -> None:
        if not self.dir.is_dir():
            raise DataError(f"{self.dir} is not a directory")
        for d in (self.claims, self.done, self.processed, self.rejected):
            d.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.config.lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline or self.stop.wait(0.5):
                    os.close(fd)
                    raise DataError(
                        f"another watcher is running on {self.dir}"
                        + (f" (waited {self.config.lock_wait:g}s)" if self.config.lock_wait else "")
                    ) from None
        self._lock_fd = fd
        if self.config.store is not None:
            Path(self.config.store).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    @property
    def client(self) -> InfluxClient:
        if self._client is None:
            if self._client_factory is not None:
                client = self._client_factory()
            else:
                from .influx import InfluxClient

                c = self.config
                client = InfluxClient(c.influx_url, username=c.username, password=c.password)
            try:
                client.ensure_database(self.database)
            except BaseException:
                client.close()
                raise
            self._client = client
        return self._client

    @property
    def database(self) -> str:
        return self.config.database or self.config.profile.database

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        self._open()
        c = self.config
        log.info(
            "event=watch_start dir=%s profile=%s store=%s influx=%s once=%s settle_s=%g",
            self.dir,
            c.profile.name,
            c.store or "-",
            c.influx_url or "-",
            c.once,
            c.settle,
        )
        try:
            while not self.stop.is_set():
                pending = self.poll()
                if c.once:
                    if self.stop.is_set():
                        return EXIT_OK  # a clean stop: the claim resumes at the next run
                    if pending:
                        log.warning(
                            "event=watch_pending files=%d (resumed at the next run)", pending
                        )
                    return EXIT_FAILED if pending else EXIT_OK
                self.stop.wait(c.poll_interval)
            return EXIT_OK
        finally:
            log.info("event=watch_stop %s", " ".join(f"{k}={v}" for k, v in self.counts.items()))
            self.close()

    def poll(self) -> int:
        """Resume every claim, then claim and process every complete file; returns how
        many claims are left unfinished (a transient failure or a stop)."""
        pending = 0
        for claim in sorted(self.claims.glob("*.csv")):
            if self.stop.is_set():
                return pending + 1
            pending += not self._process(claim)
        # a journal whose file is gone: the file was moved out, the journal not yet removed
        for journal in self.claims.glob("*.json"):
            if not journal.with_suffix(".csv").exists():
                journal.unlink(missing_ok=True)
        for path in self._complete_files():
            if self.stop.is_set():
                return pending + 1
            claim = self._claim(path)
            if claim is not None:
                pending += not self._process(claim)
        return pending

    def _complete_files(self) -> list[Path]:
        now = time.time()
        seen: dict[str, tuple[int, int]] = {}
        ready = []
        with os.scandir(self.dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = e.name
            if name.startswith(".") or name.endswith(_INCOMPLETE):
                continue
            if not e.is_file(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            key = (st.st_size, st.st_mtime_ns)
            seen[name] = key
            if now - st.st_mtime < self.config.settle:
                continue
            if not self.config.once and self.config.settle > 0 and self._seen.get(name) != key:
                continue  # watching: unchanged over two polls too
            ready.append(Path(e.path))
        self._seen = seen
        return ready

    # -- claims ----------------------------------------------------------------------------
    def _claim(self, path: Path) -> Path | None:
        stamp = _dt.datetime.now(_dt.timezone.utc)
        claim_id = f"{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        target = self.claims / f"{claim_id}.csv"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # taken away meanwhile
        _fsync_dir(self.claims)
        log.info("event=claimed file=%s claim=%s", path.name, claim_id)
        _write_json(
            target.with_suffix(".json"),
            {"claim": claim_id, "name": path.name, "claimed_at": stamp.isoformat()},
        )
        return target

    def _process(self, claim: Path) -> bool:
        """Finish one claim; False when it must be retried later (transient failure or
        stop)."""
        journal = claim.with_suffix(".json")
        state = _read_json(journal) or {
            "claim": claim.stem,
            "name": claim.name,
            "claimed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        }
        retry_at = self._retry_at.get(claim.stem)
        if retry_at is not None and time.monotonic() < retry_at and not self.config.once:
            return False
        name = state["name"]
        try:
            if state.get("rejected"):
                self._finish_rejected(claim, state)
                return True
            if "sha256" not in state:
                state["sha256"] = _sha256(claim)
                _write_json(journal, state)
            marker = self.done / f"{state['sha256']}.json"
            earlier = _read_json(marker)
            if earlier is not None and earlier.get("claim") != state["claim"]:
                raise _Rejected(
                    f"same content (sha256 {state['sha256'][:12]}…) as {earlier.get('name')!r}, "
                    f"processed at {earlier.get('processed_at')}: not processed twice"
                )
            if earlier is None:
                if not name.lower().endswith(".csv"):
                    raise _Rejected(f"{name!r} is not a .csv file")
                if "rows" not in state:
                    rows = self._validate(claim, name)
                    self._reserve(state, rows)
                    _write_json(journal, state)
                    log.info("event=validated file=%s rows=%d", name, rows)
                self._effects(claim, state, journal)
                _write_json(
                    marker,
                    {
                        "claim": state["claim"],
                        "name": name,
                        "rows": state["rows"],
                        "processed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                        "store_file": state.get("store_file"),
                    },
                )
            self._finish_processed(claim, state)
            self._retry_at.pop(claim.stem, None)
            return True
        except _Rejected as why:
            state["rejected"] = str(why)
            _write_json(journal, state)
            self._finish_rejected(claim, state)
            return True
        except _Stopped:
            log.info("event=interrupted file=%s claim=%s (resumed at the next start)", name,
                     claim.stem)  # fmt: skip
            return False
        except (ModelsError, OSError) as exc:
            self.counts["failed"] += 1
            delay = min(
                max(self.config.poll_interval, 1.0) * 2 ** min(state.get("failures", 0), 6), 300
            )
            state["failures"] = state.get("failures", 0) + 1
            with contextlib.suppress(OSError):
                _write_json(journal, state)
            self._retry_at[claim.stem] = time.monotonic() + delay
            log.error("event=file_failed file=%s claim=%s retry_in_s=%.0f error=%r", name,
                      claim.stem, delay, str(exc))  # fmt: skip
            return False

    def _unique(self, folder: Path, name: str, claim_id: str, *suffixes: str) -> Path:
        target = folder / name
        if any((folder / (name + s)).exists() for s in ("", *suffixes)):
            stem, dot, ext = name.rpartition(".")
            target = folder / (f"{stem}.{claim_id}.{ext}" if dot else f"{name}.{claim_id}")
        return target

    def _finish_processed(self, claim: Path, state: dict[str, Any]) -> None:
        target = self._unique(self.processed, state["name"], state["claim"])
        os.replace(claim, target)
        _fsync_dir(self.processed)
        claim.with_suffix(".json").unlink(missing_ok=True)
        self.counts["processed"] += 1
        log.info("event=processed file=%s rows=%s published=%s stored=%s to=%s", state["name"],
                 state.get("rows"), state.get("published") if self.config.influx_url else "-",
                 state.get("store_file") or "-", target)  # fmt: skip

    def _finish_rejected(self, claim: Path, state: dict[str, Any]) -> None:
        target = Path(state.get("rejected_to") or "")
        if not state.get("rejected_to"):
            target = self._unique(self.rejected, state["name"], state["claim"], ".reason")
            state["rejected_to"] = str(target)
            _write_json(claim.with_suffix(".json"), state)
        reason = target.with_name(target.name + ".reason")
        tmp = reason.with_name(f".{reason.name}.tmp")
        tmp.write_text(state["rejected"] + "\n", encoding="utf-8")
        os.replace(tmp, reason)
        if claim.exists():
            os.replace(claim, target)
        _fsync_dir(self.rejected)
        claim.with_suffix(".json").unlink(missing_ok=True)
        self.counts["rejected"] += 1
        log.warning("event=rejected file=%s to=%s reason=%r", state["name"], target,
                    state["rejected"])  # fmt: skip

    # -- reading -----------------------------------------------------------------------------
    def _chunks(self, path: Path, name: str) -> Iterator[tuple[int, pd.DataFrame]]:
        """(first row index, validated frame) per chunk; rejects what cannot be read."""
        import pandas as pd

        from .data import validate_frame

        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = [c.strip() for c in next(csv.reader(f), [])]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise _Rejected(f"{name}: cannot read as CSV: {exc}") from None
        if not header:
            raise _Rejected(f"{name}: file is empty (expected a header line)")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise _Rejected(f"{name}: duplicated columns: {', '.join(dupes)}")
        start = 0
        try:
            reader = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
                chunksize=self.config.chunk_rows,
            )
            with reader:
                for raw in reader:
                    try:
                        frame = validate_frame(raw, source=name, profile=self.config.profile)
                    except SchemaError as exc:
                        raise _Rejected(_shift_lines(str(exc), start)) from None
                    yield start, frame
                    start += len(raw)
        except (UnicodeDecodeError, pd.errors.ParserError, csv.Error) as exc:
            raise _Rejected(f"{name}: cannot parse as CSV near row {start + 1}: {exc}") from None
        except pd.errors.EmptyDataError:
            raise _Rejected(f"{name}: file is empty (expected a header line)") from None
        if start == 0:
            raise _Rejected(f"{name}: header only, no data rows")

    def _validate(self, path: Path, name: str) -> int:
        """Validation pass: every chunk against the profile, ids unique over the file."""
        from .influx import profile_lines

        profile = self.config.profile
        id_col = profile.id_column
        lines: dict[str, int] = {}
        rows = 0
        for start, frame in self._chunks(path, name):
            if self.stop.is_set():
                raise _Stopped
            rows = start + len(frame)
            if rows > self.config.max_rows:
                raise _Rejected(
                    f"{name}: more than {self.config.max_rows:,} rows (--max-rows); split it"
                )
            if self.config.influx_url:
                # a value line protocol cannot carry (a control character...) refuses the
                # file now, before any of it is written
                try:
                    profile_lines(frame, profile, source=self.config.source,
                                  timestamps=[0] * len(frame), ids=[""] * len(frame))  # fmt: skip
                except DataError as exc:
                    raise _Rejected(f"{name}: rows {start + 1}-{rows}: {exc}") from None
            if id_col in frame.columns:
                for i, v in enumerate(frame[id_col].tolist()):
                    first = lines.setdefault(v, start + i + 2)
                    if first != start + i + 2:
                        raise _Rejected(
                            f"{name}: column {id_col!r} must be unique; {v!r} repeats (lines "
                            f"{first} and {start + i + 2})"
                        )
        return rows

    def _reserve(self, state: dict[str, Any], rows: int) -> None:
        """Timestamps for the file's points, never overlapping another file's (so no
        point of one overwrites a point of another)."""
        clock_path = self.state_dir / "clock.json"
        clock = _read_json(clock_path) or {}
        base = max(time.time_ns(), int(clock.get("next_ns", 0)))
        _write_json(clock_path, {"next_ns": base + (rows + 1) * SPACING_NS})
        stamp = _dt.datetime.fromisoformat(state["claimed_at"])
        stem = Path(state["name"]).stem
        state |= {
            "rows": rows,
            "base_ns": base,
            "source": self.config.source,
            "published": 0,
            "store_file": (
                f"{stamp:%Y-%m-%d}/{stem}-{state['sha256'][:12]}.csv"
                if self.config.store is not None
                else None
            ),
            "stored": False,
        }

    # -- effects -----------------------------------------------------------------------------
    def _effects(self, claim: Path, state: dict[str, Any], journal: Path) -> None:
        c = self.config
        publish = bool(c.influx_url)
        store_path = Path(c.store) / state["store_file"] if state.get("store_file") else None
        store = store_path is not None and not state.get("stored") and not store_path.exists()
        if store_path is not None and store_path.exists() and not state.get("stored"):
            state["stored"] = True  # renamed into place before the journal said so
            _write_json(journal, state)
        need_points = publish and state.get("published", 0) < state["rows"]
        if not store and not need_points:
            return
        profile = c.profile
        id_col = profile.id_column
        stem = Path(state["name"]).stem
        tmp = None
        out = None
        if store:
            assert store_path is not None
            store_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = store_path.with_name(f".{store_path.name}.part")
            out = open(tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        sent_at = time.monotonic()
        sent = 0
        try:
            for start, frame in self._chunks(claim, state["name"]):
                if self.stop.is_set():
                    raise _Stopped
                n = len(frame)
                if id_col not in frame.columns:
                    # ids unique across files: the content's hash and the row number
                    frame[id_col] = [f"{stem}-{state['sha256'][:8]}-{start + i}" for i in range(n)]
                if out is not None:
                    frame.to_csv(out, header=start == 0, index=False)
                if need_points and start + n > state["published"]:
                    from .influx import profile_lines

                    skip = max(0, state["published"] - start)
                    part = frame.iloc[skip:]
                    first = start + skip
                    ts = [state["base_ns"] + (first + i) * SPACING_NS for i in range(len(part))]
                    lines = profile_lines(part, profile, source=state["source"], timestamps=ts)
                    for b in range(0, len(lines), WRITE_BATCH):
                        batch = lines[b : b + WRITE_BATCH]
                        self._pace(sent, sent_at)
                        self.client.write_retrying(
                            self.database,
                            batch,
                            retention_policy=c.retention_policy or profile.retention_policy,
                            attempts=c.write_attempts,
                            stop=self.stop,
                            what=f"write {state['name']}",
                        )
                        sent += len(batch)
                        state["published"] = first + b + len(batch)
                        _write_json(journal, state)
                        if self.stop.is_set():
                            raise _Stopped
            if out is not None:
                assert tmp is not None and store_path is not None
                out.flush()
                os.fsync(out.fileno())
                out.close()
                out = None
                os.replace(tmp, store_path)
                _fsync_dir(store_path.parent)
                state["stored"] = True
                _write_json(journal, state)
        finally:
            if out is not None:
                out.close()
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _pace(self, sent: int, since: float) -> None:
        """Wait until ``sent`` points fit the ``--rate`` budget (interrupted by a stop)."""
        if not self.config.rate or not sent:
            return
        due = since + sent / self.config.rate
        wait = due - time.monotonic()
        if wait > 0 and self.stop.wait(wait):
            raise _Stopped


# -- command line --------------------------------------------------------------------------------
def add_watch_parser(sub, *, add_profile) -> argparse.ArgumentParser:
    env = os.environ
    p = sub.add_parser(
        "watch",
        help="ingest CSV files dropped into a folder: validate, publish and/or store, move",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="Exit status: 0 done (or stopped cleanly), 1 with --once when a file could not "
        "be finished (it resumes at the next run), 2 bad flags, profile or folder. See "
        'docs/models.md, "File-drop ingestion".',
    )
    add_profile(p)
    p.add_argument("--dir", default=None,
                   help="the watched folder (default DATA_DIR/incoming)")  # fmt: skip
    p.add_argument("--data-dir", default=None,
                   help="env MODELS_DATA_DIR; default data, data/<profile> for another profile")  # fmt: skip
    p.add_argument("--store", default=None,
                   help="training store folder (default DATA_DIR/store)")  # fmt: skip
    p.add_argument("--no-store", action="store_true", help="publish only")
    p.add_argument("--influx-url", default=env.get("MODELS_INFLUX_URL"),
                   help="publish each row to InfluxDB 1.x as the publisher does (env MODELS_INFLUX_URL)")  # fmt: skip
    p.add_argument("--influx-database", default=env.get("MODELS_INFLUX_DATABASE"),
                   help="default: the profile's database")  # fmt: skip
    p.add_argument("--influx-retention-policy", default=None,
                   help="default: the profile's (autogen)")  # fmt: skip
    p.add_argument("--influx-username", default=env.get("MODELS_INFLUX_USERNAME"))
    p.add_argument("--influx-password", default=env.get("MODELS_INFLUX_PASSWORD"),
                   help="prefer the environment: MODELS_INFLUX_PASSWORD")  # fmt: skip
    p.add_argument("--source", default=env.get("MODELS_WATCH_SOURCE"),
                   help="the points' source tag (default watch-<hostname>)")  # fmt: skip
    p.add_argument("--once", action="store_true",
                   help="process what is complete now, then exit (cron, Airflow)")  # fmt: skip
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--settle", type=float, default=5.0,
                   help="a file unchanged this long (s) is complete (default 5)")  # fmt: skip
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows read at a time")
    p.add_argument("--rate", type=float, default=0.0,
                   help="points per second sent to InfluxDB (default 0: unlimited)")  # fmt: skip
    p.add_argument("--max-rows", type=int, default=5_000_000,
                   help="reject a file with more rows (default 5,000,000)")  # fmt: skip
    p.add_argument("--lock-wait", type=float, default=0.0,
                   help="seconds to wait while another watcher works on the folder (default 0: "
                        "exit 2 at once); scheduled --once runs that may overlap set it")  # fmt: skip
    return p


def cmd_watch(args, *, data_dir: Callable[[Profile | None], str]) -> int:
    from .profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
        base = Path(data_dir(None if args.profile is None else profile))
        store = None if args.no_store else Path(args.store or base / "store")
        config = WatchConfig(
            profile=profile,
            dir=Path(args.dir or base / "incoming"),
            store=store,
            influx_url=args.influx_url,
            database=args.influx_database,
            retention_policy=args.influx_retention_policy,
            username=args.influx_username,
            password=args.influx_password,
            once=args.once,
            poll_interval=args.poll_interval,
            settle=args.settle,
            chunk_rows=args.chunk_rows,
            rate=args.rate,
            max_rows=args.max_rows,
            lock_wait=args.lock_wait,
            **({"source": args.source} if args.source else {}),
        )
    except (ProfileError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dir is None:
        config.dir.mkdir(parents=True, exist_ok=True)
    watcher = Watcher(config)

    def on_signal(signum, _frame):
        log.info("event=signal signal=%s action=stop", signal.Signals(signum).name)
        threading.Thread(
            target=watcher.stop.set, name="stop", daemon=True
        ).start()  # see publisher.cli

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rc = watcher.run()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = watcher.counts
    print(
        f"processed {counts['processed']} file(s), rejected {counts['rejected']}"
        + (f", {counts['failed']} failure(s) (retried)" if counts["failed"] else ""),
        file=sys.stdout,
    )
    return rc
