"""Datasets: the Kaggle/ULB credit-card file, a seeded synthetic twin, and splits.

The real file (https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud) has the
columns ``Time, V1..V28, Amount, Class``: ``Time`` in seconds from the first
transaction (about two days), ``V1..V28`` PCA components, ``Amount`` in euros and
``Class`` 1 for fraud (0.17 %). Any CSV with that schema works; split files add a
unique string ``txn_id`` per row.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import FEATURES, TXN_ID
from .errors import DataError, SchemaError

__all__ = [
    "CLASS",
    "COLUMNS",
    "SPLIT_FILES",
    "Splits",
    "X_y",
    "load_creditcard_csv",
    "load_split",
    "make_synthetic",
    "prepare_splits",
    "split_by_time",
    "split_stratified",
    "write_splits",
]

log = logging.getLogger("models.data")

CLASS = "Class"
COLUMNS = [*FEATURES, CLASS]
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"}

#: positive rate of the real file (492 / 284,807)
FRAUD_RATE = 492 / 284_807
TWO_DAYS_S = 172_792.0


@dataclass(frozen=True)
class Splits:
    """Train, validation and test frames (each with a ``txn_id`` column)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    #: where the rows came from (a path or the synthetic generator's arguments)
    source: str = ""

    def __iter__(self):
        return iter((self.train, self.validation, self.test))

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            part: {
                "rows": len(df),
                "positives": int(df[CLASS].sum()),
                "positive_rate": float(df[CLASS].mean()) if len(df) else 0.0,
            }
            for part, df in zip(("train", "validation", "test"), self, strict=True)
        }


# -- loading -----------------------------------------------------------------
def _line(idx: int) -> int:
    # 0-based data row -> 1-based line number in the file (line 1 is the header)
    return int(idx) + 2


def load_creditcard_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a credit-card CSV; raise :class:`SchemaError` saying what is wrong.

    Columns must be exactly ``Time, V1..V28, Amount, Class`` (any order; an optional
    ``txn_id`` column, as in the split files, is kept). Features must be finite numbers,
    ``Class`` must be 0 or 1. The frame comes back in the Kaggle column order.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        # pandas renames a repeated column (V1, V1.1); the raw header names it as written
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except pd.errors.EmptyDataError as exc:
        raise SchemaError(f"{path}: file is empty (expected a header {','.join(COLUMNS)})") from exc
    except (OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError) as exc:
        raise SchemaError(f"{path}: cannot parse as CSV: {exc}") from exc
    _check_unique_columns([c.strip() for c in header], str(path))
    return validate_frame(df, source=str(path))


def _check_unique_columns(cols: list[str], source: str) -> None:
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise SchemaError(f"{source}: duplicated columns: {', '.join(dupes)}")


def validate_frame(df: pd.DataFrame, *, source: str = "frame") -> pd.DataFrame:
    """Check a raw frame (strings or numbers) against the schema and return it typed."""
    cols = [str(c).strip() for c in df.columns]
    df = df.set_axis(cols, axis=1)
    _check_unique_columns(cols, source)
    missing = [c for c in COLUMNS if c not in cols]
    extra = [c for c in cols if c not in COLUMNS and c != TXN_ID]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected columns: {', '.join(extra)}")
        raise SchemaError(
            f"{source}: {'; '.join(parts)} (expected {', '.join(COLUMNS)}"
            f"{' and optional ' + TXN_ID})"
        )
    if df.empty:
        raise SchemaError(f"{source}: header only, no data rows")
    out = pd.DataFrame(index=df.index)
    for col in COLUMNS:
        raw = df[col]
        if raw.dtype == object or pd.api.types.is_string_dtype(raw):
            text = raw.astype(str).str.strip()
            blank = text.eq("") | text.str.lower().isin(["nan", "na", "null", "none"])
            values = pd.to_numeric(text.where(~blank), errors="coerce")
            bad = values.isna() & ~blank
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise SchemaError(
                    f"{source}: column {col} has {int(bad.sum())} non-numeric value(s); "
                    f"first at line {_line(i)}: {text.iloc[i]!r}"
                )
        else:
            values = pd.to_numeric(raw, errors="coerce")
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        nan = np.isnan(arr)
        if nan.any():
            i = int(np.flatnonzero(nan)[0])
            raise SchemaError(
                f"{source}: column {col} has {int(nan.sum())} missing value(s) (NaN/empty); "
                f"first at line {_line(i)}"
            )
        inf = np.isinf(arr)
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            raise SchemaError(
                f"{source}: column {col} has {int(inf.sum())} infinite value(s); "
                f"first at line {_line(i)}"
            )
        out[col] = arr
    cls = out[CLASS].to_numpy()
    bad = (cls != 0) & (cls != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        found = sorted({float(v) for v in cls[bad]})[:5]
        raise SchemaError(
            f"{source}: column Class must be 0 or 1; found {found} "
            f"({int(bad.sum())} row(s), first at line {_line(i)})"
        )
    out[CLASS] = cls.astype(np.int64)
    if TXN_ID in cols:
        ids = df[TXN_ID].astype(str)
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].iloc[0]
            raise SchemaError(f"{source}: column {TXN_ID} must be unique; {dup!r} repeats")
        out[TXN_ID] = ids.to_numpy()
    return out.reset_index(drop=True)


