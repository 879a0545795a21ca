"""One model provider for every service: registered models turned into loaded backends,
aliases followed as they move, backends shared and closed only when unused.

- **Aliases** (``production``, ``challenger``…) are resolved through a cache that looks at
  ``aliases.json`` at most every ``reload_interval`` seconds, and only re-reads it when
  its (inode, mtime, size) changed: ``os.replace`` gives every promotion a new inode, so
  two promotions inside the filesystem's timestamp resolution are both seen.
- **Backends** are built by the service's :class:`~models.backends.BackendFactory`, once
  per (model, version, kind) however many users ask at the same time, and handed out as
  :class:`Lease` objects. An LRU keeps at most ``max_loaded`` of them; one is closed only
  when evicted *and* no lease holds it.
- **Followers** track one alias for one user: :meth:`Follower.acquire` returns a lease on
  the version the alias points to now. A newly promoted version is loaded before it
  replaces the old one; when it fails to load, the old one keeps serving, the failure is
  recorded (``last_failure``) and the load is retried after ``retry_interval`` seconds or
  when the alias moves again.
- **Events** (:class:`ProviderEvents`) report loads, switches, failures and evictions, for
  metrics and logs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .backends import BackendFactory, ScoringBackend
from .errors import BackendError, ModelsError, RegistryError
from .registry import Registry

__all__ = ["Follower", "Lease", "LoadFailure", "ModelProvider", "ProviderEvents"]

log = logging.getLogger("models.provider")

Signature = tuple[int, int, int]


class ProviderEvents:
    """Callbacks of a provider (no-ops here; subclass what you need)."""

    def loaded(self, name: str, version: str, backend: ScoringBackend, seconds: float) -> None:
        """A backend was built."""

    def switched(self, name: str, ref: str, old: str | None, new: str) -> None:
        """A follower of ``name@ref`` moved from version ``old`` to ``new``."""

    def failed(self, name: str, ref: str, version: str | None, error: Exception) -> None:
        """Resolving or loading ``name@ref`` (version, when known) failed."""

    def evicted(self, name: str, version: str, backend: ScoringBackend) -> None:
        """An unused backend was closed to keep the cache within its size."""


@dataclass(frozen=True)
class LoadFailure:
    """The last failed attempt of a follower."""

    ref: str
    version: str | None
    message: str
    error_type: str
    at: float  # wall-clock seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "version": self.version,
            "message": self.message,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
        }


class _Entry:
    __slots__ = ("backend", "refs")

    def __init__(self, backend: ScoringBackend) -> None:
        self.backend = backend
        self.refs = 0


class Lease:
    """A hold on a loaded backend: it is not closed while any lease on it is open."""

    def __init__(self, provider: ModelProvider, key: tuple[str, str, str], backend: ScoringBackend):
        self._provider = provider
        self._key = key
        self.backend = backend
        self._released = False

    @property
    def version(self) -> str:
        return self.backend.version

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._provider._release(self._key)

    def __enter__(self) -> ScoringBackend:
        return self.backend

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.backend!r}{', released' if self._released else ''})"


class ModelProvider:
    """Loaded backends of one registry, shared by every user in the process."""

    def __init__(
        self,
        registry: Registry,
        factory: BackendFactory,
        *,
        reload_interval: float = 0.5,
        retry_interval: float = 10.0,
        max_loaded: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        events: ProviderEvents | None = None,
    ) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}")
        if reload_interval < 0 or retry_interval < 0:
            raise ValueError("reload_interval and retry_interval must not be negative")
        self.registry = registry
        self.factory = factory
        self.reload_interval = reload_interval
        self.retry_interval = retry_interval
        self.max_loaded = max_loaded
        self.clock = clock
        self.wall_clock = wall_clock
        self.events = events or ProviderEvents()
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._load_locks: dict[tuple[str, str, str], threading.Lock] = {}
        # (name, ref) -> (version, aliases.json signature, checked at)
        self._resolved: dict[tuple[str, str], tuple[str, Signature | None, float]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"ModelProvider({self.registry.root}, {self.factory!r}, loaded={len(self._entries)})"

    # -- aliases -------------------------------------------------------------------
    def aliases_signature(self, name: str) -> Signature | None:
        """(inode, mtime_ns, size) of the model's ``aliases.json``; None when absent."""
        try:
            st = os.stat(self.registry.aliases_path(name))
        except (OSError, RegistryError):
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def resolve(self, name: str, ref: str) -> str:
        """The version ``name@ref`` points to; cheap when nothing changed."""
        key = (name, ref)
        if ref.isdigit():  # a version number never moves: validate it once
            cached = self._resolved.get(key)
            if cached is None:
                cached = (self.registry.resolve(name, ref), None, 0.0)
                self._resolved[key] = cached
            return cached[0]
        now = self.clock()
        cached = self._resolved.get(key)
        if cached is not None and now - cached[2] < self.reload_interval:
            return cached[0]
        signature = self.aliases_signature(name)
        if cached is not None and cached[1] == signature and signature is not None:
            self._resolved[key] = (cached[0], signature, now)
            return cached[0]
        version = self.registry.resolve(name, ref)
        self._resolved[key] = (version, signature, now)
        return version

    # -- backends ------------------------------------------------------------------
    def lease(self, name: str, version: str, kind: str | None = None) -> Lease:
        """A lease on ``name`` v``version`` (built by the factory on first use)."""
        key = (name, str(version), kind or "")
        with self._lock:
            if self._closed:
                raise BackendError("the model provider is closed")
            entry = self._entries.get(key)
            if entry is not None:
                entry.refs += 1
                self._entries.move_to_end(key)
                return Lease(self, key, entry.backend)
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per key, even when many users ask at once
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refs += 1
                    self._entries.move_to_end(key)
                    return Lease(self, key, entry.backend)
            started = time.perf_counter()
            card = self.registry.card(name, key[1])
            backend = self.factory.build(self.registry, card, kind)
            seconds = time.perf_counter() - started
            log.info(
                "model loaded model=%s version=%s backend=%s seconds=%.3f",
                name,
                key[1],
                type(backend).__name__,
                seconds,
            )
            with self._lock:
                entry = self._entries[key] = _Entry(backend)
                entry.refs = 1
                self._load_locks.pop(key, None)
                evicted = self._evict_locked()
            self._close_evicted(evicted)
            self.events.loaded(name, key[1], backend, seconds)
            return Lease(self, key, backend)

    def _release(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.refs -= 1
            evicted = self._evict_locked()
        self._close_evicted(evicted)

    def _evict_locked(self) -> list[tuple[tuple[str, str, str], ScoringBackend]]:
        """Drop the least recently used unheld entries beyond ``max_loaded``."""
        out = []
        excess = len(self._entries) - self.max_loaded
        if excess <= 0:
            return out
        for key, entry in list(self._entries.items()):
            if excess <= 0:
                break
            if entry.refs <= 0:
                del self._entries[key]
                out.append((key, entry.backend))
                excess -= 1
        return out

    def _close_evicted(self, evicted: list[tuple[tuple[str, str, str], ScoringBackend]]) -> None:
        for (name, version, _), backend in evicted:
            log.info("model unloaded model=%s version=%s (least recently used)", name, version)
            backend.close()
            self.events.evicted(name, version, backend)

    def loaded(self) -> list[tuple[str, str, ScoringBackend]]:
        """(name, version, backend) of every loaded backend, for metrics."""
        with self._lock:
            return [(n, v, e.backend) for (n, v, _), e in self._entries.items()]

    def follow(self, name: str, ref: str = "production", kind: str | None = None) -> Follower:
        return Follower(self, name, ref, kind)

    def close(self) -> None:
        """Close every backend (at shutdown; leases still open are ended too)."""
        with self._lock:
            self._closed = True
            backends = [e.backend for e in self._entries.values()]
            self._entries.clear()
        for b in backends:
            b.close()


class Follower:
    """One user's view of ``name@ref``: the backend of the version the alias points to
    now, switching when it moves. Thread-safe; a check in progress never blocks others
    once a version is loaded (they keep the current one)."""

    def __init__(self, provider: ModelProvider, name: str, ref: str, kind: str | None) -> None:
        self.provider = provider
        self.name = name
        self.ref = ref
        self.kind = kind
        self.last_failure: LoadFailure | None = None
        self.last_switch: float | None = None  # wall clock
        self._error: Exception | None = None
        self._lease: Lease | None = None
        self._lock = threading.Lock()
        self._next_check = float("-inf")
        self._failed: tuple[str | None, Signature | None, float] | None = None

    def __repr__(self) -> str:
        return f"Follower({self.name}@{self.ref} -> v{self.version})"

    @property
    def version(self) -> str | None:
        lease = self._lease
        return lease.version if lease is not None else None

    @property
    def backend(self) -> ScoringBackend | None:
        """The current backend (no check, no hold): for the thread that refreshes it."""
        lease = self._lease
        return lease.backend if lease is not None else None

    def current(self) -> ScoringBackend:
        """Check the alias (rate-limited) and return the current backend; raise the last
        error when no version could be loaded yet. The backend stays open until this
        follower moves on or is closed: a user sharing it across threads holds it with
        :meth:`acquire` instead."""
        self.refresh()
        lease = self._lease
        if lease is None:
            raise self._error or BackendError(f"{self.name}@{self.ref}: nothing loaded")
        return lease.backend

    @contextmanager
    def acquire(self) -> Iterator[ScoringBackend]:
        """Hold the current version for the duration of a ``with`` block."""
        self.refresh()
        lease = self._lease
        if lease is None:
            raise self._error or BackendError(f"{self.name}@{self.ref}: nothing loaded")
        # A lease of its own: the follower may move on (and release its lease) meanwhile.
        held = self.provider.lease(self.name, lease.version, self.kind)
        try:
            yield held.backend
        finally:
            held.release()

    def refresh(self, *, force: bool = False) -> bool:
        """Follow the alias if it is due a check (or ``force``); True when it switched."""
        p = self.provider
        now = p.clock()
        if not force and now < self._next_check:
            return False
        if self._lease is not None:
            if not self._lock.acquire(blocking=False):
                return False  # another thread is checking: keep serving the current one
        else:
            self._lock.acquire()
        try:
            now = p.clock()
            if not force and now < self._next_check:
                return False
            self._next_check = now + p.reload_interval
            return self._check(now, force)
        finally:
            self._lock.release()

    def _check(self, now: float, force: bool) -> bool:
        p = self.provider
        signature = p.aliases_signature(self.name)
        try:
            version = p.resolve(self.name, self.ref)
        except ModelsError as exc:
            self._record(None, exc, signature, now)
            return False
        current = self._lease
        if current is not None and current.version == version:
            self._clear()
            return False
        failed = self._failed
        if (
            not force
            and failed is not None
            and failed[0] == version
            and failed[1] == signature
            and now < failed[2]
        ):
            return False  # this version failed recently; retry later or when the alias moves
        try:
            lease = p.lease(self.name, version, self.kind)
        except (ModelsError, OSError) as exc:
            self._record(version, exc, signature, now)
            return False
        old = current.version if current is not None else None
        self._lease = lease
        self.last_switch = p.wall_clock()
        self._clear()
        if current is not None:
            log.info(
                "model switch model=%s ref=%s from_version=%s to_version=%s",
                self.name,
                self.ref,
                old,
                version,
            )
            current.release()
        p.events.switched(self.name, self.ref, old, version)
        return True

    def _record(
        self, version: str | None, exc: Exception, signature: Signature | None, now: float
    ) -> None:
        p = self.provider
        self._error = exc
        self._failed = (version, signature, now + p.retry_interval)
        self.last_failure = LoadFailure(
            ref=self.ref,
            version=version,
            message=str(exc),
            error_type=type(exc).__name__,
            at=p.wall_clock(),
        )
        log.error(
            "model load failed model=%s ref=%s version=%s keeping_version=%s error_type=%s "
            "error=%r",
            self.name,
            self.ref,
            version,
            self.version,
            type(exc).__name__,
            str(exc),
        )
        p.events.failed(self.name, self.ref, version, exc)

    def _clear(self) -> None:
        self._error = None
        self._failed = None
        self.last_failure = None

    def close(self) -> None:
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
