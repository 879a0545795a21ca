"""``python -m publisher``: command line, environment fallbacks (PUBLISHER_*), signals."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .config import MODES, PublisherConfig, default_source
from .core import Publisher
from .errors import ConfigError, DataError, InfluxWriteError, PublisherError
from .source import load_samples
from .writer import InfluxWriter

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("publisher")

EXIT_OK = 0
EXIT_UNSENT = 1  # points left unsent at shutdown (InfluxDB unreachable too long)
EXIT_USAGE = 2  # bad flags, bad CSV, InfluxDB refused (4xx: auth, bad data)


def _env(environ: Mapping[str, str], name: str, default=None):
    return environ.get(f"PUBLISHER_{name}", default)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="python -m publisher",
        description="Replay a data set's test rows into InfluxDB 1.x as points of its profile's "
        "input measurement (credit-card `transactions` by default), stamped with the current "
        "time. Every flag falls back to PUBLISHER_<FLAG> (e.g. PUBLISHER_INFLUX_URL).",
    )
    p.add_argument(
        "--profile",
        default=_env(env, "PROFILE"),
        help="data-set profile, a name in profiles/ or a path to a TOML file: measurement, "
        "database, retention policy, tags, id and label come from it (default: the "
        "credit-card data set)",
    )
    p.add_argument(
        "--influx-url",
        default=_env(env, "INFLUX_URL", "http://localhost:8086"),
        help="InfluxDB base URL (default %(default)s)",
    )
    p.add_argument(
        "--database",
        default=_env(env, "DATABASE"),
        help="database, created if missing (default: the profile's, fraud for credit cards)",
    )
    p.add_argument(
        "--retention-policy",
        default=_env(env, "RETENTION_POLICY"),
        help="retention policy written to (default: the profile's with --profile, else the "
        "database's default)",
    )
    p.add_argument(
        "--csv",
        type=Path,
        default=Path(_env(env, "CSV", "data/test.csv")),
        help="CSV with the profile's columns; for credit cards the Kaggle schema with txn_id "
        "(default %(default)s; create it with `python -m models split`)",
    )
    # String defaults from the environment go through argparse's `type`, so a bad
    # PUBLISHER_* number is a usage error naming the flag, not a traceback.
    p.add_argument(
        "--rate",
        type=float,
        default=_env(env, "RATE", "100"),
        help="points per second, 0 = as fast as InfluxDB takes them (default %(default)s)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=_env(env, "COUNT") or None,
        help="stop after N points (default: run until SIGTERM/SIGINT)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=_env(env, "MODE", "random"),
        help="random draws samples, sequential walks the file (default %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=_env(env, "BATCH_SIZE", "500"),
        help="points per write request (default %(default)s)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=_env(env, "FLUSH_INTERVAL", "1.0"),
        help="seconds a partial batch may wait before it is written (default %(default)s)",
    )
    p.add_argument(
        "--jitter",
        type=float,
        default=_env(env, "JITTER", "0"),
        help="0..1: random shift of each send time, as a fraction of 1/rate",
    )
    p.add_argument("--username", default=_env(env, "USERNAME"), help="InfluxDB user")
    p.add_argument("--password", default=_env(env, "PASSWORD"), help="InfluxDB password")
    p.add_argument(
        "--source",
        default=_env(env, "SOURCE") or default_source(),
        help="value of the `source` tag (default publisher-<hostname>)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_env(env, "SEED") or None,
        help="random seed for --mode random",
    )
    p.add_argument(
        "--max-pending-batches",
        type=int,
        default=_env(env, "MAX_PENDING_BATCHES", "20"),
        help="batches buffered while InfluxDB is down before the producer waits",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=_env(env, "SHUTDOWN_TIMEOUT", "5"),
        help="seconds to keep retrying unsent points after a stop request (default 5)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=_env(env, "STARTUP_TIMEOUT", "60"),
        help="seconds to wait for InfluxDB to answer at start (default %(default)s)",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=_env(env, "PROGRESS_INTERVAL", "5"),
        help="seconds between progress log lines (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default=_env(env, "LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return p


def config_from_args(args: argparse.Namespace) -> PublisherConfig:
    """The run's configuration; names left out come from the profile (loaded here, so a
    bad profile is a usage error naming it)."""
    database = args.database
    retention_policy = args.retention_policy
    if args.profile or not database:
        from models.profile import ProfileError, load_profile

        try:
            profile = load_profile(args.profile)
        except ProfileError as exc:
            raise ConfigError(f"--profile: {exc}") from exc
        database = database or profile.database
        if args.profile:
            retention_policy = retention_policy or profile.retention_policy
    return PublisherConfig(
        influx_url=args.influx_url,
        database=database,
        retention_policy=retention_policy,
        profile=args.profile or None,
        csv=args.csv,
        rate=args.rate,
        count=args.count,
        mode=args.mode,
        batch_size=args.batch_size,
        flush_interval=args.flush_interval,
        jitter=args.jitter,
        username=args.username,
        password=args.password,
        source=args.source,
        seed=args.seed,
        max_pending_batches=args.max_pending_batches,
        shutdown_timeout=args.shutdown_timeout,
        startup_timeout=args.startup_timeout,
        progress_interval=args.progress_interval,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        samples = load_samples(config.csv, source=config.source, profile=config.profile)
    except (ConfigError, DataError) as exc:
        log.error("event=startup_failed error=%r", str(exc))
        print(f"publisher: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    writer = InfluxWriter(
        url=config.influx_url,
        database=config.database,
        retention_policy=config.retention_policy,
        username=config.username,
        password=config.password,
        timeout=config.timeout,
    )
    publisher = Publisher(config, samples=samples, writer=writer)

    def _on_signal(signum, _frame):
        log.info("event=signal signal=%s action=flush_and_exit", signal.Signals(signum).name)
        # Not publisher.stop() here: Event.set() takes the event's lock, which this (main)
        # thread may hold at this very moment inside Event.wait(), and the handler would
        # then wait for itself forever. A short-lived thread sets it once the handler
        # returns and the main thread lets go of the lock.
        threading.Thread(target=publisher.stop, name="publisher-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        result = publisher.run()
    except InfluxWriteError as exc:  # at start: CREATE DATABASE failed
        print(f"publisher: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PublisherError as exc:
        print(f"publisher: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        writer.close()
    if result.error:
        print(f"publisher: error: {result.error}", file=sys.stderr)
        return EXIT_USAGE
    if result.unsent:
        print(
            f"publisher: error: {result.unsent} point(s) unsent: InfluxDB at {config.influx_url} "
            f"stayed unavailable past the {config.shutdown_timeout:g}s shutdown timeout",
            file=sys.stderr,
        )
        return EXIT_UNSENT
    return EXIT_OK
