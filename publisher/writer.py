"""InfluxDB 1.x HTTP API: ``CREATE DATABASE`` via ``/query`` and batches via ``/write``.

Works with InfluxDB 1.6 through 1.8 (the v1 API). Errors are classified at this edge:
transient ones (connection, timeout, 5xx) raise :class:`InfluxUnavailableError`,
permanent ones (4xx) raise :class:`InfluxRejectedError` naming the problem.
"""

from __future__ import annotations

import logging

import requests

from .errors import InfluxRejectedError, InfluxUnavailableError

__all__ = ["InfluxWriter"]

log = logging.getLogger("publisher.writer")

_HINTS = {
    400: "InfluxDB rejected the points (bad line protocol or a field type conflict)",
    401: "authentication failed: check --username/--password (PUBLISHER_USERNAME/PASSWORD)",
    403: "the user may not write to this database",
    404: "database not found",
    413: "request too large: lower --batch-size",
}


class InfluxWriter:
    """Thin client of the v1 ``/write`` and ``/query`` endpoints."""

    def __init__(
        self,
        *,
        url: str,
        database: str,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        #: None: the database's default retention policy (``autogen`` after CREATE DATABASE)
        self.retention_policy = retention_policy
        self.timeout = timeout
        self.session = session or requests.Session()
        if username is not None:
            self.session.auth = (username, password or "")

    def __repr__(self) -> str:
        return (
            f"InfluxWriter(url={self.url!r}, database={self.database!r}, "
            f"retention_policy={self.retention_policy!r})"
        )

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, what: str, **kw) -> requests.Response:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise InfluxUnavailableError(
                f"{what}: InfluxDB at {self.url} unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        if r.status_code >= 500:
            raise InfluxUnavailableError(
                f"{what}: InfluxDB answered {r.status_code}: {_error_text(r)}", status=r.status_code
            )
        if r.status_code >= 400:
            hint = _HINTS.get(r.status_code, "request refused")
            raise InfluxRejectedError(
                f"{what}: InfluxDB at {self.url} answered {r.status_code} ({hint}): "
                f"{_error_text(r)}",
                status=r.status_code,
            )
        return r

    def ping(self) -> str:
        r = self._request("GET", "/ping", "ping")
        return r.headers.get("X-Influxdb-Version", "unknown")

    def ensure_database(self) -> None:
        """``CREATE DATABASE`` is idempotent in InfluxDB 1.x."""
        r = self._request(
            "POST",
            "/query",
            f"create database {self.database!r}",
            data={"q": f'CREATE DATABASE "{_quote_ident(self.database)}"'},
        )
        for res in r.json().get("results", []):
            if "error" in res:
                raise InfluxRejectedError(
                    f"create database {self.database!r}: {res['error']}", status=r.status_code
                )
        log.info("event=database_ready url=%s database=%s", self.url, self.database)

    def write(self, body: bytes) -> None:
        """Write one batch of line protocol (ns precision)."""
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        self._request(
            "POST",
            "/write",
            "write",
            params=params,
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )


def _quote_ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _error_text(r: requests.Response) -> str:
    try:
        return str(r.json().get("error", r.text)).strip()
    except ValueError:
        return r.text.strip()[:300]
