#!/usr/bin/env python3
"""Generate the Kapacitor task files of the load directory (tickscripts/tasks/*.json).

    python compose/scripts/gen_tasks.py [--check]

Every model scored live (DEPLOYMENTS) gets the same three template tasks, so no model can
score without alerting or without its live evaluation:

    score_<model>.json          score_transactions: transactions -> @score() -> transactions_scored
    fraud_alert_<model>.json    fraud_alert: one CRITICAL alert per anomalous point -> alert sink
    model_quality_<model>.json  model_quality: rolling precision/recall/alert rate -> model_quality

The JSON files are committed (Kapacitor reads them from the load directory); this script is
their source. --check exits 1 when a committed file differs from what it generates or a
task file it does not generate is present. Task files hold no secret: the alert sink's
credentials live in kapacitor.conf's [[httppost]] endpoint (filled in from the
environment), which the alert template posts through by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "tickscripts" / "tasks"

#: the [[httppost]] endpoint of compose/kapacitor/kapacitor.conf the alerts go through
ALERT_ENDPOINT = "alert-sink"
ALERT_LOG = "/var/lib/kapacitor/fraud_alerts.log"

#: template id -> task file prefix
SCORE, ALERT, QUALITY = "score_transactions", "fraud_alert", "model_quality"
PREFIXES = {SCORE: "score", ALERT: "fraud_alert", QUALITY: "model_quality"}


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """One registered model scored live, with what its three tasks need."""

    model: str
    description: str
    #: alias or version of the model scored
    version: str = "production"
    backend: str = "sklearn"
    #: local alias or version scoring when the backend fails ("name@ref" for another model)
    fallback: str | None = None
    #: alias shadow-scored into score_challenger once it exists
    challenger: str | None = "challenger"
    #: None: the model card's threshold (tuned on validation). Set only on purpose.
    threshold: float | None = None
    max_batch: int = 512
    max_delay: str = "5ms"
    quality_period: str = "5m"
    quality_every: str = "10s"


DEPLOYMENTS: tuple[Deployment, ...] = (
    Deployment(model="creditcard", description="scikit-learn model scored in-process"),
    Deployment(
        model="creditcard_tf",
        description="Keras model served by TF Serving",
        backend="tfserving",
        fallback="creditcard@production",
        max_batch=256,
        max_delay="10ms",
    ),
)


def _var(kind: str, value: object, description: str | None = None) -> dict:
    var = {"type": kind, "value": value}
    if description:
        var["description"] = description
    return var


def score_task(d: Deployment) -> dict:
    v = {
        "model": _var("string", d.model, d.description),
        "version": _var("string", d.version),
        "backend": _var("string", d.backend),
    }
    if d.threshold is not None:
        v["threshold"] = _var("float", float(d.threshold), "set on purpose: overrides the card")
    if d.fallback:
        v["fallback"] = _var("string", d.fallback, "scores in-process while the backend is down")
    if d.challenger:
        v["challenger"] = _var(
            "string", d.challenger, "shadow-scored into score_challenger once the alias exists"
        )
    v["max_batch"] = _var("int", d.max_batch)
    v["max_delay"] = _var("duration", d.max_delay)
    return {"template-id": SCORE, "vars": v}


def alert_task(d: Deployment) -> dict:
    return {
        "template-id": ALERT,
        "vars": {
            "model": _var("string", d.model),
            "endpoint": _var(
                "string", ALERT_ENDPOINT, "[[httppost]] endpoint of kapacitor.conf (holds the auth)"
            ),
            "log_path": _var("string", ALERT_LOG),
        },
    }


def quality_task(d: Deployment) -> dict:
    return {
        "template-id": QUALITY,
        "vars": {
            "model": _var("string", d.model),
            "period": _var("duration", d.quality_period),
            "every": _var("duration", d.quality_every),
        },
    }


BUILDERS = {SCORE: score_task, ALERT: alert_task, QUALITY: quality_task}


def task_files(deployments: tuple[Deployment, ...] = DEPLOYMENTS) -> dict[str, dict]:
    """File name -> task vars document, three per deployment."""
    names = [d.model for d in deployments]
    if len(set(names)) != len(names):
        raise ValueError(f"a model is deployed twice: {names}")
    out = {}
    for d in deployments:
        for template, build in BUILDERS.items():
            out[f"{PREFIXES[template]}_{d.model}.json"] = build(d)
    return out


def render(doc: dict) -> str:
    """One var per line, as people write these files."""
    lines = ["{", f'  "template-id": {json.dumps(doc["template-id"])},', '  "vars": {']
    items = list(doc["vars"].items())
    for i, (name, var) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {json.dumps(var, ensure_ascii=False)}{comma}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    files = task_files()
    stale = []
    for name, doc in files.items():
        path = args.out_dir / name
        text = render(doc)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    # a task file nobody generates would be loaded by Kapacitor all the same
    extra = sorted(
        p.name
        for p in args.out_dir.glob("*")
        if p.suffix in (".json", ".tick", ".yaml", ".yml") and p.name not in files
    )
    if extra:
        verb = "not generated" if args.check else "not generated (remove them)"
        print(f"task files {verb}: {', '.join(extra)}", file=sys.stderr)
        return 1
    if stale:
        print(f"stale task files (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
