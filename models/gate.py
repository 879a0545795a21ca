"""The promotion gate of ``models retrain``: does a freshly trained challenger replace the
champion? A pure function of the holdout's labels and both models' scores on it.

The rules, in order (the first that applies decides):

1. **Enough evidence.** The holdout needs ``min_positives`` rows of each class, else
   nothing can be compared: kept.
2. **Skill.** The challenger must rank better than chance: a one-sided Mann-Whitney U
   test of its scores on the positives against those on the negatives (the null
   hypothesis "scores and labels are unrelated", which is exactly what a model trained
   on shuffled labels gives on a holdout drawn from the same data) must reject at
   ``skill_alpha`` (0.001), and its AUPRC must exceed the positive rate (a model without
   skill's AUPRC). For the cost metric the challenger must also cost less than doing
   without a model (the cheaper of alerting on nothing and alerting on everything). A
   challenger without skill is kept, even when there is no champion.
3. **No champion** (none yet, or one that cannot score the fresh data): the skilled
   challenger is promoted.
4. **Gain.** The challenger must beat the champion by ``min_gain`` on the chosen metric
   (``auprc``: absolute AUPRC points, higher is better; ``cost``: relative reduction of
   the expected cost, ``(champion - challenger) / champion``, at each model's own
   threshold), *and* the gain must hold up: its lower confidence bound over ``n_boot``
   paired, class-stratified bootstrap resamples of the holdout (``confidence``, 0.95)
   must be above zero. A tie (gain 0) is kept.

Everything is seeded: the same inputs give the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "METRICS",
    "Decision",
    "GatePolicy",
    "Scored",
    "average_precision",
    "decide",
    "expected_cost",
]

#: the gate's metrics: AUPRC (higher is better), expected cost (lower is better)
METRICS = ("auprc", "cost")


@dataclass(frozen=True, kw_only=True)
class GatePolicy:
    """How demanding the gate is (see the module docstring)."""

    metric: str = "auprc"
    #: auprc: absolute AUPRC points; cost: fraction of the champion's expected cost
    min_gain: float = 0.01
    #: one-sided confidence of the gain's lower bound
    confidence: float = 0.95
    #: p-value under which the challenger is taken to rank better than chance
    skill_alpha: float = 0.001
    n_boot: int = 1000
    #: rows of each class the holdout needs before anything is compared
    min_positives: int = 5
    #: cost of one alert, in value units (cost metric)
    review_cost: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.metric not in METRICS:
            problems.append(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not (math.isfinite(self.min_gain) and self.min_gain >= 0):
            problems.append(f"min_gain must be >= 0, got {self.min_gain}")
        if not 0.5 <= self.confidence < 1:
            problems.append(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 0 < self.skill_alpha < 0.5:
            problems.append(f"skill_alpha must be in (0, 0.5), got {self.skill_alpha}")
        if self.n_boot < 100:
            problems.append("n_boot must be >= 100")
        if self.min_positives < 1:
            problems.append("min_positives must be >= 1")
        if self.review_cost < 0:
            problems.append("review_cost must be >= 0")
        if problems:
            raise DataError("; ".join(problems))


@dataclass(frozen=True)
class Scored:
    """One model's scores on the holdout, and the threshold it alerts at."""

    version: str
    scores: np.ndarray
    threshold: float


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with every figure it was reached on."""

    promote: bool
    #: promoted, kept
    event: str
    #: one sentence saying why
    reason: str
    metric: str
    #: the challenger's figure on the chosen metric (AUPRC, or expected cost)
    challenger_value: float
    champion_value: float | None
    #: auprc: challenger - champion; cost: relative cost reduction; None without champion
    gain: float | None
    #: lower confidence bound of the gain (bootstrap)
    gain_low: float | None
    min_gain: float
    confidence: float
    #: the challenger's AUPRC, and the p-value of its ranking against chance (Mann-Whitney)
    challenger_auprc: float
    champion_auprc: float | None
    skill_p: float
    #: AUPRC of a model without skill (the positive rate) and, for the cost metric, the
    #: cost of doing without a model
    chance_auprc: float
    baseline_cost: float | None
    rows: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# -- metrics, vectorised over resamples ---------------------------------------------------
# AUPRC only changes where a positive is: AP = sum over positives of (1/P) x the precision at
# the end of the positive's run of equal scores (scikit-learn's threshold steps). So a
# bootstrap resample needs only the positives' weights and the negatives' weight before
# each positive run.
@dataclass(frozen=True)
class _Ranked:
    """One model's scores ranked (descending) against the holdout's labels."""

    order: np.ndarray
    #: last sorted position of each run of equal scores
    ends: np.ndarray
    #: sorted positions of the positives
    pos_rows: np.ndarray
    #: for each run holding a positive: index (into pos_rows) of its last positive
    pos_last: np.ndarray
    #: segment starts of those runs over the sorted rows (np.add.reduceat), and whether
    #: the last segment runs past the last positive run (to be dropped)
    seg_starts: np.ndarray
    extra_tail: bool
    neg: np.ndarray


def _ranked(scores: np.ndarray, y: np.ndarray) -> _Ranked:
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    ys = y[order]
    pos_rows = np.flatnonzero(ys == 1)
    run = np.searchsorted(ends, pos_rows)
    last = np.flatnonzero(np.r_[run[1:] != run[:-1], True])
    run_ends = ends[run[last]]
    starts = np.r_[0, run_ends[:-1] + 1]
    extra_tail = bool(run_ends[-1] + 1 < len(s))
    if extra_tail:
        starts = np.r_[starts, run_ends[-1] + 1]
    return _Ranked(order, ends, pos_rows, last, starts, extra_tail, (ys == 0).astype(np.float64))


def _ap_weighted(r: _Ranked, w: np.ndarray) -> np.ndarray:
    """AUPRC under row weights ``w`` (``(k, n)``, holdout order): one per resample."""
    ws = w[:, r.order]
    tps = np.cumsum(ws[:, r.pos_rows], axis=1)[:, r.pos_last]
    fps = np.add.reduceat(ws * r.neg, r.seg_starts, axis=1)
    if r.extra_tail:
        fps = fps[:, :-1]
    fps = np.cumsum(fps, axis=1)
    total = tps[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        steps = np.diff(tps, axis=1, prepend=0.0) / total
    return np.sum(steps * precision, axis=1)


def _ap_positions(ends: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUPRC when the positives sit at sorted positions ``pos`` (``(k, P)``, each row
    sorted): the precision at the end of each positive's run, averaged."""
    k, n_pos = pos.shape
    run = np.searchsorted(ends, pos)
    # positives up to the end of each positive's run: a search in the row's own runs
    flat = (run + np.arange(k)[:, None] * (len(ends) + 1)).ravel()
    upto = np.searchsorted(flat, flat, side="right").reshape(k, n_pos)
    upto -= np.arange(k)[:, None] * n_pos
    return np.mean(upto / (ends[run] + 1), axis=1)


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """AUPRC (average precision), equal to scikit-learn's ``average_precision_score``."""
    y = np.asarray(y).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if not y.any():
        return math.nan
    r = _ranked(scores, y)
    return float(_ap_positions(r.ends, r.pos_rows[None, :])[0])


