"""The API's configuration: one keyword-only object, environment read once at the edge."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from models.registry import default_registry_root

__all__ = ["ENV_PREFIX", "ApiConfig"]

ENV_PREFIX = "API_"


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """Settings of one API app. Times are in seconds.

    ``registry``: model registry root; ``model``: the model served; ``alias``: the alias
    followed for hot reload; ``max_batch``: most records per request; ``reload_interval``:
    least time between two ``stat`` calls on ``aliases.json``; ``retry_interval``: least time
    between two attempts to load a version that failed (same alias file); ``cache_size``:
    versions kept loaded for ``?version=``; ``swagger_ui_url``: where the ``/docs`` page
    loads Swagger UI from (empty: the copy bundled with the API, so it works offline);
    ``clock``: monotonic clock (tests inject one).
    """

    registry: Path = field(default_factory=default_registry_root)
    model: str = "creditcard"
    alias: str = "production"
    max_batch: int = 1000
    reload_interval: float = 0.5
    retry_interval: float = 10.0
    cache_size: int = 4
    swagger_ui_url: str = ""
    #: TF Serving, for TF models (empty: TF models are scored in-process from their
    #: SavedModel, which needs the tf extra)
    tfserving_target: str = ""
    tfserving_rest_url: str = ""
    tfserving_transport: str = "grpc"
    tfserving_timeout: float = 1.0
    #: follow models in this MLflow server's registry (``registry`` is the download cache)
    mlflow_tracking_uri: str = ""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "registry", Path(self.registry))
        if not self.model:
            raise ValueError("model name must not be empty")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {self.cache_size}")
        if self.tfserving_transport not in ("grpc", "rest"):
            raise ValueError(
                f"tfserving_transport must be 'grpc' or 'rest', got {self.tfserving_transport!r}"
            )
        if self.tfserving_transport == "rest" and not self.tfserving_rest_url:
            raise ValueError("tfserving_transport 'rest' needs tfserving_rest_url")
        if not self.tfserving_timeout > 0:
            raise ValueError(f"tfserving_timeout must be > 0, got {self.tfserving_timeout}")
        if self.reload_interval < 0 or self.retry_interval < 0:
            raise ValueError("reload_interval and retry_interval must be >= 0")

    def tfserving_config(self) -> Any:
        """The TF Serving client settings (a ``TFServingConfig``), or None when no TF
        Serving address is configured."""
        if not (self.tfserving_target or self.tfserving_rest_url):
            return None
        from models.backends.tfserving import TFServingConfig

        return TFServingConfig(
            target=self.tfserving_target or "localhost:8500",
            rest_url=self.tfserving_rest_url or None,
            transport=self.tfserving_transport,
            timeout=self.tfserving_timeout,
        )

    @property
    def max_content_length(self) -> int:
        """Request-size cap: generous per record (30 floats as JSON are ~700 bytes)."""
        return 64 * 1024 + self.max_batch * 8 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiConfig:
        """Build from ``API_*`` variables (``API_REGISTRY``, ``API_MODEL``, ``API_ALIAS``,
        ``API_MAX_BATCH``, ``API_RELOAD_INTERVAL``, ``API_RETRY_INTERVAL``,
        ``API_CACHE_SIZE``, ``API_SWAGGER_UI_URL``, ``API_TFSERVING_TARGET``,
        ``API_TFSERVING_REST_URL``, ``API_TFSERVING_TRANSPORT``, ``API_TFSERVING_TIMEOUT``);
        ``overrides`` win over the environment."""
        environ = os.environ if environ is None else environ
        casts: dict[str, Callable[[str], Any]] = {
            "registry": Path,
            "model": str,
            "alias": str,
            "max_batch": int,
            "reload_interval": float,
            "retry_interval": float,
            "cache_size": int,
            "swagger_ui_url": str,
            "tfserving_target": str,
            "tfserving_rest_url": str,
            "tfserving_transport": str,
            "tfserving_timeout": float,
            "mlflow_tracking_uri": str,
        }
        values: dict[str, Any] = {}
        for name, cast in casts.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw not in (None, ""):
                try:
                    values[name] = cast(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def coerce(cls, config: ApiConfig | Mapping[str, Any] | None) -> ApiConfig:
        """``None`` -> from the environment; a mapping -> field overrides on the environment."""
        if config is None:
            return cls.from_env()
        if isinstance(config, ApiConfig):
            return config
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown API config keys: {', '.join(unknown)}")
        return cls.from_env(**config)
