"""Stage ``report``: figures against the labels, the PNG and the JSON report, the summary."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models import contract

if TYPE_CHECKING:
    from .model import ReadyModel
    from .prepare import PreparedData
    from .replay import Replayed
    from .services import Agent, Sink
    from .stage import Workspace

__all__ = [
    "PointOutcome",
    "build_report",
    "format_summary",
    "percentile_merge",
    "quality",
    "write_json",
    "write_plot",
]


@dataclass(frozen=True, slots=True)
class PointOutcome:
    """What happened to one replayed point (``alerted``: an alert was accepted by the sink)."""

    txn_id: str
    time_ns: int
    score: float | None
    is_anomaly: bool
    label: int | None
    amount: float
    alerted: bool


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def quality(points: Sequence[PointOutcome]) -> dict[str, Any]:
    """Precision/recall/F1 of the alerts against the labels, and the fraud amounts."""
    labelled = [p for p in points if p.label is not None]
    tp = sum(1 for p in labelled if p.alerted and p.label == 1)
    fp = sum(1 for p in labelled if p.alerted and p.label == 0)
    fn = sum(1 for p in labelled if not p.alerted and p.label == 1)
    tn = len(labelled) - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    caught = float(sum(p.amount for p in labelled if p.alerted and p.label == 1))
    missed = float(sum(p.amount for p in labelled if not p.alerted and p.label == 1))
    out: dict[str, Any] = {
        "labelled_points": len(labelled),
        "fraud": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fraud_amount_caught": round(caught, 2),
        "fraud_amount_missed": round(missed, 2),
        "fraud_amount_caught_frac": _ratio(caught, caught + missed),
        "review_amount_flagged": round(
            float(sum(p.amount for p in labelled if p.alerted and p.label == 0)), 2
        ),
    }
    y, s = _scored_arrays(points)
    if 0 < y.sum() < len(y):
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["auprc"] = float(average_precision_score(y, s))
        out["roc_auc"] = float(roc_auc_score(y, s))
    return out


def _scored_arrays(points: Sequence[PointOutcome]) -> tuple[np.ndarray, np.ndarray]:
    keep = [p for p in points if p.score is not None and p.label is not None]
    return (
        np.array([p.label for p in keep], dtype=np.int64),
        np.array([p.score for p in keep], dtype=np.float64),
    )


def write_plot(points: Sequence[PointOutcome], path: Path, *, threshold: float, title: str) -> Path:
    """Score timeline (alerts and fraud marked, threshold line) and the PR curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    pts = sorted((p for p in points if p.score is not None), key=lambda p: p.time_ns)
    fig, (ax, ax_pr) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    if pts:
        t = np.arange(len(pts))  # replay order (= time order)
        s = np.clip(np.array([p.score for p in pts]), 1e-6, 1.0)
        lab = np.array([p.label == 1 for p in pts])
        alerted = np.array([p.alerted for p in pts])
        ax.scatter(t[~lab], s[~lab], s=2, color="0.6", alpha=0.5, lw=0, label="normal")
        ax.scatter(t[lab], s[lab], s=22, color="C1", marker="o", label="fraud (label)")
        ax.scatter(
            t[alerted], s[alerted], s=60, facecolors="none", edgecolors="C3", lw=1.2,
            label=f"alert ({int(alerted.sum())})",
        )  # fmt: skip
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
        ax.set_yscale("log")
        ax.set_ylim(1e-6, 1.5)
        ax.set_xlabel("point, in replay (time) order")
    ax.set_ylabel("score (log)")
    ax.set_title("Score timeline")
    ax.legend(loc="lower right", fontsize=8, markerscale=1.5)
    ax.grid(alpha=0.3)

    y, sc = _scored_arrays(points)
    if 0 < y.sum() < len(y):
        from sklearn.metrics import average_precision_score

        prec, rec, _ = precision_recall_curve(y, sc)
        ax_pr.plot(rec, prec, lw=1.5, label=f"AP={average_precision_score(y, sc):.3f}")
        pred = sc >= threshold
        tp = int(np.sum(pred & (y == 1)))
        op_p = tp / pred.sum() if pred.sum() else 0.0
        op_r = tp / y.sum()
        ax_pr.plot([op_r], [op_p], "o", color="C3", label=f"threshold: P={op_p:.2f} R={op_r:.2f}")
        ax_pr.axhline(y.mean(), color="grey", ls=":", lw=1, label=f"chance ({y.mean():.4f})")
        ax_pr.legend(loc="lower left", fontsize=8)
    else:
        ax_pr.text(0.5, 0.5, "no fraud in the replayed points", ha="center", va="center")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set_title("Precision-recall")
    ax_pr.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _clean(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(report: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2) + "\n")
    tmp.replace(path)
    return path


