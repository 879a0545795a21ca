"""Keyword-only configuration of the alert sink (times in seconds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from models.contract import ALERT_INDEX
from models.profile import Profile

from .errors import ConfigError

__all__ = ["SinkConfig", "redact_url"]

DEFAULT_MAX_BODY_BYTES = 1 << 20


def redact_url(url: str | None) -> str | None:
    """``url`` with the password of any ``user:password@`` part replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """Everything the app factory needs. Exactly one of ``es_url`` / ``store_path`` is set.

    ``token`` is the shared bearer secret (``None`` disables authentication; only tests and
    trusted loopback set-ups should do that — the CLI refuses to start without one).
    """

    es_url: str | None = None
    store_path: Path | None = None
    spool_path: Path = Path("alert_sink_spool.db")
    token: str | None = None
    es_username: str | None = None
    es_password: str | None = None
    #: the default index: alerts of a series no profile routes (credit cards by default)
    es_index: str = ALERT_INDEX
    #: data-set profiles: each routes its scored measurement's alerts to its alert index
    profiles: tuple[Profile, ...] = ()
    es_request_timeout: float = 30.0
    # REST API compatibility level sent in Accept/Content-Type; None: the client's own
    # (its major, what a server of the same major expects). 8 for an Elasticsearch 8 server.
    es_compat_version: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch_size: int = 500
    poll_interval: float = 1.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # "FULL": every acknowledged alert survives power loss, not only a process crash.
    synchronous: str = "FULL"
    health_timeout: float = 1.0
    start_shipper: bool = True
    default_page_size: int = 100
    max_page_size: int = 1000

    def __post_init__(self) -> None:
        if (self.es_url is None) == (self.store_path is None):
            raise ConfigError("exactly one of es_url or store_path must be given")
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ConfigError("need 0 < backoff_initial <= backoff_max")
        if self.synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError("synchronous must be FULL, NORMAL or EXTRA")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty")
        if not self.es_index:
            raise ConfigError("es_index must not be empty")

    @property
    def mode(self) -> str:
        return "elasticsearch" if self.es_url is not None else "store"

    def __repr__(self) -> str:
        # Never print secrets.
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("token", "es_password")
        }
        shown["es_url"] = redact_url(self.es_url)
        shown["profiles"] = [p.name for p in self.profiles]
        shown["token"] = "***" if self.token else None
        shown["es_password"] = "***" if self.es_password else None
        body = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"SinkConfig({body})"
