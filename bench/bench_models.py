"""Model library figures: data generation and loading, training time per candidate,
scoring throughput/latency of registered pipelines through ``SklearnBackend`` against the
bare estimator (the backend's overhead), and model selection: the default training
(``models train``) beside an untuned HistGradientBoosting on the same split, for every
shipped profile.

    .venv/bin/python -m bench.bench_models [--rows N] [--train-rows N]
        [--selection-only] [--seeds 1,2,3] [--creditcard-rows N] [--machine-rows N]
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


def _selection_sets(args) -> list[tuple[str, str | None, object]]:
    """(label, profile name or None, frame) of each data set the selection is measured on."""
    from models.data import make_synthetic
    from models.synthetic import make_machine_failure

    return [
        # the size and positive count of the real credit-card subset the default lost on
        (
            "creditcard, 5.4k rows, 492 positives",
            None,
            make_synthetic(5_400, seed=11, fraud_rate=492 / 5_400),
        ),
        (
            f"creditcard, {args.creditcard_rows // 1000}k rows, 0.17 %",
            None,
            make_synthetic(args.creditcard_rows, seed=12),
        ),
        (
            f"machine_failure, {args.machine_rows // 1000}k rows",
            "machine_failure",
            make_machine_failure(args.machine_rows, seed=13),
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

    from sklearn.metrics import average_precision_score

    from models.data import X_y, load_split
    from models.profile import load_profile
    from models.train import TrainConfig, train

    seeds = [int(s) for s in args.seeds.split(",")]
    small_seeds = [int(s) for s in args.small_seeds.split(",")]
    print(
        "\nModel selection: test AUPRC of the default training (models train: CV selection) "
        "and of the former rule (validation selection), beside an untuned "
        "HistGradientBoostingClassifier fitted on the same training part (train + validation); "
        "all on the same stratified 70/15/15 split"
    )
    head = (
        f"{'data set':<38} {'seed':>4} {'train+val':>9} {'test pos':>8} "
        f"{'default':>8} {'(model)':<9} {'former':>8} {'(model)':<9} {'hgb':>8} {'Δ default':>9}"
        f" {'train s':>7}"
    )
    print(head)
    for label, profile_name, frame in _selection_sets(args):
        if args.sets and args.sets not in label:
            continue
        profile = load_profile(profile_name) if profile_name else None
        cats = [f.name for f in profile.categorical] if profile is not None else []
        deltas, defaults, hgbs, formers = [], [], [], []
        for seed in small_seeds if label.startswith("creditcard, 5.4k") else seeds:
            with tempfile.TemporaryDirectory() as tmp:
                csv_path = f"{tmp}/data.csv"
                frame.to_csv(csv_path, index=False)
                out = {}
                t0 = time.perf_counter()
                for selection in ("cv", "validation"):
                    config = TrainConfig(
                        profile=profile_name,
                        csv=csv_path,
                        seed=seed,
                        selection=selection,
                        register=False,
                        data_dir=f"{tmp}/data-{selection}",
                        runs_dir=f"{tmp}/runs",
                    )
                    out[selection] = train(config, progress=io.StringIO()).best
                    if selection == "cv":
                        train_s = time.perf_counter() - t0
                parts = [
                    load_split(f"{tmp}/data-cv/{p}.csv", profile=profile)
                    for p in ("train", "validation", "test")
                ]
                import pandas as pd

                fit = pd.concat(parts[:2], ignore_index=True)
                X, y = X_y(fit, profile=profile)
                Xt, yt = X_y(parts[2], profile=profile)
                hgb = _untuned_hgb(X, y, seed, cats)
                hgb_ap = float(average_precision_score(yt, hgb.predict_proba(Xt)[:, 1]))
            d, f = out["cv"], out["validation"]
            delta = d.test["auprc"] - hgb_ap
            deltas.append(delta)
            defaults.append(d.test["auprc"])
            formers.append(f.test["auprc"])
            hgbs.append(hgb_ap)
            print(
                f"{label:<38} {seed:>4} {len(fit):>9,} {int(yt.sum()):>8} "
                f"{d.test['auprc']:>8.4f} {d.name:<9} {f.test['auprc']:>8.4f} {f.name:<9} "
                f"{hgb_ap:>8.4f} {delta:>+9.4f} {train_s:>7.0f}",
                flush=True,
            )
        spread = np.std(deltas, ddof=1) / np.sqrt(len(deltas)) if len(deltas) > 1 else np.nan
        print(
            f"{label + ' (mean)':<38} {'':>4} {'':>9} {'':>8} {np.mean(defaults):>8.4f} "
            f"{'':<9} {np.mean(formers):>8.4f} {'':<9} {np.mean(hgbs):>8.4f} "
            f"{np.mean(deltas):>+9.4f} ±{spread:.4f} (standard error of the mean Δ)",
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
