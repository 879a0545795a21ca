"""Samples of a data set as line-protocol bodies.

Each CSV row becomes one point of the profile's input measurement (``transactions`` for
the default credit-card profile): the ``source`` tag and the profile's tag columns; float
features as float fields, int features as integer fields, categorical features as string
fields; the row id as a string field; the label as an integer field. Dropped columns and
columns the profile does not name are not sent. Every name is escaped for InfluxDB 1.x
(:mod:`publisher.lineprotocol`); a row's line, everything but the timestamp, is built once
and cached, so publishing a sample costs one string concatenation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models import contract
from models.profile import Profile, load_profile

from .errors import DataError
from .lineprotocol import (
    INT64_MAX,
    LineProtocolError,
    escape_field_key,
    escape_measurement,
    escape_string,
    escape_tag,
    format_float,
    format_int,
)

__all__ = ["CLASS_COLUMN", "SampleSource", "load_samples"]

log = logging.getLogger("publisher.source")

CLASS_COLUMN = "Class"
TXN_COLUMN = "txn_id"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Field:
    """One field of every point: its escaped key and how a value is written."""

    column: str
    key: str
    values: Sequence
    fmt: Callable[[object], str]


class SampleSource:
    """The publishable rows of one CSV, in file order (see the module docstring)."""

    def __init__(
        self,
        *,
        measurement: str,
        fields: Sequence[tuple[str, str, Sequence]],
        ids: Sequence[str],
        labels: np.ndarray | None = None,
        tags: Sequence[tuple[str, Sequence[str]]] = (),
        source: str,
        skipped: int = 0,
    ) -> None:
        """``fields``: (field name, kind, values) with kind ``float``, ``int`` or
        ``string`` (written in name order); ``tags``: (tag key, values) besides ``source``."""
        n = len(ids)
        if n == 0:
            raise DataError("no usable samples")
        formats = {"float": format_float, "int": format_int, "string": escape_string}
        try:
            self._head = escape_measurement(measurement)
            # fields in key order, as influxdb-client's Point has always written them
            self._fields = [
                _Field(name, escape_field_key(name), values, formats[kind])
                for name, kind, values in sorted(fields, key=lambda f: f[0])
            ]
            # empty tag values are left out of the point (InfluxDB refuses them)
            self._tags = [
                (escape_tag(k, "tag key"), [escape_tag(x, "tag value") if x else "" for x in v])
                for k, v in tags
            ]
            self._source = escape_tag(source, "--source")
            source_key = escape_tag(contract.SOURCE_TAG, "tag key")
        except LineProtocolError as exc:
            raise DataError(str(exc)) from exc
        if any(len(f.values) != n for f in self._fields) or any(len(v) != n for _, v in tags):
            raise DataError("every column must have one value per sample")
        if labels is not None and len(labels) != n:
            raise DataError("labels and ids must have the same length")
        # tags in key order, as InfluxDB advises; `source` is one of them
        self._tag_order = sorted([(source_key, None), *self._tags], key=lambda t: t[0])
        if not self._tags:
            self._head += f",{source_key}={self._source}"
        self.ids = list(ids)
        self.labels = labels if labels is not None else np.zeros(0, dtype=np.int64)
        self.source = source
        self.skipped = skipped
        self.measurement = measurement
        self._lines: list[str | None] = [None] * n

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def txn_ids(self) -> list[str]:
        """The row ids (``txn_id`` for the credit-card data set)."""
        return self.ids

    @property
    def field_names(self) -> list[str]:
        return [f.column for f in self._fields]

    def _build(self, i: int) -> str:
        head = self._head
        if self._tags:
            for key, values in self._tag_order:
                value = self._source if values is None else values[i]
                if value:
                    head += f",{key}={value}"
        body = ",".join(f"{f.key}={f.fmt(f.values[i])}" for f in self._fields)
        return f"{head} {body}"

    def line(self, i: int) -> str:
        """Line protocol of row ``i`` without the timestamp (cached)."""
        cached = self._lines[i]
        if cached is None:
            cached = self._lines[i] = self._build(i)
        return cached

    def indices(self, mode: str, rng: np.random.Generator, chunk: int = 4096):
        """Endless row indices: ``sequential`` walks the file and wraps, ``random`` draws."""
        n = len(self)
        if mode == "sequential":
            while True:
                yield from range(n)
        else:
            while True:
                yield from rng.integers(0, n, size=chunk).tolist()


# -- reading and checking a CSV ---------------------------------------------------------
def _blank(text: pd.Series) -> pd.Series:
    return text.isna() | (text.str.strip() == "")


def _floats(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, np.isfinite(values)


def _ints(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Whole numbers within int64 ("3" and "3.0" alike); anything else is not ok."""
    stripped = text.fillna("").str.strip()
    plain = stripped.str.fullmatch(r"[+-]?\d{1,19}")
    out = np.zeros(len(text), dtype=np.int64)
    ok = np.zeros(len(text), dtype=bool)
    for i in np.flatnonzero(plain.to_numpy()):
        v = int(stripped.iat[i])
        if -INT64_MAX - 1 <= v <= INT64_MAX:
            out[i], ok[i] = v, True
    rest = ~plain.to_numpy()
    if rest.any():
        f = pd.to_numeric(stripped[rest], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        good = np.isfinite(f) & (np.floor(f) == f) & (np.abs(f) < 2.0**63)
        idx = np.flatnonzero(rest)
        out[idx[good]] = f[good].astype(np.int64)
        ok[idx[good]] = True
    return out, ok


def _strings(text: pd.Series, *, allow_empty: bool = False) -> tuple[list[str], np.ndarray]:
    values = text.fillna("").astype(str)
    ok = ~values.str.contains(_CONTROL).to_numpy()
    if not allow_empty:
        ok &= ~_blank(text).to_numpy()
    return values.tolist(), ok


def _tag_ok(value: str) -> bool:
    if not value:
        return True  # left out of the point
    try:
        escape_tag(value, "tag value")
    except LineProtocolError:
        return False
    return True


def load_samples(
    path: str | Path, *, source: str, profile: Profile | str | None = None
) -> SampleSource:
    """Read and validate the CSV of ``profile`` (default: the credit-card data set); rows
    that cannot be published are counted and logged, never sent half-written."""
    default = profile is None
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"sample file {path} does not exist; create the test split with "
            "`python -m models split` (or pass --csv PATH)"
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    label_col = prof.label
    needed = [*prof.feature_names, *([label_col] if label_col else []), *prof.tags]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        if default:
            hint = "expected the Kaggle schema Time,V1..V28,Amount,Class plus txn_id"
        else:
            hint = f"profile {prof.name!r} expects {', '.join(prof.csv_columns)}"
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; {hint}")

    n = len(df)
    ok = np.ones(n, dtype=bool)
    bad: dict[str, int] = {}

    def check(name: str, good: np.ndarray) -> None:
        nonlocal ok
        count = int((ok & ~good).sum())
        if count:
            bad[name] = count
        ok &= good

    fields: list[tuple[str, str, Sequence]] = []
    for f in prof.features:
        if f.type == "float":
            values, good = _floats(df[f.name])
            fields.append((f.name, "float", values))
        elif f.type == "int":
            values, good = _ints(df[f.name])
            fields.append((f.name, "int", values))
        else:
            values, good = _strings(df[f.name])
            fields.append((f.name, "string", values))
        check(f.name, good)

    id_col = prof.id_column
    if prof.id is not None and prof.id in df.columns:
        ids, good = _strings(df[prof.id])
        check(prof.id, good)
    else:
        if prof.id is not None:
            log.warning(
                "event=no_id_column file=%s column=%r action=derive_from_row_number", path, prof.id
            )
        ids = [f"{path.stem}-{i}" for i in range(n)]
    fields.append((id_col, "string", ids))

    labels = None
    if label_col:
        raw = pd.to_numeric(df[label_col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        check(label_col, np.isin(raw, (0.0, 1.0)))
        labels = np.where(np.isfinite(raw), raw, 0).astype(np.int64)
        fields.append((prof.label_field, "int", labels))

    # the cost and order columns reach InfluxDB too when they are no feature (dashboards)
    sent = {name for name, _, _ in fields} | set(prof.tags)
    for extra in (prof.value, prof.order):
        if extra is not None and extra not in sent and extra in df.columns:
            values, good = _floats(df[extra])
            fields.append((extra, "float", values))
            check(extra, good)
            sent.add(extra)

    tags = []
    for t in prof.tags:
        values, good = _strings(df[t], allow_empty=True)
        # a value line protocol cannot carry (a backslash at its end, say) is no row to send
        good &= np.array([_tag_ok(v) for v in values], dtype=bool)
        tags.append((t, values))
        check(t, good)

    skipped = int((~ok).sum())
    if skipped:
        bad_rows = np.flatnonzero(~ok)[:5].tolist()
        log.warning(
            "event=rows_skipped file=%s count=%d reason=unusable_value columns=%s first_rows=%s",
            path,
            skipped,
            ",".join(f"{k!r}:{v}" for k, v in bad.items()),
            bad_rows,
        )
    keep = np.flatnonzero(ok)
    kept_ids = [ids[i] for i in keep]
    seen: set[str] = set()
    dupes = 0
    for v in kept_ids:
        dupes += v in seen
        seen.add(v)
    if dupes:
        raise DataError(f"{path}: {id_col} must be unique, {dupes} duplicate(s)")

    def take(values: Sequence) -> Sequence:
        if isinstance(values, np.ndarray):
            return values[keep]
        return [values[i] for i in keep]

    try:
        samples = SampleSource(
            measurement=prof.measurement,
            fields=[(name, kind, take(values)) for name, kind, values in fields],
            ids=kept_ids,
            labels=None if labels is None else labels[keep],
            tags=[(t, take(v)) for t, v in tags],
            source=source,
            skipped=skipped,
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    log.info(
        "event=samples_loaded file=%s profile=%s measurement=%s rows=%d skipped=%d positives=%d",
        path,
        prof.name,
        prof.measurement,
        len(samples),
        skipped,
        int(samples.labels.sum()),
    )
    return samples
