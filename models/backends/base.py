"""The scoring-backend contract every model kind implements.

A backend is built from a model card, names its ordered input features and turns a 2-D
float batch (rows in card feature order) into one positive-class probability per row.
:meth:`ScoringBackend.score` enforces the contract around the subclass's :meth:`_score`,
so no caller checks it again:

- input: a 2-D array with the card's number of columns, in card order (``InvalidInput``):
  floats, or for a model with categorical features an object array holding strings in
  the categorical columns and numbers in the others;
- output: shape ``(n,)``, every value finite and within [0, 1] (``InvalidScores``, which
  carries the scores and the indexes of the bad rows so a caller may keep the others);
- an empty batch returns an empty array without calling the model;
- ``close()`` may be called any number of times; a closed backend refuses to score.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ..card import ModelCard
from ..errors import BackendError, InvalidInput, InvalidScores

__all__ = ["ScoringBackend"]


class ScoringBackend(abc.ABC):
    """Load from a card, name features, score a batch."""

    #: short name used in logs and metrics
    kind: str = "abstract"

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self._closed = False
        kinds = card.feature_types
        #: columns holding category labels (strings); the others are numbers
        self._categorical = [i for i, k in enumerate(kinds) if k == "categorical"]

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def feature_names(self) -> list[str]:
        return self.card.features

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def closed(self) -> bool:
        return self._closed

    def score(self, X: Any) -> np.ndarray:
        """Positive-class probability for each row of ``X`` (shape ``(n, n_features)``,
        columns in card order), as float64 of shape ``(n,)``."""
        if self._closed:
            raise BackendError(f"{self!r} is closed")
        width = len(self.card.features)
        try:
            X = np.asarray(X, dtype=object if self._categorical else np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{self!r}: the batch is not a float array: {exc}") from None
        if X.ndim != 2 or X.shape[1] != width:
            raise InvalidInput(
                f"{self!r} takes a (n, {width}) batch in card feature order, got shape "
                f"{list(X.shape)}"
            )
        if self._categorical:
            X = self._mixed(X)
        n = X.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        return self._check_scores(self._score(X), n)

    def _mixed(self, X: np.ndarray) -> np.ndarray:
        """An object batch of a model with categorical features: numbers as floats,
        category labels as strings (a label the model never saw is its encoder's job)."""
        out = np.empty(X.shape, dtype=object)
        cats = set(self._categorical)
        names = self.card.features
        for j in range(X.shape[1]):
            col = X[:, j]
            if j in cats:
                bad = [v for v in col if not isinstance(v, str)]
                if bad:
                    raise InvalidInput(
                        f"{self!r}: categorical feature {names[j]!r} takes strings, got "
                        f"{type(bad[0]).__name__}"
                    )
                out[:, j] = col
            else:
                try:
                    out[:, j] = col.astype(np.float64)
                except (TypeError, ValueError):
                    raise InvalidInput(f"{self!r}: feature {names[j]!r} takes numbers") from None
        return out

    def _check_scores(self, raw: Any, n: int) -> np.ndarray:
        try:
            scores = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidScores(f"{self!r} returned scores that are not numbers: {exc}") from None
        if n == 1 and scores.shape == (1,) and 0.0 <= scores[0] <= 1.0:
            return scores  # per-point scoring: the common case without array checks
        if scores.shape != (n,):
            raise InvalidScores(
                f"{self!r} returned scores of shape {list(scores.shape)} for {n} rows"
            )
        bad = np.flatnonzero(~((scores >= 0.0) & (scores <= 1.0)))  # NaN compares false
        if bad.size:
            raise InvalidScores(
                f"{self!r} returned {bad.size} score(s) that are not probabilities "
                f"(first: {scores[bad[0]]!r} at row {int(bad[0])})",
                scores=scores,
                bad=bad,
            )
        return scores

    @abc.abstractmethod
    def _score(self, X: np.ndarray) -> Any:
        """Scores of a checked, non-empty ``(n, n_features)`` float64 batch."""

    # -- explanations (optional) ----------------------------------------------------
    #: how ``explain`` computes contributions (shown to people: "linear", "occlusion"…)
    explain_method = "occlusion"

    def explain(self, X: Any) -> np.ndarray:
        """Signed contribution of each feature to each row's score, shape ``(n, k)``:
        positive pushed the score up. This default works for any backend: the score drop
        when a feature is replaced by its typical training value (the card's reference
        median, or most frequent level), one batched call for all rows and features.
        Raises NotImplementedError when the card holds no reference values."""
        reference = (self.card.data.get("reference") or {}).get("features") or {}
        names = self.card.features
        typical = []
        for f in names:
            ref = reference.get(f) or {}
            value = ref.get("mode") if ref.get("type") == "categorical" else ref.get("median")
            if value is None:
                raise NotImplementedError(
                    f"{self!r}: its card records no typical value of {f!r} (train the model "
                    "again to record reference distributions)"
                )
            typical.append(value)
        X = np.asarray(X, dtype=object if self._categorical else np.float64)
        n, k = X.shape
        if n == 0:
            return np.empty((0, k))
        base = self.score(X)
        # row r, feature j occluded -> row r * k + j of one batch
        occluded = np.repeat(X, k, axis=0)
        for j, value in enumerate(typical):
            occluded[j::k, j] = value
        scores = self.score(occluded).reshape(n, k)
        return base[:, None] - scores

    def close(self) -> None:
        """Release connections or memory; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """What ``close()`` releases (once); the default holds nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} v{self.version})"