def expected_cost(
    y: np.ndarray, scores: np.ndarray, value: np.ndarray, *, threshold: float, review_cost: float
) -> float:
    """Missed positives' value plus ``review_cost`` per alert (score >= threshold)."""
    y = np.asarray(y)
    alert = np.asarray(scores) >= threshold
    return float(np.sum(np.asarray(value)[(y == 1) & ~alert]) + review_cost * np.sum(alert))


def _check(y: np.ndarray, scored: Scored, what: str) -> np.ndarray:
    s = np.asarray(scored.scores, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise DataError(f"{what}: {s.shape[0]} scores for {y.shape[0]} holdout rows")
    if not np.isfinite(s).all():
        raise DataError(f"{what}: scores must be finite")
    return s


def _stratified_weights(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, n)`` bootstrap counts that keep each class's size."""
    n = y.shape[0]
    w = np.zeros(k * n, dtype=np.float64)
    rows = np.arange(k)[:, None] * n
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        draws = idx[rng.integers(0, idx.size, size=(k, idx.size))] + rows
        w += np.bincount(draws.ravel(), minlength=k * n)
    return w.reshape(k, n)


def _blocks(total: int, size: int):
    for start in range(0, total, size):
        yield min(size, total - start)


def decide(
    y: np.ndarray,
    challenger: Scored,
    champion: Scored | None = None,
    *,
    value: np.ndarray | None = None,
    policy: GatePolicy = GatePolicy(),
    champion_problem: str | None = None,
) -> Decision:
    """Promote the challenger or keep the champion (see the module docstring).

    ``y``: the holdout's 0/1 labels; ``value``: its value column (cost metric);
    ``champion``: None when there is none; ``champion_problem``: why an existing champion
    could not be scored (it then counts as absent, and the reason says so).
    """
    y = np.asarray(y).ravel()
    if y.size == 0 or not np.isin(y, (0, 1)).all():
        raise DataError("holdout labels must be 0 or 1, and at least one")
    y = y.astype(np.int64)
    s_new = _check(y, challenger, "challenger")
    s_old = _check(y, champion, "champion") if champion is not None else None
    cost = policy.metric == "cost"
    if cost:
        if value is None:
            raise DataError("the cost metric needs the holdout's value column")
        value = np.asarray(value, dtype=np.float64).ravel()
        if value.shape != y.shape or not np.isfinite(value).all():
            raise DataError("the value column needs one finite value per holdout row")
    n, pos = int(y.size), int(y.sum())
    chance = pos / n
    rng = np.random.default_rng(policy.seed)

    def verdict(promote: bool, reason: str, **kw: Any) -> Decision:
        fields = {
            "challenger_value": math.nan,
            "champion_value": None,
            "gain": None,
            "gain_low": None,
            "challenger_auprc": math.nan,
            "champion_auprc": None,
            "skill_p": math.nan,
            "baseline_cost": None,
        } | kw
        return Decision(
            promote=promote,
            event="promoted" if promote else "kept",
            reason=reason,
            metric=policy.metric,
            min_gain=policy.min_gain,
            confidence=policy.confidence,
            chance_auprc=chance,
            rows=n,
            positives=pos,
            **fields,
        )

    # 1. evidence
    if min(pos, n - pos) < policy.min_positives:
        return verdict(
            False,
            f"the holdout has {pos} positive and {n - pos} negative row(s); at least "
            f"{policy.min_positives} of each are needed to compare models: kept",
        )

    # 2. skill: the challenger's AUPRC against the same scores on permuted labels
    from scipy.stats import mannwhitneyu

    r_new = _ranked(s_new, y)
    ap_new = float(_ap_positions(r_new.ends, r_new.pos_rows[None, :])[0])
    skill_p = float(
        mannwhitneyu(s_new[y == 1], s_new[y == 0], alternative="greater", method="auto").pvalue
    )
    figures: dict[str, Any] = {"challenger_auprc": ap_new, "skill_p": skill_p}
    if s_old is not None:
        figures["champion_auprc"] = average_precision(y, s_old)
    if cost:
        assert value is not None
        baseline = min(float(value[y == 1].sum()), policy.review_cost * n)
        c_new = expected_cost(
            y, s_new, value, threshold=challenger.threshold, review_cost=policy.review_cost
        )
        figures |= {"baseline_cost": baseline, "challenger_value": c_new}
        if s_old is not None:
            assert champion is not None
            figures["champion_value"] = expected_cost(
                y, s_old, value, threshold=champion.threshold, review_cost=policy.review_cost
            )
    else:
        figures["challenger_value"] = ap_new
        figures["champion_value"] = figures.get("champion_auprc")
    if skill_p >= policy.skill_alpha or ap_new <= chance:
        return verdict(
            False,
            f"the challenger ranks no better than chance on the holdout (AUPRC {ap_new:.4f} "
            f"vs {chance:.4f} by chance; Mann-Whitney p={skill_p:.2g}, needs < "
            f"{policy.skill_alpha:g}): kept",
            **figures,
        )
    if cost and figures["challenger_value"] >= figures["baseline_cost"]:
        return verdict(
            False,
            f"the challenger's expected cost {figures['challenger_value']:,.2f} is no lower "
            f"than doing without a model ({figures['baseline_cost']:,.2f}): kept",
            **figures,
        )

    # 3. no champion
    if s_old is None:
        what = (
            f"AUPRC {ap_new:.4f}, chance {chance:.4f}, p={skill_p:.2g}"
            if not cost
            else f"expected cost {figures['challenger_value']:,.2f} vs "
            f"{figures['baseline_cost']:,.2f} without a model; AUPRC {ap_new:.4f}"
        )
        why = (
            f"the champion cannot score the fresh data ({champion_problem})"
            if champion_problem
            else "no champion yet: the first model"
        )
        return verdict(True, f"{why} is promoted; it ranks better than chance ({what})", **figures)

    # 4. gain over the champion, and its lower bound over paired bootstrap resamples
    assert champion is not None
    gains = []
    if cost:
        assert value is not None
        c_old = figures["champion_value"]
        unit = max(c_old, 1e-12)
        gain = (c_old - figures["challenger_value"]) / unit

        # per-row cost of each model: bootstrap sums are weight @ cost
        def row_cost(s: np.ndarray, t: float) -> np.ndarray:
            alert = s >= t
            return np.where((y == 1) & ~alert, value, 0.0) + policy.review_cost * alert

        diff = row_cost(s_old, champion.threshold) - row_cost(s_new, challenger.threshold)
        for k in _blocks(policy.n_boot, 100):
            w = _stratified_weights(y, k, rng)
            gains.append((w @ diff) / unit)
    else:
        gain = ap_new - figures["champion_auprc"]
        r_old = _ranked(s_old, y)
        for k in _blocks(policy.n_boot, 100):
            w = _stratified_weights(y, k, rng)
            gains.append(_ap_weighted(r_new, w) - _ap_weighted(r_old, w))
    boot = np.concatenate(gains)
    gain_low = float(np.quantile(boot, 1.0 - policy.confidence))
    figures |= {"gain": float(gain), "gain_low": gain_low}
    unit_text = "AUPRC points" if not cost else "of the champion's expected cost"
    shown = (
        f"AUPRC {ap_new:.4f} vs {figures['champion_auprc']:.4f}"
        if not cost
        else f"expected cost {figures['challenger_value']:,.2f} vs {c_old:,.2f}"
    )
    level = f"{policy.confidence:.0%}"
    if gain <= 0 or gain < policy.min_gain:
        tie = "a tie" if gain == 0 else f"gain {gain:+.4f} {unit_text}"
        return verdict(
            False,
            f"challenger v{challenger.version} does not beat champion v{champion.version} "
            f"by {policy.min_gain:g} ({shown}: {tie}): kept",
            **figures,
        )
    if gain_low <= 0:
        return verdict(
            False,
            f"challenger v{challenger.version}'s gain over champion v{champion.version} "
            f"({shown}: {gain:+.4f} {unit_text}) is not significant: its {level} lower "
            f"bound is {gain_low:+.4f}: kept",
            **figures,
        )
    return verdict(
        True,
        f"challenger v{challenger.version} beats champion v{champion.version} ({shown}: "
        f"{gain:+.4f} {unit_text} >= {policy.min_gain:g}, {level} lower bound "
        f"{gain_low:+.4f}): promoted",
        **figures,
    )
