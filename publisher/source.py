"""Test-set samples as line-protocol bodies.

Each CSV row becomes the ``transactions`` point of the data contract. Its line protocol,
everything but the timestamp, is built once by influxdb-client's ``Point`` (which does
the escaping) and cached, so publishing a sample costs one string concatenation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from influxdb_client import Point

from models import contract

from .errors import DataError

__all__ = ["CLASS_COLUMN", "SampleSource", "load_samples"]

log = logging.getLogger("publisher.source")

CLASS_COLUMN = "Class"
TXN_COLUMN = "txn_id"


class SampleSource:
    """Rows of a Kaggle-schema CSV (``Time,V1..V28,Amount,Class[,txn_id]``)."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        txn_ids: list[str],
        *,
        source: str,
        skipped: int = 0,
    ) -> None:
        if not (len(features) == len(labels) == len(txn_ids)):
            raise DataError("features, labels and txn_ids must have the same length")
        if len(features) == 0:
            raise DataError("no usable samples")
        self.features = features
        self.labels = labels
        self.txn_ids = txn_ids
        self.source = source
        self.skipped = skipped
        self._lines: list[str | None] = [None] * len(features)

    def __len__(self) -> int:
        return len(self.txn_ids)

    def point(self, i: int) -> Point:
        """The ``transactions`` point of row ``i`` (no timestamp)."""
        p = Point(contract.INPUT_MEASUREMENT).tag(contract.SOURCE_TAG, self.source)
        row = self.features[i]
        for name, value in zip(contract.FEATURES, row):
            p.field(name, float(value))
        p.field(contract.TXN_ID, self.txn_ids[i])
        p.field(contract.LABEL, int(self.labels[i]))
        return p

    def line(self, i: int) -> str:
        """Line protocol of row ``i`` without the timestamp (cached)."""
        cached = self._lines[i]
        if cached is None:
            cached = self._lines[i] = self.point(i).to_line_protocol()
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


def load_samples(path: str | Path, *, source: str) -> SampleSource:
    """Read and validate the CSV; rows that cannot be published are counted and logged."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"sample file {path} does not exist; create the test split with "
            "`python -m models split` (or pass --csv PATH)"
        )
    try:
        df = pd.read_csv(path, dtype={TXN_COLUMN: str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in [*contract.FEATURES, CLASS_COLUMN] if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)}; expected the Kaggle schema "
            "Time,V1..V28,Amount,Class plus txn_id"
        )
    features = df[contract.FEATURES].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    labels = pd.to_numeric(df[CLASS_COLUMN], errors="coerce").to_numpy(np.float64)
    if TXN_COLUMN in df.columns:
        txn = df[TXN_COLUMN].astype("string")
    else:
        log.warning("event=no_txn_id_column file=%s action=derive_from_row_number", path)
        txn = pd.Series([f"{path.stem}-{i}" for i in range(len(df))], dtype="string")

    ok = np.isfinite(features).all(axis=1) & np.isin(labels, (0.0, 1.0)) & txn.notna().to_numpy()
    ok &= (txn.fillna("").str.len() > 0).to_numpy()
    skipped = int((~ok).sum())
    if skipped:
        bad_rows = np.flatnonzero(~ok)[:5].tolist()
        log.warning(
            "event=rows_skipped file=%s count=%d reason=non_finite_feature_or_bad_class_or_txn_id "
            "first_rows=%s",
            path,
            skipped,
            bad_rows,
        )
    dup = txn[ok].duplicated()
    if dup.any():
        raise DataError(f"{path}: txn_id must be unique, {int(dup.sum())} duplicate(s)")
    source_obj = SampleSource(
        features[ok],
        labels[ok].astype(np.int64),
        txn[ok].tolist(),
        source=source,
        skipped=skipped,
    )
    log.info(
        "event=samples_loaded file=%s rows=%d skipped=%d positives=%d",
        path,
        len(source_obj),
        skipped,
        int(source_obj.labels.sum()),
    )
    return source_obj
