"""``python -m udf_agent``: serve the ``score`` socket UDF for Kapacitor."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

# One BLAS/OpenMP thread: micro-batches are small and the machine is shared with
# Kapacitor; extra threads only add contention. Set before numpy is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

log = logging.getLogger("udf_agent")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"UDF_AGENT_{name}", default)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from models.registry import default_registry_root

    p = argparse.ArgumentParser(
        prog="python -m udf_agent",
        description="Kapacitor socket UDF that scores points with registered models.",
    )
    p.add_argument(
        "--socket",
        default=_env("SOCKET"),
        required=_env("SOCKET") is None,
        help="Unix socket path for the stream UDF (env UDF_AGENT_SOCKET)",
    )
    p.add_argument(
        "--batch-socket",
        default=_env("BATCH_SOCKET"),
        help="optional second socket serving the batch->batch UDF (env UDF_AGENT_BATCH_SOCKET)",
    )
    p.add_argument(
        "--drift-socket",
        default=_env("DRIFT_SOCKET"),
        help="optional socket serving the @drift() UDF: population stability of batches "
        "against the model card's training distributions (env UDF_AGENT_DRIFT_SOCKET)",
    )
    p.add_argument(
        "--registry",
        default=_env("REGISTRY", str(default_registry_root())),
        help="model registry directory (env UDF_AGENT_REGISTRY; default models/registry)",
    )
    p.add_argument(
        "--mlflow-tracking-uri",
        default=_env("MLFLOW_TRACKING_URI"),
        help="follow models in this MLflow server's model registry (models:/NAME@ALIAS); "
        "--registry is then the download cache (env UDF_AGENT_MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", "0") or 0),
        help="serve Prometheus metrics on this port (0 = off; env UDF_AGENT_METRICS_PORT)",
    )
    p.add_argument("--metrics-host", default=_env("METRICS_HOST", "0.0.0.0"))
    p.add_argument(
        "--socket-mode",
        default=_env("SOCKET_MODE", "0660"),
        help="permissions of the socket file, octal (default 0660)",
    )
    p.add_argument(
        "--max-frame-bytes",
        type=int,
        default=int(_env("MAX_FRAME_BYTES", str(16 << 20))),
        help="largest accepted message; a larger length prefix closes that connection",
    )
    p.add_argument(
        "--max-backlog-age",
        type=float,
        default=float(_env("MAX_BACKLOG_AGE", "10")),
        help="seconds a point may wait for a slow backend before it is passed on unscored",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=_env("MAX_CONNECTIONS", "64"),
        help="connections served at once; more are refused with an error response "
        "(env UDF_AGENT_MAX_CONNECTIONS, default 64)",
    )
    p.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=_env("MAX_INFLIGHT", "4096"),
        help="most points one connection holds between reading and writing them back; at "
        "the bound the agent stops reading and Kapacitor waits (default 4096)",
    )
    p.add_argument(
        "--max-inflight-total",
        type=_positive_int,
        default=_env("MAX_INFLIGHT_TOTAL", "32768"),
        help="most points held across every connection (default 32768)",
    )
    p.add_argument(
        "--drain-seconds",
        type=_positive_float,
        default=_env("DRAIN_SECONDS", "1"),
        help="a connection holds about this much scoring work at most (default 1 s)",
    )
    p.add_argument(
        "--write-timeout",
        type=_positive_float,
        default=_env("WRITE_TIMEOUT", "30"),
        help="seconds a peer may read nothing before its connection is closed (default 30)",
    )
    p.add_argument(
        "--init-timeout",
        type=_positive_float,
        default=_env("INIT_TIMEOUT", "30"),
        help="seconds a connection may take to complete init before it is closed (default 30)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=_env("SHUTDOWN_TIMEOUT", "4"),
        help="on SIGTERM/SIGINT, seconds to score what is held; later points are written "
        "back unscored (default 4)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=float(_env("RELOAD_INTERVAL", "0.5")),
        help="how often (s) aliases.json is checked for a newly promoted version",
    )
    p.add_argument(
        "--tfserving-target",
        default=_env("TFSERVING_TARGET", "localhost:8500"),
        help="TF Serving gRPC address host:port",
    )
    p.add_argument(
        "--tfserving-rest-url",
        default=_env("TFSERVING_REST_URL"),
        help="TF Serving REST base URL, e.g. http://localhost:8501",
    )
    p.add_argument(
        "--tfserving-transport",
        choices=["grpc", "rest"],
        default=_env("TFSERVING_TRANSPORT", "grpc"),
    )
    p.add_argument(
        "--tfserving-timeout",
        type=float,
        default=float(_env("TFSERVING_TIMEOUT", "1.0")),
        help="deadline of one TF Serving call in seconds",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    from threadpoolctl import threadpool_limits

    from models.backends.tfserving import TFServingConfig
    from models.errors import ModelsError

    from .errors import AgentError
    from .metrics import AgentMetrics
    from .server import AgentConfig, AgentServer

    threadpool_limits(1)
    try:
        mode = int(str(args.socket_mode), 8)
    except ValueError:
        print(
            f"error: --socket-mode {args.socket_mode!r} is not an octal mode like 0660",
            file=sys.stderr,
        )
        return 2
    try:
        config = AgentConfig(
            socket_path=Path(args.socket),
            batch_socket_path=Path(args.batch_socket) if args.batch_socket else None,
            drift_socket_path=Path(args.drift_socket) if args.drift_socket else None,
            mlflow_tracking_uri=args.mlflow_tracking_uri or None,
            registry=Path(args.registry),
            socket_mode=mode,
            max_frame_bytes=args.max_frame_bytes,
            max_backlog_age=args.max_backlog_age,
            reload_interval=args.reload_interval,
            max_connections=args.max_connections,
            max_inflight=args.max_inflight,
            max_inflight_total=args.max_inflight_total,
            drain_seconds=args.drain_seconds,
            write_timeout=args.write_timeout,
            init_timeout=args.init_timeout,
            shutdown_timeout=args.shutdown_timeout,
            tfserving=TFServingConfig(
                target=args.tfserving_target,
                rest_url=args.tfserving_rest_url,
                transport=args.tfserving_transport,
                timeout=args.tfserving_timeout,
            ),
        )
    except (AgentError, ModelsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = AgentMetrics()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s received, flushing and stopping", signal.Signals(signum).name)
        threading.Thread(target=stop.set, name="stop", daemon=True).start()  # see publisher.cli

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = AgentServer(config, metrics=metrics)
    try:
        server.start()
    except AgentError as exc:
        log.error("cannot start: %s", exc)
        server.stop()  # removes a socket already bound (stream) when the batch one failed
        return 1
    models = server.registry.models()
    log.info("agent ready %r models=%s", config, ",".join(models) or "none")
    if not models:
        log.warning(
            "registry %s holds no model yet; init requests will fail until one is registered",
            config.registry,
        )

    # Python runs signal handlers on the main thread only, between bytecodes; an untimed
    # wait never returns to the interpreter when the kernel delivers the signal to one
    # of the connection threads, so wake up regularly.
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
