"""Flask app factory and the runtime object shared by its blueprints."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .config import SinkConfig
from .errors import PayloadError, SpoolError
from .es import ElasticsearchTarget
from .metrics import SinkMetrics
from .payload import LEVELS, NS_MAX, NS_MIN, AlertDocument, parse_alert, parse_rfc3339_ns
from .routing import Router, routes_summary
from .shipper import Shipper
from .storage import AlertStore, Spool

__all__ = ["AlertSink", "build_app"]

log = logging.getLogger("alert_sink.http")

EXTENSION = "alert_sink"


class AlertSink:
    """What one running sink owns: spool or store, shipper, metrics."""

    def __init__(
        self,
        config: SinkConfig,
        *,
        target_factory: Callable[..., ElasticsearchTarget] = ElasticsearchTarget,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.router = Router(config.profiles, default_index=config.es_index)
        self.metrics = SinkMetrics()
        self.spool: Spool | None = None
        self.store: AlertStore | None = None
        self.target: ElasticsearchTarget | None = None
        self.shipper: Shipper | None = None
        self.draining = False
        self._in_flight = 0
        self._in_flight_cond = threading.Condition()
        if config.mode == "store":
            self.store = AlertStore(
                config.store_path,
                synchronous=config.synchronous,
                clock=clock,
                default_index=config.es_index,
            )
            self.metrics.store_size.set_function(self.store.count)
        else:
            self.spool = Spool(config.spool_path, synchronous=config.synchronous, clock=clock)
            self.metrics.bind_spool(
                self.spool.depth, self.spool.oldest_age, self.spool.dead_letter_count
            )
            self.target = target_factory(
                config.es_url,
                index=config.es_index,
                username=config.es_username,
                password=config.es_password,
                request_timeout=config.es_request_timeout,
                compat_version=config.es_compat_version,
                indices=self.router.indices(),
            )
            self.shipper = Shipper(
                spool=self.spool,
                target=self.target,
                metrics=self.metrics,
                batch_size=config.batch_size,
                poll_interval=config.poll_interval,
                backoff_initial=config.backoff_initial,
                backoff_max=config.backoff_max,
            )

    def start(self) -> None:
        if self.shipper is not None:
            depth = self.spool.depth()
            if depth:
                log.info("event=spool_recovered depth=%d", depth)
            self.shipper.start()

    def accept(self, docs: list[AlertDocument]) -> None:
        """Commit ``docs`` durably (one transaction). Raises SpoolError."""
        if self.store is not None:
            self.store.upsert(docs)
        else:
            self.spool.enqueue(docs)
            self.shipper.notify()
        self.metrics.documents_accepted.inc(len(docs))
        for doc in docs:
            self.metrics.documents_by_kind.labels(doc.kind).inc()

    # -- graceful shutdown -------------------------------------------------------------
    def request_started(self) -> None:
        with self._in_flight_cond:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._in_flight_cond:
            self._in_flight -= 1
            self._in_flight_cond.notify_all()

    def close(self, timeout: float = 60.0) -> None:
        """Refuse new alerts, wait for in-flight requests, stop the shipper after its
        current bulk, close the database."""
        self.draining = True
        deadline = time.monotonic() + timeout
        with self._in_flight_cond:
            while self._in_flight > 0 and time.monotonic() < deadline:
                self._in_flight_cond.wait(0.1)
        if self.shipper is not None and not self.shipper.stop(
            max(0.0, deadline - time.monotonic())
        ):
            log.error("event=shipper_stop_timeout")
            return  # leave the DB open for the still-running bulk; the process is exiting
        db = self.store or self.spool
        depth = self.spool.depth() if self.spool is not None else 0
        db.close()
        log.info("event=closed undelivered=%d", depth)


def _sink() -> AlertSink:
    return current_app.extensions[EXTENSION]


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status, **extra}), status


def _supplied_token(header: str) -> bytes | None:
    """The secret of an Authorization header: ``Bearer <token>``, or ``Basic`` with the
    token as the password (any user name). Kapacitor's ``[[httppost]]`` endpoint sends
    basic auth, which its configuration API redacts, unlike headers."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip().encode("utf-8")
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        _, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


