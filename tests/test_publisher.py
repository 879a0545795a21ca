"""The publisher against a real influxd 1.x: exact values, rate, restarts, errors, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import eventually, free_port, require_binary
from influxdb_server import InfluxDBServer

from models import contract
from publisher import (
    ConfigError,
    DataError,
    InfluxRejectedError,
    InfluxWriter,
    Publisher,
    PublisherConfig,
    load_samples,
)
from publisher.cli import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
DB = contract.DATABASE
M = contract.INPUT_MEASUREMENT


def make_csv(path: Path, n: int = 500, seed: int = 7) -> pd.DataFrame:
    """A small file with the Kaggle schema plus txn_id, with awkward float values."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 30)) * 10, columns=contract.FEATURES)
    df["Time"] = np.arange(n, dtype=float) * 1.5
    df["Amount"] = rng.uniform(0, 2000, n).round(2)
    df.loc[0, "V1"] = 1 / 3
    df.loc[1, "V2"] = -1e-300
    df.loc[2, "Amount"] = 11.0  # whole-valued float stays a float field
    df["Class"] = (rng.random(n) < 0.1).astype(int)
    df["txn_id"] = [f"t{i:05d}" for i in range(n)]
    df.to_csv(path, index=False)
    return df


@pytest.fixture
def sample_csv(tmp_path) -> tuple[Path, pd.DataFrame]:
    path = tmp_path / "test.csv"
    return path, make_csv(path)


def run_cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "publisher", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def publish(config: PublisherConfig) -> tuple[Publisher, object]:
    samples = load_samples(config.csv, source=config.source)
    writer = InfluxWriter(
        url=config.influx_url,
        database=config.database,
        username=config.username,
        password=config.password,
    )
    pub = Publisher(config, samples=samples, writer=writer)
    try:
        return pub, pub.run()
    finally:
        writer.close()


# -- samples and configuration (no server) -----------------------------------------------------


def test_missing_csv_says_how_to_create_it(tmp_path):
    with pytest.raises(DataError, match="python -m models split"):
        load_samples(tmp_path / "nope.csv", source="s")


def test_csv_without_required_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"Time": [0.0], "V1": [1.0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks column"):
        load_samples(path, source="s")


def test_unpublishable_rows_are_counted_not_sent(tmp_path, caplog):
    path = tmp_path / "t.csv"
    df = make_csv(path, n=20)
    df.loc[3, "V5"] = np.nan
    df.loc[4, "Class"] = 7
    df.to_csv(path, index=False)
    samples = load_samples(path, source="s")
    assert len(samples) == 18
    assert samples.skipped == 2
    assert "t00003" not in samples.txn_ids and "t00004" not in samples.txn_ids
    assert "event=rows_skipped" in caplog.text


def test_duplicate_txn_ids_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    df = make_csv(path, n=5)
    df.loc[1, "txn_id"] = "t00000"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="unique"):
        load_samples(path, source="s")


def test_line_protocol_uses_contract_names_and_types(sample_csv):
    path, df = sample_csv
    samples = load_samples(path, source="src a")
    line = samples.line(2)
    assert line.startswith("transactions,source=src\\ a ")
    assert "Amount=11," in line or line.endswith("Amount=11")  # float, no `i` suffix
    assert f'txn_id="{df.txn_id[2]}"' in line
    assert f"label={int(df.Class[2])}i" in line


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"rate": -1}, "--rate"),
        ({"mode": "shuffle"}, "--mode"),
        ({"batch_size": 0}, "--batch-size"),
        ({"jitter": 2}, "--jitter"),
        ({"username": "u"}, "together"),
        ({"influx_url": "localhost:8086"}, "--influx-url"),
    ],
)
def test_config_errors_name_the_flag(kw, message):
    base = {"influx_url": "http://localhost:8086"}
    with pytest.raises(ConfigError, match=message):
        PublisherConfig(**{**base, **kw})


def test_environment_fallbacks():
    env = {
        "PUBLISHER_INFLUX_URL": "http://influxdb:8086",
        "PUBLISHER_RATE": "250",
        "PUBLISHER_COUNT": "10",
        "PUBLISHER_MODE": "sequential",
        "PUBLISHER_BATCH_SIZE": "50",
        "PUBLISHER_SOURCE": "pub-1",
        "PUBLISHER_USERNAME": "u",
        "PUBLISHER_PASSWORD": "p",
    }
    cfg = config_from_args(build_parser(env).parse_args([]))
    assert (cfg.influx_url, cfg.rate, cfg.count, cfg.mode) == (
        "http://influxdb:8086",
        250,
        10,
        "sequential",
    )
    assert (cfg.batch_size, cfg.source, cfg.username, cfg.password) == (50, "pub-1", "u", "p")
    assert "password=" not in repr(cfg)  # secrets stay out of logs
    # flags win over the environment
    cfg = config_from_args(build_parser(env).parse_args(["--rate", "5"]))
    assert cfg.rate == 5


