"""Model library figures: data generation and loading, training time per candidate, and
scoring throughput/latency of registered pipelines through ``SklearnBackend`` against the
bare estimator (the backend's overhead).

    .venv/bin/python -m bench.bench_models [--rows N] [--train-rows N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _latency(fn, X: np.ndarray, batch: int, seconds: float = 1.5) -> tuple[float, float, float]:
    """rows/s, p50 ms, p99 ms of ``fn`` on consecutive batches for about ``seconds``."""
    lat = []
    rows = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        b = X[i : i + batch]
        if len(b) < batch:
            i = 0
            continue
        t0 = time.perf_counter()
        fn(b)
        lat.append(time.perf_counter() - t0)
        rows += batch
        i += batch
    total = time.perf_counter() - start
    ms = np.array(lat) * 1e3
    return rows / total, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_models", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows for the data figures")
    p.add_argument("--train-rows", type=int, default=100_000, help="rows for training figures")
    args = p.parse_args(argv)

    from models.backends import load_backend
    from models.contract import FEATURES
    from models.data import X_y, load_creditcard_csv, make_synthetic, split_stratified
    from models.pipelines import fit_estimator, get_candidate
    from models.registry import Registry

    print(f"{'data step':<34} {'rows':>10} {'seconds':>8} {'rows/s':>12}")
    df, s = _timed(make_synthetic, args.rows, seed=0)
    print(f"{'make_synthetic':<34} {args.rows:>10,} {s:>8.2f} {args.rows / s:>12,.0f}")
    _, s = _timed(split_stratified, df, seed=42)
    print(f"{'split_stratified (+txn_id)':<34} {args.rows:>10,} {s:>8.2f} {args.rows / s:>12,.0f}")
    n_csv = min(args.rows, 200_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "creditcard.csv"
        df.iloc[:n_csv].to_csv(path, index=False)
        _, s = _timed(load_creditcard_csv, path)
        print(f"{'load_creditcard_csv (validated)':<34} {n_csv:>10,} {s:>8.2f} {n_csv / s:>12,.0f}")

        splits = split_stratified(make_synthetic(args.train_rows, seed=1), seed=42)
        X_tr, y_tr = X_y(splits.train)
        X_te, _ = X_y(splits.test)
        reg = Registry(Path(tmp) / "registry")
        print(f"\n{'candidate':<12} {'train rows':>10} {'fit s':>7}")
        for name in ("lr_smote", "hgb", "rf_under"):
            est, s = _timed(fit_estimator, get_candidate(name).make({}, seed=0), X_tr, y_tr)
            print(f"{name:<12} {len(X_tr):>10,} {s:>7.2f}")
            reg.register(name, est, features=FEATURES, threshold=0.5)

        print(
            f"\n{'candidate':<12} {'batch':>5} {'backend rows/s':>15} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'bare rows/s':>12} {'ratio':>6}"
        )
        for name in ("lr_smote", "hgb", "rf_under"):
            backend = load_backend(reg, name, "latest")
            est = backend.estimator
            for batch in (1, 64, 512):
                rps, p50, p99 = _latency(backend.score, X_te, batch)
                bare, _, _ = _latency(lambda b, est=est: est.predict_proba(b)[:, 1], X_te, batch)
                print(
                    f"{name:<12} {batch:>5} {rps:>15,.0f} {p50:>8.3f} {p99:>8.3f}"
                    f" {bare:>12,.0f} {rps / bare:>6.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
