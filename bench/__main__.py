"""Run every ``bench/bench_*.py`` module (or the ones named) and print their figures."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("only", nargs="*", help=f"benchmarks to run (default all): {', '.join(names)}")
    args = p.parse_args(argv)
    selected = [
        n for n in names if not args.only or n in args.only or n.removeprefix("bench_") in args.only
    ]
    failed = []
    for name in selected:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            rc = importlib.import_module(f"bench.{name}").main([]) or 0
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
        print(f"=== {name} done in {time.perf_counter() - started:.1f} s (rc={rc}) ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
