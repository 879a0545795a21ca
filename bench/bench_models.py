"""Model library figures: data generation and loading, training time per candidate,
scoring throughput/latency of registered pipelines through ``SklearnBackend`` against the
bare estimator (the backend's overhead), and model selection: the default training
(``models train``) beside an untuned HistGradientBoosting on the same split, for every
shipped profile; and the wall time of ``models retrain`` with the default search on each
shipped profile (``bench/retrain_times.py``).

    .venv/bin/python -m bench.bench_models [--rows N] [--train-rows N]
        [--selection-only] [--seeds 1,2,3] [--creditcard-rows N] [--machine-rows N]
        [--no-retrain] [--retrain-rows N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class _Set:
    label: str
    profile: str | None
    #: the data set split and trained on
    frame: Any
    #: a larger sample of the same generator (another seed): the same models scored on
    #: thousands of positives instead of the test part's few dozen
    fresh: Any
    #: also train with the former rule (validation selection)
    former: bool = False


def _selection_sets(args) -> list[_Set]:
    from models.data import make_synthetic
    from models.synthetic import make_machine_failure

    small_rate = 492 / 5_400
    return [
        # the size and positive count of the real credit-card subset the default lost on
        _Set(
            "creditcard, 5.4k rows, 492 positives",
            None,
            make_synthetic(5_400, seed=11, fraud_rate=small_rate),
            make_synthetic(60_000, seed=111, fraud_rate=small_rate),
            former=True,
        ),
        _Set(
            f"creditcard, {args.creditcard_rows // 1000}k rows, 0.17 %",
            None,
            make_synthetic(args.creditcard_rows, seed=12),
            make_synthetic(300_000, seed=112),
        ),
        _Set(
            f"machine_failure, {args.machine_rows // 1000}k rows",
            "machine_failure",
            make_machine_failure(args.machine_rows, seed=13),
            make_machine_failure(50_000, seed=113),
        ),
    ]


def _untuned_hgb(X, y, seed: int, categorical: list[str]):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.pipelines import encode_categoricals

    est = HistGradientBoostingClassifier(random_state=seed)
    if categorical:
        est = encode_categoricals(est, categorical)
    return est.fit(X, y)


def selection(args) -> None:
    """Default training vs an untuned HistGradientBoosting on the same split.

    Quality, not speed, is measured here: native thread pools are held to one thread
    (``--threads``), because on a shared two-core machine OpenMP workers spinning against
    other processes made gradient boosting ten times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        _selection(args)


