"""UDF agent throughput and latency through the replay driver (Kapacitor's side).

The agent runs as its own process (as in production, beside Kapacitor); this process
drives it. For each model the micro-batched agent is measured beside a per-point
baseline — the same agent with ``.maxBatch(1)``, i.e. one ``predict_proba`` per point —
in the same run, and the ratio is printed. A dummy constant model gives the protocol-only
ceiling. Then latency at a fixed offered rate, and keepalive round trips under full load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models import contract
from models.registry import Registry
from udf_agent.replay import ReplayReport, build_payloads, run_replay


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(contract.FEATURES)))
    X[:, -1] = np.abs(rng.lognormal(3, 1.2, size=n))  # Amount, heavy-tailed
    y = (X[:, 3] - X[:, 10] + 0.5 * rng.normal(size=n) > 3.2).astype(int)
    return X, y


def _register_models(reg: Registry) -> None:
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _data(20000)
    models = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "hgb": HistGradientBoostingClassifier(max_iter=200, random_state=0),
        "dummy": DummyClassifier(strategy="prior"),
    }
    for name, m in models.items():
        m.fit(X, y)
        card = reg.register(name, m, features=contract.FEATURES, threshold=0.5)
        reg.promote(name, card.version, "production")


def _start_agent(tmp: Path, reg: Registry) -> tuple[subprocess.Popen, Path]:
    sock = tmp / "bench.sock"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "udf_agent",
            "--socket",
            str(sock),
            "--registry",
            str(reg.root),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    deadline = time.time() + 60
    while not sock.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("agent did not start")
        time.sleep(0.05)
    return proc, sock


def _run(sock: Path, payloads, model: str, n: int, **kw) -> ReplayReport:
    opts = {"model": model, **{k: str(v) for k, v in kw.pop("options", {}).items()}}
    r = run_replay(sock, payloads, opts, n=n, keepalive_interval=0.1, **kw)
    if r.violations:
        raise SystemExit(f"protocol violations: {r.violations}")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_agent", description=__doc__.splitlines()[0]
    )
    p.add_argument("--points", type=int, default=200_000, help="points per batched run")
    p.add_argument("--baseline-points", type=int, default=20_000, help="points per per-point run")
    p.add_argument("--rate", type=float, default=10_000, help="offered rate for the latency run")
    p.add_argument("--rate-seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        reg = Registry(tmp / "registry")
        _register_models(reg)
        X, y = _data(20000, seed=1)
        rows = [
            dict(zip(contract.FEATURES, r), txn_id=f"t{i}", Class=int(c))
            for i, (r, c) in enumerate(zip(X, y))
        ]
        payloads = build_payloads(rows)  # 30 float features + label + txn_id: 31 fields
        proc, sock = _start_agent(tmp, reg)
        try:
            _run(sock, payloads, "lr", 5000)  # warm-up: model load, page cache
            print(
                f"{'run':<34}{'points/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'keepalive max ms':>18}"
            )
            for model in ("dummy", "lr", "hgb"):
                batched = _run(
                    sock, payloads, model, args.points, options={"maxBatch": 512, "maxDelay": "5ms"}
                )
                per_point = _run(
                    sock,
                    payloads,
                    model,
                    args.baseline_points,
                    options={"maxBatch": 1, "maxDelay": "0s"},
                )
                for label, r in (
                    (f"{model} micro-batched (512, 5ms)", batched),
                    (f"{model} per-point baseline", per_point),
                ):
                    print(
                        f"{label:<34}{r.throughput:>12,.0f}{r.latency_ms['p50']:>10.1f}"
                        f"{r.latency_ms['p99']:>10.1f}{r.keepalive_rtt_ms.get('max', float('nan')):>18.1f}"
                    )
                ratio = batched.throughput / per_point.throughput
                print(f"{'  ratio batched / per-point':<34}{ratio:>12.1f}x")
                results[model] = {
                    "batched_points_per_s": batched.throughput,
                    "per_point_points_per_s": per_point.throughput,
                    "ratio": ratio,
                    "batched_latency_ms": batched.latency_ms,
                    "keepalive_rtt_ms_under_full_load": batched.keepalive_rtt_ms,
                }
            n = int(args.rate * args.rate_seconds)
            print(
                f"\nlatency at {args.rate:,.0f} points/s offered ({n:,} points, maxBatch 512, maxDelay 5ms)"
            )
            for model in ("lr", "hgb"):
                r = _run(
                    sock,
                    payloads,
                    model,
                    n,
                    rate=args.rate,
                    options={"maxBatch": 512, "maxDelay": "5ms"},
                )
                lat = r.latency_ms
                print(
                    f"  {model:<6} achieved {r.throughput:>9,.0f}/s  p50 {lat['p50']:.2f} ms  "
                    f"p95 {lat['p95']:.2f} ms  p99 {lat['p99']:.2f} ms  max {lat['max']:.2f} ms  "
                    f"keepalive max {r.keepalive_rtt_ms.get('max', float('nan')):.2f} ms"
                )
                results[model][f"latency_at_{int(args.rate)}_pps_ms"] = lat
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
