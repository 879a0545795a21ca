"""Which model version answers a request: the alias-following "serving" model with hot
reload, plus an LRU cache of explicitly requested versions.

Hot reload is a cheap ``stat`` of ``aliases.json`` at most every ``reload_interval``
seconds, done by whichever request comes first; ``os.replace`` in the registry gives the
file a new inode on every promotion, so (inode, mtime, size) changes even when two
promotions land within the filesystem's timestamp resolution. A new version is loaded
and verified (sha256, through :func:`models.backends.load_backend`) before it replaces
the old one; if it fails, the old one keeps serving and the failure shows in ``/health``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models import registry as _registry
from models.backends import BackendError, ScoringBackend, load_local_backend
from models.registry import Registry, RegistryError

from .config import ApiConfig
from .errors import ModelNotFound, ModelUnavailable

__all__ = ["LoadFailure", "ModelService"]

log = logging.getLogger("api.models")

Loader = Callable[[Registry, str, str], ScoringBackend]


@dataclass(frozen=True)
class LoadFailure:
    """The last failed attempt to load the followed alias."""

    ref: str
    version: str | None
    message: str
    at: float  # wall-clock seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "version": self.version,
            "message": self.message,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
        }


class ModelService:
    """Thread-safe access to loaded versions of one model."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        registry: Registry | None = None,
        loader: Loader = load_local_backend,
        wall_clock: Callable[[], float] = time.time,
        on_switch: Callable[[str | None, str], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else Registry(config.registry)
        self.name = config.model
        self.alias = config.alias
        self._loader = loader
        self._clock = config.clock
        self._wall = wall_clock
        self._on_switch = on_switch
        self._on_failure = on_failure
        self._serving: ScoringBackend | None = None
        self._signature: tuple[int, int, int] | None = None  # of aliases.json when checked
        self._next_check = float("-inf")
        self._failed_signature: tuple[int, int, int] | None = None
        self._retry_at = float("-inf")
        self.last_failure: LoadFailure | None = None
        self.last_switch: float | None = None
        self._reload_lock = threading.Lock()
        self._cache: OrderedDict[str, ScoringBackend] = OrderedDict()
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        v = self._serving.version if self._serving else None
        return f"ModelService({self.name}@{self.alias} -> v{v}, registry={self.registry.root})"

    # -- the followed alias ---------------------------------------------------
    @property
    def serving(self) -> ScoringBackend | None:
        return self._serving

    def _aliases_signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.registry.aliases_path(self.name).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def check(self, *, force: bool = False) -> ScoringBackend | None:
        """Reload when the alias file changed (rate-limited); return the serving backend."""
        now = self._clock()
        if not force and now < self._next_check:
            return self._serving
        if self._serving is not None:
            # Someone else is already checking: keep answering with the current model.
            if not self._reload_lock.acquire(blocking=False):
                return self._serving
        else:
            self._reload_lock.acquire()
        try:
            now = self._clock()
            if not force and now < self._next_check:
                return self._serving
            self._next_check = now + self.config.reload_interval
            signature = self._aliases_signature()
            unchanged = signature == self._signature and self._serving is not None
            if unchanged and not force:
                return self._serving
            if not force and signature == self._failed_signature and now < self._retry_at:
                return self._serving
            self._reload(signature, now)
            return self._serving
        finally:
            self._reload_lock.release()

    def _reload(self, signature: tuple[int, int, int] | None, now: float) -> None:
        ref = self.alias
        version: str | None = None
        old = self._serving
        try:
            version = self.registry.resolve(self.name, ref)
            if old is not None and old.version == version:
                self._signature = signature
                self._clear_failure()
                return
            backend = self._get_cached(version) or self._loader(self.registry, self.name, version)
        except (RegistryError, BackendError, OSError) as exc:
            self._record_failure(ref, version, exc, signature, now)
            return
        self._serving = backend
        self._signature = signature
        self._clear_failure()
        self.last_switch = self._wall()
        self._remember(backend)
        log.info(
            "event=model_switch model=%s alias=%s from_version=%s to_version=%s",
            self.name,
            ref,
            old.version if old else None,
            backend.version,
        )
        if self._on_switch is not None:
            self._on_switch(old.version if old else None, backend.version)

    def _clear_failure(self) -> None:
        self.last_failure = None
        self._failed_signature = None

    def _record_failure(
        self,
        ref: str,
        version: str | None,
        exc: Exception,
        signature: tuple[int, int, int] | None,
        now: float,
    ) -> None:
        self.last_failure = LoadFailure(ref=ref, version=version, message=str(exc), at=self._wall())
        self._failed_signature = signature
        self._retry_at = now + self.config.retry_interval
        keeping = self._serving.version if self._serving else None
        log.error(
            "event=model_load_failed model=%s alias=%s version=%s keeping_version=%s "
            "error_type=%s error=%r",
            self.name,
            ref,
            version,
            keeping,
            type(exc).__name__,
            str(exc),
        )
        if self._on_failure is not None:
            self._on_failure(type(exc).__name__)

    # -- explicit versions ----------------------------------------------------
    def get(self, ref: str | None = None) -> ScoringBackend:
        """The backend for ``ref`` (a version number or alias; ``None`` = the followed
        alias). Raises :class:`ModelNotFound` or :class:`ModelUnavailable`."""
        serving = self.check()
        if ref is None or ref == "" or ref == self.alias:
            if serving is None:
                failure = self.last_failure.message if self.last_failure else "no model loaded"
                raise ModelUnavailable(
                    f"no version of {self.name!r} is loaded for alias {self.alias!r}: {failure}"
                )
            return serving
        try:
            version = self.registry.resolve(self.name, ref)
        except _registry.ModelNotFound as exc:
            raise ModelNotFound(str(exc)) from exc
        except RegistryError as exc:
            raise ModelUnavailable(str(exc)) from exc
        if serving is not None and serving.version == version:
            return serving
        cached = self._get_cached(version)
        if cached is not None:
            return cached
        try:
            backend = self._loader(self.registry, self.name, version)
        except (RegistryError, BackendError, OSError) as exc:
            log.error(
                "event=model_load_failed model=%s version=%s error_type=%s error=%r",
                self.name,
                version,
                type(exc).__name__,
                str(exc),
            )
            if self._on_failure is not None:
                self._on_failure(type(exc).__name__)
            raise ModelUnavailable(f"cannot load {self.name} v{version}: {exc}") from exc
        log.info("event=model_loaded model=%s version=%s ref=%s", self.name, version, ref)
        self._remember(backend)
        return backend

    def _get_cached(self, version: str) -> ScoringBackend | None:
        with self._cache_lock:
            backend = self._cache.get(version)
            if backend is not None:
                self._cache.move_to_end(version)
            return backend

    def _remember(self, backend: ScoringBackend) -> None:
        evicted: list[ScoringBackend] = []
        with self._cache_lock:
            self._cache[backend.version] = backend
            self._cache.move_to_end(backend.version)
            while len(self._cache) > self.config.cache_size:
                _, old = self._cache.popitem(last=False)
                evicted.append(old)
        serving = self._serving
        for old in evicted:
            if old is not serving:
                old.close()

    def cached_versions(self) -> list[str]:
        with self._cache_lock:
            return list(self._cache)

    # -- status ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        self.check()
        serving = self._serving
        if serving is None:
            status = "unavailable"
        elif self.last_failure is not None:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "model": self.name,
            "alias": self.alias,
            "serving_version": serving.version if serving else None,
            "threshold": serving.threshold if serving else None,
            "last_switch": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_switch))
                if self.last_switch
                else None
            ),
            "last_error": self.last_failure.as_dict() if self.last_failure else None,
            "cached_versions": self.cached_versions(),
            "registry": str(self.registry.root),
        }

    def close(self) -> None:
        with self._cache_lock:
            backends = list(self._cache.values())
            self._cache.clear()
        for b in backends:
            b.close()
