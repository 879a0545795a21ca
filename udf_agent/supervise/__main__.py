"""``python -m udf_agent.supervise``: keep Kapacitor's scoring tasks running.

Re-enables every task that calls one of the agent's UDFs and is enabled but no longer
executing (its UDF connection died), as soon as the agent's socket answers again, and
backfills the points that arrived meanwhile through the batch UDF.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("udf_agent.supervise")

PREFIX = "UDF_SUPERVISOR_"


def _env(name: str, default: str | None = None, *, agent: bool = False) -> str | None:
    """``UDF_SUPERVISOR_<name>``; for the settings it shares with the agent (socket paths,
    log level) ``UDF_AGENT_<name>`` next, so both can read one environment file."""
    value = os.environ.get(PREFIX + name)
    if value is None and agent:
        value = os.environ.get("UDF_AGENT_" + name)
    return default if value is None else value


def mask_url(url: str) -> str:
    """The URL with a password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m udf_agent.supervise",
        description="Re-enable Kapacitor tasks whose UDF died, and backfill their gap.",
    )
    url = _env("KAPACITOR_URL")
    p.add_argument(
        "--kapacitor-url",
        default=url,
        required=url is None,
        help="Kapacitor's HTTP API, e.g. http://kapacitor:9092 (env UDF_SUPERVISOR_KAPACITOR_URL)",
    )
    p.add_argument(
        "--kapacitor-username",
        default=_env("KAPACITOR_USERNAME"),
        help="user when Kapacitor's auth is on (env UDF_SUPERVISOR_KAPACITOR_USERNAME)",
    )
    p.add_argument(
        "--kapacitor-password",
        default=_env("KAPACITOR_PASSWORD"),
        help="prefer the environment: UDF_SUPERVISOR_KAPACITOR_PASSWORD",
    )
    p.add_argument(
        "--socket",
        default=_env("SOCKET", agent=True),
        help="the agent's stream socket, probed before a re-enable "
        "(env UDF_SUPERVISOR_SOCKET, then UDF_AGENT_SOCKET)",
    )
    p.add_argument(
        "--batch-socket",
        default=_env("BATCH_SOCKET", agent=True),
        help="the agent's batch socket, used by backfills "
        "(env UDF_SUPERVISOR_BATCH_SOCKET, then UDF_AGENT_BATCH_SOCKET)",
    )
    p.add_argument(
        "--drift-socket",
        default=_env("DRIFT_SOCKET", agent=True),
        help="the agent's drift socket: with it, the tasks calling --drift-udf are watched "
        "too and re-enabled once it answers, without a backfill "
        "(env UDF_SUPERVISOR_DRIFT_SOCKET, then UDF_AGENT_DRIFT_SOCKET)",
    )
    p.add_argument(
        "--stream-udf",
        default=_env("STREAM_UDF", "score"),
        help="[udf.functions] name of the stream UDF served on --socket (default score)",
    )
    p.add_argument(
        "--batch-udf",
        default=_env("BATCH_UDF", "score_batch"),
        help="[udf.functions] name of the batch UDF on --batch-socket (default score_batch)",
    )
    p.add_argument(
        "--drift-udf",
        default=_env("DRIFT_UDF", "drift"),
        help="[udf.functions] name of the drift UDF on --drift-socket (default drift)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=_env("POLL_INTERVAL", "1.0"),
        help="seconds between two reads of the task list (default 1)",
    )
    p.add_argument(
        "--backoff-min",
        type=float,
        default=_env("BACKOFF_MIN", "0.2"),
        help="first wait (s) after a refused probe or re-enable; doubles each time (default 0.2)",
    )
    p.add_argument(
        "--backoff-max",
        type=float,
        default=_env("BACKOFF_MAX", "4.0"),
        help="longest wait (s) between probes (default 4: a socket back is seen within 4 s)",
    )
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=_env("PROBE_TIMEOUT", "2.0"),
        help="seconds a socket probe waits for the agent's answer",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=_env("HTTP_TIMEOUT", "5.0"),
        help="timeout (s) of one call to Kapacitor or InfluxDB",
    )
    p.add_argument(
        "--influx-url",
        default=_env("INFLUX_URL"),
        help="InfluxDB, for finding a gap, backfilling it and writing udf_events; without it "
        "tasks are only re-enabled (env UDF_SUPERVISOR_INFLUX_URL)",
    )
    p.add_argument("--influx-username", default=_env("INFLUX_USERNAME"))
    p.add_argument(
        "--influx-password",
        default=_env("INFLUX_PASSWORD"),
        help="prefer the environment: UDF_SUPERVISOR_INFLUX_PASSWORD",
    )
    p.add_argument(
        "--events-database",
        default=_env("EVENTS_DATABASE", "fraud"),
        help="database of the udf_events annotations (default fraud)",
    )
    p.add_argument(
        "--no-backfill",
        action="store_true",
        default=(_env("NO_BACKFILL", "") or "").lower() in ("1", "true", "yes"),
        help="re-enable only; leave gaps unscored",
    )
    p.add_argument(
        "--backfill-chunk",
        type=float,
        default=_env("BACKFILL_CHUNK", "10"),
        help="seconds of data per backfill query, one Kapacitor batch each (default 10)",
    )
    p.add_argument(
        "--backfill-overlap",
        type=float,
        default=_env("BACKFILL_OVERLAP", "1.0"),
        help="the gap is taken to end this long after the re-enable (default 1 s)",
    )
    p.add_argument(
        "--backfill-timeout",
        type=float,
        default=_env("BACKFILL_TIMEOUT", "600"),
        help="longest one backfill replay may run (s)",
    )
    p.add_argument(
        "--max-gap",
        type=float,
        default=_env("MAX_GAP", "86400"),
        help="backfill at most this many seconds before the re-enable (default one day)",
    )
    p.add_argument(
        "--backfill-task",
        metavar="TASK",
        help="run one backfill of TASK over --backfill-from .. --backfill-to and exit "
        "(e.g. after InfluxDB refused Kapacitor's writes for a while)",
    )
    p.add_argument("--backfill-from", metavar="TIME", help="RFC 3339 time or ns since the epoch")
    p.add_argument("--backfill-to", metavar="TIME", help="RFC 3339 time or ns since the epoch")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env("METRICS_PORT", "0"),
        help="serve Prometheus metrics on this port (0 = off; env UDF_SUPERVISOR_METRICS_PORT)",
    )
    p.add_argument("--metrics-host", default=_env("METRICS_HOST", "0.0.0.0"))
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info", agent=True))
    return p


