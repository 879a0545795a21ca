"""Command line: ``python -m alert_sink``. Flags fall back to ``ALERT_SINK_*`` variables."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from werkzeug.serving import make_server

from .config import DEFAULT_MAX_BODY_BYTES, SinkConfig
from .errors import AlertSinkError, ConfigError

__all__ = ["build_parser", "config_from_args", "config_from_env", "main"]

log = logging.getLogger("alert_sink.cli")
PREFIX = "ALERT_SINK_"


def _env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(PREFIX + name)
    return value if value not in (None, "") else default


def build_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    e = lambda name, default=None: _env(environ, name, default)  # noqa: E731
    p = argparse.ArgumentParser(
        prog="python -m alert_sink",
        description="Kapacitor alert webhook -> durable spool -> Elasticsearch (or a local store).",
    )
    p.add_argument("--host", default=e("HOST", "127.0.0.1"), help="bind address [ALERT_SINK_HOST]")
    p.add_argument("--port", type=int, default=e("PORT"), help="listen port [ALERT_SINK_PORT]")
    p.add_argument("--es-url", default=e("ES_URL"), help="Elasticsearch URL [ALERT_SINK_ES_URL]")
    p.add_argument(
        "--store",
        default=e("STORE"),
        help="keep alerts locally instead: sqlite:PATH [ALERT_SINK_STORE]",
    )
    p.add_argument(
        "--spool",
        default=e("SPOOL", "alert_sink_spool.db"),
        help="SQLite spool of undelivered alerts (Elasticsearch mode) [ALERT_SINK_SPOOL]",
    )
    p.add_argument("--token-file", default=e("TOKEN_FILE"), help="file holding the bearer token")
    p.add_argument("--es-username", default=e("ES_USERNAME"))
    p.add_argument("--es-password", default=e("ES_PASSWORD"))
    p.add_argument(
        "--es-index",
        default=e("ES_INDEX", "fraud-alerts"),
        help="default index: alerts of a series no --profile routes [ALERT_SINK_ES_INDEX]",
    )
    p.add_argument(
        "--profile",
        action="append",
        dest="profiles",
        metavar="PROFILE",
        help="data-set profile (name in profiles/ or a TOML path), repeatable: alerts of its "
        "scored measurement go to its alert index, with every row field under fields.* "
        "[ALERT_SINK_PROFILES, comma-separated]",
    )
    p.add_argument(
        "--es-compat-version",
        type=int,
        default=e("ES_COMPAT_VERSION") or None,
        help="REST API compatibility level sent to Elasticsearch (default: the client's own "
        "major; 8 for an Elasticsearch 8 server)",
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=e("MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
    )
    p.add_argument("--batch-size", type=int, default=e("BATCH_SIZE", "500"))
    p.add_argument("--backoff-max", type=float, default=e("BACKOFF_MAX", "30"))
    p.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default=e("SYNCHRONOUS", "FULL"),
        help="SQLite synchronous level of the spool/store (see docs/alert_sink.md)",
    )
    p.add_argument("--log-level", default=e("LOG_LEVEL", "info"))
    return p


def _read_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {args.token_file}: {exc}") from exc
        if not token:
            raise ConfigError(f"token file {args.token_file} is empty")
        return token
    return _env(environ, "TOKEN")


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> SinkConfig:
    if bool(args.es_url) == bool(args.store):
        raise ConfigError("give exactly one of --es-url URL or --store sqlite:PATH")
    store_path = None
    if args.store:
        scheme, sep, path = args.store.partition(":")
        if scheme != "sqlite" or not sep or not path:
            raise ConfigError(f"--store must look like sqlite:PATH, got {args.store!r}")
        store_path = Path(path)
    token = _read_token(args, environ)
    if token is None:  # also for gunicorn, which builds its config here
        raise ConfigError("a bearer token is required: --token-file F or ALERT_SINK_TOKEN")
    refs = args.profiles
    if refs is None:
        refs = [r.strip() for r in (_env(environ, "PROFILES") or "").split(",") if r.strip()]
    profiles = []
    if refs:
        from models.profile import ProfileError, load_profile

        for ref in refs:
            try:
                profiles.append(load_profile(ref))
            except ProfileError as exc:
                raise ConfigError(f"--profile {ref}: {exc}") from exc
        from .routing import Router

        Router(profiles, default_index=args.es_index)  # two profiles, one series: refused
    return SinkConfig(
        es_url=args.es_url or None,
        store_path=store_path,
        spool_path=Path(args.spool),
        token=token,
        es_username=args.es_username,
        es_password=args.es_password,
        es_index=args.es_index,
        profiles=tuple(profiles),
        es_compat_version=args.es_compat_version,
        max_body_bytes=args.max_body_bytes,
        batch_size=args.batch_size,
        backoff_initial=min(0.5, args.backoff_max),
        backoff_max=args.backoff_max,
        synchronous=args.synchronous,
    )


def config_from_env(environ: Mapping[str, str] = os.environ) -> SinkConfig:
    """For ``gunicorn "alert_sink:create_app()"``: the same settings, from ALERT_SINK_*."""
    return config_from_args(build_parser(environ).parse_args([]), environ)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.port is None:
        parser.error("--port is required (or ALERT_SINK_PORT)")
    try:
        config = config_from_args(args, environ)
    except ConfigError as exc:
        parser.error(str(exc))

    from .app import build_app

    try:
        app = build_app(config)
    except AlertSinkError as exc:
        log.error("event=startup_failed error=%r", str(exc))
        return 1
    sink = app.extensions["alert_sink"]
    server = make_server(args.host, args.port, app, threaded=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        threading.Thread(target=stop.set, name="stop", daemon=True).start()  # see publisher.cli

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, name="alert-sink-http", daemon=True)
    serving.start()
    log.info("event=listening host=%s port=%d mode=%s", args.host, server.port, config.mode)
    while not stop.wait(1.0):
        if not serving.is_alive():
            log.error("event=http_server_died")
            break
    # Stop accepting connections, then let in-flight requests and the current bulk finish.
    server.shutdown()
    server.server_close()
    sink.close()
    log.info("event=stopped")
    return 0
