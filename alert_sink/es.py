"""Elasticsearch side: index template, bulk indexing with per-item outcomes, ping.

The official client asks for REST API compatibility with its own major version
(``compatible-with=9`` for client 9), which a server of that major accepts as it is. Only
for an older server (``--es-compat-version 8`` for Elasticsearch 8) does
:class:`CompatElasticsearch` send that level instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import elastic_transport
from elasticsearch import ApiError, Elasticsearch

from .config import redact_url
from .errors import ElasticsearchError, ElasticsearchUnavailable
from .routing import DRIFT, LEGACY, PIPELINE_FIELDS, Layout
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


_KEYWORD = {"type": "keyword", "ignore_above": 1024}
#: Elasticsearch types of the fixed document keys
_FIXED_MAPPING: dict[str, dict[str, Any]] = {
    "@timestamp": {"type": "date"},
    "alert.id": _KEYWORD,
    "alert.kind": _KEYWORD,
    "alert.level": _KEYWORD,
    "alert.message": {"type": "text", "fields": {"keyword": _KEYWORD}},
    "task": _KEYWORD,
    "txn_id": _KEYWORD,
    "id": _KEYWORD,
    "score": {"type": "float"},
    "threshold": {"type": "float"},
    "model.name": _KEYWORD,
    "model.version": _KEYWORD,
    "amount": {"type": "float"},
    "label": {"type": "integer"},
    "source": _KEYWORD,
    # an anomaly's top features, strongest first; an object array (not nested): a query
    # or a terms aggregation on explanation.feature finds alerts a feature explains
    "explanation": {
        "properties": {
            "feature": _KEYWORD,
            "contribution": {"type": "float"},
        }
    },
    # a drift window (model_drift): the worst feature, its PSI, the scores' PSI, the rows
    "drift.feature": _KEYWORD,
    "drift.psi": {"type": "float"},
    "drift.psi_score": {"type": "float"},
    "drift.level": _KEYWORD,
    "drift.count": {"type": "long"},
    "drift.unscored": {"type": "long"},
}
_FIELD_TYPES = {
    "float": {"type": "double"},
    "int": {"type": "long"},
    "string": _KEYWORD,
    "boolean": {"type": "boolean"},
    "keyword": _KEYWORD,
}
#: fields.* a profile does not name: typed by their first JSON value, numbers as double
#: (a whole float arrives without a fraction, so "long" would truncate later values)
_DYNAMIC_TEMPLATES = [
    {"fields_strings": {"path_match": "fields.*", "match_mapping_type": "string", "mapping": _KEYWORD}},
    {"fields_longs": {"path_match": "fields.*", "match_mapping_type": "long", "mapping": {"type": "double"}}},
    {"fields_doubles": {"path_match": "fields.*", "match_mapping_type": "double", "mapping": {"type": "double"}}},
    {"fields_booleans": {"path_match": "fields.*", "match_mapping_type": "boolean", "mapping": {"type": "boolean"}}},
]  # fmt: skip


def _put(props: dict[str, Any], dotted: str, spec: dict[str, Any]) -> None:
    """Place ``spec`` at a dotted path (Elasticsearch expands dots into objects)."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        props = props.setdefault(part, {"properties": {}})["properties"]
    props[leaf] = spec


def index_template(index: str, layouts: Sequence[Layout] = (LEGACY,)) -> dict[str, Any]:
    """The composable index template for an alert index holding ``layouts``' documents:
    strict fixed keys; with a data-set profile, a dynamic ``fields`` object whose known
    fields are typed from the profile."""
    props: dict[str, Any] = {}
    for key in dict.fromkeys(k for layout in layouts for k in layout.keys):
        _put(props, key, dict(_FIXED_MAPPING[key]))
    mappings: dict[str, Any] = {"dynamic": "strict", "properties": props}
    carried = [layout for layout in layouts if layout.carry_fields]
    if carried:
        known: dict[str, Any] = {}
        for name, kind in PIPELINE_FIELDS.items():
            _put(known, name, dict(_FIELD_TYPES[kind]))
        for layout in carried:
            for name, kind in layout.types.items():
                if name not in layout.consumed:
                    _put(known, name, dict(_FIELD_TYPES[kind]))
        props["fields"] = {"type": "object", "dynamic": True, "properties": known}
        mappings["date_detection"] = False  # "2024-01-02" in a text column stays text
        mappings["dynamic_templates"] = _DYNAMIC_TEMPLATES
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": mappings,
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
        indices: Mapping[str, Sequence[Layout]] | None = None,
    ) -> None:
        self.url = redact_url(url)  # for logs and /health; the client gets the real one
        #: the default index (documents without an index of their own)
        self.index = index
        #: every index written, with the layouts of its documents (its template)
        self.indices: dict[str, list[Layout]] = {
            name: list(layouts) for name, layouts in (indices or {index: [LEGACY, DRIFT]}).items()
        }
        self.indices.setdefault(index, [LEGACY, DRIFT])
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

    def ensure_index(self) -> None:
        """Install the index templates, create the indices that do not exist yet and add
        the template's new fields to those that do (a template only shapes indices created
        after it: an index made by an older sink would refuse, under its strict mapping,
        the keys a newer one writes)."""
        for name, layouts in self.indices.items():
            body = index_template(name, layouts)
            self._call(
                f"put index template {name}",
                lambda n=name, b=body: self.client.indices.put_index_template(name=n, **b),
            )
            exists = self._call(
                f"index exists {name}", lambda n=name: self.client.indices.exists(index=n)
            )
            if exists:
                self._update_mapping(name, body["template"]["mappings"])
            else:
                try:
                    self._call(
                        f"create index {name}", lambda n=name: self.client.indices.create(index=n)
                    )
                except ElasticsearchError as exc:
                    if "resource_already_exists_exception" not in str(exc):
                        raise

    def _update_mapping(self, name: str, mappings: Mapping[str, Any]) -> None:
        """Add the fields an existing index lacks. Elasticsearch accepts new fields and
        refuses a changed type, and refuses the whole request then: the fields are put again
        one top-level key at a time, so one conflict (logged; the documents that need that
        field are refused one by one, into the dead letters) does not keep the others out."""

        def put(properties: Mapping[str, Any]) -> None:
            self._call(
                f"update mapping {name}",
                lambda: self.client.indices.put_mapping(index=name, properties=properties),
            )

        properties = mappings["properties"]
        try:
            put(properties)
            return
        except ElasticsearchUnavailable:
            raise
        except ElasticsearchError:
            pass
        for key, spec in properties.items():
            try:
                put({key: spec})
            except ElasticsearchUnavailable:
                raise
            except ElasticsearchError as exc:
                log.error(
                    "event=mapping_update_failed index=%s field=%s error=%r", name, key, str(exc)
                )

    def bulk(self, items: Sequence[SpooledItem]) -> BulkOutcome:
        """Index ``items`` (``index`` op with the derived ``_id``: re-sending overwrites)."""
        operations: list[Any] = []
        for item in items:
            index = item.index or self.index
            operations.append({"index": {"_index": index, "_id": item.doc_id}})
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
