"""UDF agent throughput and latency through the replay driver (Kapacitor's side).

The agent runs as its own process (as in production, beside Kapacitor); this process
drives it. For each model the micro-batched agent is measured beside a per-point
baseline — the same agent with ``.maxBatch(1)``, i.e. one ``predict_proba`` per point —
in the same run, and the ratio is printed. A dummy constant model gives the protocol-only
ceiling. Then latency at a fixed offered rate, and keepalive round trips under full load.

Then bursts: 1,000,000 points at full speed through one connection (HistGradientBoosting,
micro-batched and per point), with the agent's RSS sampled every 50 ms (start and peak)
and the share of points that came back unscored; and a peer that writes as fast as it
can and never reads, for which the agent's RSS and the moment it cut the peer off are
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from models import contract
from models.drift import reference_profile
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
        # reference distributions as training records them: the agent explains anomalous
        # points (.explain(3) by default) from the card's typical values
        ref = reference_profile(
            X, contract.FEATURES, ["float"] * len(contract.FEATURES), m.predict_proba(X)[:, 1]
        )
        card = reg.register(
            name, m, features=contract.FEATURES, threshold=0.5, extra={"reference": ref}
        )
        reg.promote(name, card.version, "production")


class RssSampler:
    """Samples a process's resident set size every ``interval`` seconds (psutil)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.interval = interval
        self.start_mb = self._rss()
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_mb = max(self.peak_mb, self._rss())
            except Exception:  # the process ended
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _burst(sock: Path, pid: int, payloads, model: str, n: int, options: dict) -> dict:
    with RssSampler(pid) as rss:
        r = _run(sock, payloads, model, n, options=options, on_progress=_progress)
    print(file=sys.stderr)
    unscored = r.score_errors / max(r.received, 1)
    return {
        "points": n,
        "points_per_s": r.throughput,
        "rss_start_mb": rss.start_mb,
        "rss_peak_mb": rss.peak_mb,
        "rss_growth_mb": rss.peak_mb - rss.start_mb,
        "unscored_share": unscored,
        "error_reasons": r.error_reasons,
        "keepalive_rtt_ms": r.keepalive_rtt_ms,
    }


def _progress(sent: int, back: int) -> None:
    print(f"\r  sent {sent:,} received {back:,}", end="", file=sys.stderr, flush=True)


def _never_reading_peer(sock_path: Path, pid: int, seconds: float) -> dict:
    """Init, then write points as fast as possible without ever reading: the agent must
    stop reading (bounded memory) and, after its write timeout, close the connection."""
    from udf_agent.protocol import messages as pb
    from udf_agent.protocol.codec import encode_frame
    from udf_agent.replay import _point_frame, query_info, typed_options

    info = query_info(sock_path)
    X, _ = _data(2000, seed=2)
    payloads = build_payloads(
        [dict(zip(contract.FEATURES, r), txn_id=f"n{i}", Class=0) for i, r in enumerate(X)]
    )
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock_path))
    init = pb.Request()
    init.init.options.extend(typed_options(info, {"model": "hgb"}))
    init.init.taskID = "never-reads"
    s.sendall(encode_frame(init.SerializeToString()))
    s.setblocking(False)
    written = 0
    closed_after = None
    pending = b""
    started = time.perf_counter()
    t = time.time_ns()
    with RssSampler(pid) as rss:
        while time.perf_counter() - started < seconds:
            if not pending:
                pending = b"".join(
                    _point_frame(payloads[(written + i) % len(payloads)], t + written + i)
                    for i in range(256)
                )
                written += 256
            _, writable, _ = select.select([], [s], [], 0.5)
            if not writable:
                continue  # the agent stopped reading: back-pressure reached us
            try:
                pending = pending[s.send(pending) :]
            except BlockingIOError:
                continue
            except OSError:
                closed_after = time.perf_counter() - started
                break
    s.close()
    return {
        "seconds": seconds,
        "points_written": written - (1 if pending else 0) * 256,
        "rss_start_mb": rss.start_mb,
        "rss_peak_mb": rss.peak_mb,
        "rss_growth_mb": rss.peak_mb - rss.start_mb,
        "closed_by_agent_after_s": closed_after,
    }


def _start_agent(tmp: Path, reg: Registry, *extra: str) -> tuple[subprocess.Popen, Path]:
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
            *extra,
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
    p.add_argument(
        "--burst-points", type=int, default=1_000_000, help="points per burst run (0 = skip)"
    )
    p.add_argument(
        "--burst-per-point",
        type=int,
        default=None,
        help="points of the per-point (.maxBatch(1)) burst; default: --burst-points",
    )
    p.add_argument(
        "--never-reads-seconds",
        type=float,
        default=20.0,
        help="how long the never-reading peer writes (0 = skip)",
    )
    p.add_argument(
        "--write-timeout", type=float, default=10.0, help="the agent's --write-timeout here"
    )
    p.add_argument("--only-bursts", action="store_true", help="skip the throughput tables")
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
        proc, sock = _start_agent(tmp, reg, "--write-timeout", str(args.write_timeout))
        try:
            _run(sock, payloads, "lr", 5000)  # warm-up: model load, page cache
            if not args.only_bursts:
                print(
                    f"{'run':<34}{'points/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'keepalive max ms':>18}"
                )
                for model in ("dummy", "lr", "hgb"):
                    batched = _run(
                        sock,
                        payloads,
                        model,
                        args.points,
                        options={"maxBatch": 512, "maxDelay": "5ms"},
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
            if args.burst_points:
                per_point_n = (
                    args.burst_points if args.burst_per_point is None else args.burst_per_point
                )
                print(
                    f"\nbursts at full speed through one connection, hgb "
                    f"(agent --write-timeout {args.write_timeout:g}s)"
                )
                print(
                    f"{'run':<34}{'points':>10}{'points/s':>10}{'RSS start':>11}"
                    f"{'RSS peak':>10}{'growth':>8}{'unscored':>10}{'ka max ms':>11}"
                )
                for label, n, opts in (
                    ("micro-batched (512, 5ms)", args.burst_points, {"maxBatch": 512}),
                    ("per point (.maxBatch(1))", per_point_n, {"maxBatch": 1, "maxDelay": "0s"}),
                ):
                    b = _burst(sock, proc.pid, payloads, "hgb", n, opts)
                    results.setdefault("bursts", {})[label] = b
                    print(
                        f"{label:<34}{n:>10,}{b['points_per_s']:>10,.0f}"
                        f"{b['rss_start_mb']:>9.0f}MB{b['rss_peak_mb']:>8.0f}MB"
                        f"{b['rss_growth_mb']:>6.0f}MB{b['unscored_share']:>9.2%}"
                        f"{b['keepalive_rtt_ms'].get('max', float('nan')):>11.1f}"
                    )
            if args.never_reads_seconds:
                nr = _never_reading_peer(sock, proc.pid, args.never_reads_seconds)
                results["never_reading_peer"] = nr
                closed = nr["closed_by_agent_after_s"]
                print(
                    f"\npeer that never reads, {nr['seconds']:g} s: agent RSS "
                    f"{nr['rss_start_mb']:.0f} MB -> peak {nr['rss_peak_mb']:.0f} MB "
                    f"(+{nr['rss_growth_mb']:.0f} MB); {nr['points_written']:,} points accepted; "
                    + (
                        f"closed by the agent after {closed:.1f} s"
                        if closed is not None
                        else "connection still open"
                    )
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
