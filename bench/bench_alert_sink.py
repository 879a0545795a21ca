"""Alert sink throughput: alerts/s accepted over HTTP (client threads), shipped to an
in-process Elasticsearch peer, and spool drain rate after an outage.

    .venv/bin/python -m bench.bench_alert_sink [--alerts 1500] [--threads 4]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from es_peer import ElasticsearchPeer, synthetic_alert  # noqa: E402

from alert_sink import SinkConfig, create_app  # noqa: E402

TOKEN = "bench"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class Sink:
    def __init__(self, config: SinkConfig) -> None:
        self.app = create_app(config)
        self.sink = self.app.extensions["alert_sink"]
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}/kapacitor"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.sink.close(timeout=30)


def post_all(url: str, bodies: list[bytes], threads: int) -> tuple[float, list[float]]:
    chunks = [bodies[i::threads] for i in range(threads)]
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(chunk: list[bytes]) -> None:
        session = requests.Session()
        mine = []
        for body in chunk:
            t0 = time.perf_counter()
            r = session.post(url, data=body, headers=HEADERS, timeout=30)
            mine.append(time.perf_counter() - t0)
            if r.status_code != 202:
                raise RuntimeError(f"unexpected {r.status_code}: {r.text}")
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))
    return time.perf_counter() - start, latencies


def wait(condition, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.005)
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else 0.0


def run(n: int, threads: int, synchronous: str, tmp: Path, offset: int) -> dict:
    peer = ElasticsearchPeer(version="8.15.0").start()
    cfg = dict(
        es_url=peer.url,
        token=TOKEN,
        poll_interval=0.05,
        backoff_initial=0.01,
        backoff_max=0.1,
        synchronous=synchronous,
    )
    bodies = [synthetic_alert(offset + i) for i in range(n)]
    sink = Sink(SinkConfig(spool_path=tmp / f"spool-{synchronous}.db", **cfg))
    try:
        start = time.perf_counter()
        elapsed, lat = post_all(sink.url, bodies, threads)
        wait(lambda: sink.sink.spool.depth() == 0 and len(peer.docs()) == n)
        shipped_elapsed = time.perf_counter() - start
        # Outage: everything spools, then drains when Elasticsearch comes back.
        peer.stop()
        more = [synthetic_alert(offset + n + i) for i in range(n)]
        post_all(sink.url, more, threads)
        assert sink.sink.spool.depth() == n
        peer.start()
        drain = wait(lambda: sink.sink.spool.depth() == 0)
        assert len(peer.docs()) == 2 * n, "lost or extra documents"
    finally:
        sink.close()
        peer.stop()
    return {
        "synchronous": synchronous,
        "accepted_per_s": n / elapsed,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "shipped_per_s": n / shipped_elapsed,
        "drain_per_s": n / drain,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=1500)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    # Per-request access logs and the transport's outage warnings would drown the table.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, mode in enumerate(("FULL", "NORMAL")):
            print(
                f"running synchronous={mode} alerts={args.alerts} threads={args.threads} ...",
                flush=True,
            )
            rows.append(run(args.alerts, args.threads, mode, Path(tmp), i * 10 * args.alerts))
    print()
    print(
        f"{'synchronous':<12}{'accepted/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'shipped/s':>11}{'drain/s':>10}"
    )
    for r in rows:
        print(
            f"{r['synchronous']:<12}{r['accepted_per_s']:>12.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['shipped_per_s']:>11.0f}{r['drain_per_s']:>10.0f}"
        )
    full, normal = rows
    print(
        f"\nFULL / NORMAL accepted ratio: {full['accepted_per_s'] / normal['accepted_per_s']:.2f}"
        " (cost of syncing the WAL on every acknowledged alert)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