def load_split(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a split file (schema + ``txn_id``)."""
    df = load_creditcard_csv(path)
    if TXN_ID not in df.columns:
        raise SchemaError(f"{path}: split files need a {TXN_ID} column")
    return df


# -- synthetic twin ------------------------------------------------------------
# Per-component scale of the PCA features: decreasing variance, as in the real file.
_SCALES = np.linspace(1.9, 0.3, 28)
# Features that carry fraud signal and their mean shift for a "typical" fraud (in
# units of the component's scale), loosely following the real data's strongest ones.
_SIGNAL = {
    3: 1.8,
    4: 1.6,
    10: -2.4,
    11: 1.7,
    12: -2.6,
    14: -3.0,
    16: -1.8,
    17: -2.2,
    1: -1.0,
    7: -1.2,
}


def make_synthetic(n_rows: int, *, seed: int = 0) -> pd.DataFrame:
    """A seeded synthetic dataset with the Kaggle schema and character.

    About 0.17 % positives; fraud shifts only a subset of the V features, with a
    per-transaction strength so some fraud looks normal (classes overlap); Amount is
    heavy-tailed; Time increases over about two days in seconds with a daily cycle.
    The same ``(n_rows, seed)`` always gives the same frame.
    """
    n_rows = int(n_rows)
    if n_rows < 10:
        raise DataError(f"n_rows must be at least 10, got {n_rows}")
    rng = np.random.default_rng(seed)
    # Time: inverse-CDF sampling of a daily activity cycle (quiet at night), sorted.
    grid = np.linspace(0.0, TWO_DAYS_S, 4097)
    rate = 1.0 + 0.8 * np.sin(2 * np.pi * (grid / 86_400.0) - np.pi / 2 + 0.6) ** 2
    cdf = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
    cdf /= cdf[-1]
    times = np.sort(np.floor(np.interp(rng.random(n_rows), cdf, grid)))

    n_pos = max(1, round(n_rows * FRAUD_RATE))
    y = np.zeros(n_rows, dtype=np.int64)
    y[rng.choice(n_rows, size=n_pos, replace=False)] = 1
    pos = np.flatnonzero(y)

    # Heavy-ish tails: Student-t components, scaled.
    V = rng.standard_t(df=5, size=(n_rows, 28)) * _SCALES * np.sqrt(3 / 5)
    # Fraud strength in [0, 1.6]: a fraction of fraud carries almost no signal.
    strength = rng.gamma(shape=2.0, scale=0.45, size=n_pos).clip(0.0, 1.6)
    for k, shift in _SIGNAL.items():
        j = k - 1
        V[pos, j] += shift * _SCALES[j] * strength * rng.uniform(0.6, 1.4, size=n_pos)
        # fraud is also noisier along its signal directions
        V[pos, j] += rng.normal(0.0, 0.6 * _SCALES[j], size=n_pos)

    # Amount: lognormal body with a Pareto tail; fraud is mostly small, sometimes large.
    amount = rng.lognormal(mean=3.0, sigma=1.3, size=n_rows)
    tail = rng.random(n_rows) < 0.01
    amount[tail] = 200.0 * (1.0 + rng.pareto(1.6, size=int(tail.sum())))
    fraud_amt = np.where(
        rng.random(n_pos) < 0.7,
        rng.lognormal(mean=1.5, sigma=1.5, size=n_pos),
        rng.lognormal(mean=5.0, sigma=1.0, size=n_pos),
    )
    amount[pos] = fraud_amt
    amount = np.round(np.minimum(amount, 25_000.0), 2)

    data = {"Time": times}
    V = np.round(V, 6)
    for j in range(28):
        data[f"V{j + 1}"] = V[:, j]
    data["Amount"] = amount
    data[CLASS] = y
    return pd.DataFrame(data, columns=COLUMNS)


# -- splits --------------------------------------------------------------------
def _with_ids(df: pd.DataFrame) -> pd.DataFrame:
    if TXN_ID in df.columns:
        return df
    width = max(6, len(str(len(df) - 1)))
    out = df.reset_index(drop=True).copy()
    out[TXN_ID] = [f"t{i:0{width}d}" for i in range(len(out))]
    return out


def _check_fracs(val_frac: float, test_frac: float) -> None:
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(
            f"val_frac={val_frac} and test_frac={test_frac} must be in (0, 1) and sum below 1"
        )


def split_stratified(
    df: pd.DataFrame, *, seed: int = 42, val_frac: float = 0.15, test_frac: float = 0.15
) -> Splits:
    """Stratified train/validation/test split, reproducible by ``seed``.

    Row ids (``txn_id``) come from the row position in ``df`` when it has none, so
    the same data always gives the same ids.
    """
    from sklearn.model_selection import train_test_split

    _check_fracs(val_frac, test_frac)
    df = _with_ids(df)
    y = df[CLASS].to_numpy()
    if np.bincount(y, minlength=2).min() < 3:
        raise DataError(
            f"need at least 3 rows of each class for a stratified split "
            f"(got {int((y == 0).sum())} normal, {int((y == 1).sum())} fraud)"
        )
    idx = np.arange(len(df))
    rest, test = train_test_split(idx, test_size=test_frac, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_frac / (1 - test_frac), stratify=y[rest], random_state=seed + 1
    )
    parts = [df.iloc[np.sort(p)].reset_index(drop=True) for p in (train, val, test)]
    return Splits(*parts)


def split_by_time(df: pd.DataFrame, *, val_frac: float = 0.15, test_frac: float = 0.15) -> Splits:
    """Time-ordered split: train on the past, validate on what follows, test on the latest.

    The honest setting for fraud, where the model always scores the future.
    """
    _check_fracs(val_frac, test_frac)
    df = _with_ids(df)
    order = np.argsort(df["Time"].to_numpy(), kind="stable")
    n = len(df)
    n_test = round(n * test_frac)
    n_val = round(n * val_frac)
    n_train = n - n_val - n_test
    cuts = [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]
    parts = [df.iloc[c].reset_index(drop=True) for c in cuts]
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if part[CLASS].sum() == 0:
            raise DataError(f"time split leaves no fraud in the {name} part; use more rows")
    return Splits(*parts)


def write_splits(splits: Splits, data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` (atomic replace each)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, df in zip(SPLIT_FILES, splits, strict=True):
        path = data_dir / SPLIT_FILES[part]
        tmp = path.with_name(f".{path.name}.tmp")
        df[[*COLUMNS, TXN_ID]].to_csv(tmp, index=False)
        os.replace(tmp, path)
        paths[part] = path
    return paths


def prepare_splits(
    data_dir: str | os.PathLike[str] = "data",
    *,
    csv: str | os.PathLike[str] | None = None,
    synthetic_rows: int | None = None,
    seed: int = 42,
    time_split: bool = False,
) -> Splits:
    """Load the dataset, split it and write the split CSVs under ``data_dir``.

    Source: ``csv`` if given; else ``data_dir/creditcard.csv`` when present (and no
    ``synthetic_rows`` asked for); else ``make_synthetic(synthetic_rows or 100_000)``.
    """
    data_dir = Path(data_dir)
    default_csv = data_dir / "creditcard.csv"
    if csv is not None:
        df, source = load_creditcard_csv(csv), str(csv)
    elif synthetic_rows is None and default_csv.is_file():
        df, source = load_creditcard_csv(default_csv), str(default_csv)
    else:
        rows = int(synthetic_rows or 100_000)
        df, source = make_synthetic(rows, seed=seed), f"synthetic(n_rows={rows}, seed={seed})"
    splits = split_by_time(df) if time_split else split_stratified(df, seed=seed)
    write_splits(splits, data_dir)
    summary = splits.summary()
    log.info(
        "splits source=%s kind=%s train=%d validation=%d test=%d positives=%d/%d/%d dir=%s",
        source,
        "time" if time_split else "stratified",
        *(summary[p]["rows"] for p in SPLIT_FILES),
        *(summary[p]["positives"] for p in SPLIT_FILES),
        data_dir,
    )
    return Splits(splits.train, splits.validation, splits.test, source=source)


def X_y(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Features as a float64 array in ``contract.FEATURES`` order, and the labels."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"frame lacks columns: {', '.join(missing)}")
    X = np.ascontiguousarray(df[FEATURES].to_numpy(dtype=np.float64))
    y = df[CLASS].to_numpy(dtype=np.int64)
    return X, y