def percentile_merge(windows: Sequence[tuple[int, dict[str, float]]]) -> dict[str, Any]:
    """Latency of the whole replay from per-window percentiles (exact for one window)."""
    windows = [(n, lat) for n, lat in windows if n and lat]
    if not windows:
        return {}
    if len(windows) == 1:
        return {**windows[0][1], "windows": 1, "aggregation": "exact"}
    total = sum(n for n, _ in windows)
    return {
        "p50": sum(n * lat["p50"] for n, lat in windows) / total,
        "p95": max(lat["p95"] for _, lat in windows),
        "p99": max(lat["p99"] for _, lat in windows),
        "max": max(lat["max"] for _, lat in windows),
        "windows": len(windows),
        "aggregation": "p50: point-weighted mean of the windows' p50; p95/p99/max: the "
        "largest window value (an upper bound)",
    }


def build_report(
    ws: Workspace,
    data: PreparedData,
    model: ReadyModel,
    agent: Agent,
    sink: Sink,
    replayed: Replayed,
    *,
    sink_documents: int,
    influx: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``report`` stage: quality against the labels, ``report.png``, and the report
    (written as ``report.json`` once the services are stopped, with the run's seconds)."""
    config, dataset, run_dir = ws.config, ws.dataset, ws.run_dir
    alerted = set(replayed.accepted)
    outcomes = []
    for s in replayed.scored:
        f = s.record.fields
        score = f.get(contract.SCORE)
        outcomes.append(
            PointOutcome(
                txn_id=s.ident,
                time_ns=s.record.time_ns,
                score=None if score is None else float(score),
                is_anomaly=bool(f.get(contract.IS_ANOMALY)),
                label=f.get(dataset.profile.label_field),
                amount=s.value,
                alerted=s.ident in alerted,
            )
        )
    q = quality(outcomes)
    card, splits, test = model.card, data.splits, data.test
    texts = "" if dataset.is_cards else " with the profile's alert texts"
    ids_key = "txn_ids" if dataset.is_cards else "ids"
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": 0.0,
    }
    if not dataset.is_cards:
        report["profile"] = dataset.report_section()
    report |= {
        "config": {
            "rate": config.rate,
            "n": config.n,
            "window": replayed.window,
            "small": config.small,
            "influx_url": config.influx_url,
            "max_batch": config.max_batch,
            "max_delay": config.max_delay,
        },
        "data": {
            "source": splits.source,
            "data_dir": str(data.data_dir),
            "splits_reused": data.reused,
            "splits": splits.summary(),
            "test_rows": len(test),
            "test_fraud": int(test[dataset.label].sum()),
        },
        "model": {
            "name": card.name,
            "version": card.version,
            "versions_seen": replayed.versions,
            "framework": card.framework,
            "candidate": card.data.get("candidate"),
            "threshold": model.threshold,
            "registry": str(model.registry.root),
            "card_metrics": dict(card.metrics),
            "trained": model.trained,
        },
        "replay": {
            "points": len(replayed.scored),
            "score_errors": replayed.score_errors,
            "anomalies": replayed.anomalies,
            "throughput": len(replayed.scored) / replayed.agent_seconds
            if replayed.agent_seconds
            else 0.0,
            "agent_seconds": replayed.agent_seconds,
            "wall_seconds": replayed.wall_seconds,
            "latency_ms": percentile_merge(replayed.latency_windows),
            "task_options": replayed.options,
            "source": ws.source,
        },
        "alerts": {
            "rule": "CRITICAL when is_anomaly == TRUE, no recoveries "
            f"(tickscripts/templates/fraud_alert.tick{texts})",
            "posted": len(replayed.accepted),
            "failed": len(replayed.failed),
            "sink_url": sink.url,
            "sink_documents": sink_documents,
            "index": dataset.profile.alert_index,
            ids_key: sorted(replayed.accepted),
        },
        "quality": q,
        "influx": influx,
        "files": {
            "json": str(run_dir / "report.json"),
            "plot": str(run_dir / "report.png"),
            "alerts_db": str(sink.alerts_db),
            "logs": [str(agent.process.log_path), str(sink.process.log_path)],
        },
        "processes": {"udf_agent": agent.process.pid, "alert_sink": sink.process.pid},
    }
    write_plot(
        outcomes,
        run_dir / "report.png",
        threshold=model.threshold,
        title=(
            f"{card.name} v{card.version} on {len(outcomes):,} test points "
            f"({splits.source}) | precision {q['precision']:.2f} recall "
            f"{q['recall']:.2f} F1 {q['f1']:.2f} | {len(replayed.accepted)} alerts"
        ),
    )
    return report


def _money(v: float) -> str:
    return f"{v:,.2f}"


def format_summary(r: dict[str, Any]) -> str:
    q, rp, al, mdl, data = r["quality"], r["replay"], r["alerts"], r["model"], r["data"]
    prof = r.get("profile")  # another data set than credit cards
    positive = "fraud" if prof is None else "positive"
    lat = rp.get("latency_ms", {})
    trained = (
        f", trained now in {mdl['trained']['fit_seconds']:.1f} s" if mdl.get("trained") else ""
    )
    lines = [
        f"Demo finished in {r['seconds']:.1f} s. Run folder: {r['run_dir']}",
        f"  data     {data['source']}: replayed the test split, {data['test_rows']:,} rows "
        f"({data['test_fraud']} {positive}){' via InfluxDB ' + r['influx']['url'] if r.get('influx') else ''}",
        f"  model    {mdl['name']} v{mdl['version']} ({mdl.get('candidate') or mdl['framework']}"
        f"{trained}), threshold {mdl['threshold']:.4g}",
        f"  scored   {rp['points']:,} points through the UDF agent, "
        f"{rp['score_errors']} score errors",
        f"  alerts   {al['posted']:,} posted to the alert sink (CRITICAL, Kapacitor alert JSON), "
        f"{al['sink_documents']:,} stored, {al['failed']} failed",
        f"  quality  precision {q['precision']:.3f}  recall {q['recall']:.3f}  F1 {q['f1']:.3f}  "
        f"(TP {q['tp']}, FP {q['fp']}, FN {q['fn']})",
        f"  fraud    caught {_money(q['fraud_amount_caught'])}, missed "
        f"{_money(q['fraud_amount_missed'])} ({100 * q['fraud_amount_caught_frac']:.1f} % caught)"
        if prof is None
        else f"  {prof['value']:<8} caught {q['fraud_amount_caught']:,.2f}, missed "
        f"{q['fraud_amount_missed']:,.2f} ({100 * q['fraud_amount_caught_frac']:.1f} % caught)"
        if prof.get("value")
        else f"  data set {prof['name']}: {prof['measurement']} -> {prof['scored_measurement']} "
        f"in {prof['database']}, alerts in index {prof['alert_index']}",
        f"  speed    {rp['throughput']:,.0f} points/s; latency p50 {lat.get('p50', float('nan')):.2f} ms, "
        f"p99 {lat.get('p99', float('nan')):.2f} ms (point sent -> scored point back)",
        f"  files    {r['files']['plot']}  {r['files']['json']}  {r['files']['alerts_db']}",
    ]
    return "\n".join(lines)
