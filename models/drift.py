"""Population stability: the distributions a model was trained on, recorded in its card,
and the population stability index (PSI) of live windows against them.

At training time :func:`reference_profile` records, for each feature, quantile bin edges
and the share of training rows in each bin (for a categorical feature: the share of each
level, plus one bucket for levels never seen), and the same for the model's scores. Live,
a :class:`DriftAccumulator` bins a window's rows with those edges, chunk by chunk (memory
stays flat however large the window), and :func:`psi` compares the shares:

    PSI = sum over bins of (live share - reference share) * ln(live share / reference share)

Conventional reading: below 0.1 no significant change, 0.1 to 0.25 a moderate shift worth
a look (warning), above 0.25 a significant shift (critical). With ``b`` bins and ``n`` live
rows, sampling noise alone gives a PSI of about ``(b - 1) / n``, so windows smaller than a
few hundred rows are not judged (``min_count``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CRITICAL",
    "DEFAULT_BINS",
    "WARNING",
    "DriftAccumulator",
    "drift_level",
    "psi",
    "reference_profile",
]

DEFAULT_BINS = 10
WARNING = 0.1
CRITICAL = 0.25
#: a share of 0 would make the logarithm infinite: empty bins count as this share
EPSILON = 1e-4
#: bucket name of categorical levels the training data did not have
OTHER = "__other__"


def _numeric_reference(values: np.ndarray, bins: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"type": "numeric", "edges": [], "freq": [1.0], "median": 0.0}
    inner = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(inner)  # a feature with few distinct values gets fewer bins
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return {
        "type": "numeric",
        "edges": [float(e) for e in edges],
        "freq": [float(c) for c in counts / counts.sum()],
        # the typical value, for explanations by occlusion (models.backends.base)
        "median": float(np.median(finite)),
    }


def _categorical_reference(values: Sequence[Any], levels: Sequence[str]) -> dict[str, Any]:
    index = {lv: i for i, lv in enumerate(levels)}
    counts = np.zeros(len(levels) + 1)
    for v in values:
        counts[index.get(str(v), len(levels))] += 1
    total = counts.sum() or 1.0
    known = counts[:-1]
    return {
        "type": "categorical",
        "levels": list(levels),
        "freq": [float(c) for c in counts / total],
        "mode": levels[int(np.argmax(known))] if len(levels) else None,
    }


def reference_profile(
    frame: Any,
    features: Sequence[str],
    types: Sequence[str],
    scores: np.ndarray | None = None,
    *,
    levels: Mapping[str, Sequence[str]] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The card's ``reference`` section from the training rows (``frame``: a DataFrame or
    a 2-D array with the features in order) and the model's scores on them."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    cols = (
        {f: np.asarray(frame[f]) for f in features}
        if hasattr(frame, "columns")
        else {f: np.asarray(frame)[:, j] for j, f in enumerate(features)}
    )
    out: dict[str, Any] = {
        "bins": bins,
        "rows": int(len(next(iter(cols.values())))),
        "features": {},
    }
    for f, kind in zip(features, types, strict=True):
        if kind == "categorical":
            known = list((levels or {}).get(f) or sorted({str(v) for v in cols[f]}))
            out["features"][f] = _categorical_reference(cols[f], known)
        else:
            out["features"][f] = _numeric_reference(cols[f].astype(np.float64), bins)
    if scores is not None:
        out["score"] = _numeric_reference(np.asarray(scores, dtype=np.float64), bins)
    return out


def psi(reference: Sequence[float], counts: Sequence[float]) -> float:
    """PSI of live ``counts`` per bin against the ``reference`` shares (same bins)."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), EPSILON)
    live = np.asarray(counts, dtype=np.float64)
    total = live.sum()
    if total <= 0:
        return math.nan
    share = np.maximum(live / total, EPSILON)
    return float(np.sum((share - ref) * np.log(share / ref)))


def drift_level(value: float, *, warning: float = WARNING, critical: float = CRITICAL) -> str:
    """``ok``, ``warning`` or ``critical`` for a PSI (``unknown`` for NaN)."""
    if not math.isfinite(value):
        return "unknown"
    if value > critical:
        return "critical"
    if value > warning:
        return "warning"
    return "ok"


class DriftAccumulator:
    """Live counts per reference bin for one window, fed chunk by chunk."""

    def __init__(self, reference: Mapping[str, Any], features: Sequence[str]) -> None:
        missing = [f for f in features if f not in reference.get("features", {})]
        if missing:
            raise ValueError(f"the reference has no distribution for {missing[:5]}")
        self.features = list(features)
        self._refs = [reference["features"][f] for f in features]
        self._score_ref = reference.get("score")
        self._edges = [np.asarray(r.get("edges", []), dtype=np.float64) for r in self._refs]
        self._levels = [
            {lv: i for i, lv in enumerate(r.get("levels", []))}
            if r["type"] == "categorical"
            else None
            for r in self._refs
        ]
        self._counts = [np.zeros(len(r["freq"])) for r in self._refs]
        self._score_edges = (
            np.asarray(self._score_ref["edges"], dtype=np.float64) if self._score_ref else None
        )
        self._score_counts = np.zeros(len(self._score_ref["freq"])) if self._score_ref else None
        self.count = 0

    def add(self, X: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Rows of a chunk (``X``: features in order; floats, or objects with category
        labels in categorical columns) and, optionally, their scores."""
        if X.shape[0] == 0:
            return
        self.count += X.shape[0]
        for j, (edges, levels, counts) in enumerate(
            zip(self._edges, self._levels, self._counts, strict=True)
        ):
            col = X[:, j]
            if levels is not None:
                other = len(levels)
                for v in col:
                    counts[levels.get(str(v), other)] += 1
            else:
                values = col.astype(np.float64)
                counts += np.bincount(
                    np.searchsorted(edges, values, side="right"), minlength=counts.size
                )
        if scores is not None and self._score_edges is not None:
            s = np.asarray(scores, dtype=np.float64)
            s = s[np.isfinite(s)]
            self._score_counts += np.bincount(  # type: ignore[operator]
                np.searchsorted(self._score_edges, s, side="right"),
                minlength=self._score_counts.size,  # type: ignore[union-attr]
            )

    def result(self) -> dict[str, float]:
        """PSI per feature (and ``score`` when scores were recorded)."""
        out = {
            f: psi(r["freq"], c)
            for f, r, c in zip(self.features, self._refs, self._counts, strict=True)
        }
        if (
            self._score_ref is not None
            and self._score_counts is not None
            and self._score_counts.sum()
        ):
            out["score"] = psi(self._score_ref["freq"], self._score_counts)
        return out
