"""``python -m api --port N --registry DIR``: serve the API with a threaded WSGI server.

Flags fall back to ``API_*`` environment variables. For production behind compose, use
gunicorn: ``gunicorn "api:create_app()"`` reads the same variables.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from werkzeug.serving import make_server

from .app import create_app
from .config import ENV_PREFIX, ApiConfig

__all__ = ["build_parser", "main"]

log = logging.getLogger("api.server")


def _env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="python -m api",
        description="Serve the registered production model over REST "
        "(flags fall back to API_* environment variables).",
    )
    p.add_argument("--host", default=_env(env, "HOST", "127.0.0.1"), help="bind address (API_HOST)")
    p.add_argument(
        "--port",
        type=int,
        default=_env(env, "PORT", "5000"),
        help="TCP port (API_PORT); 0 = any",
    )
    p.add_argument(
        "--registry",
        default=_env(env, "REGISTRY"),
        help="model registry directory (API_REGISTRY, else MODELS_REGISTRY, else models/registry)",
    )
    p.add_argument(
        "--model", default=_env(env, "MODEL", "creditcard"), help="model name (API_MODEL)"
    )
    p.add_argument(
        "--alias",
        default=_env(env, "ALIAS", "production"),
        help="alias followed for hot reload (API_ALIAS)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=_env(env, "MAX_BATCH", "1000"),
        help="most records per request (API_MAX_BATCH)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=_env(env, "RELOAD_INTERVAL", "0.5"),
        help="seconds between checks of aliases.json (API_RELOAD_INTERVAL)",
    )
    p.add_argument(
        "--cache-size",
        type=int,
        default=_env(env, "CACHE_SIZE", "4"),
        help="model versions kept loaded for ?version= (API_CACHE_SIZE)",
    )
    p.add_argument(
        "--swagger-ui-url",
        default=_env(env, "SWAGGER_UI_URL"),
        help="base URL of Swagger UI's assets for /docs (API_SWAGGER_UI_URL); "
        "default: the copy bundled with the API, which needs no internet",
    )
    p.add_argument(
        "--tfserving-target",
        default=_env(env, "TFSERVING_TARGET"),
        help="TF Serving gRPC address host:port for TF models (API_TFSERVING_TARGET); "
        "default: TF models are scored in-process from their SavedModel",
    )
    p.add_argument(
        "--tfserving-rest-url",
        default=_env(env, "TFSERVING_REST_URL"),
        help="TF Serving REST base URL (API_TFSERVING_REST_URL)",
    )
    p.add_argument(
        "--tfserving-transport",
        choices=["grpc", "rest"],
        default=_env(env, "TFSERVING_TRANSPORT", "grpc"),
        help="API_TFSERVING_TRANSPORT",
    )
    p.add_argument(
        "--tfserving-timeout",
        type=float,
        default=_env(env, "TFSERVING_TIMEOUT", "1.0"),
        help="deadline of one TF Serving call in seconds (API_TFSERVING_TIMEOUT)",
    )
    p.add_argument(
        "--mlflow-tracking-uri",
        default=_env(env, "MLFLOW_TRACKING_URI"),
        help="serve models from this MLflow server's model registry; --registry is then the "
        "download cache (API_MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--log-level", default=_env(env, "LOG_LEVEL", "info"), help="log level (API_LOG_LEVEL)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    # werkzeug sets its own logger to INFO when unset; make it follow --log-level.
    logging.getLogger("werkzeug").setLevel(args.log_level.upper())
    try:
        config = ApiConfig.from_env(
            registry=args.registry,
            model=args.model,
            alias=args.alias,
            max_batch=args.max_batch,
            reload_interval=args.reload_interval,
            cache_size=args.cache_size,
            swagger_ui_url=args.swagger_ui_url,
            tfserving_target=args.tfserving_target,
            tfserving_rest_url=args.tfserving_rest_url,
            tfserving_transport=args.tfserving_transport,
            tfserving_timeout=args.tfserving_timeout,
            mlflow_tracking_uri=args.mlflow_tracking_uri,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(config)
    server = make_server(args.host, args.port, app, threaded=True)
    host, port = server.server_address[:2]
    log.info("event=listening host=%s port=%d url=http://%s:%d/docs", host, port, host, port)

    def _stop(signum: int, _frame: object) -> None:
        log.info("event=shutdown signal=%s", signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return, so it cannot run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.extensions["tick_anomaly_api"].service.close()
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
