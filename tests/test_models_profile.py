"""Profiles: round trips, every validation error a user can meet, inference from awkward
CSVs, and the ``python -m models profile`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.card import ModelCard
from models.data import load_csv, parse_columns
from models.profile import (
    Feature,
    Profile,
    ProfileError,
    infer_profile,
    load_profile,
    load_profile_text,
    profile_names,
)

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
name = "plant"

[influxdb]
database = "plant"
measurement = "readings"
scored_measurement = "readings_scored"

[columns]
id = "serial"
label = "failed"

[[features]]
name = "Air temperature [K]"
type = "float"

[[features]]
name = "Type"
type = "categorical"
levels = ["H", "L", "M"]

[alerts]
index = "plant-alerts"
"""


# -- round trips --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["creditcard", "machine_failure"])
def test_shipped_profiles_round_trip_through_toml(name, tmp_path):
    p = load_profile(name)
    assert p.path == ROOT / "profiles" / f"{name}.toml"
    again = load_profile_text(p.to_toml())
    assert again == p  # path is not compared
    written = p.write(tmp_path / "sub" / f"{name}.toml")
    assert load_profile(written) == p
    assert name in profile_names()


def test_creditcard_profile_is_the_data_contract():
    from models import contract

    p = load_profile()  # the default
    assert p.name == "creditcard"
    assert p.feature_names == contract.FEATURES
    assert (p.database, p.measurement, p.scored_measurement) == (
        contract.DATABASE,
        contract.INPUT_MEASUREMENT,
        contract.SCORED_MEASUREMENT,
    )
    assert (p.id, p.label, p.label_field, p.value, p.order) == (
        contract.TXN_ID,
        "Class",
        contract.LABEL,
        "Amount",
        "Time",
    )


def test_awkward_names_survive_a_round_trip(tmp_path):
    feats = (
        Feature("Air temperature [K]"),
        Feature("speed, rpm", "int"),
        Feature("a=b c"),
        Feature("Température °C"),
        Feature("colour", "categorical", ("blue", "red, dark", "x=y")),
    )
    p = Profile(
        name="awkward",
        database="my db",
        measurement="in m",
        scored_measurement="out,m",
        id="row id",
        label="is bad?",
        features=feats,
        drop=("notes [free]",),
        alert_index="awkward-alerts",
        message_fields=("row id", "speed, rpm"),
    )
    back = load_profile(p.write(tmp_path / "awkward.toml"))
    assert back == p
    assert back.feature("colour").levels == ("blue", "red, dark", "x=y")


def test_with_levels_and_the_card_section():
    p = load_profile_text(MINIMAL)
    q = p.with_levels({"Type": {"M", "L", "Z"}})
    assert q.feature("Type").levels == ("L", "M", "Z")
    assert q.feature("Air temperature [K]") == p.feature("Air temperature [K]")
    section = q.card_section()
    assert section["features"] == [
        {"name": "Air temperature [K]", "type": "float"},
        {"name": "Type", "type": "categorical", "levels": ["L", "M", "Z"]},
    ]
    assert (section["id"], section["label"]) == ("serial", "label")
    # what a model card needs to score raw values, without the profile file
    card = ModelCard(
        {
            "name": "plant",
            "version": 1,
            "features": q.feature_names,
            "threshold": 0.5,
            "artifact": {"file": "model.joblib", "sha256": "0" * 64},
            "profile": section,
        }
    )
    assert card.feature_types == ["float", "categorical"]
    assert card.categorical == {"Type": ("L", "M", "Z")}


# -- validation errors -----------------------------------------------------------------
NO_FEATURES = MINIMAL[: MINIMAL.index("[[features]]")] + MINIMAL[MINIMAL.index("[alerts]") :]


