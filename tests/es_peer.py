"""An in-process Elasticsearch peer for tests: the REST endpoints the alert sink uses,
as documented, with the headers the official client checks, and switchable failures.

Implemented: ``GET|HEAD /`` (info), ``PUT|GET /_index_template/{name}``,
``HEAD|PUT /{index}``, ``PUT|GET /{index}/_mapping``, ``POST /_bulk`` and
``POST /{index}/_bulk`` (NDJSON, per-item results), ``GET|POST /{index}/_count``,
``GET|POST /{index}/_search`` (match_all or one ``term``), ``POST /{index}/_refresh``.

As in Elasticsearch, an index takes the mappings of the template matching its name when it
is created (explicitly or by a bulk write) and keeps them: a template put later shapes only
indices created later; ``PUT /{index}/_mapping`` adds fields (a changed type is refused).
Arrays and objects in documents are checked field by field against the mapping.

Like a real server it enforces REST API compatibility headers: a request that asks for
``compatible-with=N`` must ask for a version the server speaks (its major or the one
before) on both Accept and Content-Type, else 400 ``media_type_header_exception``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fnmatch
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from http_serving import serve_in_thread

__all__ = ["ElasticsearchPeer"]

_COMPAT = re.compile(r"compatible-with=(\d+)")
_TYPES = {
    "float": (int, float),
    "double": (int, float),
    "integer": (int,),
    "long": (int, float),  # Elasticsearch coerces a fraction into a long by default
    "keyword": (str,),
    "text": (str,),
}
_NUMERIC = {"float", "double", "integer", "long"}


def _json_kind(value: Any) -> str:
    """Elasticsearch's ``match_mapping_type`` of a JSON value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "object"
    return "string"


def _dynamic_type(mapping: dict, path: str, value: Any) -> str:
    kind = _json_kind(value)
    looks_like_date = re.match(r"^\d{4}[-/]\d{2}[-/]\d{2}", str(value))
    if kind == "string" and mapping.get("date_detection", True) and looks_like_date:
        kind = "date"
    for entry in mapping.get("dynamic_templates", []):
        ((_, rule),) = entry.items()
        if "path_match" in rule and not fnmatch.fnmatchcase(path, rule["path_match"]):
            continue
        if rule.get("match_mapping_type", "*") not in ("*", kind):
            continue
        return rule["mapping"].get("type", "object")
    return {"boolean": "boolean", "long": "long", "double": "float", "date": "date"}.get(
        kind, "text"
    )


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()

    def get_request(self):
        conn, addr = super().get_request()
        self.connections.add(conn)
        return conn, addr

    def drop_connections(self) -> None:
        """A stopped server also ends its keep-alive connections."""
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.connections.clear()


