"""A data set of the user's own, end to end through the command lines: a CSV whose column
names need escaping everywhere (spaces, brackets, commas, ``=``, quotes, ``$``) becomes a
profile (``models profile infer``), a model (``models train --profile``), points in a real
``influxd`` (``publisher --profile``), scored points from the agent (``udf_agent`` on a
real Unix socket, sent the stored points the way Kapacitor forwards them) and scored rows
written back to ``influxd`` and read again, every name intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agent_helpers import AgentProcess, Client, close_clients
from test_publisher_profile import ident

from models import contract
from models.backends import load_backend
from models.profile import load_profile
from models.registry import Registry
from models.train import _backend_batch
from publisher.lineprotocol import escape_string, format_bool, format_float, format_int, line
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame
from udf_agent.scoring import parse_top_features

pytestmark = [pytest.mark.slow, pytest.mark.influxdb]

ROOT = Path(__file__).resolve().parents[1]
N = 900
ID = "Row ID"
LABEL = "Machine failure"
FEATURES = ["Air temperature [K]", "Rotational speed, rpm", "Type = kind", "O'Neil's index (a=b)"]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


def _awkward(path: Path, seed: int = 5) -> pd.DataFrame:
    """Rows whose label depends on the features (so a model has something to learn)."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(300, 2, N).round(3)
    speed = rng.integers(1200, 2800, N)
    kind = rng.choice(["H", "L", "M"], N, p=[0.2, 0.5, 0.3])
    index = rng.normal(size=N).round(4)
    logit = 1.4 * (temp - 300) / 2 + 1.2 * index + (kind == "L") * 0.8 - 2.4
    label = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)
    df = pd.DataFrame(
        {
            ID: [f"r {i}, #{i}=x" for i in range(N)],
            "Product ID": [f"P{i}" for i in range(N)],
            FEATURES[0]: temp,
            FEATURES[1]: speed,
            FEATURES[2]: kind,
            FEATURES[3]: index,
            LABEL: label,
            "Repair cost ($)": rng.uniform(0, 500, N).round(2),
            "Plant site": rng.choice(["north, hall=2", "south side"], N),
        }
    )
    df.to_csv(path, index=False)
    return df


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"{args[:3]} exited {r.returncode}: {r.stderr[-3000:]}"
    return r


def _kapacitor_point(row: dict, types: dict[str, str], prof) -> pb.Point:
    """A stored row as Kapacitor forwards it to a stream UDF: the field types InfluxDB
    reports, the tags as tags, the time in nanoseconds."""
    p = pb.Point()
    p.time = int(row["time"])
    p.name = prof.measurement
    p.database = prof.database
    p.retentionPolicy = prof.retention_policy
    for t in (*prof.tags, contract.SOURCE_TAG):
        if row.get(t) is not None:
            p.tags[t] = str(row[t])
    for name, kind in types.items():
        v = row.get(name)
        if v is None:
            continue
        if kind == "float":
            p.fieldsDouble[name] = float(v)
        elif kind == "integer":
            p.fieldsInt[name] = int(v)
        else:
            p.fieldsString[name] = str(v)
    return p


def _fields(p: pb.Point) -> list[tuple[str, str]]:
    """A scored point's fields in line protocol, as Kapacitor's InfluxDBOut writes them."""
    out = [(k, format_float(v)) for k, v in p.fieldsDouble.items()]
    out += [(k, format_int(v)) for k, v in p.fieldsInt.items()]
    out += [(k, format_bool(v)) for k, v in p.fieldsBool.items()]
    out += [(k, escape_string(v)) for k, v in p.fieldsString.items()]
    return out