def _edit(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = [", "not valid TOML"),
        (_edit('name = "plant"', 'name = "Plant Data"'), "name: 'Plant Data' must be lowercase"),
        (_edit('database = "plant"\n', ""), "missing influxdb.database"),
        (_edit('index = "plant-alerts"', ""), "missing alerts.index"),
        (_edit('name = "plant"', 'name = "plant"\ncolour = 1'), "unknown key(s) colour"),
        (_edit('label = "failed"', 'label = "failed"\nlabels = "x"'), "[columns] has unknown"),
        (_edit('type = "float"', 'type = "double"'), "'double' must be one of float, int"),
        (_edit('levels = ["H", "L", "M"]', "levels = []"), "categorical 'Type' lists no level"),
        (_edit('levels = ["H", "L", "M"]', 'levels = ["H", "H"]'), "a level is listed twice"),
        (_edit('levels = ["H", "L", "M"]', 'levels = "HLM"'), "levels must be a list"),
        (
            _edit('type = "float"', 'type = "float"\nlevels = ["a"]'),
            "only a categorical feature has levels",
        ),
        (_edit('name = "Type"', 'name = "Air temperature [K]"'), "is named twice"),
        (_edit('id = "serial"', 'id = "Type"'), "'Type' is also a feature; an id is never"),
        (_edit('label = "failed"', 'label = "Type"'), "is also a feature (that leaks it)"),
        (_edit('label = "failed"', 'label = "failed"\ntags = ["Type"]'), "columns.tags"),
        (_edit('label = "failed"', 'label = "failed"\ndrop = ["serial"]'), "dropped but also"),
        (_edit('label = "failed"', 'label = "failed"\nvalue = "Type"'), "a value must be numeric"),
        (_edit('label = "failed"', 'label = "failed"\ntags = "a"'), "columns.tags must be a list"),
        (_edit('name = "Type"', 'name = "score"'), "'score' is written by the scoring pipeline"),
        (_edit('id = "serial"', 'id = "time"'), "'time' is written by the scoring pipeline"),
        (
            _edit('index = "plant-alerts"', 'index = "plant-alerts"\nmessage_fields = ["nope"]'),
            "'nope' is not a feature, the id, a tag or the label",
        ),
        (_edit('index = "plant-alerts"', 'index = "Plant Alerts"'), "is not an Elasticsearch"),
        (
            _edit('scored_measurement = "readings_scored"', 'scored_measurement = "readings"'),
            "must differ from the input measurement",
        ),
        (_edit('name = "Type"', 'name = " Type"'), "without surrounding spaces"),
        (_edit('name = "Type"', 'name = "Ty\\"pe"'), "a quote or a backslash"),
        (
            NO_FEATURES.replace('name = "plant"', 'name = "plant"\nfeatures = "Type"'),
            "'features' has the wrong type",
        ),  # fmt: skip
        (NO_FEATURES, "names no feature"),
    ],
    ids=lambda v: v if len(v) < 40 and "\n" not in v else None,
)
def test_validation_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "plant.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_unknown_profile_lists_the_known_ones(tmp_path):
    with pytest.raises(ProfileError, match=r"no profile 'nope' .*known: creditcard, machine_fa"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "missing.toml")


# -- inference ---------------------------------------------------------------------------
@pytest.fixture
def awkward_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.1).astype(int)
    df = pd.DataFrame(
        {
            "row id": [f"r{i}" for i in range(n)],
            "Air temperature [K]": np.round(300 + rng.normal(size=n) + 2 * y, 2),
            "speed, rpm": rng.integers(1000, 2000, n),
            "a=b": np.round(rng.normal(size=n), 3),
            "colour": rng.choice(["red", "green", "blue"], n),
            "code": rng.choice([1, 2, 3], n),
            "notes": [f"free text {i}" for i in range(n)],
            "const": 7,
            "empty": "",
            "label": y,
        }
    )
    path = tmp_path / "awkward data.csv"
    df.to_csv(path, index=False)
    return path


def test_infer_names_every_unusable_column_at_once(awkward_csv):
    with pytest.raises(ProfileError) as err:
        infer_profile(awkward_csv, name="aw", label="label", id="row id")
    msg = str(err.value)
    assert str(awkward_csv) in msg
    assert "'notes' is text with 400 distinct values" in msg and "--drop" in msg
    assert "'const' is constant (7)" in msg
    assert "'empty' is empty" in msg


def test_infer_types_levels_and_awkward_names(awkward_csv, tmp_path):
    p = infer_profile(
        awkward_csv,
        name="aw",
        label="label",
        id="row id",
        drop=["notes", "const", "empty"],
        categorical=["code"],
    )
    types = {f.name: f.type for f in p.features}
    assert types == {
        "Air temperature [K]": "float",
        "speed, rpm": "int",
        "a=b": "float",
        "colour": "categorical",
        "code": "categorical",
    }
    assert p.feature("colour").levels == ("blue", "green", "red")
    assert p.feature("code").levels == ("1", "2", "3")
    assert (p.id, p.label, p.drop) == ("row id", "label", ("notes", "const", "empty"))
    # what is inferred loads back, and reads the very file it came from
    back = load_profile(p.write(tmp_path / "aw.toml"))
    assert back == p
    df = load_csv(awkward_csv, profile=back)
    assert list(df.columns) == [*back.feature_names, "label", "row id"]
    assert df["code"].tolist()[:3] == [str(v) for v in pd.read_csv(awkward_csv)["code"][:3]]


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("a,b,label\n1,2,0\n", {"label": "nope"}, "--label 'nope' is not a column"),
        ("a,b,label\n1,2,2\n3,4,0\n", {}, "label 'label' must hold 0 and 1 only"),
        ("id,a,label\nx,1,0\nx,2,1\n", {"id": "id"}, "id 'id' is not unique ('x' repeats)"),
        ("a,a,label\n1,2,0\n", {}, "duplicated column(s) ['a']"),
        ("a,,label\n1,2,0\n", {}, "column(s) [2] of the header have no name"),
        ("a,b,label\n", {}, "no data rows"),
        ("", {}, "the file is empty"),
        ("a,b,label\n1,2,0\n,3,1\n", {}, "'a' has 1 empty value(s), first at line 3"),
        ("a,b,label\n1,x,0\n2,,1\n", {}, "'b' has 1 empty value(s), first at line 3"),
        ("a,b,label\n1,x,0\n2,x,1\n", {}, "'b' holds one value only ('x')"),
        ("a,b,label\n1,inf,0\n2,3,1\n", {}, "'b' holds infinite values"),
        ("a,b,label\n1,2,0\n", {"drop": ["zz"]}, "--drop names unknown column(s) ['zz']"),
        ("a,b,label\n1,x,0\n2,y,1\n", {"value": "b"}, "'b' is text, but --value needs"),
        ("time,b,label\n1,2,0\n2,3,1\n", {}, "'time' is written by the scoring pipeline"),
    ],
)
def test_infer_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(ProfileError) as err:
        infer_profile(path, name="x", **{"label": "label", **kwargs})
    assert message in str(err.value)