@pytest.mark.parametrize(
    "var, flag",
    [("PUBLISHER_RATE", "--rate"), ("PUBLISHER_COUNT", "--count"), ("PUBLISHER_SEED", "--seed")],
)
def test_bad_environment_number_is_a_usage_error_naming_the_flag(var, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser({var: "fast"}).parse_args([])
    assert exc.value.code == 2
    assert f"argument {flag}: invalid" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reports_bad_flag_values(sample_csv):
    path, _ = sample_csv
    r = run_cli("--influx-url", "http://127.0.0.1:1", "--csv", str(path), "--batch-size", "0")
    assert r.returncode == 2
    assert "--batch-size must be >= 1" in r.stderr


@pytest.mark.slow
def test_cli_reports_missing_csv(tmp_path):
    r = run_cli("--influx-url", "http://127.0.0.1:1", "--csv", str(tmp_path / "x.csv"))
    assert r.returncode == 2
    assert "python -m models split" in r.stderr


@pytest.mark.slow
def test_unreachable_influxdb_is_a_clear_error(sample_csv):
    path, _ = sample_csv
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli("--influx-url", url, "--csv", str(path), "--count", "5", "--startup-timeout", "1")
    assert r.returncode == 2
    assert "unreachable" in r.stderr and url in r.stderr and "--startup-timeout" in r.stderr


# -- against a real InfluxDB -----------------------------------------------------------------


@pytest.mark.influxdb
@pytest.mark.slow
def test_values_read_back_exactly(influxdb, sample_csv):
    path, df = sample_csv
    cfg = PublisherConfig(
        influx_url=influxdb.url,
        csv=path,
        rate=0,
        count=len(df),
        mode="sequential",
        batch_size=128,
        source="pub-test",
    )
    _, result = publish(cfg)
    assert result.ok and result.written == len(df)

    rows = influxdb.rows(f'SELECT * FROM "{M}"', db=DB)
    assert len(rows) == len(df)
    by_id = {r["txn_id"]: r for r in rows}
    assert set(by_id) == set(df.txn_id)
    for rec in df.to_dict("records"):
        got = by_id[rec["txn_id"]]
        for name in contract.FEATURES:
            assert got[name] == rec[name], (rec["txn_id"], name)  # bit-exact floats
        assert got[contract.LABEL] == rec["Class"]
        assert got[contract.SOURCE_TAG] == "pub-test"
    # field types as the contract says: floats, string txn_id, integer label
    keys = influxdb.rows(f'SHOW FIELD KEYS FROM "{M}"', db=DB)
    types = {k["fieldKey"]: k["fieldType"] for k in keys}
    assert types[contract.LABEL] == "integer"
    assert types[contract.TXN_ID] == "string"
    assert all(types[f] == "float" for f in contract.FEATURES)
    # sequential mode walks the file in order, each point with its own, increasing timestamp
    times = [r["time"] for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert [r["txn_id"] for r in rows] == list(df.txn_id)


@pytest.mark.influxdb
@pytest.mark.slow
def test_random_mode_draws_samples_and_never_collides(influxdb, sample_csv):
    path, df = sample_csv
    n = 3000  # more points than rows: samples repeat, timestamps must not
    cfg = PublisherConfig(
        influx_url=influxdb.url, csv=path, rate=0, count=n, mode="random", seed=3, batch_size=1000
    )
    _, result = publish(cfg)
    assert result.ok
    assert influxdb.count(M, contract.TXN_ID, db=DB) == n
    rows = influxdb.rows(f'SELECT "txn_id" FROM "{M}"', db=DB)
    ids = [r["txn_id"] for r in rows]
    assert set(ids) <= set(df.txn_id)
    assert ids[: len(df)] != list(df.txn_id)  # not the file order
    assert len(set(ids)) > len(df) * 0.9


@pytest.mark.influxdb
@pytest.mark.parametrize("jitter", [0.0, 0.8])
@pytest.mark.slow
def test_rate_is_held(influxdb, sample_csv, jitter):
    path, _ = sample_csv
    rate, n = 400.0, 1000  # 2.5 s
    cfg = PublisherConfig(
        influx_url=influxdb.url,
        csv=path,
        rate=rate,
        count=n,
        mode="sequential",
        batch_size=50,
        flush_interval=0.2,
        jitter=jitter,
    )
    _, result = publish(cfg)
    assert result.ok
    times = np.array([r["time"] for r in influxdb.rows(f'SELECT "label" FROM "{M}"', db=DB)])
    assert len(times) == n
    assert (np.diff(times) > 0).all()  # one timestamp per point, in order
    # Never faster than asked, however busy the machine (a slow machine may only be
    # slower). How close to the rate it stays is measured by bench/bench_publisher.py.
    span = (times[-1] - times[0]) / 1e9
    assert span >= (n - 1) / rate * 0.95, span


def _count_or_zero(influxdb) -> int:
    """Points stored so far (0 while the publisher has not even created the database)."""
    try:
        return influxdb.count(M, contract.TXN_ID, db=DB)
    except Exception:
        return 0


@pytest.mark.influxdb
@pytest.mark.slow
def test_zero_loss_across_influxdb_restart(influxdb, sample_csv):
    path, df = sample_csv
    n = 1200
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "publisher",
            "--influx-url", influxdb.url, "--csv", str(path),
            "--rate", "300", "--count", str(n), "--mode", "random", "--seed", "1",
            "--batch-size", "25", "--flush-interval", "0.1",
            "--max-pending-batches", "4", "--progress-interval", "1",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # mid-stream: the first points are in (1,200 at 300/s take 4 s), then the outage
        eventually(lambda: _count_or_zero(influxdb) > 0, what="the first points")
        influxdb.stop()
        time.sleep(1.5)
        influxdb.start()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "event=write_retry" in err  # the outage really happened mid-stream
    rows = influxdb.rows(f'SELECT "txn_id", "label" FROM "{M}"', db=DB)
    assert len(rows) == n
    assert len({r["time"] for r in rows}) == n  # exactly once: no duplicate, no gap
    assert f"produced={n} written={n} unsent=0" in err


@pytest.mark.influxdb
@pytest.mark.slow
def test_back_pressure_waits_instead_of_dropping(influxdb, sample_csv):
    path, _ = sample_csv
    influxdb.stop()
    cfg = PublisherConfig(
        influx_url=influxdb.url,
        csv=path,
        rate=0,
        count=600,
        batch_size=10,
        max_pending_batches=2,
        backoff_initial=0.05,
        backoff_max=0.2,
        create_database=False,
    )
    samples = load_samples(path, source="bp")
    writer = InfluxWriter(url=influxdb.url, database=DB)
    pub = Publisher(cfg, samples=samples, writer=writer)
    results = []
    t = threading.Thread(target=lambda: results.append(pub.run()))
    t.start()
    time.sleep(1.0)
    # one batch in the sender, two queued, one being filled: the producer is waiting
    assert pub.produced <= 10 * 4 + 1
    influxdb.start()
    influxdb.create_database(DB)
    t.join(30)
    writer.close()
    assert results and results[0].ok and results[0].retries > 0
    assert influxdb.count(M, contract.TXN_ID, db=DB) == 600


@pytest.mark.influxdb
@pytest.mark.slow
def test_sigterm_flushes_partial_batch(influxdb, sample_csv):
    path, _ = sample_csv
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "publisher",
            "--influx-url", influxdb.url, "--csv", str(path), "--rate", "200",
            "--batch-size", "100000", "--flush-interval", "60", "--progress-interval", "0.1",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []

    def produced() -> int:
        line = proc.stderr.readline()
        lines.append(line)
        m = re.search(r"event=progress produced=(\d+)", line)
        return int(m.group(1)) if m else 0

    try:
        eventually(lambda: produced() > 100 or proc.poll() is not None, what="101 points")
        assert influxdb.count(M, contract.TXN_ID, db=DB) == 0  # all still in the open batch
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(lines) + rest
    assert proc.returncode == 0, err[-2000:]
    stored = influxdb.count(M, contract.TXN_ID, db=DB)
    assert stored > 100
    assert f"produced={stored} written={stored} unsent=0" in err


@pytest.mark.influxdb
@pytest.mark.slow
def test_bad_credentials_are_reported_not_retried(tmp_path, sample_csv):
    path, _ = sample_csv
    with InfluxDBServer(
        binary=require_binary("influxd"), base_dir=tmp_path / "auth", auth=("admin", "s3cret")
    ) as server:
        r = run_cli("--influx-url", server.url, "--csv", str(path), "--count", "10",
                    "--username", "admin", "--password", "wrong")  # fmt: skip
        assert r.returncode == 2  # stopped with the reason, not retried (run_cli has a timeout)
        assert "401" in r.stderr and "authentication failed" in r.stderr

        r = run_cli("--influx-url", server.url, "--csv", str(path), "--count", "10")
        assert r.returncode == 2 and "401" in r.stderr

        env = {**os.environ, "PUBLISHER_USERNAME": "admin", "PUBLISHER_PASSWORD": "s3cret"}
        r = run_cli("--influx-url", server.url, "--csv", str(path), "--count", "10", "--rate", "0",
                    env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert server.count(M, contract.TXN_ID, db=DB) == 10


@pytest.mark.influxdb
@pytest.mark.slow
def test_a_write_only_user_publishes_into_the_existing_database(tmp_path, sample_csv):
    # the compose stack's publisher account: WRITE on the database, no admin, no read
    path, _ = sample_csv
    with InfluxDBServer(
        binary=require_binary("influxd"), base_dir=tmp_path / "auth", auth=("admin", "s3cret")
    ) as server:
        server.create_database(DB)
        for q in ("CREATE USER \"pub\" WITH PASSWORD 'pw'", f'GRANT WRITE ON "{DB}" TO "pub"'):
            server.query(q, post=True, epoch=None)
        env = {**os.environ, "PUBLISHER_USERNAME": "pub", "PUBLISHER_PASSWORD": "pw"}
        r = run_cli("--influx-url", server.url, "--csv", str(path), "--count", "10", "--rate", "0",
                    env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert "event=database_not_created" in r.stderr and "403" in r.stderr
        assert server.count(M, contract.TXN_ID, db=DB) == 10
        # without the database, the run stops naming the 404 instead of retrying forever
        server.query(f'DROP DATABASE "{DB}"', post=True, epoch=None)
        r = run_cli("--influx-url", server.url, "--csv", str(path), "--count", "10", "--rate", "0",
                    env=env)  # fmt: skip
        assert r.returncode == 2 and "404" in r.stderr


@pytest.mark.influxdb
@pytest.mark.slow
def test_rejected_points_stop_the_run_with_the_reason(influxdb, sample_csv):
    path, _ = sample_csv
    influxdb.create_database(DB)
    # `label` already exists as a string in this shard: the publisher's integer conflicts
    influxdb.write(DB, f'{M},source=other label="oops"')
    r = run_cli("--influx-url", influxdb.url, "--csv", str(path), "--count", "50", "--rate", "0")
    assert r.returncode == 2
    assert "400" in r.stderr and "field type conflict" in r.stderr
    assert "event=write_retry" not in r.stderr


@pytest.mark.influxdb
def test_database_dropped_mid_run_is_recreated(influxdb, sample_csv):
    path, _ = sample_csv
    cfg = PublisherConfig(influx_url=influxdb.url, csv=path, rate=0, count=100, batch_size=100)
    _, result = publish(cfg)
    assert result.ok
    influxdb.query(f'DROP DATABASE "{DB}"', post=True, epoch=None)
    cfg = PublisherConfig(
        influx_url=influxdb.url, csv=path, rate=0, count=100, batch_size=100, create_database=False
    )
    _, result = publish(cfg)
    assert result.ok
    assert influxdb.count(M, contract.TXN_ID, db=DB) == 100


def _run_in_thread(pub: Publisher) -> tuple[threading.Thread, list]:
    results: list = []
    t = threading.Thread(target=lambda: results.append(pub.run()), daemon=True)
    t.start()
    return t, results


@pytest.mark.slow
def test_stop_during_an_outage_with_a_full_buffer_ends_within_the_shutdown_timeout(sample_csv):
    path, _ = sample_csv
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: InfluxDB is down
    cfg = PublisherConfig(
        influx_url=url,
        csv=path,
        rate=0,
        batch_size=10,
        max_pending_batches=1,
        backoff_initial=0.05,
        backoff_max=0.2,
        shutdown_timeout=1.0,
        create_database=False,
    )
    writer = InfluxWriter(url=url, database=DB)
    pub = Publisher(cfg, samples=load_samples(path, source="s"), writer=writer)
    t, results = _run_in_thread(pub)
    # the buffer (one batch) and the sender's batch are full: the producer waits on it
    eventually(lambda: pub.produced >= 20, what="a full buffer")
    pub.stop()
    t.join(10)
    writer.close()
    assert not t.is_alive(), "a stop request must not wait for InfluxDB to come back"
    (result,) = results
    assert result.written == 0 and result.unsent == result.produced > 0
    assert not result.ok


class _CreateRefused(InfluxWriter):
    """A user allowed to write but not to run CREATE DATABASE."""

    def ensure_database(self) -> None:
        raise InfluxRejectedError(
            f"create database {self.database!r}: InfluxDB answered 403 (no permission)",
            status=403,
        )


@pytest.mark.influxdb
def test_database_that_cannot_be_recreated_stops_the_run_with_the_reason(influxdb, sample_csv):
    path, _ = sample_csv  # the database does not exist: every write answers 404
    cfg = PublisherConfig(
        influx_url=influxdb.url, csv=path, rate=0, batch_size=10, create_database=False
    )
    writer = _CreateRefused(url=influxdb.url, database=DB)
    pub = Publisher(cfg, samples=load_samples(path, source="s"), writer=writer)
    t, results = _run_in_thread(pub)
    t.join(15)
    writer.close()
    assert not t.is_alive(), "the producer must not wait on a sender that has given up"
    (result,) = results
    assert result.written == 0 and not result.ok
    assert "404" in result.error and "database not found" in result.error
