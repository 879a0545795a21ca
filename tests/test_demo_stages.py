"""The demo's parts on their own: a child's readiness as an event, what each data set
changes in the stages, and the reuse of split files."""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import pytest

from demo.config import DemoConfig
from demo.dataset import Dataset
from demo.errors import DemoError
from demo.prepare import MANIFEST, Source, load_or_prepare_splits
from demo.processes import ManagedProcess
from models import contract
from models.profile import load_profile

MF = load_profile("machine_failure")


def child(tmp_path, code: str, ready: str | None = r"port=(?P<port>\d+)") -> ManagedProcess:
    return ManagedProcess(
        "child", [sys.executable, "-u", "-c", code], log_path=tmp_path / "child.log", ready=ready
    )


def test_wait_ready_returns_the_line_the_child_prints_and_logs_everything(tmp_path):
    # the child may well have ended before the wait starts: the line is found all the same
    p = child(tmp_path, "print('starting'); print('listening port=4711')")
    try:
        p.start()
        m = p.wait_ready(600)
        assert m is not None and m["port"] == "4711"
        assert p.wait(600) == 0
    finally:
        p.stop()
    assert p.log_path.read_text() == "starting\nlistening port=4711\n"


def test_a_child_that_exits_before_it_is_ready_ends_the_wait(tmp_path):
    p = child(tmp_path, "print('cannot bind: address in use'); raise SystemExit(3)")
    try:
        p.start()
        t0 = time.monotonic()
        assert p.wait_ready(600) is None
        # ended by the exit, not by the (ten times longer) timeout
        assert time.monotonic() - t0 < 60
        assert p.wait(600) == 3
    finally:
        p.stop()
    assert "address in use" in p.log_tail()


def test_stop_ends_a_child_that_never_gets_ready_and_keeps_its_last_words(tmp_path):
    p = child(tmp_path, "import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('stopping'), sys.exit(0)))\n"
              "print('working', flush=True)\n"
              "while True: time.sleep(0.05)")  # fmt: skip
    p.start()
    try:
        assert p.wait_ready(0.5) is None  # nothing ready: the timeout ends the wait
        assert p.running
    finally:
        assert p.stop() == 0
    assert not p.running
    assert p.log_path.read_text() == "working\nstopping\n"


def test_the_credit_card_data_set_is_the_contract_and_another_its_profile(tmp_path):
    cards, mf = Dataset.load(None), Dataset.load("machine_failure")
    assert cards.is_cards and cards.data_profile is None and cards.ref == "creditcard"
    assert not mf.is_cards and mf.data_profile == MF and mf.ref == "machine_failure"
    assert Dataset.load(str(MF.path)).ref == "machine_failure"  # the shipped file
    assert Dataset.load("creditcard").is_cards
    # names
    assert cards.model_name("creditcard") == "creditcard"
    assert mf.model_name("creditcard") == "machine_failure" and mf.model_name("m2") == "m2"
    assert cards.data_dir(tmp_path) == tmp_path
    assert mf.data_dir(tmp_path) == tmp_path / "machine_failure"
    assert cards.synthetic_rows(DemoConfig(small=True)) == 20_000
    assert mf.synthetic_rows(DemoConfig(small=True)) == 5_000
    assert mf.synthetic_rows(DemoConfig(synthetic_rows=700)) == 700
    # the services
    assert cards.publisher_args() == ["--database", contract.DATABASE]
    assert mf.publisher_args() == ["--profile", "machine_failure"]
    assert cards.sink_args() == [] and mf.sink_args() == ["--profile", "machine_failure"]
    assert (
        cards.alert_texts() is None and "Anomaly in machine_failure" in mf.alert_texts()["message"]
    )
    assert cards.report_section() is None and mf.report_section()["alert_index"] == MF.alert_index


def test_a_points_fields_have_the_profiles_types():
    mf = Dataset.load("machine_failure")
    row = {"Type": "L", "Air temperature [K]": 300, "Rotational speed [rpm]": 1500.0,
           "Torque [Nm]": float("nan"), "Tool wear [min]": 12, "UDI": "7", "Machine failure": 1}  # fmt: skip
    fields = mf.input_fields(row)
    assert fields == {"Type": "L", "Air temperature [K]": 300.0, "Rotational speed [rpm]": 1500,
                      "Tool wear [min]": 12}  # fmt: skip
    assert type(fields["Rotational speed [rpm]"]) is int
    assert type(fields["Air temperature [K]"]) is float
    assert mf.value(row) == 0.0  # no value column
    cards = Dataset.load(None)
    assert cards.value({"Amount": 12.5}) == 12.5
    assert set(cards.input_fields({f: 1 for f in contract.FEATURES})) == set(contract.FEATURES)


def test_split_files_are_reused_only_from_the_same_source(tmp_path):
    source = Source.choose(tmp_path, csv=None, synthetic_rows=2000, seed=5, profile=MF)
    splits, reused = load_or_prepare_splits(tmp_path, source)
    assert not reused and len(splits.test) == 300  # 70/15/15, as models.data splits
    again, reused = load_or_prepare_splits(tmp_path, source)
    assert reused and again.test["UDI"].tolist() == splits.test["UDI"].tolist()
    other = Source.choose(tmp_path, csv=None, synthetic_rows=2000, seed=6, profile=MF)
    assert load_or_prepare_splits(tmp_path, other)[1] is False
    # files an earlier demo split otherwise (60/20/20, no split marker) are made again
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["source"].pop("split")
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert load_or_prepare_splits(tmp_path, other)[1] is False


def test_a_profile_without_a_generator_needs_a_csv(tmp_path):
    other = dataclasses.replace(MF, name="other", path=None)
    with pytest.raises(DemoError, match="pass --csv FILE with its columns"):
        Source.choose(tmp_path, csv=None, synthetic_rows=100, seed=1, profile=other)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        Source.choose(tmp_path, csv=tmp_path / "nope.csv", synthetic_rows=100, seed=1)