def test_infer_reads_a_bom_and_strips_header_spaces(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffspeed , temp [C],label\n1,2.5,0\n2,3.5,1\n3,1.5,0\n".encode())
    p = infer_profile(path, name="bom", label="label")
    assert p.feature_names == ["speed", "temp [C]"]
    assert [f.type for f in p.features] == ["int", "float"]
    assert len(load_csv(path, profile=p)) == 3


def test_parse_columns_keeps_names_with_commas():
    known = ["speed, rpm", "a", "b"]
    assert parse_columns(None) == []
    assert parse_columns("a,b") == ["a", "b"]
    assert parse_columns(["speed, rpm"], known) == ["speed, rpm"]  # one known name
    assert parse_columns(['"speed, rpm",a', "b"], known) == ["speed, rpm", "a", "b"]
    assert parse_columns(["a, b", "a"]) == ["a", "b"]  # spaces after commas, no repeats


# -- the command line ---------------------------------------------------------------------
@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def _cli(capsys):
    """``python -m models profile ...`` in this process (its exit status and output)."""
    from models.__main__ import main

    def run(*args, cwd=None) -> _Run:
        capsys.readouterr()
        rc = main(["profile", *args])
        out = capsys.readouterr()
        return _Run(rc, out.out, out.err)

    return run


def test_cli_process_exit_codes(tmp_path):
    # the real entry point, once each way
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "models", "profile", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = run("validate", "machine_failure")
    assert r.returncode == 0 and r.stdout.startswith("ok: profile machine_failure")
    r = run("validate", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: no profile 'nope'")
    assert "Traceback" not in r.stderr


def test_cli_infer_show_validate(awkward_csv, tmp_path, _cli):
    out = tmp_path / "profiles" / "aw.toml"
    r = _cli("infer", "--csv", str(awkward_csv), "--label", "label", "--id", "row id",
             "--name", "aw", "-o", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "'notes'" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    r = _cli("infer", "--csv", str(awkward_csv), "--label", "label", "--id", "row id",
             "--drop", "notes,const", "--drop", "empty", "--categorical", "code",
             "--name", "aw", "-o", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "5 features (2 float, 1 int, 2 categorical)" in r.stdout
    p = load_profile(out)
    assert p.drop == ("notes", "const", "empty")
    # never replaces a file unless told to
    r = _cli("infer", "--csv", str(awkward_csv), "--label", "label", "--drop", "notes,const,empty",
             "--name", "aw", "-o", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    # without -o the TOML goes to stdout
    r = _cli("infer", "--csv", str(awkward_csv), "--label", "label", "--id", "row id",
             "--drop", "notes,const,empty", "--categorical", "code", "--name", "aw", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and load_profile_text(r.stdout) == p

    r = _cli("show", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"speed, rpm"' in r.stdout  # quoted in lists: the name holds a comma
    assert "colour" in r.stdout and "categorical  blue, green, red" in r.stdout
    r = _cli("show", "machine_failure", "--json", cwd=tmp_path)
    shown = json.loads(r.stdout)
    assert shown["columns"]["id"] == "UDI" and shown["features"][0]["levels"] == ["H", "L", "M"]
    r = _cli("show", "machine_failure", "--toml", cwd=tmp_path)
    assert load_profile_text(r.stdout) == load_profile("machine_failure")

    r = _cli("validate", str(out), "--csv", str(awkward_csv), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok: profile aw" in r.stdout and "400 rows" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(out.read_text().replace('type = "int"', 'type = "integer"'))
    r = _cli("validate", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "'integer' must be one of" in r.stderr and str(bad) in r.stderr
    r = _cli("validate", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "no profile 'nope'" in r.stderr
    # a CSV that does not match the profile
    df = pd.read_csv(awkward_csv)
    df.loc[5, "colour"] = ""
    df.to_csv(tmp_path / "worse.csv", index=False)
    r = _cli("validate", str(out), "--csv", str(tmp_path / "worse.csv"), cwd=tmp_path)
    assert r.returncode == 2 and "column colour has 1 empty value(s)" in r.stderr
    assert "line 7" in r.stderr


def test_profile_actions_are_one_table():
    from models.__main__ import PROFILE_COMMANDS, build_parser

    assert set(PROFILE_COMMANDS) >= {"infer", "show", "validate"}
    args = build_parser().parse_args(["profile", "show", "creditcard"])
    assert args.command == "profile" and args.action == "show"
