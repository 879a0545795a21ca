"""Retrain wall time: `python -m models retrain` with the profile's default search
(lr_smote, hgb, rf_under, voting; 4 trials each, 3-fold CV) on each shipped profile's
seeded synthetic data, twice — the first run (no champion: the first model is promoted)
and a second one on new data (champion and challenger scored, the gate's bootstrap) —
with the time of each phase: reading the data, training, the gate and the report.

Native thread pools (OpenMP, BLAS) are held to ``--threads`` (1): on a shared two-core
machine OpenMP workers spinning against other processes make gradient boosting many times
slower, which would measure the neighbours, not the job.

Printed at the end of ``python -m bench.bench_models`` (``--no-retrain`` skips it); on its
own:

    .venv/bin/python -m bench.retrain_times [--rows N] [--profile NAME ...] [--trials N]
        [--threads N]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

PROFILES = ("creditcard", "machine_failure")


class _Progress(io.TextIOBase):
    """Training's progress lines, indented and timestamped on our stdout."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.buf = ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                print(f"    [{time.perf_counter() - self.started:6.1f}s] {line}", flush=True)
        return len(s)


def _run(profile: str, rows: int, seed: int, root: Path, trials: int) -> dict:
    from models.retrain import RetrainConfig, retrain

    started = time.perf_counter()
    result = retrain(
        RetrainConfig(
            profile=None if profile == "creditcard" else profile,
            synthetic_rows=rows,
            seed=seed,
            trials=trials,
            registry=str(root / "registry"),
            runs_dir=str(root / "runs"),
        ),
        progress=_Progress(started),
    )
    total = time.perf_counter() - started
    report = result.report
    data_s = report["data"]["seconds"]
    train_s = report["training"]["seconds"]
    return {
        "decision": result.decision.event,
        "metric": result.decision.metric,
        "total": total,
        "data": data_s,
        "train": train_s,
        "gate_report": total - data_s - train_s,
        "holdout": report["data"]["holdout_rows"],
        "positives": result.decision.positives,
        "candidate": report["training"]["best_candidate"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.retrain_times", description=__doc__)
    p.add_argument("--rows", type=int, default=30_000, help="synthetic rows per run")
    p.add_argument("--profile", nargs="+", default=list(PROFILES), choices=PROFILES)
    p.add_argument("--trials", type=int, default=4, help="Optuna trials per candidate (default 4)")
    p.add_argument("--threads", type=int, default=1, help="native threads (OpenMP, BLAS)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        out = _bench(args)
    _table(args, out)
    return 0


def _bench(args) -> list:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        for profile in args.profile:
            root = Path(tmp) / profile
            for run, seed in (("first", 1), ("second", 2)):
                print(f"== {profile}: {run} retrain, {args.rows:,} synthetic rows (seed {seed})",
                      flush=True)  # fmt: skip
                r = _run(profile, args.rows, seed, root, args.trials)
                out.append((profile, run, r))
                print(
                    f"   {profile} {run}: {r['decision']} ({r['metric']}, best {r['candidate']}) "
                    f"in {r['total']:.1f} s",
                    flush=True,
                )
    return out


def _table(args, out: list) -> None:
    print(f"\nretrain wall time, default search ({args.trials} trials per candidate), "
          f"{args.rows:,} synthetic rows, holdout 20 %:")  # fmt: skip
    print(f"{'profile':<16} {'run':<7} {'decision':<9} {'metric':<6} {'total s':>8} "
          f"{'data s':>7} {'train s':>8} {'gate+report s':>14} {'holdout':>8} {'pos':>5}")  # fmt: skip
    for profile, run, r in out:
        print(
            f"{profile:<16} {run:<7} {r['decision']:<9} {r['metric']:<6} {r['total']:>8.1f} "
            f"{r['data']:>7.1f} {r['train']:>8.1f} {r['gate_report']:>14.1f} "
            f"{r['holdout']:>8,} {r['positives']:>5}"
        )
    print(f"(native threads: {args.threads}; load average when done: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
