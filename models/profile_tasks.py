"""Kapacitor task files for a data-set profile: scoring, alert, live quality and input drift
per model.

The four templates of ``tickscripts/templates`` take every name of a data set from vars —
input and scored measurement, database and retention policy, the alert's id, message and
details, the label's field through two lambda vars — and carry no ``dbrp`` statement:
Kapacitor refuses a task whose database is named both in its script and in its
definition ("cannot specify dbrp in both implicitly and explicitly"), so each task file
names its database and retention policy in ``dbrps``, the way the load directory's task
files define the task (``template-id``, ``dbrps``, ``vars``).

A lambda cannot reference a field whose name is held in a string var (a string var in a
lambda is a string, not a field), so the live-quality template asks two *lambda* vars
whether a point has a ground truth (``labelled``) and whether it is positive
(``positive``); a task file sets them as ``{"type": "lambda", "value": "\\"label\\" == 1"}``,
which Kapacitor parses as a lambda and inlines where the template names the var. Field
names inside Go templates (alert message and details) sit in ``index .Fields "NAME"``.

The template defaults are the credit-card profile's names, so the credit-card task files
set none of them; every other profile's files set them all.

    python -m models profile tasks PROFILE -o DIR [--model NAME] [--backend tfserving ...]

writes ``DIR/templates/*.tick`` and
``DIR/tasks/{score,fraud_alert,model_quality,drift}_<model>.json``, the layout of Kapacitor's
load directory (``[load] dir``) that the compose stack mounts.

The drift task (``model_drift``) is a batch task: its query reads the data set's input
measurement (``SELECT *`` from its database, retention policy and measurement, InfluxQL
identifiers escaped), the ``@drift()`` UDF compares each window with the model card's
reference distributions, and the task tags its ``model_drift`` points with the data set's
name (``data_set``), by which the alert sink routes drift alerts to the data set's index.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profile import DEFAULT_PROFILE, Profile, load_profile

__all__ = [
    "ALERT",
    "ALERT_ENDPOINT",
    "DRIFT",
    "PREFIXES",
    "QUALITY",
    "SCORE",
    "TEMPLATES_DIR",
    "Deployment",
    "alert_texts",
    "add_tasks_parser",
    "cmd_tasks",
    "drift_query",
    "go_template_field",
    "profile_vars",
    "render",
    "task_files",
    "write_load_dir",
]

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "tickscripts" / "templates"

#: template id -> task file prefix
SCORE, ALERT, QUALITY = "score_transactions", "fraud_alert", "model_quality"
DRIFT = "model_drift"
PREFIXES = {SCORE: "score", ALERT: "fraud_alert", QUALITY: "model_quality", DRIFT: "drift"}

#: the [[httppost]] endpoint of compose/kapacitor/kapacitor.conf the alerts go through
ALERT_ENDPOINT = "alert-sink"
ALERT_LOG_DIR = "/var/lib/kapacitor"

MODEL_TAG, MODEL_VERSION_TAG, SOURCE_TAG = "model", "model_version", "source"
TOP_FEATURES = "top_features"
#: a TICKscript duration literal
_DURATION = re.compile(r"[1-9][0-9]*(ns|us|u|µ|ms|s|m|h|d|w)")


def _default_profile() -> Profile:
    return load_profile(DEFAULT_PROFILE)


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """One registered model scored live, with what its three tasks need."""

    model: str
    description: str
    #: the data set it scores (None: the default, credit cards)
    profile: Profile | None = field(default=None, compare=False)
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
    #: features named in top_features of an anomalous point (0: no explanations)
    explain: int = 3
    quality_period: str = "5m"
    quality_every: str = "10s"
    #: watch the model's input for drift (a batch task on the drift UDF)
    drift: bool = True
    drift_period: str = "10m"
    drift_every: str = "1m"
    #: PSI levels of the worst feature: warning above drift_warn, critical above drift_crit
    drift_warn: float = 0.1
    drift_crit: float = 0.25
    drift_min_count: int = 200

    @property
    def data_set(self) -> Profile:
        return self.profile if self.profile is not None else _default_profile()


# -- names into TICKscript and Go templates ---------------------------------------------
def tick_reference(name: str) -> str:
    """A field or tag reference inside a lambda: ``"name"`` with ``"`` escaped."""
    return '"' + name.replace('"', '\\"') + '"'


