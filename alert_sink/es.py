"""Elasticsearch side: index template, bulk indexing with per-item outcomes, ping.

The official client asks for REST API compatibility with its own major version
(``compatible-with=9`` for client 9), which a server of that major accepts as it is. Only
for an older server (``--es-compat-version 8`` for Elasticsearch 8) does
:class:`CompatElasticsearch` send that level instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import elastic_transport
from elasticsearch import ApiError, Elasticsearch

from .config import redact_url
from .errors import ElasticsearchError, ElasticsearchUnavailable
from .storage import SpooledItem

__all__ = ["BulkOutcome", "CompatElasticsearch", "ElasticsearchTarget", "index_template"]

log = logging.getLogger("alert_sink.elasticsearch")

_PLAIN_MIMETYPE = re.compile(r"application/(json|x-ndjson)")
# Statuses worth retrying, for the whole request or one bulk item.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class CompatElasticsearch(Elasticsearch):
    """The official client, pinned to one REST compatibility level on every request
    (only used when a level is asked for: a server one major older than the client)."""

    compat_version = 8

    def perform_request(  # type: ignore[override]
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        headers: Any = None,
        body: Any = None,
        endpoint_id: str | None = None,
        path_parts: Any = None,
    ):
        if headers:
            headers = {
                name: (
                    _PLAIN_MIMETYPE.sub(
                        rf"application/vnd.elasticsearch+\g<1>; compatible-with={self.compat_version}",
                        value,
                    )
                    if name.lower() in ("accept", "content-type")
                    else value
                )
                for name, value in headers.items()
            }
        return super().perform_request(
            method,
            path,
            params=params,
            headers=headers,
            body=body,
            endpoint_id=endpoint_id,
            path_parts=path_parts,
        )


def index_template(index: str) -> dict[str, Any]:
    """The composable index template for the alert index (contract field types)."""
    keyword = {"type": "keyword", "ignore_above": 1024}
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "@timestamp": {"type": "date"},
                    "alert": {
                        "properties": {
                            "id": keyword,
                            "level": keyword,
                            "message": {"type": "text", "fields": {"keyword": keyword}},
                        }
                    },
                    "task": keyword,
                    "txn_id": keyword,
                    "score": {"type": "float"},
                    "threshold": {"type": "float"},
                    "model": {"properties": {"name": keyword, "version": keyword}},
                    "amount": {"type": "float"},
                    "label": {"type": "integer"},
                    "source": keyword,
                },
            },
        },
        "_meta": {"managed_by": "alert_sink"},
    }


@dataclass
class BulkOutcome:
    """Per-item result of one bulk request, keyed by spool sequence number."""

    delivered: list[int] = field(default_factory=list)
    retry: dict[int, str] = field(default_factory=dict)
    dead: dict[int, tuple[int | None, str]] = field(default_factory=dict)


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        caused = error.get("caused_by")
        text = f"{kind}: {reason}"
        if isinstance(caused, dict):
            text += f" (caused by {caused.get('type')}: {caused.get('reason')})"
        return text
    return str(error)


class ElasticsearchTarget:
    """Talks to one Elasticsearch cluster; every library error leaves as ours."""

    def __init__(
        self,
        url: str,
        *,
        index: str,
        username: str | None = None,
        password: str | None = None,
        request_timeout: float = 30.0,
        compat_version: int | None = None,
        client_factory: Callable[..., Elasticsearch] | None = None,
    ) -> None:
        self.url = redact_url(url)  # for logs and /health; the client gets the real one
        self.index = index
        basic_auth = (username, password or "") if username else None
        factory = client_factory
        if factory is None:
            factory = (
                Elasticsearch
                if compat_version is None
                else type(
                    "PinnedElasticsearch",
                    (CompatElasticsearch,),
                    {"compat_version": compat_version},
                )
            )
        # Retries are ours (spool + backoff), so the transport must not retry on its own.
        self.client = factory(
            url,
            basic_auth=basic_auth,
            request_timeout=request_timeout,
            max_retries=0,
            retry_on_timeout=False,
        )

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ApiError as exc:
            status = exc.meta.status
            message = f"{what}: HTTP {status}: {_reason(_error_body(exc.body))}"
            if "media_type_header_exception" in message:
                message += (
                    " (the server does not speak this client's REST API version; for an "
                    "Elasticsearch one major older, set --es-compat-version to its major)"
                )
            if status in RETRYABLE_STATUSES:
                raise ElasticsearchUnavailable(message) from exc
            raise ElasticsearchError(message) from exc
        except elastic_transport.TransportError as exc:
            raise ElasticsearchUnavailable(f"{what}: {exc}") from exc

    def ping(self, timeout: float) -> bool:
        try:
            self._call("ping", lambda: self.client.options(request_timeout=timeout).info())
        except ElasticsearchError:
            return False
        return True

    def server_version(self) -> str:
        info = self._call("info", self.client.info)
        return str(info.get("version", {}).get("number", "unknown"))

    def ensure_index(self) -> None:
        """Install the index template and create the index if it does not exist yet."""
        name = self.index
        self._call(
            "put index template",
            lambda: self.client.indices.put_index_template(name=name, **index_template(name)),
        )
        exists = self._call("index exists", lambda: self.client.indices.exists(index=name))
        if not exists:
            try:
                self._call("create index", lambda: self.client.indices.create(index=name))
            except ElasticsearchError as exc:
                if "resource_already_exists_exception" not in str(exc):
                    raise

    def bulk(self, items: Sequence[SpooledItem]) -> BulkOutcome:
        """Index ``items`` (``index`` op with the derived ``_id``: re-sending overwrites)."""
        operations: list[Any] = []
        for item in items:
            operations.append({"index": {"_index": self.index, "_id": item.doc_id}})
            operations.append(item.doc)  # already JSON text
        response = self._call("bulk", lambda: self.client.bulk(operations=operations))
        results = response.get("items")
        if not isinstance(results, list) or len(results) != len(items):
            raise ElasticsearchUnavailable(
                f"bulk: expected {len(items)} item results, got "
                f"{len(results) if isinstance(results, list) else type(results).__name__}"
            )
        outcome = BulkOutcome()
        for item, result in zip(items, results, strict=True):
            body = next(iter(result.values()), {}) if isinstance(result, dict) else {}
            status = body.get("status") if isinstance(body, dict) else None
            if isinstance(status, int) and 200 <= status < 300:
                outcome.delivered.append(item.seq)
            elif status is None or status in RETRYABLE_STATUSES or status >= 500:
                outcome.retry[item.seq] = f"HTTP {status}: {_reason(body.get('error'))}"
            else:
                outcome.dead[item.seq] = (status, _reason(body.get("error")))
        return outcome


def _error_body(body: Any) -> Any:
    if isinstance(body, dict) and "error" in body:
        return body["error"]
    return body
