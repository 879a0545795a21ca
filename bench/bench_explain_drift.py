"""What explanations and drift monitoring cost the agent.

Explanations (``top_features`` on anomalous points): the same stream scored with
``.explain(3)`` and with ``.explain(0)``, at the model card's threshold (few anomalies)
and at ``.threshold(0.0)`` (every point anomalous, the worst case), for a linear model
(exact contributions) and a gradient-boosted one (occlusion: one extra batched call per
feature). Drift (``@drift()``): windows of 10,000 points through the drift socket, the
time from the window's first point to its model_drift point.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_agent import _data, _register_models
from models import contract
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import FrameDecoder, encode_frame
from udf_agent.replay import _point_frame, build_payloads, query_info, run_replay, typed_options


def _drift_windows(sock: Path, payloads: list[bytes], model: str, windows: int, size: int):
    info = query_info(sock)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    init = pb.Request()
    init.init.options.extend(typed_options(info, {"model": model}))
    init.init.taskID = "bench-drift"
    s.sendall(encode_frame(init.SerializeToString()))
    dec = FrameDecoder()
    pending: list[bytes] = []

    def next_response():
        while not pending:
            data = s.recv(1 << 16)
            if not data:
                raise SystemExit("the agent closed the drift connection")
            dec.feed(data)
            pending.extend(dec.frames())
        return pb.Response.FromString(pending.pop(0))

    resp = next_response()
    if not resp.init.success:
        raise SystemExit(f"drift init refused: {resp.init.error}")
    took = []
    t = time.time_ns()
    for w in range(windows):
        begin = pb.Request()
        begin.begin.name = contract.INPUT_MEASUREMENT
        begin.begin.size = size
        end = pb.Request()
        end.end.name = contract.INPUT_MEASUREMENT
        frames = [encode_frame(begin.SerializeToString())]
        for i in range(size):
            frames.append(_point_frame(payloads[(w * size + i) % len(payloads)], t + w * size + i))
        end.end.tmax = t + w * size + size - 1
        frames.append(encode_frame(end.SerializeToString()))
        started = time.perf_counter()
        s.sendall(b"".join(frames))
        out = next_response()
        took.append(time.perf_counter() - started)
        if out.WhichOneof("message") != "point" or out.point.fieldsInt["count"] != size:
            raise SystemExit(f"unexpected drift answer: {str(out)[:800]}")
    s.close()
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_explain_drift", description=__doc__)
    p.add_argument("--points", type=int, default=100_000, help="points per scoring run")
    p.add_argument("--windows", type=int, default=10, help="drift windows of 10,000 points")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        reg = Registry(tmp / "registry", signing_key=None)
        _register_models(reg)
        X, y = _data(20000, seed=1)
        rows = [
            dict(zip(contract.FEATURES, r), txn_id=f"t{i}", Class=int(c))
            for i, (r, c) in enumerate(zip(X, y))
        ]
        payloads = build_payloads(rows)
        sock, drift = tmp / "score.sock", tmp / "drift.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "udf_agent", "--socket", str(sock), "--drift-socket",
             str(drift), "--registry", str(reg.root), "--log-level", "warning"],
        )  # fmt: skip
        try:
            deadline = time.time() + 120
            while not (sock.exists() and drift.exists()):
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("agent did not start")
                time.sleep(0.05)
            time.sleep(0.5)
            run_replay(sock, payloads, {"model": "lr"}, n=5000)  # warm-up
            print(f"{'model':<6}{'threshold':>11}{'explain':>9}{'points/s':>11}{'anomalies':>11}"
                  f"{'cost':>8}")  # fmt: skip
            for model in ("lr", "hgb"):
                for threshold in (None, 0.0):
                    base = None
                    for explain in (0, 3):
                        opts = {"model": model, "maxBatch": "512", "explain": str(explain)}
                        if threshold is not None:
                            opts["threshold"] = str(threshold)
                        r = run_replay(sock, payloads, opts, n=args.points)
                        if r.violations:
                            raise SystemExit(f"violations: {r.violations}")
                        if explain == 0:
                            base = r.throughput
                        cost = "" if explain == 0 else f"{1 - r.throughput / base:>7.0%}"
                        label = "card" if threshold is None else f"{threshold:g}"
                        print(f"{model:<6}{label:>11}{explain:>9}{r.throughput:>11,.0f}"
                              f"{r.anomalies:>11,}{cost:>8}")  # fmt: skip
                        results[f"{model}/{label}/explain{explain}"] = {
                            "points_per_s": r.throughput,
                            "anomalies": r.anomalies,
                        }
            print(f"\ndrift: {args.windows} windows of 10,000 points")
            for model in ("lr", "hgb"):
                took = _drift_windows(drift, payloads, model, args.windows, 10_000)
                ms = np.array(took) * 1000
                print(f"  {model:<4} per 10k points: median {np.median(ms):.0f} ms, "
                      f"max {ms.max():.0f} ms ({10_000 / np.median(took):,.0f} points/s)")  # fmt: skip
                results[f"drift/{model}"] = {"ms_per_10k": float(np.median(ms))}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