def _check(args: argparse.Namespace) -> str | None:
    positive = ("poll_interval", "backoff_min", "backoff_max", "probe_timeout", "http_timeout")
    for name in positive:
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} must be above 0"
    if args.backoff_max < args.backoff_min:
        return "--backoff-max must not be below --backoff-min"
    if not args.backfill_chunk >= 0.001:
        return "--backfill-chunk must be at least 0.001 s"
    for name in ("backfill_overlap", "backfill_timeout", "max_gap"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must not be negative"
    if not 0 <= args.metrics_port <= 65535:
        return "--metrics-port must be a port number"
    if args.backfill_task:
        if not args.influx_url:
            return "--backfill-task needs --influx-url"
        for flag in ("backfill_from", "backfill_to"):
            if _time(getattr(args, flag)) is None:
                return f"--{flag.replace('_', '-')} must be an RFC 3339 time or ns since the epoch"
        if _time(args.backfill_from) >= _time(args.backfill_to):
            return "--backfill-from must be before --backfill-to"
    return None


def _time(text: str | None) -> int | None:
    from .kapacitor import parse_time

    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        return parse_time(text)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from .influx import InfluxClient
    from .kapacitor import KapacitorClient
    from .metrics import SupervisorMetrics
    from .supervisor import Supervisor, SupervisorConfig

    sockets: dict[str, Path] = {}
    if args.socket:
        sockets[args.stream_udf] = Path(args.socket)
    if args.batch_socket:
        sockets[args.batch_udf] = Path(args.batch_socket)
    udfs = (args.stream_udf, args.batch_udf)
    if args.drift_socket:
        sockets[args.drift_udf] = Path(args.drift_socket)
        udfs += (args.drift_udf,)
    config = SupervisorConfig(
        sockets=sockets,
        udfs=udfs,
        batch_udfs={args.stream_udf: args.batch_udf},
        reenable_only=frozenset({args.drift_udf}) if args.drift_socket else frozenset(),
        poll_interval=args.poll_interval,
        backoff_min=args.backoff_min,
        backoff_max=args.backoff_max,
        probe_timeout=args.probe_timeout,
        events_database=args.events_database,
        backfill=not args.no_backfill and bool(args.influx_url),
        backfill_chunk=args.backfill_chunk,
        backfill_overlap=args.backfill_overlap,
        backfill_timeout=args.backfill_timeout,
        max_gap=args.max_gap,
    )
    kapacitor = KapacitorClient(
        args.kapacitor_url,
        username=args.kapacitor_username,
        password=args.kapacitor_password,
        timeout=args.http_timeout,
    )
    influx = (
        InfluxClient(
            args.influx_url,
            username=args.influx_username,
            password=args.influx_password,
            timeout=args.http_timeout,
        )
        if args.influx_url
        else None
    )
    metrics = SupervisorMetrics()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    if not sockets:
        log.warning("no --socket given: tasks are re-enabled without probing the agent first")
    if influx is None:
        log.warning("no --influx-url: gaps are not backfilled and no udf_events are written")
    supervisor = Supervisor(config, kapacitor, influx=influx, metrics=metrics)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s received, stopping", signal.Signals(signum).name)
        threading.Thread(target=stop.set, name="stop", daemon=True).start()  # see publisher.cli

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.backfill_task:
        return _backfill_once(args, supervisor, stop)
    log.info(
        "supervising kapacitor=%s influx=%s %r",
        mask_url(args.kapacitor_url),
        mask_url(args.influx_url) if args.influx_url else "none",
        config,
    )
    supervisor.start()
    while not stop.wait(0.5):  # a timed wait: a signal is seen within half a second
        pass
    supervisor.stop(timeout=4.0)
    kapacitor.close()
    if influx is not None:
        influx.close()
    return 0


def _backfill_once(args: argparse.Namespace, supervisor, stop: threading.Event) -> int:
    from .supervisor import Gap

    gap = Gap(args.backfill_task, _time(args.backfill_from), _time(args.backfill_to), note="asked")
    result: list[bool] = []
    worker = threading.Thread(
        target=lambda: result.append(supervisor.backfill_once(gap, force=True)),
        name="supervise-backfill",
        daemon=True,
    )
    worker.start()
    while worker.is_alive() and not stop.wait(0.5):
        pass
    if stop.is_set():
        supervisor.stop(timeout=4.0)
    worker.join(4.0)
    supervisor.flush_events()
    return 0 if result and result[0] else 1


if __name__ == "__main__":
    raise SystemExit(main())
