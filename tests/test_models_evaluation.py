"""Threshold choice and metrics: hand-computed cases and scikit-learn parity."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from models.errors import TrainingError
from models.evaluation import (
    choose_threshold,
    comparison_markdown,
    cost_curve,
    evaluate_scores,
    plot_calibration,
    plot_cost_curve,
    plot_pr_curves,
    plot_roc_curves,
)

# Six transactions, scores descending. Fraud total = 100 + 10 + 2 = 112.
Y = np.array([1, 0, 1, 0, 0, 1])
S = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
AMT = np.array([100.0, 50.0, 10.0, 20.0, 30.0, 2.0])


def test_cost_curve_by_hand():
    c = cost_curve(Y, S, AMT, review_cost=5.0)
    # never alert, then alert at >= 0.9, 0.8, 0.7, 0.3, 0.2, 0.1
    assert c.alerts.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert c.caught.tolist() == [0, 100, 100, 110, 110, 110, 112]
    assert c.cost.tolist() == [112, 17, 22, 17, 22, 27, 30]
    assert c.thresholds[0] > 0.9 and c.thresholds[1:].tolist() == S.tolist()


@pytest.mark.parametrize(
    "review_cost, threshold, cost",
    [
        (5.0, 0.9, 17.0),  # tie 0.9 / 0.7: the higher threshold (fewer alerts) wins
        (1.0, 0.7, 5.0),  # 2 missed + 3 alerts
        (0.0, 0.1, 0.0),  # free reviews: alert on everything
    ],
)
def test_cost_threshold_by_hand(review_cost, threshold, cost):
    ch = choose_threshold(Y, S, strategy="cost", amounts=AMT, review_cost=review_cost)
    assert ch.threshold == threshold and ch.value == cost and ch.strategy == "cost"


def test_cost_threshold_never_alerts_when_reviews_cost_more_than_fraud():
    ch = choose_threshold(Y, S, strategy="cost", amounts=AMT, review_cost=200.0)
    assert ch.threshold > S.max() and ch.value == 112.0
    m = evaluate_scores(Y, S, threshold=ch.threshold, amounts=AMT, review_cost=200.0)
    assert m["alerts"] == 0 and m["expected_cost"] == 112.0


def test_cost_with_tied_scores_flags_the_whole_tie():
    y = np.array([1, 0, 0, 1])
    s = np.array([0.5, 0.5, 0.2, 0.2])
    c = cost_curve(y, s, np.array([10.0, 1.0, 1.0, 3.0]), review_cost=1.0)
    assert c.alerts.tolist() == [0, 2, 4]
    assert c.cost.tolist() == [13.0, 3 + 2, 0 + 4]


def test_f1_threshold_by_hand():
    # F1 at 0.9: .5, 0.8: .4, 0.7: 2/3, 0.3: .571, 0.2: .5, 0.1: 2/3 -> tie, take 0.7
    ch = choose_threshold(Y, S, strategy="f1")
    assert ch.threshold == 0.7
    assert ch.value == pytest.approx(2 / 3)


def test_threshold_errors():
    with pytest.raises(TrainingError, match="needs the transaction amounts"):
        choose_threshold(Y, S, strategy="cost")
    with pytest.raises(TrainingError, match="unknown threshold strategy"):
        choose_threshold(Y, S, strategy="youden")
    with pytest.raises(TrainingError, match="NaN"):
        choose_threshold(Y, np.array([0.1, np.nan, 0, 0, 0, 0]))


def test_metrics_equal_scikit_learn(rng):
    y = (rng.random(3000) < 0.05).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    amt = rng.lognormal(3, 1, size=3000)
    t = 0.55
    m = evaluate_scores(y, s, threshold=t, amounts=amt, review_cost=2.5)
    pred = (s >= t).astype(int)
    assert m["auprc"] == pytest.approx(average_precision_score(y, s))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["alerts"] == pred.sum()
    assert m["money_caught"] == pytest.approx(amt[(pred == 1) & (y == 1)].sum())
    assert m["expected_cost"] == pytest.approx(amt[(pred == 0) & (y == 1)].sum() + 2.5 * pred.sum())
    # the cost strategy's value is the expected cost at its own threshold
    ch = choose_threshold(y, s, strategy="cost", amounts=amt, review_cost=2.5)
    at = evaluate_scores(y, s, threshold=ch.threshold, amounts=amt, review_cost=2.5)
    assert at["expected_cost"] == pytest.approx(ch.value)
    # ...and no other threshold on the grid is cheaper
    for th in np.quantile(s, np.linspace(0, 1, 41)):
        other = evaluate_scores(y, s, threshold=th, amounts=amt, review_cost=2.5)
        assert other["expected_cost"] >= ch.value - 1e-9
    ch_f1 = choose_threshold(y, s, strategy="f1")
    assert ch_f1.value == pytest.approx(f1_score(y, (s >= ch_f1.threshold).astype(int)))


def test_markdown_table():
    md = comparison_markdown([{"a": 1, "b": 0.123456, "c": "x|y"}], ["a", "b", "c"])
    assert md.splitlines() == ["| a | b | c |", "| --- | --- | --- |", "| 1 | 0.1235 | x/y |"]


@pytest.mark.slow
def test_plots_are_png(tmp_path, rng):
    y = (rng.random(500) < 0.1).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    curves = {"a": (y, s), "b": (y, s**2)}
    paths = [
        plot_pr_curves(curves, tmp_path / "pr.png"),
        plot_roc_curves(curves, tmp_path / "roc.png"),
        plot_calibration(curves, tmp_path / "cal.png"),
        plot_cost_curve(y, s, np.ones(500), tmp_path / "cost.png", review_cost=1, threshold=0.5),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
