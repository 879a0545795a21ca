"""Which model version answers a request: the followed alias (hot reload) and explicitly
requested versions, through the model provider shared with the UDF agent
(:mod:`models.provider`).

A request holds the backend it scores with (``with service.use(ref) as backend``), so a
promotion or a cache eviction during the request never closes it under the request, and
one response is never scored by two versions. A newly promoted version is loaded and
verified (path, signature, sha256) before it replaces the old one; if it fails, the old
one keeps serving and the failure shows in ``/health``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from models import errors as models_errors
from models.backends import BackendFactory, ScoringBackend, local_factory, serving_factory
from models.provider import LoadFailure, ModelProvider, ProviderEvents
from models.registry import Registry, open_registry

from .config import ApiConfig
from .errors import ModelNotFound, ModelUnavailable

__all__ = ["ModelService", "api_factory"]

log = logging.getLogger("api.models")


def api_factory(config: ApiConfig) -> BackendFactory:
    """In-process scoring (scikit-learn, TF SavedModels), or TF cards through TF Serving
    when a TF Serving address is configured."""
    tfserving = config.tfserving_config()
    return local_factory() if tfserving is None else serving_factory(tfserving)


class _Events(ProviderEvents):
    def __init__(
        self,
        alias: str,
        on_switch: Callable[[str | None, str], None] | None,
        on_failure: Callable[[str], None] | None,
    ) -> None:
        self.alias = alias
        self.on_switch = on_switch
        self.on_failure = on_failure

    def switched(self, name: str, ref: str, old: str | None, new: str) -> None:
        log.info(
            "event=model_switch model=%s alias=%s from_version=%s to_version=%s",
            name,
            ref,
            old,
            new,
        )
        if self.on_switch is not None:
            self.on_switch(old, new)

    def failed(self, name: str, ref: str, version: str | None, error: Exception) -> None:
        log.error(
            "event=model_load_failed model=%s alias=%s version=%s error_type=%s error=%r",
            name,
            ref,
            version,
            type(error).__name__,
            str(error),
        )
        if self.on_failure is not None:
            self.on_failure(type(error).__name__)


class ModelService:
    """Thread-safe access to the loaded versions of one model."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        registry: Registry | None = None,
        factory: BackendFactory | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_switch: Callable[[str | None, str], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.registry = (
            registry
            if registry is not None
            else open_registry(config.registry, config.mlflow_tracking_uri or None)
        )
        self.name = config.model
        self.alias = config.alias
        self._events = _Events(config.alias, on_switch, on_failure)
        self.provider = ModelProvider(
            self.registry,
            factory if factory is not None else api_factory(config),
            reload_interval=config.reload_interval,
            retry_interval=config.retry_interval,
            max_loaded=config.cache_size,
            clock=config.clock,
            wall_clock=wall_clock,
            events=self._events,
        )
        self.follower = self.provider.follow(self.name, self.alias)

    def __repr__(self) -> str:
        return (
            f"ModelService({self.name}@{self.alias} -> v{self.follower.version}, "
            f"registry={self.registry.root})"
        )

    # -- the followed alias ---------------------------------------------------
    @property
    def serving(self) -> ScoringBackend | None:
        return self.follower.backend

    def check(self, *, force: bool = False) -> ScoringBackend | None:
        """Follow the alias if it is due a check (rate-limited); the serving backend."""
        self.follower.refresh(force=force)
        return self.follower.backend

    @property
    def last_switch(self) -> float | None:
        return self.follower.last_switch

    @property
    def last_failure(self) -> LoadFailure | None:
        return self.follower.last_failure

    # -- scoring --------------------------------------------------------------
    @contextmanager
    def use(self, ref: str | None = None) -> Iterator[ScoringBackend]:
        """Hold the backend for ``ref`` (a version number or alias; ``None`` = the
        followed alias) for a ``with`` block. Raises :class:`ModelNotFound` or
        :class:`ModelUnavailable`."""
        if ref is None or ref == "" or ref == self.alias:
            try:
                with self.follower.acquire() as backend:
                    yield backend
                return
            except models_errors.ModelsError as exc:
                failure = self.follower.last_failure
                reason = failure.message if failure is not None else str(exc)
                raise ModelUnavailable(
                    f"no version of {self.name!r} is loaded for alias {self.alias!r}: {reason}"
                ) from exc
        try:
            version = self.provider.resolve(self.name, ref)
        except models_errors.ModelNotFound as exc:
            raise ModelNotFound(str(exc)) from exc
        except models_errors.RegistryError as exc:
            raise ModelUnavailable(str(exc)) from exc
        try:
            lease = self.provider.lease(self.name, version)
        except (models_errors.ModelsError, OSError) as exc:
            self._events.failed(self.name, ref, version, exc)
            raise ModelUnavailable(f"cannot load {self.name} v{version}: {exc}") from exc
        with lease as backend:
            yield backend

    def cached_versions(self) -> list[str]:
        return [v for n, v, _ in self.provider.loaded() if n == self.name]

    # -- status ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        serving = self.check()
        failure = self.follower.last_failure
        if serving is None:
            status = "unavailable"
        elif failure is not None:
            status = "degraded"
        else:
            status = "ok"
        switched = self.follower.last_switch
        return {
            "status": status,
            "model": self.name,
            "alias": self.alias,
            "serving_version": serving.version if serving else None,
            "threshold": serving.threshold if serving else None,
            "last_switch": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(switched)) if switched else None
            ),
            "last_error": failure.as_dict() if failure else None,
            "cached_versions": self.cached_versions(),
            "registry": str(self.registry.root),
        }

    def close(self) -> None:
        self.follower.close()
        self.provider.close()
