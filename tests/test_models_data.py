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