def test_a_csv_with_awkward_names_from_training_to_scored_rows_in_influxdb(influxdb, tmp_path):
    csv = tmp_path / "plant readings.csv"
    df = _awkward(csv)
    prof_path = tmp_path / "plant.toml"
    _run(
        "-m", "models", "profile", "infer", "--csv", str(csv), "--name", "plant",
        "--label", LABEL, "--id", ID, "--drop", "Product ID", "--tags", "Plant site",
        "--categorical", "Type = kind", "--value", "Repair cost ($)",
        "--database", "plant db, north", "-o", str(prof_path),
        cwd=ROOT,
    )  # fmt: skip
    prof = load_profile(prof_path)
    # CSV order, names untouched; the value column is a feature, as Amount is for cards
    assert prof.feature_names == [*FEATURES, "Repair cost ($)"]
    assert [f.type for f in prof.features] == ["float", "int", "categorical", "float", "float"]

    reg = tmp_path / "registry"
    _run(
        "-m", "models", "train", "--profile", str(prof_path), "--csv", str(csv),
        "--candidates", "lr_balanced", "--trials", "1", "--cv", "3", "--promote", "production",
        "--registry", str(reg), "--data-dir", str(tmp_path / "data"),
        "--runs-dir", str(tmp_path / "runs"),
        cwd=ROOT,
    )  # fmt: skip
    card = Registry(reg).card("plant", "production")
    assert card.features == prof.feature_names and card.categorical == {
        "Type = kind": ("H", "L", "M")
    }

    db, rp = prof.database, prof.retention_policy
    influxdb.create_database(db)
    if rp != "autogen":
        influxdb.query(
            f"CREATE RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION 1w REPLICATION 1",
            post=True,
            epoch=None,
        )
    _run(
        "-m", "publisher", "--profile", str(prof_path), "--csv", str(csv),
        "--influx-url", influxdb.url, "--rate", "0", "--count", str(N), "--mode", "sequential",
        cwd=ROOT,
    )  # fmt: skip
    src = f"{ident(db)}.{ident(rp)}.{ident(prof.measurement)}"
    (res,) = influxdb.query(f"SHOW FIELD KEYS FROM {src}", db=db)
    types = dict(res["series"][0]["values"])
    stored = influxdb.rows(f"SELECT * FROM {src}", db=db)
    assert len(stored) == N

    # a level the model never saw, as a live stream may bring
    stored[0] = dict(stored[0], **{"Type = kind": "Z"})
    with AgentProcess(tmp_path, reg) as agent:
        client = Client(agent.socket, timeout=60)
        init = client.init({"model": "plant", "explain": 2})
        assert init.success, init.error
        for row in stored:
            point = _kapacitor_point(row, types, prof)
            client.send(encode_frame(pb.Request(point=point).SerializeToString()))
        scored = client.recv_points(N)

    assert all(contract.SCORE_ERROR not in p.fieldsString for p in scored)
    lines = "\n".join(
        line(prof.scored_measurement, dict(p.tags), _fields(p), p.time) for p in scored
    )
    influxdb.write(db, lines)
    dst = f"{ident(db)}.{ident(rp)}.{ident(prof.scored_measurement)}"
    back = influxdb.rows(f"SELECT * FROM {dst}", db=db)
    assert len(back) == N

    # names intact: every feature, the id, the tag; the scores are the model's own
    by_id = {r[ID]: r for r in back}
    assert set(by_id) == set(df[ID])
    backend = load_backend(Registry(reg), "plant", "production")
    frame = df.set_index(ID).loc[[r[ID] for r in stored]].reset_index()
    frame.loc[0, "Type = kind"] = "Z"
    expected = backend.score(_backend_batch(frame, card))
    got = np.array([by_id[i][contract.SCORE] for i in frame[ID]])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    for rec in frame.head(50).to_dict("records"):
        out = by_id[rec[ID]]
        assert out["Plant site"] == rec["Plant site"]
        assert out["Rotational speed, rpm"] == rec["Rotational speed, rpm"]
        assert out["O'Neil's index (a=b)"] == pytest.approx(rec["O'Neil's index (a=b)"], abs=0)
        assert out["Type = kind"] == rec["Type = kind"]
        assert out[prof.label_field] == rec[LABEL]
    # the anomalies carry their explanation, in the features' own names
    flagged = [r for r in back if r[contract.IS_ANOMALY]]
    assert flagged, "a model at its F1 threshold flags some rows"
    named = {name for r in flagged for name, _ in parse_top_features(r[contract.TOP_FEATURES])}
    assert named and named <= set(prof.feature_names)
