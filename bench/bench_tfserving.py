"""TF Serving backend throughput: one Predict per point versus one per micro-batch.

A tiny Keras model is trained, registered and exported; the in-process TF Serving peer
(tests/tfserving_peer.py: the official gRPC servicer and the REST API over the real
SavedModel) serves it. In the same run it measures points/s

- through the backend directly: per-point calls (batch of 1) vs batches of 512, over
  gRPC and over REST;
- through the agent (real Unix socket, replay driver): ``.maxBatch(1)`` vs
  ``.maxBatch(512)``;

and prints the batched/per-point ratio. The peer, the agent and the driver share this
process and its cores, so absolute figures are lower than against a real TF Serving on
its own host; the ratio is the point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _percentiles(ms: list[float]) -> str:
    if not ms:
        return "-"
    a = np.asarray(ms)
    return f"{np.percentile(a, 50):.2f}/{np.percentile(a, 99):.2f}"


def _backend_run(
    backend, X: np.ndarray, batch: int, seconds: float
) -> tuple[float, int, list[float]]:
    """Score ``X`` in chunks of ``batch`` (cycling) for about ``seconds``; points/s."""
    lat = []
    done = 0
    i = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        chunk = X[i : i + batch]
        if len(chunk) < batch:
            i = 0
            chunk = X[:batch]
        s = time.perf_counter()
        backend.score(chunk)
        lat.append((time.perf_counter() - s) * 1000)
        done += len(chunk)
        i += batch
    return done / (time.perf_counter() - t0), done, lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_tfserving", description=__doc__)
    p.add_argument("--seconds", type=float, default=4.0, help="per backend measurement")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--agent-points", type=int, default=3000, help="points per agent run")
    p.add_argument("--no-agent", action="store_true", help="skip the runs through the agent")
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfserving_peer import TFServingPeer, TinyBundle

    from models.backends import load_backend, serving_factory
    from models.backends.tfserving import TFServingConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-tfserving-"))
    rows = []
    try:
        print("training and exporting a tiny Keras model ...", flush=True)
        bundle = TinyBundle(tmp / "bundle", rows=4000)
        peer = TFServingPeer(bundle.serving_dir).start()
        rest_url = peer.start_rest()
        X = np.tile(bundle.X_test, (4, 1))
        for transport in ("grpc", "rest"):
            config = TFServingConfig(
                target=peer.target, rest_url=rest_url, transport=transport, timeout=10.0
            )
            backend = load_backend(
                bundle.registry, bundle.name, "production", factory=serving_factory(config)
            )
            try:
                backend.score(X[:8])  # warm the channel and the signature
                per = _backend_run(backend, X, 1, args.seconds)
                bat = _backend_run(backend, X, args.batch, args.seconds)
            finally:
                backend.close()
            rows.append((f"backend {transport}", "per point (1)", per))
            rows.append((f"backend {transport}", f"batch {args.batch}", bat))
        if not args.no_agent:
            rows += _agent_runs(bundle, peer, tmp, args)
        peer.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'path':<18} {'mode':<16} {'points/s':>10} {'points':>8} {'call ms p50/p99':>16} {'ratio':>7}"
    )
    base = {}
    for path, mode, (pps, n, lat) in rows:
        if mode.startswith("per point"):
            base[path] = pps
        ratio = pps / base[path] if path in base and not mode.startswith("per point") else 1.0
        print(f"{path:<18} {mode:<16} {pps:>10.0f} {n:>8d} {_percentiles(lat):>16} {ratio:>6.1f}x")
    return 0


def _agent_runs(bundle, peer, tmp: Path, args) -> list:
    from models.backends.tfserving import TFServingConfig
    from udf_agent.replay import build_payloads, run_replay
    from udf_agent.server import AgentConfig, AgentServer

    features = bundle.feature_names
    payloads = build_payloads(
        [
            {**dict(zip(features, map(float, x), strict=True)), "txn_id": f"r{i}"}
            for i, x in enumerate(np.tile(bundle.X_test, (4, 1)))
        ]
    )
    out = []
    cfg = AgentConfig(
        socket_path=tmp / "udf.sock",
        registry=bundle.registry.root,
        tfserving=TFServingConfig(target=peer.target, timeout=10.0),
    )
    srv = AgentServer(cfg, registry=bundle.registry).start()
    try:
        for label, max_batch in (("per point (1)", 1), (f"maxBatch {args.batch}", args.batch)):
            before = peer.predict_requests
            report = run_replay(
                cfg.socket_path,
                payloads,
                {"model": bundle.name, "maxBatch": str(max_batch)},
                n=args.agent_points,
            )
            if report.violations:
                print(f"agent run {label}: {report.violations}", file=sys.stderr)
            lat = report.latency_ms
            print(
                f"agent {label}: {report.received} points, {peer.predict_requests - before} "
                f"Predict calls, latency ms {lat}",
                flush=True,
            )
            out.append(("agent grpc", label, (report.throughput, report.received, [])))
    finally:
        srv.stop()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
