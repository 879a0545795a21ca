"""Throughput and latency of the model REST API against a real server process.

Starts ``gunicorn "api:create_app()"`` and/or ``python -m api`` on a temporary registry
holding a model trained on synthetic data, then drives it with a small concurrent client
(threads, one ``requests.Session`` each) for single-record and batch requests. The
baseline is the same model scored in-process through ``models.backends.load_backend``,
so the table shows what HTTP, JSON and validation add.

    .venv/bin/python -m bench.bench_api [--servers gunicorn,cli] [--duration 4]
        [--concurrency 4] [--batch 100] [--registry DIR --model NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_registry(root: Path, model: str) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from models.contract import FEATURES
    from models.registry import Registry

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, len(FEATURES)))
    y = (X[:, 1] - X[:, 3] + rng.normal(scale=0.7, size=len(X)) > 1.5).astype(int)
    est = RandomForestClassifier(n_estimators=50, max_depth=8, n_jobs=1, random_state=0)
    est.fit(X, y)
    reg = Registry(root)
    reg.register(model, est, features=FEATURES, threshold=0.5)
    reg.promote(model, "1", "production")


def _records(features: list[str], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, len(features))).tolist()
    return [
        {**dict(zip(features, r, strict=True)), "txn_id": f"b{seed}-{i}"}
        for i, r in enumerate(rows)
    ]


def _start(kind: str, registry: Path, model: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "API_REGISTRY": str(registry),
        "API_MODEL": model,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    if kind == "gunicorn":
        gunicorn = Path(sys.executable).with_name("gunicorn")
        cmd = [
            str(gunicorn),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--log-level",
            "warning",
            "api:create_app()",
        ]
    else:
        cmd = [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"]
    # Server logs go to a file: an unread pipe would fill up and block the server.
    log_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=log_file)
    proc.log_file = log_file  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_file.seek(0)
            raise RuntimeError(f"{kind} exited: {log_file.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} did not become healthy within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_file.close()  # type: ignore[attr-defined]


def _drive(url: str, bodies: list, duration: float, concurrency: int) -> dict:
    """Send bodies round-robin from ``concurrency`` threads for ``duration`` seconds."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        with requests.Session() as s:
            for body in bodies[:3]:  # warm up connection and server caches
                s.post(url, json=body, timeout=30)
            start_gate.wait()
            k = i
            lat = latencies[i]
            while time.perf_counter() < stop_at[0]:
                body = bodies[k % len(bodies)]
                k += concurrency
                t0 = time.perf_counter()
                try:
                    r = s.post(url, json=body, timeout=30)
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok = False
                lat.append(time.perf_counter() - t0)
                if not ok:
                    errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration + 0.5  # provisional, fixed below
    start_gate.wait()
    t_begin = time.perf_counter()
    stop_at[0] = t_begin + duration
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_begin
    all_lat = np.array([x for lat in latencies for x in lat])
    return {
        "requests": len(all_lat),
        "elapsed": elapsed,
        "errors": sum(errors),
        "p50": float(np.percentile(all_lat, 50)) if len(all_lat) else float("nan"),
        "p95": float(np.percentile(all_lat, 95)) if len(all_lat) else float("nan"),
        "p99": float(np.percentile(all_lat, 99)) if len(all_lat) else float("nan"),
    }


def _baseline(registry: Path, model: str, batch: int) -> dict[str, float]:
    """Median seconds per in-process ``backend.score`` call (1 row and ``batch`` rows)."""
    from models.backends import load_backend
    from models.registry import Registry

    backend = load_backend(Registry(registry), model, "production")
    rng = np.random.default_rng(1)
    out = {}
    for n in (1, batch):
        X = rng.normal(size=(n, len(backend.feature_names)))
        times = []
        for _ in range(60):
            t0 = time.perf_counter()
            backend.score(X)
            times.append(time.perf_counter() - t0)
        out[str(n)] = statistics.median(times[10:])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_api", description=__doc__.split("\n")[0]
    )
    p.add_argument("--servers", default="gunicorn,cli", help="comma list of gunicorn, cli")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per scenario")
    p.add_argument("--concurrency", type=int, default=4, help="client threads")
    p.add_argument("--batch", type=int, default=100, help="records per batch request")
    p.add_argument("--registry", help="existing registry (default: a temporary one)")
    p.add_argument("--model", default="creditcard")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    tmp = None
    if args.registry:
        registry = Path(args.registry)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
        registry = tmp / "registry"
        print("training a 50-tree random forest on 5,000 synthetic rows ...", flush=True)
        _make_registry(registry, args.model)
    try:
        from models.registry import Registry

        features = Registry(registry).card(args.model, "production").features
        singles = [r for seed in range(50) for r in _records(features, 1, seed)]
        batches = [_records(features, args.batch, 1000 + seed) for seed in range(10)]
        base = _baseline(registry, args.model, args.batch)
        rows = []
        for kind in [s.strip() for s in args.servers.split(",") if s.strip()]:
            port = _free_port()
            print(f"starting {kind} on port {port} ...", flush=True)
            proc = _start(kind, registry, args.model, port)
            try:
                url = f"http://127.0.0.1:{port}/v1/predict"
                for scenario, bodies, n in (
                    ("single", singles, 1),
                    (f"batch{args.batch}", batches, args.batch),
                ):
                    res = _drive(url, bodies, args.duration, args.concurrency)
                    rows.append((kind, scenario, n, res))
            finally:
                _stop(proc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    header = (
        f"{'server':<9} {'scenario':<9} {'conc':>4} {'requests':>8} {'req/s':>8} "
        f"{'records/s':>10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'p50/in-proc':>11} {'errors':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for kind, scenario, n, r in rows:
        rps = r["requests"] / r["elapsed"]
        ratio = r["p50"] / base[str(n)]
        print(
            f"{kind:<9} {scenario:<9} {args.concurrency:>4} {r['requests']:>8} {rps:>8.1f} "
            f"{rps * n:>10.0f} {r['p50'] * 1e3:>7.2f} {r['p95'] * 1e3:>7.2f} "
            f"{r['p99'] * 1e3:>7.2f} {ratio:>10.1f}x {r['errors']:>6}"
        )
    print()
    for n, sec in base.items():
        print(
            f"baseline: in-process backend.score, {n:>4} row(s): {sec * 1e3:.2f} ms median per call"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
