"""Datasets: schema validation, the synthetic generator, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.contract import FEATURES, TXN_ID
from models.data import (
    COLUMNS,
    X_y,
    load_creditcard_csv,
    load_split,
    make_synthetic,
    prepare_splits,
    split_by_time,
    split_stratified,
)
from models.errors import DataError, SchemaError


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return make_synthetic(20_000, seed=3)


def test_synthetic_schema_and_character(small):
    assert list(small.columns) == COLUMNS
    assert small["Class"].isin([0, 1]).all()
    rate = small["Class"].mean()
    assert 0.0012 < rate < 0.0025
    t = small["Time"].to_numpy()
    assert np.all(np.diff(t) >= 0) and t.max() > 150_000 and t.max() <= 172_800
    amount = small["Amount"]
    assert amount.min() > 0 and amount.max() > 20 * amount.median()  # heavy tail
    # fraud differs in the signal features only, and overlaps with normal traffic
    fraud, normal = small[small.Class == 1], small[small.Class == 0]
    gap = (fraud[FEATURES].mean() - normal[FEATURES].mean()).abs() / normal[FEATURES].std()
    assert gap["V14"] > 1.0 and gap["V12"] > 1.0
    assert gap["V2"] < 0.5 and gap["V28"] < 0.5
    assert (fraud["V14"] > normal["V14"].quantile(0.25)).any()  # some fraud looks normal


def test_synthetic_is_deterministic_by_seed():
    a = make_synthetic(5000, seed=7)
    b = make_synthetic(5000, seed=7)
    c = make_synthetic(5000, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_stratified_split_reproducible_and_stratified(small):
    s1 = split_stratified(small, seed=42)
    s2 = split_stratified(small, seed=42)
    s3 = split_stratified(small, seed=43)
    for a, b in zip(s1, s2, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not s1.test[TXN_ID].equals(s3.test[TXN_ID])
    ids = pd.concat([p[TXN_ID] for p in s1])
    assert ids.is_unique and len(ids) == len(small)
    assert ids.str.match(r"^t\d{6}$").all()
    assert len(s1.test) == pytest.approx(0.15 * len(small), abs=2)
    assert len(s1.validation) == pytest.approx(0.15 * len(small), abs=2)
    pos = small["Class"].sum()
    for part, frac in ((s1.train, 0.7), (s1.validation, 0.15), (s1.test, 0.15)):
        assert part["Class"].sum() == pytest.approx(frac * pos, abs=1.5)
    # the same row keeps its id: ids are row positions of the source frame
    row = s1.test.iloc[0]
    src = small.iloc[int(row[TXN_ID][1:])]
    assert np.allclose(src[COLUMNS].to_numpy(float), row[COLUMNS].to_numpy(float))


def test_time_split_is_ordered(small):
    s = split_by_time(small)
    assert s.train["Time"].max() <= s.validation["Time"].min()
    assert s.validation["Time"].max() <= s.test["Time"].min()
    assert sum(len(p) for p in s) == len(small)
    assert all(p["Class"].sum() > 0 for p in s)


@pytest.mark.slow
def test_prepare_splits_writes_files_and_prefers_creditcard_csv(tmp_path):
    s = prepare_splits(tmp_path, synthetic_rows=3000, seed=1)
    for name, part in zip(("train", "validation", "test"), s, strict=True):
        back = load_split(tmp_path / f"{name}.csv")
        assert list(back.columns) == [*COLUMNS, TXN_ID]
        np.testing.assert_array_equal(X_y(back)[0], X_y(part)[0])
        assert back[TXN_ID].tolist() == part[TXN_ID].tolist()
    assert "synthetic" in s.source
    # a user-provided data/creditcard.csv is used when present
    make_synthetic(2000, seed=9).to_csv(tmp_path / "creditcard.csv", index=False)
    s2 = prepare_splits(tmp_path)
    assert s2.source.endswith("creditcard.csv")
    assert sum(len(p) for p in s2) == 2000


def test_X_y_order_and_types(small):
    shuffled = small[list(reversed(small.columns))]
    X, y = X_y(shuffled)
    assert X.dtype == np.float64 and X.shape == (len(small), 30)
    np.testing.assert_array_equal(X, small[FEATURES].to_numpy())
    assert y.dtype.kind == "i"


def _write(tmp_path, df: pd.DataFrame, name="bad.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.drop(columns=["V7", "Amount"]), "missing columns: V7, Amount"),
        (lambda d: d.assign(Merchant="x"), "unexpected columns: Merchant"),
        (
            lambda d: d.assign(V3=d["V3"].astype(object).where(d.index != 4, "abc")),
            "column V3 has 1 non-numeric value(s); first at line 6: 'abc'",
        ),
        (
            lambda d: d.assign(Amount=d["Amount"].where(d.index != 2)),
            "column Amount has 1 missing value(s) (NaN/empty); first at line 4",
        ),
        (
            lambda d: d.assign(Class=d["Class"].where(d.index != 5, 2)),
            "column Class must be 0 or 1; found [2.0]",
        ),
        (
            lambda d: d.assign(V1=d["V1"].where(d.index != 0, np.inf)),
            "column V1 has 1 infinite value(s); first at line 2",
        ),
        (lambda d: d.iloc[:0], "header only, no data rows"),
        (lambda d: d.rename(columns={"V2": "V1"}), "duplicated columns: V1"),
    ],
    ids=["missing", "extra", "non-numeric", "nan", "class", "inf", "empty", "duplicated"],
)
def test_schema_errors_say_what_is_wrong(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(make_synthetic(20, seed=0)))
    with pytest.raises(SchemaError) as err:
        load_creditcard_csv(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_schema_error_on_empty_file_and_missing_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(SchemaError, match="file is empty"):
        load_creditcard_csv(p)
    with pytest.raises(DataError, match="no such file"):
        load_creditcard_csv(tmp_path / "nope.csv")


def test_valid_file_loads_in_kaggle_order(tmp_path):
    df = make_synthetic(50, seed=2)
    p = _write(tmp_path, df[list(reversed(COLUMNS))])
    back = load_creditcard_csv(p)
    assert list(back.columns) == COLUMNS
    np.testing.assert_allclose(back[FEATURES].to_numpy(), df[FEATURES].to_numpy())


def test_split_needs_enough_positives():
    df = make_synthetic(100, seed=0)  # a single fraud
    with pytest.raises(DataError, match="at least 3 rows of each class"):
        split_stratified(df)


# -- any data set, by profile --------------------------------------------------------------
from models.data import (  # noqa: E402
    feature_matrix,
    load_csv,
    synthetic_frame,
    validate_frame,
    write_splits,
)
from models.profile import Feature, Profile, load_profile  # noqa: E402
from models.synthetic import make_machine_failure  # noqa: E402


@pytest.fixture(scope="module")
def machine() -> Profile:
    return load_profile("machine_failure")


@pytest.fixture
def machine_csv(tmp_path):
    path = tmp_path / "ai4i.csv"
    make_machine_failure(300, seed=4).to_csv(path, index=False)
    return path


def test_profile_load_drops_leaky_columns_and_types_each_feature(machine, machine_csv):
    df = load_csv(machine_csv, profile=machine)
    # the failure modes and Product ID are dropped; the id comes last, as txn_id does
    assert list(df.columns) == [*machine.feature_names, "Machine failure", "UDI"]
    assert df["Type"].dtype == object and set(df["Type"]) <= {"L", "M", "H"}
    assert df["Rotational speed [rpm]"].dtype == np.int64
    assert df["Torque [Nm]"].dtype == np.float64
    assert df["Machine failure"].dtype == np.int64
    assert df["UDI"].iloc[0] == "1"  # ids are strings, as written
    raw = pd.read_csv(machine_csv)
    np.testing.assert_allclose(df["Torque [Nm]"], raw["Torque [Nm]"])


def _mutated(path, mutate) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    out = mutate(df)
    (df if out is None else out).to_csv(path, index=False)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.drop(columns=["Torque [Nm]"]), "missing columns: 'Torque [Nm]'"),
        (
            lambda d: d.insert(3, "Shift, team", "a"),
            "unexpected columns: 'Shift, team' (profile machine_failure: expected Type,",
        ),
        (
            lambda d: d.loc.__setitem__((4, "Air temperature [K]"), "hot"),
            "column 'Air temperature [K]' has 1 non-numeric value(s); first at line 6: 'hot'",
        ),
        (
            lambda d: d.loc.__setitem__((2, "Tool wear [min]"), "12.5"),
            "column 'Tool wear [min]' is an int feature but has 1 value(s) that are not "
            "integers; first at line 4: 12.5",
        ),
        (
            lambda d: d.loc.__setitem__((7, "Type"), " "),
            "column Type has 1 empty value(s) (a categorical feature needs a level); first at "
            "line 9",
        ),
        (
            lambda d: d.loc.__setitem__((3, "Machine failure"), "2"),
            "column 'Machine failure' must be 0 or 1; found [2.0] (1 row(s), first at line 5)",
        ),
        (
            lambda d: d.loc.__setitem__((9, "UDI"), "3"),
            "column UDI must be unique; '3' repeats (lines 4 and 11)",
        ),
        (
            lambda d: d.loc.__setitem__((5, "UDI"), ""),
            "column UDI has 1 empty value(s) (every row needs an id); first at line 7",
        ),
        (
            lambda d: d.loc.__setitem__((1, "Process temperature [K]"), ""),
            "column 'Process temperature [K]' has 1 missing value(s) (NaN/empty); first at line 3",
        ),
    ],
    ids=["missing", "unknown", "float", "int", "categorical", "label", "dup-id", "no-id", "nan"],
)
def test_profile_schema_errors_name_column_and_line(machine, machine_csv, mutate, message):
    _mutated(machine_csv, mutate)
    with pytest.raises(SchemaError) as err:
        load_csv(machine_csv, profile=machine)
    assert message in str(err.value)
    assert str(machine_csv) in str(err.value)


def test_unknown_category_is_data_not_an_error(machine, machine_csv):
    _mutated(machine_csv, lambda d: d.loc.__setitem__((0, "Type"), "X (new line)"))
    df = load_csv(machine_csv, profile=machine)
    assert df["Type"].iloc[0] == "X (new line)"


def test_dropped_columns_are_optional(machine, machine_csv):
    _mutated(machine_csv, lambda d: d.drop(columns=["TWF", "Product ID"]))
    assert len(load_csv(machine_csv, profile=machine)) == 300


def _awkward_profile(id_column: str | None) -> Profile:
    return Profile(
        name="awkward",
        database="awkward",
        measurement="points",
        scored_measurement="points_scored",
        id=id_column,
        label="bad?",
        features=(
            Feature("Air temperature [K]"),
            Feature("speed, rpm", "int"),
            Feature("a=b"),
            Feature("colour", "categorical", ("blue", "red, dark")),
        ),
        tags=("site name",),
        drop=("notes",),
        value="cost [EUR]",
        order="t (s)",
        alert_index="awkward-alerts",
    )


def _awkward_frame(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, 20, replace=False)] = 1
    return pd.DataFrame(
        {
            "t (s)": rng.permutation(n).astype(float),
            "Air temperature [K]": np.round(rng.normal(300, 2, n), 3),
            "speed, rpm": rng.integers(1000, 2000, n),
            "a=b": rng.normal(size=n),
            "colour": rng.choice(["blue", "red, dark", 'say "hi"'], n),
            "site name": rng.choice(["north", "south east"], n),
            "notes": "free, text",
            "cost [EUR]": np.round(rng.uniform(1, 100, n), 2),
            "bad?": y,
        }
    )


def test_ids_are_generated_when_the_profile_has_none(tmp_path):
    p = _awkward_profile(None)
    path = tmp_path / "a.csv"
    _awkward_frame().to_csv(path, index=False)
    df = load_csv(path, profile=p)
    assert "id" not in df.columns  # nothing to read...
    s = split_stratified(df, seed=1, profile=p)
    ids = pd.concat([part["id"] for part in s])  # ...so split files number the rows
    assert ids.is_unique and ids.str.match(r"^t\d{6}$").all()


def test_split_files_keep_awkward_names_through_csv_round_trips(tmp_path):
    p = _awkward_profile(None)
    src = tmp_path / "a.csv"
    _awkward_frame().to_csv(src, index=False)
    s = prepare_splits(tmp_path / "data", csv=src, seed=2, profile=p)
    header = (tmp_path / "data" / "train.csv").read_text().splitlines()[0]
    assert header == (
        'Air temperature [K],"speed, rpm",a=b,colour,site name,cost [EUR],t (s),bad?,id'
    )
    for name, part in zip(("train", "validation", "test"), s, strict=True):
        back = load_split(tmp_path / "data" / f"{name}.csv", profile=p)
        pd.testing.assert_frame_equal(back, part)
        # and once more: written by write_splits from what was read
    write_splits(type(s)(*[load_split(tmp_path / "data" / f"{n}.csv", profile=p)
                           for n in ("train", "validation", "test")], profile=p),
                 tmp_path / "again")  # fmt: skip
    for name in ("train", "validation", "test"):
        assert (tmp_path / "again" / f"{name}.csv").read_bytes() == (
            tmp_path / "data" / f"{name}.csv"
        ).read_bytes()
    assert set(s.test["colour"]) <= {"blue", "red, dark", 'say "hi"'}
    assert "notes" not in s.test.columns
    # the source file itself still loads: its dropped column is ignored
    assert "notes" in pd.read_csv(src).columns


def test_time_split_follows_the_profile_order_column(tmp_path):
    p = _awkward_profile(None)
    df = validate_frame(_awkward_frame(400), profile=p)
    s = split_by_time(df, profile=p)
    assert s.train["t (s)"].max() < s.validation["t (s)"].min()
    assert s.validation["t (s)"].max() < s.test["t (s)"].min()
    # no order column: file order
    q = Profile(**{**p.__dict__, "order": None, "path": None})
    s2 = split_by_time(df, profile=q)
    assert s2.train.equals(df.iloc[: len(s2.train)].assign(id=s2.train["id"]))


def test_X_y_by_profile(machine, machine_csv):
    df = load_csv(machine_csv, profile=machine)
    X, y = X_y(df.iloc[:, ::-1], profile=machine)  # column order of the frame does not matter
    assert isinstance(X, pd.DataFrame) and list(X.columns) == machine.feature_names
    assert X["Type"].dtype == object and isinstance(X["Type"].iloc[0], str)
    assert all(X[c].dtype == np.float64 for c in machine.feature_names if c != "Type")
    np.testing.assert_array_equal(y, df["Machine failure"].to_numpy())
    # a numeric-only profile gives the float array credit cards always had
    cards = load_profile("creditcard")
    small = make_synthetic(50, seed=1)
    Xc, yc = X_y(small, profile=cards)
    np.testing.assert_array_equal(Xc, X_y(small)[0])
    with pytest.raises(SchemaError, match="categorical features Type cannot go into a float"):
        feature_matrix(df, profile=machine, as_frame=False)


def test_synthetic_data_per_profile(machine):
    df = synthetic_frame(500, seed=3, profile=machine)
    assert list(df.columns) == [*machine.feature_names, "Machine failure", "UDI"]
    assert 0 < df["Machine failure"].mean() < 0.15
    assert synthetic_frame(200, seed=3).equals(make_synthetic(200, seed=3))
    with pytest.raises(DataError, match="profile 'awkward' has no synthetic generator"):
        synthetic_frame(100, profile=_awkward_profile(None))


def test_a_profile_gets_its_own_default_csv(tmp_path, machine):
    make_machine_failure(400, seed=1).to_csv(tmp_path / "machine_failure.csv", index=False)
    make_synthetic(3000, seed=1).to_csv(tmp_path / "creditcard.csv", index=False)
    s = prepare_splits(tmp_path, profile=machine)
    assert s.source.endswith("machine_failure.csv") and s.profile is machine
    assert prepare_splits(tmp_path).source.endswith("creditcard.csv")


def test_unlabelled_profile_cannot_be_split(tmp_path):
    p = Profile(**{**_awkward_profile(None).__dict__, "label": None, "path": None})
    df = validate_frame(_awkward_frame().drop(columns=["bad?"]), profile=p)
    with pytest.raises(DataError, match="names no label column"):
        split_stratified(df, profile=p)


def test_make_synthetic_fraud_rate():
    df = make_synthetic(5_400, seed=1, fraud_rate=492 / 5_400)
    assert int(df["Class"].sum()) == 492
    with pytest.raises(DataError, match="fraud_rate"):
        make_synthetic(100, fraud_rate=1.5)