def _go_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def go_template_field(name: str, *, tag: bool = False) -> str:
    """The Go-template action printing a point's field (or tag) ``name``."""
    kind = "Tags" if tag else "Fields"
    return "{{ index ." + kind + " " + _go_string(name) + " }}"


def _is_tag(p: Profile, name: str) -> bool:
    return name in p.tags


def _top_features_suffix() -> str:
    """The end of an anomaly's message: its top_features when the point has them."""
    action = go_template_field(TOP_FEATURES).replace("{{ ", "{{ with ", 1)
    return f"{action}; top features {{{{ . }}}}{{{{ end }}}}"


def alert_texts(p: Profile, *, explanation: bool = False) -> dict[str, str]:
    """The alert node's id, message and details templates for ``p``'s scored points. With
    ``explanation`` (what the alert tasks use) the message ends with the point's
    top_features when it has them, through a ``{{ with }}`` action; without it, the message
    has ``{{ index }}`` actions only."""
    suffix = _top_features_suffix() if explanation else ""
    model = go_template_field(MODEL_TAG, tag=True)
    version = go_template_field(MODEL_VERSION_TAG, tag=True)
    score, threshold = go_template_field("score"), go_template_field("threshold")
    if p.name == DEFAULT_PROFILE:
        # the credit-card alert as it has always read
        txn, amount = go_template_field("txn_id"), go_template_field("Amount")
        label = go_template_field("label")
        source = go_template_field(SOURCE_TAG, tag=True)
        return {
            "alert_id": f"fraud:{model}",
            "message": f"Suspected fraud: txn {txn} scored {score} (threshold {threshold}), "
            f"amount {amount}, model {model} v{version}{suffix}",
            "details": f"txn_id={txn} score={score} threshold={threshold} amount={amount} "
            f"model={model} model_version={version} source={source} label={label}",
        }
    shown = [n for n in p.message_fields if n != p.id_column]
    parts = ", ".join(f"{n} {go_template_field(n, tag=_is_tag(p, n))}" for n in shown)
    ident = go_template_field(p.id_column)
    message = f"Anomaly in {p.name}: {p.id_column} {ident} scored {score} (threshold {threshold})"
    if parts:
        message += f", {parts}"
    message += f", model {model} v{version}{suffix}"
    pairs = [(p.id_column, ident), ("score", score), ("threshold", threshold)]
    pairs += [(n, go_template_field(n, tag=_is_tag(p, n))) for n in shown]
    pairs += [("model", model), ("model_version", version)]
    pairs.append((SOURCE_TAG, go_template_field(SOURCE_TAG, tag=True)))
    if p.label is not None:
        pairs.append((p.label_field, go_template_field(p.label_field)))
    return {
        "alert_id": f"{p.name}:{model}",
        "message": message,
        "details": " ".join(f"{k}={v}" for k, v in pairs),
    }


