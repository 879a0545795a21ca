"""Publisher throughput into a real InfluxDB 1.x, by batch size.

Starts ``influxd`` on a free loopback port (tests/influxdb_server.py), then publishes
``--points`` points unthrottled (``rate=0``) for each batch size, each run into its own
fresh database, and checks every point arrived. The baseline posts the same
pre-built line-protocol batches straight to ``/write`` with one ``requests.Session``,
so the table shows what the publisher's scheduling, stamping and threading cost over
the raw HTTP ingest of the same server.

    .venv/bin/python -m bench.bench_publisher [--points 100000] [--batch-sizes 500,1000,5000,10000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from models import contract
from publisher import InfluxWriter, Publisher, PublisherConfig, load_samples

REPO_ROOT = Path(__file__).resolve().parents[1]


def _influx_server_class():
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from influxdb_server import InfluxDBServer

    return InfluxDBServer


def _make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(rows, 30)), columns=contract.FEATURES)
    df["Time"] = np.arange(rows, dtype=float)
    df["Amount"] = rng.uniform(0, 500, rows).round(2)
    df["Class"] = (rng.random(rows) < 0.002).astype(int)
    df["txn_id"] = [f"b{i:07d}" for i in range(rows)]
    df.to_csv(path, index=False)


def _publisher_run(server, samples, csv: Path, db: str, points: int, batch: int) -> float:
    cfg = PublisherConfig(
        influx_url=server.url,
        database=db,
        csv=csv,
        rate=0,
        count=points,
        mode="random",
        seed=1,
        batch_size=batch,
        progress_interval=3600,
    )
    writer = InfluxWriter(url=server.url, database=db)
    try:
        result = Publisher(cfg, samples=samples, writer=writer).run()
    finally:
        writer.close()
    if not result.ok:
        raise RuntimeError(f"publisher run failed: {result}")
    stored = server.count(contract.INPUT_MEASUREMENT, contract.TXN_ID, db=db)
    if stored != points:
        raise RuntimeError(f"{stored} of {points} points stored")
    return points / result.elapsed


def _baseline_run(server, samples, db: str, points: int, batch: int) -> float:
    server.create_database(db)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(samples), points)
    ts0 = time.time_ns()
    bodies = [
        (
            "\n".join(
                f"{samples.line(int(i))} {ts0 + start + k}"
                for k, i in enumerate(idx[start : start + batch])
            )
            + "\n"
        ).encode()
        for start in range(0, points, batch)
    ]
    with requests.Session() as s:
        t = time.perf_counter()
        for body in bodies:
            r = s.post(
                server.url + "/write", params={"db": db, "precision": "ns"}, data=body, timeout=60
            )
            r.raise_for_status()
        elapsed = time.perf_counter() - t
    return points / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_publisher", description=__doc__)
    p.add_argument("--points", type=int, default=100_000, help="points per run")
    p.add_argument("--batch-sizes", default="500,1000,5000,10000")
    p.add_argument("--rows", type=int, default=5000, help="distinct samples in the CSV")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    logging.basicConfig(level=logging.WARNING)

    server_cls = _influx_server_class()
    with tempfile.TemporaryDirectory(prefix="bench-publisher-") as tmp:
        csv = Path(tmp) / "samples.csv"
        _make_csv(csv, args.rows)
        t = time.perf_counter()
        samples = load_samples(csv, source="bench")
        for i in range(len(samples)):  # line-protocol cache, built by influxdb-client's Point
            samples.line(i)
        build = len(samples) / (time.perf_counter() - t)
        with server_cls(base_dir=Path(tmp) / "influxdb") as server:
            print(f"InfluxDB {requests.get(server.url + '/ping').headers.get('X-Influxdb-Version')}"
                  f" at {server.url}; {args.points} points per run; "
                  f"line cache built at {build:,.0f} rows/s (load + Point)")  # fmt: skip
            print(f"{'batch':>7} {'publisher pts/s':>16} {'raw /write pts/s':>17} {'ratio':>6}")
            for n, batch in enumerate(sizes):
                pub = _publisher_run(server, samples, csv, f"bench_p{n}", args.points, batch)
                raw = _baseline_run(server, samples, f"bench_r{n}", args.points, batch)
                print(f"{batch:>7} {pub:>16,.0f} {raw:>17,.0f} {pub / raw:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