def _selection(args) -> None:
    import io
    import tempfile

    import pandas as pd
    from sklearn.metrics import average_precision_score

    from models.data import X_y, load_split, validate_frame
    from models.profile import load_profile
    from models.train import TrainConfig, train

    seeds = [int(s) for s in args.seeds.split(",")]
    small_seeds = [int(s) for s in args.small_seeds.split(",")]
    print(
        "\nModel selection: AUPRC of the default training (models train: CV selection), of "
        "the former rule (validation selection) and of an untuned "
        "HistGradientBoostingClassifier fitted on the same training part (train + "
        "validation of the same stratified 70/15/15 split); on the test part, and on a fresh "
        "sample of the same generator"
    )
    print(
        f"{'data set':<38} {'seed':>4} {'train+val':>9} {'test pos':>8} "
        f"{'default':>8} {'(model)':<9} {'former':>8} {'(model)':<9} {'hgb':>8} {'Δ test':>8} "
        f"{'fresh pos':>9} {'default':>8} {'hgb':>8} {'Δ fresh':>8} {'train s':>7}"
    )
    for ds in _selection_sets(args):
        if args.sets and args.sets not in ds.label:
            continue
        profile = load_profile(ds.profile) if ds.profile else None
        cats = [f.name for f in profile.categorical] if profile is not None else []
        fresh = ds.fresh if profile is None else validate_frame(ds.fresh, profile=profile)
        Xf, yf = X_y(fresh, profile=profile)
        rows = []
        for seed in small_seeds if ds.former else seeds:
            with tempfile.TemporaryDirectory() as tmp:
                csv_path = f"{tmp}/data.csv"
                ds.frame.to_csv(csv_path, index=False)
                out = {}
                for selection in ("cv", "validation") if ds.former else ("cv",):
                    t0 = time.perf_counter()
                    config = TrainConfig(
                        profile=ds.profile,
                        csv=csv_path,
                        seed=seed,
                        selection=selection,
                        register=False,
                        data_dir=f"{tmp}/data-{selection}",
                        runs_dir=f"{tmp}/runs",
                    )
                    out[selection] = (
                        train(config, progress=io.StringIO()).best,
                        time.perf_counter() - t0,
                    )
                parts = [
                    load_split(f"{tmp}/data-cv/{p}.csv", profile=profile)
                    for p in ("train", "validation", "test")
                ]
            fit = pd.concat(parts[:2], ignore_index=True)
            X, y = X_y(fit, profile=profile)
            Xt, yt = X_y(parts[2], profile=profile)
            hgb = _untuned_hgb(X, y, seed, cats)
            best, train_s = out["cv"]
            r = {
                "default": best.test["auprc"],
                "hgb": float(average_precision_score(yt, hgb.predict_proba(Xt)[:, 1])),
                "default_fresh": float(
                    average_precision_score(yf, best.estimator.predict_proba(Xf)[:, 1])
                ),
                "hgb_fresh": float(average_precision_score(yf, hgb.predict_proba(Xf)[:, 1])),
                "former": out["validation"][0].test["auprc"] if ds.former else np.nan,
            }
            rows.append(r)
            former_name = out["validation"][0].name if ds.former else "-"
            print(
                f"{ds.label:<38} {seed:>4} {len(fit):>9,} {int(yt.sum()):>8} "
                f"{r['default']:>8.4f} {best.name:<9} {r['former']:>8.4f} {former_name:<9} "
                f"{r['hgb']:>8.4f} {r['default'] - r['hgb']:>+8.4f} {int(yf.sum()):>9,} "
                f"{r['default_fresh']:>8.4f} {r['hgb_fresh']:>8.4f} "
                f"{r['default_fresh'] - r['hgb_fresh']:>+8.4f} {train_s:>7.0f}",
                flush=True,
            )
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

        def se(a: str, b: str, rows=rows) -> str:
            d = [r[a] - r[b] for r in rows]
            return f"±{np.std(d, ddof=1) / np.sqrt(len(d)):.4f}" if len(d) > 1 else ""

        print(
            f"{ds.label + ' (mean)':<38} {'':>4} {'':>9} {'':>8} {mean['default']:>8.4f} "
            f"{'':<9} {mean['former']:>8.4f} {'':<9} {mean['hgb']:>8.4f} "
            f"{mean['default'] - mean['hgb']:>+8.4f} {'':>9} {mean['default_fresh']:>8.4f} "
            f"{mean['hgb_fresh']:>8.4f} {mean['default_fresh'] - mean['hgb_fresh']:>+8.4f}  "
            f"(standard errors of the mean Δ: test {se('default', 'hgb')}, fresh "
            f"{se('default_fresh', 'hgb_fresh')})",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_models", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows for the data figures")
    p.add_argument("--train-rows", type=int, default=100_000, help="rows for training figures")
    p.add_argument("--selection-only", action="store_true", help="only the selection figures")
    p.add_argument("--seeds", default="1,2,3", help="split seeds of the selection figures")
    p.add_argument("--small-seeds", default="1,2,3,4,5",
                   help="split seeds for the 5.4k-row credit-card set")  # fmt: skip
    p.add_argument("--creditcard-rows", type=int, default=50_000,
                   help="rows of the larger credit-card set (selection figures)")  # fmt: skip
    p.add_argument("--machine-rows", type=int, default=10_000,
                   help="rows of the machine_failure set (the AI4I data set's size)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1,
                   help="native threads (OpenMP, BLAS) of the selection figures")  # fmt: skip
    p.add_argument("--sets", default=None,
                   help="only the selection data sets whose label holds this text")  # fmt: skip
    p.add_argument("--no-retrain", action="store_true", help="skip the retrain wall times")
    p.add_argument("--retrain-rows", type=int, default=30_000,
                   help="synthetic rows per retrain run")  # fmt: skip
    args = p.parse_args(argv)
    if args.selection_only:
        selection(args)
        return 0

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
    selection(args)
    if not args.no_retrain:
        from bench import retrain_times

        print(flush=True)
        retrain_times.main(["--rows", str(args.retrain_rows), "--threads", str(args.threads)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
