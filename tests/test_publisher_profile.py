"""The publisher for any data set: names from the profile, escaped for InfluxDB 1.x line
protocol, written to a real influxd and read back intact through InfluxQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from influxdb_client import Point

from models import contract
from models.profile import load_profile, load_profile_text
from models.synthetic import make_machine_failure
from publisher import DataError, InfluxWriter, SampleSource, load_samples
from publisher.lineprotocol import (
    LineProtocolError,
    escape_field_key,
    escape_measurement,
    escape_string,
    escape_tag,
    line,
)

ROOT = Path(__file__).resolve().parents[1]

AWKWARD = """
name = "awkward"

[influxdb]
database = "plant db, north"
retention_policy = "one week"
measurement = "machine readings,v=1"
scored_measurement = "machine readings scored"

[columns]
id = "Row ID"
label = "Machine failure"
label_field = "failure flag"
value = "Repair cost ($)"
tags = ["Plant site"]
drop = ["Product ID", "TWF"]

[[features]]
name = "Air temperature [K]"
type = "float"

[[features]]
name = "Rotational speed, rpm"
type = "int"

[[features]]
name = "Type = kind"
type = "categorical"
levels = ["H", "L", "M"]

[[features]]
name = "O'Neil's index (a=b)"
type = "float"

[alerts]
index = "awkward-alerts"
message_fields = ["Row ID", "Type = kind"]
"""


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (backslash and quote escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def awkward_csv(path: Path, n: int = 40, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "Row ID": [f"r {i}, #{i}=x" for i in range(n)],
            "Product ID": [f"P{i}" for i in range(n)],
            "Air temperature [K]": rng.normal(300, 2, n).round(3),
            "Rotational speed, rpm": rng.integers(1200, 2800, n),
            "Type = kind": rng.choice(["H", "L", "M", "X"], n),  # X: a level never seen
            "O'Neil's index (a=b)": rng.normal(size=n),
            "Machine failure": (rng.random(n) < 0.2).astype(int),
            "TWF": 0,
            "Repair cost ($)": rng.uniform(0, 500, n).round(2),
            "Plant site": rng.choice(["north, hall=2", "south side"], n),
            "notes": "not in the profile",
        }
    )
    df.loc[3, "Air temperature [K]"] = 300.0  # a whole float stays a float field
    df.to_csv(path, index=False)
    return df


def test_escaping_follows_the_influxdb_1x_rules():
    assert escape_measurement('m x,y=1"') == 'm\\ x\\,y\\=1\\"'
    assert escape_field_key('f 1,=x"') == 'f\\ 1\\,\\=x\\"'
    assert escape_tag('t a,g=k"') == 't\\ a\\,g\\=k"'  # a quote in a tag stays as it is
    assert escape_tag("a\\b") == "a\\b"  # a backslash is no escape character in 1.x
    assert escape_string('a "q" \\ b') == '"a \\"q\\" \\\\ b"'
    assert line("m", {"b": "2", "a": "1", "c": ""}, [("f", "1i")], 7) == "m,a=1,b=2 f=1i 7"
    # a backslash at the end or before an escaped character cannot be told apart
    for bad in ("ends\\", "a\\,b", "a\\ b", 'a\\"b', "new\nline", "tab\tx", ""):
        with pytest.raises(LineProtocolError):
            escape_field_key(bad)
    with pytest.raises(LineProtocolError, match="control character"):
        escape_string("two\nlines")


def test_default_lines_are_the_ones_the_publisher_always_wrote(tmp_path):
    """No --profile: the credit-card points, byte for byte as influxdb-client's Point
    built them before profiles existed."""
    from test_publisher import make_csv

    path = tmp_path / "test.csv"
    df = make_csv(path, n=20)
    samples = load_samples(path, source="src a")
    assert samples.measurement == contract.INPUT_MEASUREMENT
    for i in range(len(df)):
        p = Point(contract.INPUT_MEASUREMENT).tag(contract.SOURCE_TAG, "src a")
        for name in contract.FEATURES:
            p.field(name, float(df[name][i]))
        p.field(contract.TXN_ID, df.txn_id[i])
        p.field(contract.LABEL, int(df.Class[i]))
        assert samples.line(i) == p.to_line_protocol()
    explicit = load_samples(path, source="src a", profile="creditcard")
    assert [explicit.line(i) for i in range(5)] == [samples.line(i) for i in range(5)]


def test_machine_failure_rows_become_typed_fields(tmp_path):
    path = tmp_path / "mf.csv"
    df = make_machine_failure(300, seed=5)
    df.to_csv(path, index=False)
    samples = load_samples(path, source="s", profile="machine_failure")
    prof = load_profile("machine_failure")
    assert len(samples) == len(df) and samples.ids == [str(u) for u in df.UDI]
    assert samples.field_names == sorted([*prof.feature_names, "UDI", "label"])
    row = samples.line(0)
    assert row.startswith("machine_readings,source=s ")
    assert f'Type="{df.Type[0]}"' in row
    assert f"Rotational\\ speed\\ [rpm]={df['Rotational speed [rpm]'][0]}i" in row
    assert f"Tool\\ wear\\ [min]={df['Tool wear [min]'][0]}i" in row
    assert f"label={df['Machine failure'][0]}i" in row
    for dropped in ("Product", "TWF", "HDF", "PWF", "OSF", "RNF"):
        assert dropped not in row


def test_unusable_rows_are_counted_and_columns_named(tmp_path, caplog):
    prof = load_profile_text(AWKWARD)
    path = tmp_path / "a.csv"
    df = awkward_csv(path, n=12).astype(object)
    df.loc[1, "Rotational speed, rpm"] = 1.5  # not a whole number
    df.loc[2, "Type = kind"] = ""  # a categorical needs a value
    df.loc[4, "Plant site"] = "ends with \\"  # would escape the separator
    df.loc[5, "Machine failure"] = 3
    df.to_csv(path, index=False)
    samples = load_samples(path, source="s", profile=prof)
    assert len(samples) == 8 and samples.skipped == 4
    assert "event=rows_skipped" in caplog.text and "'Rotational speed, rpm':1" in caplog.text
    df.drop(columns=["Type = kind"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks column.*Type = kind.*profile 'awkward'"):
        load_samples(path, source="s", profile=prof)


def test_a_name_that_line_protocol_cannot_carry_is_refused():
    with pytest.raises(DataError, match="ends with a backslash"):
        SampleSource(measurement="m", fields=[("bad\\", "float", [1.0])], ids=["1"], source="s")


@pytest.mark.slow
@pytest.mark.influxdb
def test_awkward_names_go_through_influxd_and_come_back_intact(influxdb, tmp_path):
    prof_path = tmp_path / "awkward.toml"
    prof_path.write_text(AWKWARD)
    prof = load_profile(prof_path)
    csv = tmp_path / "awkward.csv"
    df = awkward_csv(csv)
    db, rp, m = prof.database, prof.retention_policy, prof.measurement
    influxdb.create_database(db)
    influxdb.query(
        f"CREATE RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION 1w REPLICATION 1",
        post=True,
        epoch=None,
    )
    r = subprocess.run(
        [sys.executable, "-m", "publisher", "--profile", str(prof_path), "--csv", str(csv),
         "--influx-url", influxdb.url, "--rate", "0", "--count", str(len(df)),
         "--mode", "sequential", "--source", "pub one, a=b"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"produced={len(df)} written={len(df)} unsent=0" in r.stderr

    src = f"{ident(db)}.{ident(rp)}.{ident(m)}"
    (res,) = influxdb.query(f"SHOW FIELD KEYS FROM {src}", db=db)
    types = dict(res["series"][0]["values"])
    assert types == {
        "Air temperature [K]": "float",
        "Rotational speed, rpm": "integer",
        "Type = kind": "string",
        "O'Neil's index (a=b)": "float",
        "Row ID": "string",
        "failure flag": "integer",
        "Repair cost ($)": "float",
    }
    (res,) = influxdb.query(f"SHOW TAG KEYS FROM {src}", db=db)
    assert {v[0] for v in res["series"][0]["values"]} == {"Plant site", "source"}
    cols = ", ".join(ident(c) for c in types)
    rows = influxdb.rows(f"SELECT {cols}, {ident('Plant site')}, source FROM {src}", db=db)
    assert len(rows) == len(df)
    by_id = {row["Row ID"]: row for row in rows}
    for rec in df.to_dict("records"):
        got = by_id[rec["Row ID"]]
        assert got["Air temperature [K]"] == pytest.approx(rec["Air temperature [K]"], abs=0)
        assert got["Rotational speed, rpm"] == rec["Rotational speed, rpm"]
        assert got["Type = kind"] == rec["Type = kind"]
        assert got["O'Neil's index (a=b)"] == rec["O'Neil's index (a=b)"]
        assert got["failure flag"] == rec["Machine failure"]
        assert got["Repair cost ($)"] == rec["Repair cost ($)"]
        assert got["Plant site"] == rec["Plant site"]
        assert got["source"] == "pub one, a=b"


@pytest.mark.influxdb
def test_quotes_and_backslashes_in_names_survive_influxd(influxdb):
    """Names a profile would refuse, written through SampleSource: the escaping itself."""
    names = {
        "m": 'meas "q" \\x,y=1',
        "float": 'f "quoted" = 1',
        "int": "back\\slash, a=b",
        "string": "a\\b c",
        "tag": 't "k"\\1,x',
    }
    samples = SampleSource(
        measurement=names["m"],
        fields=[
            (names["float"], "float", [1.5]),
            (names["int"], "int", [3]),
            (names["string"], "string", ['x"y\\z, w=1']),
        ],
        ids=["1"],
        tags=[(names["tag"], ['v\\w "w" =2'])],
        source="s",
    )
    influxdb.create_database("d")
    writer = InfluxWriter(url=influxdb.url, database="d")
    try:
        writer.write((samples.line(0) + " 1\n").encode())
    finally:
        writer.close()
    (res,) = influxdb.query("SHOW MEASUREMENTS", db="d")
    assert res["series"][0]["values"] == [[names["m"]]]
    (row,) = influxdb.rows(f"SELECT * FROM {ident(names['m'])}", db="d")
    assert row[names["float"]] == 1.5 and row[names["int"]] == 3
    assert row[names["string"]] == 'x"y\\z, w=1'
    assert row[names["tag"]] == 'v\\w "w" =2'
    assert row[contract.SOURCE_TAG] == "s"