class ElasticsearchPeer:
    """Start with :meth:`start`; :meth:`stop` closes the port (connection refused);
    :meth:`start` again reopens the same port with the same data (a restarted cluster)."""

    def __init__(
        self,
        *,
        version: str = "9.5.2",
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.version = version
        self.port = port
        self.username = username
        self.password = password
        self.lock = threading.Lock()
        self.templates: dict[str, dict] = {}
        self.indices: dict[str, dict[str, dict]] = {}
        #: index -> its mappings (from its template at creation, then PUT _mapping)
        self.mappings: dict[str, dict] = {}
        #: index -> {dotted field: type} mapped dynamically by the documents it took
        self.dynamic_fields: dict[str, dict[str, str]] = {}
        self.index_ops: Counter[str] = Counter()  # successful index ops per _id
        self.requests: list[Recorded] = []
        # failure switches
        self.unavailable_status: int | None = None  # whole-request status, e.g. 503
        self.item_fault: Callable[[str, dict], int | None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ElasticsearchPeer:
        handler = type("Handler", (_Handler,), {"peer": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = serve_in_thread(self._server)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._thread.join(5)
            self._server = None

    # -- assertions --------------------------------------------------------------------
    def docs(self, index: str = "fraud-alerts") -> dict[str, dict]:
        with self.lock:
            return dict(self.indices.get(index, {}))

    def major(self) -> int:
        return int(self.version.split(".")[0])

    # -- request handling --------------------------------------------------------------
    def compat_error(self, headers: dict[str, str]) -> str | None:
        asked = {}
        for name in ("accept", "content-type"):
            m = _COMPAT.search(headers.get(name, ""))
            if m:
                asked[name] = int(m.group(1))
        if not asked:
            return None
        allowed = {self.major(), self.major() - 1}
        for name, v in asked.items():
            if v not in allowed:
                return (
                    f"{name.title()} version must be either version {self.major()} or "
                    f"{self.major() - 1}, but found {v}. {name.title()}={headers.get(name)}"
                )
        if len(set(asked.values())) > 1:
            return "Content-Type and Accept version requests have to match."
        return None

    def check_field(
        self, mapping: dict, key: str, value: Any, index: str | None = None
    ) -> str | None:
        """Map one (dotted) key of a document as Elasticsearch would: declared fields are
        type-checked; an undeclared one is refused under ``dynamic: strict`` (the nearest
        object's setting wins over the root's), else mapped by the first matching
        ``dynamic_templates`` entry (or Elasticsearch's default) from its JSON type, and
        that mapping then holds for every later document of the index."""
        props = mapping.get("properties", {})
        dynamic = mapping.get("dynamic", True)
        spec: dict | None = None
        for part in key.split("."):
            spec = props.get(part)
            if spec is None:
                break
            dynamic = spec.get("dynamic", dynamic)
            props = spec.get("properties", {})
        if spec is None:
            learned = self.dynamic_fields.setdefault(index or "", {})
            if key in learned:
                spec = {"type": learned[key]}
            else:
                if dynamic == "strict" or dynamic == "strict_allow_templates":
                    return f"strict_dynamic_mapping_exception: mapping set to strict, dynamic introduction of [{key}] is not allowed"
                if value is None or dynamic is False or dynamic == "false":
                    return None
                learned[key] = _dynamic_type(mapping, key, value)
                return None
        if value is None:
            return None
        kind = spec.get("type")
        if isinstance(value, list):  # every element is checked as the field's value
            for item in value:
                problem = self.check_field(mapping, key, item, index)
                if problem:
                    return problem
            return None
        if isinstance(value, dict):
            if kind not in (None, "object", "nested", "flattened"):
                return (
                    f"document_parsing_exception: failed to parse field [{key}] of type "
                    f"[{kind}]: an object"
                )
            if kind == "flattened":
                return None
            for sub, item in value.items():
                problem = self.check_field(mapping, f"{key}.{sub}", item, index)
                if problem:
                    return problem
            return None
        if kind in (None, "object", "nested") and "properties" in spec:
            return f"document_parsing_exception: object mapping for [{key}] got a value"
        if kind == "date":
            ok = isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value)
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind in _TYPES:
            ok = isinstance(value, _TYPES[kind]) and not isinstance(value, bool)
            if not ok and kind in _NUMERIC and isinstance(value, str):
                try:
                    float(value)
                    ok = True
                except ValueError:
                    ok = False
        else:
            ok = True
        if not ok:
            return f"document_parsing_exception: failed to parse field [{key}] of type [{kind}]"
        return None

    def mapping_for(self, index: str) -> dict:
        """The index's own mappings once it exists, else its template's."""
        if index in self.mappings:
            return self.mappings[index]
        return self.template_mapping(index)

    def create_index(self, index: str) -> None:
        """Called with the lock held: the index takes its template's mappings now."""
        self.indices.setdefault(index, {})
        self.mappings.setdefault(index, copy.deepcopy(self.template_mapping(index)))

    def template_mapping(self, index: str) -> dict:
        for tpl in self.templates.values():
            patterns = tpl.get("index_patterns", [])
            for p in patterns:
                if re.fullmatch(re.escape(p).replace(r"\*", ".*"), index):
                    return tpl.get("template", {}).get("mappings", {})
        return {}


def _merge_properties(into: dict, new: dict, path: str) -> str | None:
    """PUT _mapping: add the new fields; a field whose type changes is refused."""
    for name, spec in new.items():
        here = f"{path}{name}"
        old = into.get(name)
        if old is None:
            into[name] = copy.deepcopy(spec)
            continue
        old_type = old.get("type", "object")
        new_type = spec.get("type", "object")
        if old_type != new_type:
            return f"mapper [{here}] cannot be changed from type [{old_type}] to [{new_type}]"
        if "properties" in spec:
            problem = _merge_properties(
                old.setdefault("properties", {}), spec["properties"], f"{here}."
            )
            if problem:
                return problem
    return None


def _error(kind: str, reason: str, status: int) -> tuple[int, dict]:
    return status, {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    peer: ElasticsearchPeer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: Any, *, head: bool = False) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        accept = self.headers.get("Accept", "")
        ctype = "application/json"
        m = _COMPAT.search(accept)
        if m:
            ctype = f"application/vnd.elasticsearch+json;compatible-with={m.group(1)}"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        peer = self.peer
        raw = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        path, _, query = self.path.partition("?")
        with peer.lock:
            peer.requests.append(Recorded(method, self.path, headers))
        if peer.unavailable_status is not None:
            status, body = _error(
                "unavailable_shards_exception", "peer switched off", peer.unavailable_status
            )
            return self._send(status, body, head=method == "HEAD")
        if peer.username is not None:
            expected = base64.b64encode(f"{peer.username}:{peer.password}".encode()).decode()
            if headers.get("authorization") != f"Basic {expected}":
                status, body = _error("security_exception", "unable to authenticate user", 401)
                return self._send(status, body, head=method == "HEAD")
        problem = peer.compat_error(headers)
        if problem:
            status, body = _error(
                "media_type_header_exception",
                "Invalid media-type value on headers [Accept, Content-Type]",
                400,
            )
            body["error"]["caused_by"] = {"type": "status_exception", "reason": problem}
            return self._send(status, body, head=method == "HEAD")
        try:
            status, body = self._route(
                method, path.strip("/").split("/") if path != "/" else [], raw, query
            )
        except ValueError as exc:
            status, body = _error("parse_exception", str(exc), 400)
        self._send(status, body, head=method == "HEAD")

    def _route(self, method: str, parts: list[str], raw: bytes, query: str) -> tuple[int, Any]:
        peer = self.peer
        if not parts:
            return 200, {
                "name": "peer",
                "cluster_name": "test",
                "cluster_uuid": "peer-uuid",
                "version": {
                    "number": peer.version,
                    "build_flavor": "default",
                    "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }
        if parts[0] == "_index_template" and len(parts) == 2:
            if method == "PUT":
                with peer.lock:
                    peer.templates[parts[1]] = json.loads(raw)
                return 200, {"acknowledged": True}
            with peer.lock:
                tpl = peer.templates.get(parts[1])
            if tpl is None:
                return _error("resource_not_found_exception", "index template missing", 404)
            return 200, {"index_templates": [{"name": parts[1], "index_template": tpl}]}
        if parts[-1] == "_bulk" and method in ("POST", "PUT"):
            return self._bulk(parts[0] if len(parts) == 2 else None, raw)
        index = parts[0]
        if len(parts) == 1:
            with peer.lock:
                exists = index in peer.indices
                if method == "HEAD":
                    return (200 if exists else 404), None
                if method == "PUT":
                    if exists:
                        return _error(
                            "resource_already_exists_exception",
                            f"index [{index}] already exists",
                            400,
                        )
                    peer.create_index(index)
                    return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
        with peer.lock:
            docs = dict(peer.indices.get(index, {}))
        if index not in peer.indices:
            return _error("index_not_found_exception", f"no such index [{index}]", 404)
        if parts[1] == "_mapping":
            with peer.lock:
                if method == "GET":
                    return 200, {index: {"mappings": copy.deepcopy(peer.mappings.get(index, {}))}}
                if method != "PUT":
                    return _error("illegal_argument_exception", f"{method} _mapping", 405)
                body = json.loads(raw)
                # all or nothing, as Elasticsearch applies a mapping update
                merged = copy.deepcopy(peer.mappings.get(index, {}))
                problem = _merge_properties(
                    merged.setdefault("properties", {}), body.get("properties", {}), ""
                )
                if problem:
                    return _error("illegal_argument_exception", problem, 400)
                peer.mappings[index] = merged
                return 200, {"acknowledged": True}
        if parts[1] == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if parts[1] in ("_count", "_search"):
            query_body = json.loads(raw) if raw else {}
            hits = list(docs.items())
            term = (query_body.get("query") or {}).get("term")
            if term:
                ((field, value),) = term.items()
                value = value.get("value") if isinstance(value, dict) else value
                hits = [(i, d) for i, d in hits if d.get(field) == value]
            if parts[1] == "_count":
                return 200, {"count": len(hits), "_shards": {"total": 1, "successful": 1}}
            size = int(query_body.get("size", 10))
            return 200, {
                "took": 1,
                "timed_out": False,
                "hits": {
                    "total": {"value": len(hits), "relation": "eq"},
                    "hits": [{"_index": index, "_id": i, "_source": d} for i, d in hits[:size]],
                },
            }
        return _error("illegal_argument_exception", f"unsupported path {parts}", 400)

    def _bulk(self, default_index: str | None, raw: bytes) -> tuple[int, Any]:
        peer = self.peer
        ctype = self.headers.get("Content-Type", "")
        if "x-ndjson" not in ctype:
            return _error(
                "illegal_argument_exception", f"bulk needs application/x-ndjson, got {ctype!r}", 400
            )
        if raw and not raw.endswith(b"\n"):
            return _error(
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
                400,
            )
        lines = [ln for ln in raw.split(b"\n") if ln.strip()]
        items, errors, i = [], False, 0
        while i < len(lines):
            action = json.loads(lines[i])
            ((op, meta),) = action.items()
            if op not in ("index", "create"):
                raise ValueError(f"unsupported bulk op {op}")
            source = json.loads(lines[i + 1])
            i += 2
            index = meta.get("_index", default_index)
            doc_id = meta["_id"]
            fault = peer.item_fault(doc_id, source) if peer.item_fault else None
            if fault is not None:
                errors = True
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": doc_id,
                            "status": fault,
                            "error": {
                                "type": "injected_fault"
                                if fault >= 429
                                else "document_parsing_exception",
                                "reason": f"injected {fault}",
                            },
                        }
                    }
                )
                continue
            with peer.lock:
                mapping = peer.mapping_for(index)
                problem = None
                for key, value in source.items():
                    problem = peer.check_field(mapping, key, value, index)
                    if problem:
                        break
                if problem:
                    errors = True
                    kind, _, reason = problem.partition(": ")
                    items.append(
                        {
                            op: {
                                "_index": index,
                                "_id": doc_id,
                                "status": 400,
                                "error": {"type": kind, "reason": reason},
                            }
                        }
                    )
                    continue
                if index not in peer.indices:
                    peer.create_index(index)  # auto-created, with its template's mappings
                docs = peer.indices[index]
                existed = doc_id in docs
                docs[doc_id] = source
                peer.index_ops[doc_id] += 1
            items.append(
                {
                    op: {
                        "_index": index,
                        "_id": doc_id,
                        "_version": 1,
                        "result": "updated" if existed else "created",
                        "status": 200 if existed else 201,
                    }
                }
            )
        return 200, {"took": 1, "errors": errors, "items": items}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")


# -- helpers shared by the alert sink tests ------------------------------------------------

SHARED_ALERTS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "kapacitor-alert-post"
LOCAL_ALERTS = Path(__file__).resolve().parent / "fixtures" / "alerts"


def alert_bodies() -> dict[str, bytes]:
    """Real Kapacitor alert bodies by file name: from shared/ when present, else the copies."""
    folder = SHARED_ALERTS if SHARED_ALERTS.is_dir() else LOCAL_ALERTS
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def synthetic_alert(
    n: int,
    *,
    level: str = "CRITICAL",
    source: str = "replay-1",
    label: int = 1,
    model: str = "creditcard",
) -> bytes:
    """An alert shaped exactly like the recorded ones (same keys and column order)."""
    ts = f"2026-11-22T20:{(n // 60) % 60:02d}:{n % 60:02d}.{n % 1_000_000_000:09d}Z"
    score = round(0.5 + (n % 50) / 100, 2)
    amount = 100 + n % 7 if n % 2 else 100.5 + n % 7
    return json.dumps(
        {
            "id": f"fraud:{source}",
            "message": f"txn s{n} scored {score}",
            "details": f"amount {amount}",
            "time": ts,
            "duration": 0,
            "level": level,
            "data": {
                "series": [
                    {
                        "name": "transactions_scored",
                        "tags": {"model": model, "model_version": "3", "source": source},
                        "columns": [
                            "time",
                            "Amount",
                            "is_anomaly",
                            "label",
                            "score",
                            "threshold",
                            "txn_id",
                        ],
                        "values": [[ts, amount, True, label, score, 0.5, f"s{n}"]],
                    }
                ]
            },
            "previousLevel": "CRITICAL",
            "recoverable": True,
        },
        separators=(",", ":"),
    ).encode()
