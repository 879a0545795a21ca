#!/usr/bin/env python3
"""Generate the Kapacitor task files of the load directory (tickscripts/tasks/*.json).

    python compose/scripts/gen_tasks.py [--check]

Every model scored live (DEPLOYMENTS) gets the same three template tasks, so no model can
score without alerting or without its live evaluation:

    score_<model>.json          score_transactions: transactions -> @score() -> transactions_scored
    fraud_alert_<model>.json    fraud_alert: one CRITICAL alert per anomalous point -> alert sink
    model_quality_<model>.json  model_quality: rolling precision/recall/alert rate -> model_quality

A deployment of another data set names its profile; its task files then set the
measurement, database and field names of that profile (models/profile_tasks.py, which
`python -m models profile tasks` uses too).

The JSON files are committed (Kapacitor reads them from the load directory); this script is
their source. --check exits 1 when a committed file differs from what it generates or a
task file it does not generate is present. Task files hold no secret: the alert sink's
credentials live in kapacitor.conf's [[httppost]] endpoint (filled in from the
environment), which the alert template posts through by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from models.profile_tasks import (  # noqa: E402
    ALERT,
    ALERT_ENDPOINT,
    BUILDERS,
    PREFIXES,
    QUALITY,
    SCORE,
    Deployment,
    alert_task,
    quality_task,
    render,
    score_task,
)
from models.profile_tasks import task_files as _task_files  # noqa: E402

__all__ = [
    "ALERT",
    "ALERT_ENDPOINT",
    "BUILDERS",
    "DEPLOYMENTS",
    "OUT_DIR",
    "PREFIXES",
    "QUALITY",
    "SCORE",
    "Deployment",
    "alert_task",
    "main",
    "quality_task",
    "render",
    "score_task",
    "task_files",
]

OUT_DIR = REPO_ROOT / "tickscripts" / "tasks"

#: every model the compose stack scores live. A model of another data set names its
#: profile: Deployment(model="machine_failure", description="...",
#: profile=load_profile("machine_failure"))
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


def task_files(deployments: tuple[Deployment, ...] = DEPLOYMENTS) -> dict[str, dict]:
    """File name -> task document, three per deployment."""
    return _task_files(deployments)


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