def require_token(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        token = _sink().config.token
        if token is not None:
            supplied = _supplied_token(request.headers.get("Authorization", ""))
            ok = supplied is not None and hmac.compare_digest(supplied, token.encode("utf-8"))
            if not ok:
                _sink().metrics.rejected.labels(reason="unauthorized").inc()
                response, status = _error(401, "missing or invalid bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="alert_sink"'
                return response, status
        return view(*args, **kwargs)

    return wrapper


kapacitor_bp = Blueprint("kapacitor", __name__)


@kapacitor_bp.post("/kapacitor")
@require_token
def post_alert():
    sink = _sink()
    if sink.draining:
        return _error(503, "shutting down; retry")
    body = _read_body(sink.config.max_body_bytes)
    task = request.args.get("task")
    try:
        docs = parse_alert(body, task=task, router=sink.router)
    except PayloadError as exc:
        sink.metrics.rejected.labels(reason="invalid").inc()
        log.warning("event=alert_rejected reason=invalid error=%r", str(exc))
        return _error(400, str(exc))
    for doc in docs:
        for warning in doc.warnings:
            # the alert is indexed all the same, without the explanation
            sink.metrics.explanations_invalid.inc()
            log.warning("event=explanation_dropped doc_id=%s reason=%r", doc.doc_id, warning)
    try:
        sink.accept(docs)
    except SpoolError as exc:
        # Not stored, so not acknowledged: Kapacitor sees the failure.
        sink.metrics.rejected.labels(reason="spool_error").inc()
        log.error("event=spool_write_failed error=%r", str(exc))
        return _error(503, "alert could not be stored; retry")
    sink.metrics.alerts_received.inc()
    return jsonify({"accepted": len(docs), "ids": [d.doc_id for d in docs]}), 202


def _read_body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; 413 beyond, also for chunked uploads
    that carry no Content-Length."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    chunks, size = [], 0
    stream = request.stream
    while True:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


alerts_bp = Blueprint("alerts", __name__)


def _int_arg(name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PayloadError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise PayloadError(name, f"must be {bound}, got {value}")
    return value


def _time_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return parse_rfc3339_ns(raw)
    except ValueError:
        pass
    try:
        seconds = float(raw)
        ns = int(seconds * 1_000_000_000)  # ValueError for NaN, OverflowError for infinity
        if not NS_MIN <= ns <= NS_MAX:
            raise OverflowError
    except (ValueError, OverflowError):
        raise PayloadError(
            name, f"must be RFC 3339 or epoch seconds (years 1677-2262), got {raw!r}"
        ) from None
    return ns


@alerts_bp.get("/alerts")
@require_token
def list_alerts():
    sink = _sink()
    if sink.store is None:
        return _error(
            404,
            "GET /alerts needs --store sqlite:PATH; in Elasticsearch mode query the "
            f"{sink.config.es_index!r} index",
        )
    cfg = sink.config
    try:
        limit = _int_arg("limit", cfg.default_page_size, minimum=1, maximum=cfg.max_page_size)
        offset = _int_arg("offset", 0, minimum=0, maximum=NS_MAX)
        cursor = request.args.get("cursor")
        level = request.args.get("level")
        if level is not None:
            level = level.upper()
            if level not in LEVELS:
                raise PayloadError("level", f"must be one of {', '.join(LEVELS)}")
        total, items, next_cursor = sink.store.query(
            level=level,
            txn_id=request.args.get("txn_id", request.args.get("id")),
            model=request.args.get("model"),
            index=request.args.get("index"),
            kind=request.args.get("kind"),
            since_ns=_time_arg("since"),
            until_ns=_time_arg("until"),
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
        if cursor is not None:
            offset = 0  # a cursor replaces the offset: echo the one that was applied
    except PayloadError as exc:
        return _error(400, str(exc))
    except ValueError as exc:  # bad cursor
        return _error(400, f"cursor: {exc}")
    return jsonify(
        {
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_cursor": next_cursor,
            "alerts": items,
        }
    )


health_bp = Blueprint("health", __name__)


@health_bp.get("/health")
def health():
    sink = _sink()
    body: dict[str, Any] = {"mode": sink.config.mode, "accepting": not sink.draining}
    if sink.store is not None:
        body["store"] = {"documents": sink.store.count()}
        body["status"] = "ok"
    else:
        reachable = sink.target.ping(sink.config.health_timeout)
        state = sink.shipper.state
        body["elasticsearch"] = {
            "url": sink.target.url,
            "reachable": reachable,
            "index_ready": state.index_ready,
            "last_error": state.last_error,
            "last_success_age_seconds": (
                None if state.last_success is None else round(time.time() - state.last_success, 3)
            ),
        }
        age = sink.spool.oldest_age()
        body["spool"] = {
            "depth": sink.spool.depth(),
            "oldest_undelivered_age_seconds": None if age is None else round(age, 3),
            "dead_letter": sink.spool.dead_letter_count(),
        }
        # Alerts are still accepted (and spooled) while Elasticsearch is down: degraded, 200.
        body["status"] = "ok" if reachable and state.index_ready else "degraded"
    return jsonify(body)


metrics_bp = Blueprint("metrics", __name__)


@metrics_bp.get("/metrics")
def metrics():
    data = generate_latest(_sink().metrics.registry)
    return Response(
        data,
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


class _InFlight:
    """WSGI middleware counting requests in progress, so shutdown can wait for them."""

    def __init__(self, wsgi_app: Callable, sink: AlertSink) -> None:
        self.wsgi_app = wsgi_app
        self.sink = sink

    def __call__(self, environ: dict, start_response: Callable):
        self.sink.request_started()
        try:
            # Bodies here are small JSON documents; materialize before counting down.
            return list(self.wsgi_app(environ, start_response))
        finally:
            self.sink.request_finished()


def build_app(
    config: SinkConfig,
    *,
    target_factory: Callable[..., ElasticsearchTarget] = ElasticsearchTarget,
) -> Flask:
    """Build the app from ``config`` (``alert_sink.create_app`` also reads it from the
    environment, for gunicorn)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    sink = AlertSink(config, target_factory=target_factory)
    app.extensions[EXTENSION] = sink
    for bp in (kapacitor_bp, alerts_bp, health_bp, metrics_bp):
        app.register_blueprint(bp)

    @app.before_request
    def _mark_start():
        g.endpoint_label = request.url_rule.rule if request.url_rule else "unmatched"

    @app.after_request
    def _count(response: Response) -> Response:
        label = getattr(g, "endpoint_label", "unmatched")
        sink.metrics.requests.labels(endpoint=label, status=str(response.status_code)).inc()
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            sink.metrics.rejected.labels(reason="too_large").inc()
            log.warning("event=alert_rejected reason=too_large limit=%d", config.max_body_bytes)
            return _error(413, f"request body exceeds {config.max_body_bytes} bytes")
        return _error(exc.code or 500, exc.description or exc.name)

    app.wsgi_app = _InFlight(app.wsgi_app, sink)  # type: ignore[method-assign]
    if config.start_shipper:
        sink.start()
    log.info(
        "event=app_created config=%r routes=%s default_index=%s",
        config,
        ",".join(routes_summary(sink.router)) or "none",
        config.es_index,
    )
    return app
