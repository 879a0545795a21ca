"""Command line of ``python -m demo``; every flag falls back to a ``DEMO_*`` variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .config import SMALL_SYNTHETIC_ROWS, DemoConfig
from .errors import DemoError, DemoInterrupted, StageError

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("demo.cli")

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    def e(name: str, default: str | None = None) -> str | None:
        value = environ.get(f"DEMO_{name}")
        return value if value not in (None, "") else default

    p = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run the main job end to end on this machine: splits, a model, the UDF "
        "agent and the alert sink as real processes, a Kapacitor-style replay of the test "
        "split, Kapacitor alert JSON to the sink, and a report under runs/demo-*. Every "
        "flag falls back to DEMO_<FLAG> (e.g. DEMO_RATE).",
    )
    p.add_argument("--rate", type=float, default=float(e("RATE", "0")),
                   help="points per second sent to the agent (0 = as fast as possible; default %(default)s)")  # fmt: skip
    n = e("N")
    p.add_argument("--n", type=int, default=int(n) if n else None,
                   help="replay only the first N test points (default: the whole test split)")  # fmt: skip
    p.add_argument("--influx", default=e("INFLUX"), metavar="URL",
                   help="go through a real InfluxDB 1.x: publish the test split into database "
                   "fraud, measurement transactions, and replay what is read back")  # fmt: skip
    p.add_argument("--registry", type=Path, default=e("REGISTRY"),
                   help="model registry (default models/registry, or a temp folder with --small)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=e("DATA_DIR"),
                   help="where the split CSVs live (default data, or a temp folder with --small)")  # fmt: skip
    p.add_argument("--csv", type=Path, default=e("CSV"),
                   help="dataset CSV with the Kaggle schema, or the profile's columns (default "
                   "DATA_DIR/creditcard.csv, or DATA_DIR/NAME/NAME.csv, if present, else synthetic)")  # fmt: skip
    rows = e("SYNTHETIC_ROWS")
    p.add_argument("--synthetic-rows", type=int, default=int(rows) if rows else None,
                   help=f"rows of the synthetic dataset (default 100000, {SMALL_SYNTHETIC_ROWS} with "
                   "--small; another profile's: 10000, 5000)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(e("OUT", "runs")),
                   help="run folders go here (default %(default)s)")  # fmt: skip
    p.add_argument("--small", action="store_true", default=_truthy(e("SMALL")),
                   help="reduced mode for CI (also DEMO_SMALL=1): synthetic data, temp registry and data dir")  # fmt: skip
    p.add_argument("--profile", default=e("PROFILE"),
                   help="data-set profile (name in profiles/ or a TOML path): its synthetic "
                   "generator or --csv, its model (named after it), its names end to end "
                   "(default: credit cards)")  # fmt: skip
    p.add_argument("--model", default=e("MODEL", "creditcard"),
                   help="registered model name (with --profile: the profile's name)")  # fmt: skip
    p.add_argument("--version", default=e("VERSION", "production"), help="alias or version")
    threshold = e("THRESHOLD")
    p.add_argument("--threshold", type=float, default=float(threshold) if threshold else None,
                   help="decision threshold (default: the model card's)")  # fmt: skip
    window = e("WINDOW")
    p.add_argument("--window", type=int, default=int(window) if window else None,
                   help="points per task connection (default: all at once; 2 s worth with --rate)")  # fmt: skip
    p.add_argument("--startup-timeout", type=float, default=float(e("STARTUP_TIMEOUT", "60")),
                   help="seconds to wait for the agent and the sink to serve, and for InfluxDB "
                   "(default %(default)s)")  # fmt: skip
    influx_timeout = e("INFLUX_TIMEOUT")
    p.add_argument("--influx-timeout", type=float,
                   default=float(influx_timeout) if influx_timeout else None,
                   help="seconds the publisher waits for InfluxDB (default: --startup-timeout)")  # fmt: skip
    p.add_argument("--seed", type=int, default=int(e("SEED", "42")), help="split/synthetic seed")
    p.add_argument("--log-level", default=e("LOG_LEVEL", "warning"),
                   choices=["debug", "info", "warning", "error"])  # fmt: skip
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        profile=args.profile or None,
        model=args.model,
        version=args.version,
        rate=args.rate,
        n=args.n,
        influx_url=args.influx,
        registry=args.registry,
        data_dir=args.data_dir,
        csv=args.csv,
        synthetic_rows=args.synthetic_rows,
        out=args.out,
        small=args.small,
        seed=args.seed,
        threshold=args.threshold,
        window=args.window,
        startup_timeout=args.startup_timeout,
        influx_timeout=args.influx_timeout,
    )


def _raise_interrupted(signum: int, _frame: object) -> None:
    # KeyboardInterrupt, not an Exception: no "except Exception" on the way (a retry loop
    # waiting for a service to answer) may take a stop for a failure and carry on
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    from .runner import run_demo

    # SIGINT explicitly too: a demo started in the background by a shell without job
    # control inherits SIGINT ignored, and Python then leaves it ignored
    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        run_demo(config)
    except StageError as exc:
        print(f"\n{exc}", file=sys.stderr)
        if exc.__cause__ is not None:
            log.debug("stage failure", exc_info=exc.__cause__)
        return EXIT_FAILED
    except (KeyboardInterrupt, DemoInterrupted) as exc:
        why = str(exc) or "Ctrl-C"
        print(
            f"\ndemo interrupted ({why}); every process it started has been stopped",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