def influxql_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (backslash and double quote escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def drift_query(p: Profile) -> str:
    """The drift task's query of ``p``'s input points (Kapacitor adds the time range). Every
    column: the agent reads the features its model card names and ignores the others."""
    source = ".".join(influxql_ident(n) for n in (p.database, p.retention_policy, p.measurement))
    return f"SELECT * FROM {source}"


def profile_vars(p: Profile) -> dict[str, dict[str, tuple[str, Any]]]:
    """template id -> {var: (type, value)}: every data-set name the template takes."""
    where = {
        "database": ("string", p.database),
        "retention_policy": ("string", p.retention_policy),
        "scored_measurement": ("string", p.scored_measurement),
    }
    texts = alert_texts(p, explanation=True)
    label = tick_reference(p.label_field)
    return {
        SCORE: {"measurement": ("string", p.measurement), **where},
        ALERT: {
            **where,
            "alert_id": ("string", texts["alert_id"]),
            "message": ("string", texts["message"]),
            "details": ("string", texts["details"]),
        },
        QUALITY: {
            **where,
            "labelled": ("lambda", f"isPresent({label})"),
            "positive": ("lambda", f"{label} == 1"),
        },
        DRIFT: {
            "data_set": ("string", p.name),
            "input_query": ("string", drift_query(p)),
            "database": ("string", p.database),
            "retention_policy": ("string", p.retention_policy),
        },
    }


def _var(kind: str, value: object, description: str | None = None) -> dict:
    var = {"type": kind, "value": value}
    if description:
        var["description"] = description
    return var


def _data_set_vars(d: Deployment, template: str) -> dict:
    p = d.data_set
    if p.name == DEFAULT_PROFILE:
        return {}  # the templates' defaults are the credit-card names
    return {k: _var(kind, value) for k, (kind, value) in profile_vars(p)[template].items()}


def _dbrps(d: Deployment) -> list[dict[str, str]]:
    p = d.data_set
    return [{"db": p.database, "rp": p.retention_policy}]


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
    v["explain"] = _var(
        "int", d.explain, "features named in top_features of an anomalous point (0 = none)"
    )
    v["max_batch"] = _var("int", d.max_batch)
    v["max_delay"] = _var("duration", d.max_delay)
    v.update(_data_set_vars(d, SCORE))
    return {"template-id": SCORE, "dbrps": _dbrps(d), "vars": v}


def alert_task(d: Deployment) -> dict:
    p = d.data_set
    log_name = "fraud_alerts" if p.name == DEFAULT_PROFILE else f"{p.name}_alerts"
    v = {
        "model": _var("string", d.model),
        "endpoint": _var(
            "string", ALERT_ENDPOINT, "[[httppost]] endpoint of kapacitor.conf (holds the auth)"
        ),
        "log_path": _var("string", f"{ALERT_LOG_DIR}/{log_name}.log"),
    }
    v.update(_data_set_vars(d, ALERT))
    return {"template-id": ALERT, "dbrps": _dbrps(d), "vars": v}


def quality_task(d: Deployment) -> dict:
    v = {
        "model": _var("string", d.model),
        "period": _var("duration", d.quality_period),
        "every": _var("duration", d.quality_every),
    }
    v.update(_data_set_vars(d, QUALITY))
    return {"template-id": QUALITY, "dbrps": _dbrps(d), "vars": v}


def drift_task(d: Deployment) -> dict:
    p = d.data_set
    log_name = "drift_alerts" if p.name == DEFAULT_PROFILE else f"{p.name}_drift_alerts"
    v = {
        "model": _var("string", d.model),
        "version": _var("string", d.version),
        "period": _var("duration", d.drift_period, "window of input points judged"),
        "every": _var("duration", d.drift_every),
        "warn": _var("float", float(d.drift_warn), "PSI of the worst feature: warning above"),
        "crit": _var("float", float(d.drift_crit), "PSI of the worst feature: critical above"),
        "min_count": _var("int", d.drift_min_count, "fewest rows a window needs to be judged"),
        "endpoint": _var(
            "string", ALERT_ENDPOINT, "[[httppost]] endpoint of kapacitor.conf (holds the auth)"
        ),
        "log_path": _var("string", f"{ALERT_LOG_DIR}/{log_name}.log"),
    }
    v.update(_data_set_vars(d, DRIFT))
    return {"template-id": DRIFT, "dbrps": _dbrps(d), "vars": v}


BUILDERS = {SCORE: score_task, ALERT: alert_task, QUALITY: quality_task, DRIFT: drift_task}


def task_files(deployments: tuple[Deployment, ...] | list[Deployment]) -> dict[str, dict]:
    """File name -> task document: four per deployment (no quality task for a data set
    without a label, which has no ground truth to evaluate against; no drift task for a
    deployment that turns it off)."""
    names = [d.model for d in deployments]
    if len(set(names)) != len(names):
        raise ValueError(f"a model is deployed twice: {names}")
    out = {}
    for d in deployments:
        for template, build in BUILDERS.items():
            if template == QUALITY and d.data_set.label is None:
                continue
            if template == DRIFT and not d.drift:
                continue
            out[f"{PREFIXES[template]}_{d.model}.json"] = build(d)
    return out


def render(doc: dict) -> str:
    """One var per line, as people write these files."""
    lines = ["{", f'  "template-id": {json.dumps(doc["template-id"])},']
    if "dbrps" in doc:
        lines.append(f'  "dbrps": {json.dumps(doc["dbrps"], ensure_ascii=False)},')
    lines.append('  "vars": {')
    items = list(doc["vars"].items())
    for i, (name, var) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {json.dumps(var, ensure_ascii=False)}{comma}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def write_load_dir(
    out_dir: str | Path,
    deployments: list[Deployment],
    *,
    templates_dir: Path = TEMPLATES_DIR,
    templates: bool = True,
) -> list[Path]:
    """Write the templates and the deployments' task files into a load directory."""
    out = Path(out_dir)
    written = []
    if templates:
        (out / "templates").mkdir(parents=True, exist_ok=True)
        for src in sorted(templates_dir.glob("*.tick")):
            dst = out / "templates" / src.name
            if dst.resolve() != src.resolve():
                shutil.copyfile(src, dst)
            written.append(dst)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    for name, doc in task_files(deployments).items():
        path = out / "tasks" / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written


# -- python -m models profile tasks ------------------------------------------------------
def add_tasks_parser(sub: Any) -> argparse.ArgumentParser:
    """``tasks`` under ``python -m models profile``."""
    t = sub.add_parser(
        "tasks",
        help="write the Kapacitor task files (scoring, alert, live quality, drift) of a profile",
        description="Write Kapacitor's load directory for a profile: DIR/templates/*.tick and "
        "DIR/tasks/{score,fraud_alert,model_quality,drift}_MODEL.json.",
    )
    t.add_argument("profile", help="profile name (profiles/NAME.toml) or path to a TOML file")
    t.add_argument("-o", "--out", required=True, help="load directory to write into")
    t.add_argument("--model", help="registered model to score (default: the profile's name)")
    t.add_argument("--version", default="production", help="alias or version (default %(default)s)")  # fmt: skip
    t.add_argument("--backend", choices=("sklearn", "tfserving"), default="sklearn")
    t.add_argument("--fallback", help="alias or version scoring locally when the backend fails")
    t.add_argument("--threshold", type=float,
                   help="override the model card's threshold (0..1; default: the card's)")  # fmt: skip
    t.add_argument("--no-challenger", action="store_true",
                   help="do not shadow-score a 'challenger' alias")  # fmt: skip
    t.add_argument("--explain", type=int, default=3,
                   help="features named in top_features of an anomalous point (0-10, 0 = none; "
                   "default %(default)s)")  # fmt: skip
    t.add_argument("--no-drift", action="store_true",
                   help="no drift task (input drift against the model card's distributions)")  # fmt: skip
    t.add_argument("--drift-period", default="10m", help="drift window (default %(default)s)")
    t.add_argument("--drift-every", default="1m",
                   help="how often a drift window is judged (default %(default)s)")  # fmt: skip
    t.add_argument("--drift-warn", type=float, default=0.1,
                   help="PSI of the worst feature above which a window warns (default %(default)s)")  # fmt: skip
    t.add_argument("--drift-crit", type=float, default=0.25,
                   help="PSI above which a window is critical (default %(default)s)")  # fmt: skip
    t.add_argument("--no-templates", action="store_true",
                   help="write only the task files (DIR/templates is maintained elsewhere)")  # fmt: skip
    return t


def cmd_tasks(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be between 0 and 1, got {args.threshold}", file=sys.stderr)
        return 2
    if not 0 <= args.explain <= 10:
        print(f"error: --explain must be between 0 and 10, got {args.explain}", file=sys.stderr)
        return 2
    if not 0 < args.drift_warn <= args.drift_crit:
        print("error: need 0 < --drift-warn <= --drift-crit", file=sys.stderr)
        return 2
    for flag in ("drift_period", "drift_every"):
        if not _DURATION.fullmatch(getattr(args, flag)):
            name = "--" + flag.replace("_", "-")
            print(f"error: {name} must be a duration such as 10m or 30s", file=sys.stderr)
            return 2
    backend = "TF Serving" if args.backend == "tfserving" else "scikit-learn, in-process"
    d = Deployment(
        model=args.model or profile.name,
        description=f"{profile.name} model ({backend})",
        profile=profile,
        version=args.version,
        backend=args.backend,
        fallback=args.fallback,
        challenger=None if args.no_challenger else "challenger",
        threshold=args.threshold,
        explain=args.explain,
        drift=not args.no_drift,
        drift_period=args.drift_period,
        drift_every=args.drift_every,
        drift_warn=args.drift_warn,
        drift_crit=args.drift_crit,
    )
    for path in write_load_dir(args.out, [d], templates=not args.no_templates):
        print(f"wrote {path}")
    return 0
