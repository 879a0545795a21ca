"""`python -m models watch`: complete files only, bad files rejected with a reason naming
the line, duplicates refused, points written exactly as the publisher writes them, and —
killed with SIGKILL in the middle of a file — nothing lost and nothing written twice
after a restart; SIGTERM stops it within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import WAIT, eventually, free_port

from models.data import load_csv, make_synthetic
from models.errors import DataError
from models.influx import InfluxClient, profile_lines
from models.profile import load_profile
from models.watch import WatchConfig, Watcher

ROOT = Path(__file__).resolve().parents[1]
CREDITCARD = load_profile("creditcard")


def _drop(folder: Path, name: str, df: pd.DataFrame, *, age: float = 60.0) -> Path:
    """Write a file as an uploader would (a .part renamed when whole), aged ``age`` s."""
    path = folder / name
    part = folder / (name + ".part")
    df.to_csv(part, index=False)
    os.replace(part, path)
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def _config(tmp_path, **kw) -> WatchConfig:
    incoming = tmp_path / "incoming"
    incoming.mkdir(exist_ok=True)
    return WatchConfig(profile=kw.pop("profile", CREDITCARD), dir=incoming,
                       store=kw.pop("store", tmp_path / "store"), once=True, **kw)  # fmt: skip


def _cards(n=300, seed=1, rate=0.05) -> pd.DataFrame:
    df = make_synthetic(n, seed=seed, fraud_rate=rate)
    df["txn_id"] = [f"s{seed}-{i:05d}" for i in range(n)]
    return df


# -- points ------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile_name", ["creditcard", "machine_failure"])
def test_points_are_the_publishers_points(tmp_path, profile_name):
    """The watcher and the publisher write the same line for the same row (fields, types,
    tags, escaping), so dashboards and tasks see one kind of point."""
    from models.data import synthetic_frame
    from publisher.source import load_samples

    profile = load_profile(profile_name)
    raw = synthetic_frame(200, seed=4, profile=profile)
    if profile.id_column not in raw.columns:
        raw[profile.id_column] = [f"r{i}" for i in range(len(raw))]
    csv = tmp_path / "rows.csv"
    raw.to_csv(csv, index=False)
    samples = load_samples(csv, source="src", profile=profile_name)
    frame = load_csv(csv, profile=profile)
    ours = profile_lines(frame, profile, source="src", timestamps=list(range(len(frame))))
    theirs = [f"{samples.line(i)} {i}" for i in range(len(samples))]
    assert ours == theirs


# -- completeness, rejection, duplicates -------------------------------------------------------
def test_only_complete_csv_files_are_taken(tmp_path):
    config = _config(tmp_path, settle=30.0)
    incoming = config.dir
    (incoming / "upload.csv.part").write_text("Time,V1\n")
    (incoming / ".hidden.csv").write_text("x\n")
    fresh = incoming / "fresh.csv"
    _cards(20).to_csv(fresh, index=False)  # just written: not settled
    _drop(incoming, "notes.txt", pd.DataFrame({"a": [1]}))  # complete, but no CSV
    watcher = Watcher(config)
    assert watcher.run() == 0
    assert sorted(p.name for p in incoming.iterdir() if p.is_file()) == [
        ".hidden.csv", "fresh.csv", "upload.csv.part"
    ]  # fmt: skip
    assert (incoming / "rejected" / "notes.txt").is_file()
    assert "not a .csv file" in (incoming / "rejected" / "notes.txt.reason").read_text()
    assert watcher.counts == {"processed": 0, "rejected": 1, "failed": 0}


def test_a_bad_file_is_rejected_with_the_line_and_has_no_effect(tmp_path):
    config = _config(tmp_path, chunk_rows=50)
    df = _cards(180).astype(object)
    df.loc[130, "V7"] = "n/a?"  # line 132 of the file, in its third chunk
    _drop(config.dir, "bad.csv", df)
    good = _cards(100, seed=2)
    _drop(config.dir, "good.csv", good)
    watcher = Watcher(config)
    assert watcher.run() == 0
    reason = (config.dir / "rejected" / "bad.csv.reason").read_text()
    assert (
        reason.strip() == "bad.csv: column V7 has 1 non-numeric value(s); first at line 132: 'n/a?'"
    )
    assert (config.dir / "processed" / "good.csv").is_file()
    stored = sorted((tmp_path / "store").glob("*/*.csv"))
    assert [p.name.split("-")[0] for p in stored] == ["good"]  # nothing of the bad file
    assert len(load_csv(stored[0])) == 100
    assert list((config.dir / ".watch" / "claims").iterdir()) == []


def test_duplicate_ids_across_chunks_are_named(tmp_path):
    config = _config(tmp_path, chunk_rows=40)
    df = _cards(100)
    df.loc[90, "txn_id"] = df.loc[10, "txn_id"]
    _drop(config.dir, "dupes.csv", df)
    Watcher(config).run()
    reason = (config.dir / "rejected" / "dupes.csv.reason").read_text()
    assert "must be unique" in reason and "(lines 12 and 92)" in reason


def test_the_same_content_is_not_processed_twice(tmp_path):
    config = _config(tmp_path)
    df = _cards(50)
    _drop(config.dir, "day1.csv", df)
    assert Watcher(config).run() == 0
    _drop(config.dir, "day1-again.csv", df)  # another name, the same bytes
    _drop(config.dir, "day1.csv", _cards(50, seed=9))  # the same name, new content
    watcher = Watcher(config)
    assert watcher.run() == 0
    reason = (config.dir / "rejected" / "day1-again.csv.reason").read_text()
    assert "same content" in reason and "'day1.csv'" in reason
    processed = sorted(p.name for p in (config.dir / "processed").iterdir())
    assert len(processed) == 2 and "day1.csv" in processed  # the second one renamed
    assert any(p.startswith("day1.") and p != "day1.csv" for p in processed)
    assert len(list((tmp_path / "store").glob("*/*.csv"))) == 2


def test_rows_without_ids_get_ids_unique_across_files(tmp_path):
    config = _config(tmp_path)
    a = _cards(30, seed=1).drop(columns=["txn_id"])
    b = _cards(30, seed=2).drop(columns=["txn_id"])
    _drop(config.dir, "readings.csv", a)
    assert Watcher(config).run() == 0
    _drop(config.dir, "readings.csv", b)
    assert Watcher(config).run() == 0
    from models.retrain import read_store

    df, where = read_store(tmp_path / "store", None, since="1d")
    assert len(df) == 60 and df["txn_id"].is_unique
    assert "2 file(s)" in where


@pytest.mark.slow
def test_one_watcher_per_folder(tmp_path):
    config = _config(tmp_path)
    first = Watcher(config)
    first._open()
    try:
        with pytest.raises(DataError, match="another watcher is running"):
            Watcher(config).run()
        t0 = time.monotonic()
        with pytest.raises(DataError, match=r"waited 1s"):
            Watcher(_config(tmp_path, lock_wait=1.0)).run()
        assert time.monotonic() - t0 >= 0.9
    finally:
        first.close()
    assert Watcher(config).run() == 0


def test_nothing_to_do_is_a_usage_error(tmp_path):
    with pytest.raises(DataError, match="nothing to do"):
        _config(tmp_path, store=None)


def test_influxdb_down_keeps_the_claim_for_the_next_run(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    config = _config(tmp_path, influx_url=url, write_attempts=1)
    _drop(config.dir, "a.csv", _cards(20))
    assert Watcher(config).run() == 1  # --once: not finished
    claims = list((config.dir / ".watch" / "claims").glob("*.csv"))
    assert len(claims) == 1 and not (config.dir / "processed" / "a.csv").exists()
    journal = json.loads(claims[0].with_suffix(".json").read_text())
    assert journal["rows"] == 20 and journal["published"] == 0 and journal["failures"] == 1


# -- a real process, a real InfluxDB -----------------------------------------------------------
def _watch_cmd(tmp_path, url, *extra) -> list[str]:
    return [sys.executable, "-m", "models", "--log-level", "info", "watch",
            "--dir", str(tmp_path / "incoming"), "--store", str(tmp_path / "store"),
            "--influx-url", url, "--chunk-rows", "100", "--settle", "0", *extra]  # fmt: skip


def _journal(tmp_path) -> dict | None:
    for j in (tmp_path / "incoming" / ".watch" / "claims").glob("*.json"):
        try:
            return json.loads(j.read_text())
        except ValueError:
            return None
    return None


def _popen(cmd):
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.influxdb
def test_killed_mid_file_then_restarted_writes_every_row_exactly_once(tmp_path, influxdb):
    n = 3000
    (tmp_path / "incoming").mkdir()
    df = _cards(n, seed=11)
    _drop(tmp_path / "incoming", "batch.csv", df)
    proc = _popen(_watch_cmd(tmp_path, influxdb.url, "--rate", "400"))
    try:
        journal = eventually(
            lambda: (j := _journal(tmp_path)) and j.get("published", 0) >= 600 and j,
            what="the watcher halfway through the file",
        )
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert journal["published"] < n
    written_before = influxdb.count("transactions", "txn_id", db="fraud")
    assert 0 < written_before < n
    assert not list((tmp_path / "store").glob("*/*.csv"))  # the store file is not whole yet

    done = subprocess.run(_watch_cmd(tmp_path, influxdb.url, "--once"), cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT * 3)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "processed 1 file(s), rejected 0" in done.stdout
    # every row once: the resumed rows kept their timestamps, so nothing was doubled
    assert influxdb.count("transactions", "txn_id", db="fraud") == n
    ids = influxdb.rows('SELECT count(distinct("txn_id")) FROM "transactions"', db="fraud")
    assert ids[0]["count"] == n
    labels = influxdb.rows('SELECT sum("label") FROM "transactions"', db="fraud")
    assert labels[0]["sum"] == int(df["Class"].sum())
    (stored,) = (tmp_path / "store").glob("*/*.csv")
    assert load_csv(stored)["txn_id"].tolist() == df["txn_id"].tolist()
    assert (tmp_path / "incoming" / "processed" / "batch.csv").is_file()
    assert list((tmp_path / "incoming" / ".watch" / "claims").iterdir()) == []

    # and again: nothing left to do, nothing written twice
    again = subprocess.run(_watch_cmd(tmp_path, influxdb.url, "--once"), cwd=ROOT,
                           capture_output=True, text=True, timeout=WAIT * 3)  # fmt: skip
    assert again.returncode == 0 and "processed 0 file(s)" in again.stdout
    assert influxdb.count("transactions", "txn_id", db="fraud") == n


@pytest.mark.slow
@pytest.mark.influxdb
def test_sigterm_stops_within_seconds_and_the_file_resumes(tmp_path, influxdb):
    (tmp_path / "incoming").mkdir()
    _drop(tmp_path / "incoming", "slow.csv", _cards(2000, seed=12))
    proc = _popen(_watch_cmd(tmp_path, influxdb.url, "--rate", "200", "--poll-interval", "60"))
    try:
        eventually(lambda: (j := _journal(tmp_path)) and j.get("published", 0) >= 200,
                   what="publishing under way")  # fmt: skip
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert stopped_in < 5.0, f"took {stopped_in:.1f}s to stop"
    assert "event=interrupted" in out
    journal = _journal(tmp_path)
    assert journal is not None and 0 < journal["published"] < 2000
    done = subprocess.run(_watch_cmd(tmp_path, influxdb.url, "--once"), cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT * 3)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert influxdb.count("transactions", "txn_id", db="fraud") == 2000


@pytest.mark.slow
def test_a_stop_request_in_process_leaves_a_resumable_claim(tmp_path):
    """The same without InfluxDB: stopped between chunks, the store file is not left half
    written, and the next run writes it whole."""
    config = _config(tmp_path, chunk_rows=10)
    _drop(config.dir, "x.csv", _cards(200))
    stop = threading.Event()
    watcher = Watcher(config, stop=stop)
    original = watcher._chunks
    calls = {"n": 0}

    def chunks(path, name):
        for item in original(path, name):
            calls["n"] += 1
            if calls["n"] == 25:  # validation read 20 chunks; 5 into the effects pass
                stop.set()
            yield item

    watcher._chunks = chunks
    assert watcher.run() == 0
    assert not list((tmp_path / "store").glob("*/*.csv"))
    assert not list((tmp_path / "store").glob("*/.*.part"))
    assert len(list((config.dir / ".watch" / "claims").glob("*.csv"))) == 1
    assert Watcher(config).run() == 0
    (stored,) = (tmp_path / "store").glob("*/*.csv")
    assert len(load_csv(stored)) == 200


def test_the_influx_client_refuses_a_bad_url():
    with pytest.raises(DataError):
        InfluxClient("localhost:8086")
