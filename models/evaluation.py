"""Evaluation: threshold choice, metrics on held-out data, plots and comparison tables.

The decision threshold is chosen on the validation split, either for the best F1 or
for the lowest expected cost: a missed fraud costs its ``Amount``, every alert costs
``review_cost`` (an analyst's time). Test metrics then report AUPRC, ROC-AUC,
precision/recall/F1 at that threshold, the confusion matrix, the money caught and the
alert volume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TrainingError

__all__ = [
    "THRESHOLD_STRATEGIES",
    "CostCurve",
    "ThresholdChoice",
    "choose_threshold",
    "comparison_markdown",
    "cost_curve",
    "evaluate_scores",
    "plot_calibration",
    "plot_cost_curve",
    "plot_pr_curves",
    "plot_roc_curves",
]

THRESHOLD_STRATEGIES = ("f1", "cost")


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    strategy: str
    #: F1 at the threshold (strategy f1) or the expected cost (strategy cost)
    value: float


@dataclass(frozen=True)
class CostCurve:
    """Expected cost for "alert when score >= threshold", one entry per candidate threshold.

    Entry 0 is "never alert" (threshold above every score).
    """

    thresholds: np.ndarray
    cost: np.ndarray
    alerts: np.ndarray
    caught: np.ndarray
    fraud_total: float


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise TrainingError(f"{len(y)} labels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise TrainingError("scores contain NaN or infinity")
    return y, s


def cost_curve(y, scores, amounts, *, review_cost: float = 5.0) -> CostCurve:
    """Cost of every distinct threshold: missed fraud amounts + review_cost per alert."""
    y, s = _check(y, scores)
    amounts = np.asarray(amounts, dtype=np.float64).ravel()
    if amounts.shape != s.shape:
        raise TrainingError(f"{len(amounts)} amounts but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    fraud_amt = np.where(y[order] == 1, amounts[order], 0.0)
    fraud_total = float(fraud_amt.sum())
    # last index of each run of equal scores: alerting at that score flags the whole run
    last = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    alerts = np.concatenate([[0], last + 1])
    caught = np.concatenate([[0.0], np.cumsum(fraud_amt)[last]])
    never = float(np.nextafter(s_sorted[0], np.inf)) if len(s) else 1.0
    thresholds = np.concatenate([[never], s_sorted[last]])
    cost = (fraud_total - caught) + review_cost * alerts
    return CostCurve(thresholds, cost, alerts, caught, fraud_total)


def choose_threshold(
    y,
    scores,
    *,
    strategy: str = "f1",
    amounts=None,
    review_cost: float = 5.0,
) -> ThresholdChoice:
    """Pick the decision threshold on validation data ("alert when score >= threshold").

    ``f1``: the threshold with the highest F1. ``cost``: the lowest expected cost
    (ties go to the higher threshold, i.e. fewer alerts); needs ``amounts``.
    """
    y, s = _check(y, scores)
    if strategy == "f1":
        from sklearn.metrics import precision_recall_curve

        if y.sum() == 0:
            raise TrainingError("cannot choose an F1 threshold without positives")
        precision, recall, thresholds = precision_recall_curve(y, s)
        p, r = precision[:-1], recall[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        # thresholds ascend: on a tie take the highest one (fewer alerts, same F1)
        i = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[-1])
        return ThresholdChoice(float(thresholds[i]), "f1", float(f1[i]))
    if strategy == "cost":
        if amounts is None:
            raise TrainingError("the cost strategy needs the transaction amounts")
        curve = cost_curve(y, s, amounts, review_cost=review_cost)
        i = int(np.argmin(curve.cost))
        return ThresholdChoice(float(curve.thresholds[i]), "cost", float(curve.cost[i]))
    raise TrainingError(
        f"unknown threshold strategy {strategy!r} (choose from {', '.join(THRESHOLD_STRATEGIES)})"
    )


def evaluate_scores(
    y,
    scores,
    *,
    threshold: float,
    amounts=None,
    review_cost: float = 5.0,
) -> dict[str, Any]:
    """Ranking metrics plus decision metrics at ``threshold`` (alert when score >= it)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _check(y, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "rows": len(y),
        "positives": int(y.sum()),
        "auprc": float(average_precision_score(y, s)) if both else math.nan,
        "roc_auc": float(roc_auc_score(y, s)) if both else math.nan,
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "alerts": tp + fp,
        "alert_rate": (tp + fp) / len(y) if len(y) else 0.0,
    }
    if amounts is not None:
        amounts = np.asarray(amounts, dtype=np.float64).ravel()
        fraud_total = float(amounts[y == 1].sum())
        caught = float(amounts[pred & (y == 1)].sum())
        out |= {
            "review_cost": float(review_cost),
            "fraud_amount": fraud_total,
            "money_caught": caught,
            "money_missed": fraud_total - caught,
            "money_caught_frac": caught / fraud_total if fraud_total else 0.0,
            "expected_cost": (fraud_total - caught) + review_cost * (tp + fp),
        }
    return out


# -- tables ------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "nan"
        return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4f}"
    return str(v).replace("|", "/")


def comparison_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` restricted to ``columns``."""
    head = "| " + " | ".join(columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


# -- plots (matplotlib Agg; one PNG each) ------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str = ""
) -> Path:
    """Precision-recall curves of several models on the same labels."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    base = None
    for name, (y, s) in curves.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.plot(r, p, label=f"{name} (AP={average_precision_score(y, s):.3f})", lw=1.5)
        base = float(np.mean(y))
    if base is not None:
        ax.axhline(base, color="grey", ls=":", lw=1, label=f"chance ({base:.4f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title or "Precision-recall (test)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str = ""
) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC={roc_auc_score(y, s):.3f})", lw=1.5)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xscale="log")
    ax.set_xlim(1e-5, 1)
    ax.set_title(title or "ROC (test, log x)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_cost_curve(
    y, scores, amounts, path: Path, *, review_cost: float, threshold: float, title: str = ""
) -> Path:
    """Expected cost and alert volume against the threshold, with the chosen one marked."""
    curve = cost_curve(y, scores, amounts, review_cost=review_cost)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    t = np.clip(curve.thresholds, 0, 1)
    ax.plot(t, curve.cost, color="C3", lw=1.5, label="expected cost")
    ax.plot(t, curve.fraud_total - curve.caught, color="C1", lw=1, ls="--", label="missed fraud")
    ax.axvline(threshold, color="k", ls=":", lw=1, label=f"chosen threshold {threshold:.3f}")
    ax.set(xlabel="threshold (alert when score >= threshold)", ylabel="cost (currency units)")
    # log scale: alerting on everything costs orders of magnitude more than the optimum
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, curve.alerts, color="C0", lw=1, alpha=0.7, label="alerts")
    ax2.set_ylabel("alerts")
    ax2.set_yscale("symlog", linthresh=1.0)
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center")
    ax.set_title(title or f"Threshold vs cost (review cost {review_cost:g} per alert)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_calibration(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, n_bins: int = 10
) -> Path:
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    for name, (y, s) in curves.items():
        frac, mean = calibration_curve(y, s, n_bins=n_bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, lw=1.2, label=name)
    ax.set(xlabel="mean predicted probability", ylabel="fraction of fraud")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration (test, quantile bins)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
