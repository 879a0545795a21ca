"""Datasets: loading and validation by profile, seeded synthetic data, splits.

With no profile the data set is the Kaggle/ULB credit-card file
(https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud): columns ``Time, V1..V28,
Amount, Class``; ``Time`` in seconds from the first transaction (about two days),
``V1..V28`` PCA components, ``Amount`` in euros and ``Class`` 1 for fraud (0.17 %).
Split files add a unique string ``txn_id`` per row.

Any other data set is described by a profile (:mod:`models.profile`): its features
(float, int or categorical), label, id, tags, columns to drop, value and order columns.
Every function here takes ``profile=``; without it, it behaves as it always has for
credit cards. Column names are kept exactly as the file has them (spaces, brackets,
commas and all), in memory and in the split files.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .contract import FEATURES, TXN_ID
from .errors import DataError, SchemaError

if TYPE_CHECKING:
    from .profile import Feature, Profile

__all__ = [
    "CLASS",
    "COLUMNS",
    "SPLIT_FILES",
    "Splits",
    "X_y",
    "default_csv",
    "feature_matrix",
    "load_creditcard_csv",
    "load_csv",
    "load_split",
    "make_synthetic",
    "parse_columns",
    "prepare_splits",
    "split_by_time",
    "split_stratified",
    "synthetic_frame",
    "validate_frame",
    "value_column",
    "write_splits",
]

log = logging.getLogger("models.data")

CLASS = "Class"
COLUMNS = [*FEATURES, CLASS]
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"}

#: positive rate of the real file (492 / 284,807)
FRAUD_RATE = 492 / 284_807
TWO_DAYS_S = 172_792.0

_BLANKS = ["nan", "na", "null", "none"]
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- what a file must hold ---------------------------------------------------------
@dataclass(frozen=True)
class _Feat:
    name: str
    type: str = "float"

    @property
    def categorical(self) -> bool:
        return self.type == "categorical"


@dataclass(frozen=True)
class _Schema:
    """The columns of a data set: from a profile, or the credit-card contract."""

    features: tuple[_Feat | Feature, ...]
    label: str | None
    #: the id column: read when the file has it, generated when it has not
    id: str
    order: str | None
    value: str | None
    tags: tuple[str, ...] = ()
    drop: frozenset[str] = frozenset()
    profile: Profile | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_extra(self) -> list[str]:
        """Value and order columns that are not features (nor the id or the label)."""
        taken = {*self.feature_names, self.id, self.label, *self.tags}
        out: list[str] = []
        for c in (self.value, self.order):
            if c is not None and c not in taken and c not in out:
                out.append(c)
        return out

    @property
    def columns(self) -> list[str]:
        """Columns a file must have, in the order loaded frames keep (the id follows)."""
        cols = [*self.feature_names, *self.tags, *self.numeric_extra]
        if self.label is not None:
            cols.append(self.label)
        return cols

    @property
    def positives(self) -> str:
        return "fraud" if self.profile is None else f"positive ({self.label} = 1)"

    def describe(self) -> str:
        optional = [self.id, *sorted(self.drop)]
        return f"expected {', '.join(map(_show, self.columns))} and optional " + ", ".join(
            map(_show, optional)
        )


_CREDITCARD = _Schema(
    features=tuple(_Feat(f) for f in FEATURES),
    label=CLASS,
    id=TXN_ID,
    order="Time",
    value="Amount",
)


def _schema(profile: Profile | None) -> _Schema:
    if profile is None:
        return _CREDITCARD
    return _Schema(
        features=tuple(profile.features),
        label=profile.label,
        id=profile.id_column,
        order=profile.order,
        value=profile.value,
        tags=tuple(profile.tags),
        drop=frozenset(profile.drop),
        profile=profile,
    )


def _show(name: str) -> str:
    """A column name as messages print it: quoted when it is not a plain identifier."""
    return name if _PLAIN_NAME.fullmatch(name) else repr(name)


def _need_label(schema: _Schema, what: str) -> str:
    if schema.label is None:
        p = schema.profile
        raise DataError(
            f"profile {p.name if p else '?'!r} names no label column (columns.label): "
            f"{what} needs the 0/1 ground truth"
        )
    return schema.label


# -- loading -----------------------------------------------------------------
def _line(idx: int) -> int:
    # 0-based data row -> 1-based line number in the file (line 1 is the header)
    return int(idx) + 2


def load_csv(path: str | os.PathLike[str], *, profile: Profile | None = None) -> pd.DataFrame:
    """Read and validate a data set's CSV; raise :class:`SchemaError` saying what is wrong.

    The file must have every column of the profile (features, label, tags, value and
    order columns) and nothing else but the id and the profile's dropped columns (which
    are left out). Float and int features must be finite numbers (ints integral), a
    categorical needs a non-empty value (one the profile does not list is fine: the
    model's encoder handles it), the label must be 0 or 1, ids must be unique. Without
    a profile: the credit-card schema (see :func:`load_creditcard_csv`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    schema = _schema(profile)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        # pandas renames a repeated column (V1, V1.1); the raw header names it as written
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except pd.errors.EmptyDataError as exc:
        raise SchemaError(
            f"{path}: file is empty (expected a header "
            f"{','.join(schema.columns) if profile is None else _describe_header(schema)})"
        ) from exc
    except (OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError) as exc:
        raise SchemaError(f"{path}: cannot parse as CSV: {exc}") from exc
    _check_unique_columns([c.strip() for c in header], str(path))
    return validate_frame(df, source=str(path), profile=profile)


def _describe_header(schema: _Schema) -> str:
    return ", ".join(map(_show, schema.columns))


def load_creditcard_csv(
    path: str | os.PathLike[str], *, profile: Profile | None = None
) -> pd.DataFrame:
    """Read and validate a credit-card CSV (or, with ``profile``, any data set's).

    Columns must be exactly ``Time, V1..V28, Amount, Class`` (any order; an optional
    ``txn_id`` column, as in the split files, is kept). Features must be finite numbers,
    ``Class`` must be 0 or 1. The frame comes back in the Kaggle column order.
    """
    return load_csv(path, profile=profile)


def _check_unique_columns(cols: list[str], source: str) -> None:
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise SchemaError(f"{source}: duplicated columns: {', '.join(map(_show, dupes))}")


def _is_text(raw: pd.Series) -> bool:
    return raw.dtype == object or pd.api.types.is_string_dtype(raw)


def _numeric(raw: pd.Series, col: str, source: str, *, integral: bool = False) -> np.ndarray:
    """A column as finite float64 numbers (SchemaError naming the first bad line)."""
    if _is_text(raw):
        text = raw.astype(str).str.strip()
        blank = text.eq("") | text.str.lower().isin(_BLANKS) | raw.isna()
        values = pd.to_numeric(text.where(~blank), errors="coerce")
        bad = values.isna() & ~blank
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(
                f"{source}: column {_show(col)} has {int(bad.sum())} non-numeric value(s); "
                f"first at line {_line(i)}: {text.iloc[i]!r}"
            )
    else:
        values = pd.to_numeric(raw, errors="coerce")
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(arr)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise SchemaError(
            f"{source}: column {_show(col)} has {int(nan.sum())} missing value(s) (NaN/empty); "
            f"first at line {_line(i)}"
        )
    inf = np.isinf(arr)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise SchemaError(
            f"{source}: column {_show(col)} has {int(inf.sum())} infinite value(s); "
            f"first at line {_line(i)}"
        )
    if integral:
        frac = (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise SchemaError(
                f"{source}: column {_show(col)} is an int feature but has {int(frac.sum())} "
                f"value(s) that are not integers; first at line {_line(i)}: {float(arr[i])!r} "
                "(make it a float feature in the profile)"
            )
    return arr


def _text(raw: pd.Series, col: str, source: str, *, what: str | None) -> np.ndarray:
    """A column as stripped strings; with ``what``, an empty value is a SchemaError."""
    missing = raw.isna().to_numpy()
    if _is_text(raw):
        text = raw.astype(object).where(~missing, "").astype(str).str.strip()
    elif pd.api.types.is_integer_dtype(raw):
        text = raw.astype(object).where(~missing, "").map(str)
    else:  # numbers read by someone else: 1.0 -> "1", 1.5 -> "1.5"
        text = raw.map(lambda v: "" if pd.isna(v) else format(v, "g"))
    out = text.to_numpy(dtype=object)
    if what is not None:
        empty = missing | (out == "")
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise SchemaError(
                f"{source}: column {_show(col)} has {int(empty.sum())} empty value(s) "
                f"({what}); first at line {_line(i)}"
            )
    return out


def validate_frame(
    df: pd.DataFrame, *, source: str = "frame", profile: Profile | None = None
) -> pd.DataFrame:
    """Check a raw frame (strings or numbers) against the schema and return it typed:
    float features float64, int features int64, categoricals, tags and the id as
    strings, the label int64; columns in the profile's order, the id last."""
    cols = [str(c).strip() for c in df.columns]
    df = df.set_axis(cols, axis=1)
    _check_unique_columns(cols, source)
    schema = _schema(profile)
    required = schema.columns
    missing = [c for c in required if c not in cols]
    known = {*required, schema.id, *schema.drop}
    extra = [c for c in cols if c not in known]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(map(_show, missing))}")
        if extra:
            parts.append(f"unexpected columns: {', '.join(map(_show, extra))}")
        if profile is None:
            expected = f"expected {', '.join(COLUMNS)} and optional {TXN_ID}"
        else:
            expected = (
                f"profile {profile.name}: {schema.describe()}; drop a column by listing it "
                "in the profile's columns.drop"
            )
        raise SchemaError(f"{source}: {'; '.join(parts)} ({expected})")
    if df.empty:
        raise SchemaError(f"{source}: header only, no data rows")
    out: dict[str, Any] = {}
    for f in schema.features:
        if f.categorical:
            out[f.name] = _text(
                df[f.name], f.name, source, what="a categorical feature needs a level"
            )
        elif f.type == "int":
            out[f.name] = _numeric(df[f.name], f.name, source, integral=True).astype(np.int64)
        else:
            out[f.name] = _numeric(df[f.name], f.name, source)
    for t in schema.tags:
        out[t] = _text(df[t], t, source, what=None)
    for c in schema.numeric_extra:
        out[c] = _numeric(df[c], c, source)
    if schema.label is not None:
        lab = schema.label
        cls = _numeric(df[lab], lab, source)
        bad = (cls != 0) & (cls != 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            found = sorted({float(v) for v in cls[bad]})[:5]
            raise SchemaError(
                f"{source}: column {_show(lab)} must be 0 or 1; found {found} "
                f"({int(bad.sum())} row(s), first at line {_line(i)})"
            )
        out[lab] = cls.astype(np.int64)
    if schema.id in cols:
        ids = _text(df[schema.id], schema.id, source, what="every row needs an id")
        dup = pd.Series(ids).duplicated(keep=False).to_numpy()
        if dup.any():
            first = int(np.flatnonzero(dup)[0])
            again = [int(i) for i in np.flatnonzero(ids == ids[first])[:2]]
            raise SchemaError(
                f"{source}: column {_show(schema.id)} must be unique; {ids[first]!r} repeats "
                f"(lines {_line(again[0])} and {_line(again[1])})"
            )
        out[schema.id] = ids
    frame = pd.DataFrame(
        {c: pd.Series(v, dtype=object) if v.dtype == object else v for c, v in out.items()}
    )
    return frame.reset_index(drop=True)


def load_split(path: str | os.PathLike[str], *, profile: Profile | None = None) -> pd.DataFrame:
    """Read a split file (the data set's columns + its id column)."""
    df = load_csv(path, profile=profile)
    id_col = _schema(profile).id
    if id_col not in df.columns:
        raise SchemaError(f"{path}: split files need a {_show(id_col)} column")
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


def make_synthetic(n_rows: int, *, seed: int = 0, fraud_rate: float = FRAUD_RATE) -> pd.DataFrame:
    """A seeded synthetic dataset with the Kaggle schema and character.

    About 0.17 % positives (``fraud_rate``); fraud shifts only a subset of the V features, with a
    per-transaction strength so some fraud looks normal (classes overlap); Amount is
    heavy-tailed; Time increases over about two days in seconds with a daily cycle.
    The same ``(n_rows, seed)`` always gives the same frame.
    """
    n_rows = int(n_rows)
    if n_rows < 10:
        raise DataError(f"n_rows must be at least 10, got {n_rows}")
    if not 0.0 < fraud_rate < 1.0:
        raise DataError(f"fraud_rate must be in (0, 1), got {fraud_rate}")
    rng = np.random.default_rng(seed)
    # Time: inverse-CDF sampling of a daily activity cycle (quiet at night), sorted.
    grid = np.linspace(0.0, TWO_DAYS_S, 4097)
    rate = 1.0 + 0.8 * np.sin(2 * np.pi * (grid / 86_400.0) - np.pi / 2 + 0.6) ** 2
    cdf = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
    cdf /= cdf[-1]
    times = np.sort(np.floor(np.interp(rng.random(n_rows), cdf, grid)))

    n_pos = max(1, round(n_rows * fraud_rate))
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
@dataclass(frozen=True)
class Splits:
    """Train, validation and test frames (each with the data set's id column)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    #: where the rows came from (a path or the synthetic generator's arguments)
    source: str = ""
    #: the data set's profile (None: credit cards)
    profile: Profile | None = field(default=None, compare=False)

    def __iter__(self):
        return iter((self.train, self.validation, self.test))

    @property
    def label(self) -> str:
        return _need_label(_schema(self.profile), "a split")

    @property
    def training_part(self) -> pd.DataFrame:
        """Train and validation together: what cross-validated selection learns from."""
        return pd.concat([self.train, self.validation], ignore_index=True)

    def summary(self) -> dict[str, dict[str, float]]:
        label = self.label
        return {
            part: {
                "rows": len(df),
                "positives": int(df[label].sum()),
                "positive_rate": float(df[label].mean()) if len(df) else 0.0,
            }
            for part, df in zip(("train", "validation", "test"), self, strict=True)
        }


def _with_ids(df: pd.DataFrame, schema: _Schema = _CREDITCARD) -> pd.DataFrame:
    if schema.id in df.columns:
        return df
    width = max(6, len(str(len(df) - 1)))
    out = df.reset_index(drop=True).copy()
    out[schema.id] = pd.Series([f"t{i:0{width}d}" for i in range(len(out))], dtype=object)
    return out


def _check_fracs(val_frac: float, test_frac: float) -> None:
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(
            f"val_frac={val_frac} and test_frac={test_frac} must be in (0, 1) and sum below 1"
        )


def split_stratified(
    df: pd.DataFrame,
    *,
    seed: int = 42,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    profile: Profile | None = None,
) -> Splits:
    """Stratified train/validation/test split, reproducible by ``seed``.

    Row ids (the profile's id column, ``txn_id`` for credit cards) come from the row
    position in ``df`` when it has none, so the same data always gives the same ids.
    """
    from sklearn.model_selection import train_test_split

    _check_fracs(val_frac, test_frac)
    schema = _schema(profile)
    label = _need_label(schema, "a stratified split")
    df = _with_ids(df, schema)
    y = df[label].to_numpy(dtype=np.int64)
    if np.bincount(y, minlength=2).min() < 3:
        neg, pos = ("normal", "fraud") if profile is None else ("negative", "positive")
        raise DataError(
            f"need at least 3 rows of each class for a stratified split "
            f"(got {int((y == 0).sum())} {neg}, {int((y == 1).sum())} {pos})"
        )
    idx = np.arange(len(df))
    rest, test = train_test_split(idx, test_size=test_frac, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_frac / (1 - test_frac), stratify=y[rest], random_state=seed + 1
    )
    parts = [df.iloc[np.sort(p)].reset_index(drop=True) for p in (train, val, test)]
    return Splits(*parts, profile=profile)


def _order_values(df: pd.DataFrame, schema: _Schema) -> np.ndarray:
    if schema.order is None:
        return np.arange(len(df), dtype=np.float64)  # file order
    try:
        return pd.to_numeric(df[schema.order], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"order column {_show(schema.order)} must be numeric to sort rows in time: {exc}"
        ) from None


def split_by_time(
    df: pd.DataFrame,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    profile: Profile | None = None,
) -> Splits:
    """Time-ordered split: train on the past, validate on what follows, test on the latest.

    Rows are ordered by the profile's ``order`` column (``Time`` for credit cards; file
    order when the profile has none). The honest setting when a model always scores the
    future.
    """
    _check_fracs(val_frac, test_frac)
    schema = _schema(profile)
    label = _need_label(schema, "a time split")
    df = _with_ids(df, schema)
    order = np.argsort(_order_values(df, schema), kind="stable")
    n = len(df)
    n_test = round(n * test_frac)
    n_val = round(n * val_frac)
    n_train = n - n_val - n_test
    cuts = [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]
    parts = [df.iloc[c].reset_index(drop=True) for c in cuts]
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if part[label].sum() == 0:
            raise DataError(
                f"time split leaves no {schema.positives} in the {name} part; use more rows"
            )
    return Splits(*parts, profile=profile)


def write_splits(splits: Splits, data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` (atomic replace each), with
    the data set's own column names."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    schema = _schema(splits.profile)
    columns = [*schema.columns, schema.id]
    paths = {}
    for part, df in zip(SPLIT_FILES, splits, strict=True):
        path = data_dir / SPLIT_FILES[part]
        tmp = path.with_name(f".{path.name}.tmp")
        df[columns].to_csv(tmp, index=False)
        os.replace(tmp, path)
        paths[part] = path
    return paths


def default_csv(data_dir: str | os.PathLike[str], profile: Profile | None = None) -> Path:
    """``DATA_DIR/<profile name>.csv``: the file used when no ``csv`` is given
    (``data/creditcard.csv`` for credit cards)."""
    return Path(data_dir) / f"{profile.name if profile is not None else 'creditcard'}.csv"


def synthetic_frame(n_rows: int, *, seed: int = 0, profile: Profile | None = None):
    """``n_rows`` of the profile's seeded generator, validated against the profile."""
    if profile is None:
        return make_synthetic(n_rows, seed=seed)
    from .synthetic import generator_for

    raw = generator_for(profile.name)(n_rows, seed=seed)
    return validate_frame(
        raw, source=f"synthetic {profile.name} data (n_rows={n_rows})", profile=profile
    )


def prepare_splits(
    data_dir: str | os.PathLike[str] = "data",
    *,
    csv: str | os.PathLike[str] | None = None,
    synthetic_rows: int | None = None,
    seed: int = 42,
    time_split: bool = False,
    profile: Profile | None = None,
) -> Splits:
    """Load the dataset, split it and write the split CSVs under ``data_dir``.

    Source: ``csv`` if given; else ``data_dir/<profile>.csv`` (``creditcard.csv``) when
    present (and no ``synthetic_rows`` asked for); else the profile's seeded generator
    with ``synthetic_rows`` (default 100,000) rows.
    """
    data_dir = Path(data_dir)
    fallback = default_csv(data_dir, profile)
    if csv is not None:
        df, source = load_csv(csv, profile=profile), str(csv)
    elif synthetic_rows is None and fallback.is_file():
        df, source = load_csv(fallback, profile=profile), str(fallback)
    else:
        rows = int(synthetic_rows or 100_000)
        df = synthetic_frame(rows, seed=seed, profile=profile)
        name = "" if profile is None else f"{profile.name}, "
        source = f"synthetic({name}n_rows={rows}, seed={seed})"
    if time_split:
        splits = split_by_time(df, profile=profile)
    else:
        splits = split_stratified(df, seed=seed, profile=profile)
    write_splits(splits, data_dir)
    summary = splits.summary()
    log.info(
        "splits source=%s profile=%s kind=%s train=%d validation=%d test=%d "
        "positives=%d/%d/%d dir=%s",
        source,
        profile.name if profile is not None else "-",
        "time" if time_split else "stratified",
        *(summary[p]["rows"] for p in SPLIT_FILES),
        *(summary[p]["positives"] for p in SPLIT_FILES),
        data_dir,
    )
    return Splits(splits.train, splits.validation, splits.test, source=source, profile=profile)


def feature_matrix(
    df: pd.DataFrame, *, profile: Profile | None = None, as_frame: bool | None = None
) -> np.ndarray | pd.DataFrame:
    """The model input of ``df``: its features in profile (card) order.

    A float64 array, or (``as_frame``; the default when the profile has categorical
    features) a DataFrame whose columns are the feature names, numbers as float64 and
    categoricals as strings — what the registered pipelines are fitted on and score.
    """
    schema = _schema(profile)
    names = schema.feature_names
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise SchemaError(f"frame lacks columns: {', '.join(map(_show, missing))}")
    cats = {f.name for f in schema.features if f.categorical}
    if as_frame is None:
        as_frame = bool(cats)
    if not as_frame:
        if cats:
            raise SchemaError(
                f"categorical features {', '.join(map(_show, sorted(cats)))} cannot go into "
                "a float array; take a DataFrame (as_frame=True)"
            )
        return np.ascontiguousarray(df[names].to_numpy(dtype=np.float64))
    return pd.DataFrame(
        {
            n: pd.Series(df[n].astype(str).to_numpy(dtype=object), dtype=object)
            if n in cats
            else df[n].to_numpy(dtype=np.float64)
            for n in names
        },
        columns=names,
    )


def X_y(
    df: pd.DataFrame, *, profile: Profile | None = None, as_frame: bool | None = None
) -> tuple[Any, np.ndarray]:
    """Features and labels. Without a profile: float64 features in ``contract.FEATURES``
    order, int labels. With one: :func:`feature_matrix` (a DataFrame when the profile has
    categorical features) and the profile's label column."""
    schema = _schema(profile)
    label = _need_label(schema, "X_y")
    missing = [c for c in [*schema.feature_names, label] if c not in df.columns]
    if missing:
        raise SchemaError(f"frame lacks columns: {', '.join(map(_show, missing))}")
    X = feature_matrix(df, profile=profile, as_frame=as_frame)
    y = df[label].to_numpy(dtype=np.int64)
    return X, y


def value_column(df: pd.DataFrame, profile: Profile | None = None) -> np.ndarray | None:
    """The value (cost) column as float64 (``Amount`` for credit cards); None when the
    profile has none."""
    col = _schema(profile).value
    if col is None:
        return None
    return df[col].to_numpy(dtype=np.float64)


def parse_columns(text: str | Sequence[str] | None, known: Sequence[str] = ()) -> list[str]:
    """Column names from a command-line list: ``A,B``, CSV-quoted names holding commas
    (``'"a,b",c'``), or a single name that is itself a known column (``--drop 'a,b'``)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        if item in known:
            names = [item]
        else:
            names = [n.strip() for n in next(csv.reader([item], skipinitialspace=True), [])]
        out += [n for n in names if n and n not in out]
    return out
