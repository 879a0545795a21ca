"""``python -m models retrain``: train a challenger on fresh labelled data, compare it with
the champion on a holdout neither has seen, promote it only when it wins.

1. **Fresh data**: a CSV (``--csv``), the watcher's training store (``--store``), the
   profile's seeded generator (``--synthetic-rows``), or, by default, the labelled points
   of the profile's input measurement over the last ``--since`` in InfluxDB
   (``--influx-url``; :func:`models.influx.read_window`).
2. **Holdout first**: ``--holdout`` (20 %) of the fresh rows is set aside before anything
   is trained (stratified by label, or the latest rows with ``--time-split``); the
   champion never saw them either, being older.
3. **Challenger**: the rest trains a new version with the profile's default search
   (:func:`models.train.train`; ``--candidates``, ``--trials`` … narrow it), registered
   in the file registry and, with MLflow on, logged and registered in MLflow.
4. **Gate** (:func:`models.gate.decide`): both models score the holdout through the
   same backend the services use; the challenger is promoted when it ranks better than
   chance and beats the champion by ``--min-gain`` on the metric (expected cost when the
   profile has a value column, AUPRC otherwise), with a confidence bound above zero.
   No champion yet: the first skilled model is promoted.
5. **Aliases**: promoted → ``production`` (``--champion-alias``); kept → ``challenger``,
   which the live stack shadow-scores. With MLflow: the same aliases on the MLflow
   model version (``production`` and ``champion`` on promotion).
6. **Report**: ``retrain.json`` and ``retrain.png`` (both PR curves, the gain, the decision
   and why) in ``runs/retrain-<name>-<timestamp>/``; a ``model_events`` point (tags
   ``model``, ``event`` = promoted | kept | failed) in InfluxDB for Grafana's annotations.

Exit status: 0 promoted, 3 kept, 2 bad input (flags, profile, data: fix and rerun),
1 failure (InfluxDB unreachable, training or registry error: retry), 130 interrupted
(SIGINT or SIGTERM; a ``failed`` event says so).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import shutil
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .errors import DataError, ModelsError
from .gate import METRICS, Decision, GatePolicy, Scored, decide

if TYPE_CHECKING:
    import pandas as pd

    from .profile import Profile

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_KEPT",
    "EXIT_PROMOTED",
    "RetrainConfig",
    "RetrainResult",
    "add_retrain_parser",
    "cmd_retrain",
    "read_store",
    "retrain",
    "run_retrain",
]

log = logging.getLogger("models.retrain")

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_KEPT = 3

#: MLflow aliases set on the promoted version besides --champion-alias: services that
#: follow ``models:/NAME@champion`` (docs/models.md) move with the file registry's
#: ``production``
MLFLOW_CHAMPION_ALIAS = "champion"


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    """What ``python -m models retrain`` does; every field has its flag."""

    #: registered model name (default: the profile's name, creditcard)
    name: str | None = None
    #: profile name, path or object (None: credit cards, as everywhere)
    profile: Any = None
    # -- fresh data (one source; InfluxDB when none of the others is given)
    csv: str | None = None
    store: str | None = None
    synthetic_rows: int | None = None
    influx_url: str | None = None
    since: str = "7d"
    influx_database: str | None = None
    influx_retention_policy: str | None = None
    influx_username: str | None = None
    influx_password: str | None = field(default=None, repr=False)
    max_rows: int = 5_000_000
    # -- holdout
    holdout: float = 0.2
    time_split: bool = False
    # -- training (models.train.TrainConfig)
    candidates: tuple[str, ...] | None = None
    search: str = "default"
    trials: int = 4
    timeout: float | None = None
    cv: int = 3
    seed: int = 42
    threshold_strategy: str = "f1"
    review_cost: float = 5.0
    # -- gate
    metric: str = "auto"
    min_gain: float = 0.01
    confidence: float = 0.95
    min_positives: int = 5
    champion_alias: str = "production"
    challenger_alias: str = "challenger"
    # -- where things go
    registry: str | None = None
    runs_dir: str = "runs"
    mlflow: bool = False
    #: InfluxDB for the model_events point (default: influx_url)
    events_url: str | None = None
    events_database: str | None = None
    keep_data: bool = False

    def source_kind(self) -> str:
        given = [k for k in ("csv", "store", "synthetic_rows") if getattr(self, k) is not None]
        if len(given) > 1:
            raise DataError(f"one data source only: got {', '.join(given)}")
        if given:
            return given[0]
        if self.influx_url:
            return "influx"
        raise DataError(
            "no data: pass --csv FILE, --store DIR, --synthetic-rows N, or --influx-url URL "
            "(with --since) to read the labelled window from InfluxDB"
        )


@dataclass
class RetrainResult:
    decision: Decision | None
    run_dir: Path
    exit_code: int
    report: dict[str, Any]
    challenger_version: str | None = None
    champion_version: str | None = None


# -- fresh data -----------------------------------------------------------------------------
def read_store(
    store: str | os.PathLike[str], profile: Profile | None, *, since: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Every file of the watcher's training store (``<store>/<YYYY-MM-DD>/*.csv``) dated
    within ``since`` of today (UTC; all of them without it), concatenated, one row per id
    (a later file wins)."""
    import pandas as pd

    from .data import load_csv
    from .influx import parse_duration

    root = Path(store)
    if not root.is_dir():
        raise DataError(f"training store {root} does not exist (the watcher writes it)")
    first = None
    if since:
        days = parse_duration(since) / 86_400e9
        first = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=days)).date()
    files = []
    for day in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            date = _dt.date.fromisoformat(day.name)
        except ValueError:
            continue
        if first is None or date >= first:
            files += sorted(f for f in day.glob("*.csv") if not f.name.startswith("."))
    where = f"training store {root}" + (f" (last {since})" if since else "")
    if not files:
        raise DataError(f"{where}: no files")
    frames = [load_csv(f, profile=profile) for f in files]
    df = pd.concat(frames, ignore_index=True)
    from .data import _schema  # the id column of the data set

    id_col = _schema(profile).id
    before = len(df)
    if id_col in df.columns:
        df = df.drop_duplicates(subset=[id_col], keep="last").reset_index(drop=True)
    log.info("event=store_read where=%r files=%d rows=%d repeats=%d", where, len(files), len(df),
             before - len(df))  # fmt: skip
    return df, f"{where}: {len(files)} file(s), {len(df)} rows"


def _load_fresh(config: RetrainConfig, profile: Profile | None) -> tuple[pd.DataFrame, str]:
    from .data import load_csv, synthetic_frame

    kind = config.source_kind()
    if kind == "csv":
        return load_csv(config.csv, profile=profile), str(config.csv)
    if kind == "synthetic_rows":
        rows = int(config.synthetic_rows)
        name = profile.name if profile is not None else "creditcard"
        return (
            synthetic_frame(rows, seed=config.seed, profile=profile),
            f"synthetic({name}, n_rows={rows}, seed={config.seed})",
        )
    if kind == "store":
        return read_store(config.store, profile, since=config.since)
    from .influx import InfluxClient, read_window
    from .profile import load_profile

    reading = profile if profile is not None else load_profile(None)
    with InfluxClient(
        config.influx_url, username=config.influx_username, password=config.influx_password
    ) as client:
        window = read_window(
            client,
            reading,
            since=config.since,
            database=config.influx_database,
            retention_policy=config.influx_retention_policy,
            max_rows=config.max_rows,
        )
    detail = (
        f"{window.source}: {window.points} points, {len(window.frame)} labelled rows "
        f"({window.unlabelled} unlabelled, {window.incomplete} incomplete, "
        f"{window.repeats} repeated ids skipped)"
    )
    return window.frame, detail


def _split_holdout(
    df: pd.DataFrame, profile: Profile | None, config: RetrainConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training part, holdout): stratified by label, or the latest rows by the order
    column (file or time order without one)."""
    from .data import _schema

    if not 0.05 <= config.holdout <= 0.5:
        raise DataError(f"--holdout must be between 0.05 and 0.5, got {config.holdout}")
    schema = _schema(profile)
    y = df[schema.label].to_numpy(dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 6:
        raise DataError(
            f"the fresh data has {counts[1]} positive and {counts[0]} negative row(s); "
            "at least 6 of each are needed to train and hold out"
        )
    if config.time_split:
        if schema.order is not None:
            order = np.argsort(df[schema.order].to_numpy(dtype=np.float64), kind="stable")
        else:
            order = np.arange(len(df))
        n_hold = max(1, round(len(df) * config.holdout))
        rest, hold = np.sort(order[:-n_hold]), np.sort(order[-n_hold:])
    else:
        from sklearn.model_selection import train_test_split

        rest, hold = train_test_split(
            np.arange(len(df)), test_size=config.holdout, stratify=y, random_state=config.seed
        )
        rest, hold = np.sort(rest), np.sort(hold)
    return df.iloc[rest].reset_index(drop=True), df.iloc[hold].reset_index(drop=True)


# -- scoring ------------------------------------------------------------------------------------
def _score(registry, name: str, version: str, holdout: pd.DataFrame) -> Scored:
    from .backends import load_local_backend
    from .train import _backend_batch

    backend = load_local_backend(registry, name, version)
    try:
        scores = backend.score(_backend_batch(holdout, backend.card))
        return Scored(str(backend.version), np.asarray(scores, dtype=np.float64), backend.threshold)
    finally:
        backend.close()


# -- the report ---------------------------------------------------------------------------------
def _event_text(name: str, decision: Decision | None, error: str | None, report: dict) -> str:
    if decision is None:
        return f"{name}: retrain failed: {error}"
    new = report.get("challenger_version")
    old = report.get("champion_version")
    if decision.metric == "cost":
        fig = f"expected cost {decision.challenger_value:,.2f}"
        if decision.champion_value is not None:
            fig += f" vs {decision.champion_value:,.2f}"
    else:
        fig = f"AUPRC {decision.challenger_value:.4f}"
        if decision.champion_value is not None:
            fig += f" vs {decision.champion_value:.4f}"
    if decision.promote:
        head = f"{name} v{new} promoted" + (f" over v{old}" if old else "")
    else:
        head = f"{name} v{new} kept as challenger" + (f", v{old} stays champion" if old else "")
    gain = f", gain {decision.gain:+.4f}" if decision.gain is not None else ""
    return f"{head} ({fig}{gain})"


def _plot(path: Path, name: str, y, curves: dict[str, np.ndarray], decision: Decision) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    from .gate import average_precision

    fig, (ax, info) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})
    for label, s in curves.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.plot(r, p, lw=1.6, label=f"{label} (AUPRC {average_precision(y, s):.3f})")
    ax.axhline(float(np.mean(y)), color="grey", ls=":", lw=1, label=f"chance ({np.mean(y):.4f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"{name}: precision-recall on the fresh holdout ({len(y)} rows)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    info.axis("off")
    colour = "#1a7f37" if decision.promote else "#9a6700"
    info.text(0, 0.97, decision.event.upper(), fontsize=20, weight="bold", color=colour,
              va="top", transform=info.transAxes)  # fmt: skip
    unit = "expected cost (lower is better)" if decision.metric == "cost" else "AUPRC"
    lines = [f"metric: {unit}", f"challenger: {_fmt(decision.challenger_value)}"]
    if decision.champion_value is not None:
        lines.append(f"champion: {_fmt(decision.champion_value)}")
    if decision.gain is not None:
        lines.append(
            f"gain: {decision.gain:+.4f} (min {decision.min_gain:g}; "
            f"{decision.confidence:.0%} lower bound {decision.gain_low:+.4f})"
        )
    if decision.metric == "cost":
        auprc = f"AUPRC: challenger {decision.challenger_auprc:.4f}"
        if decision.champion_auprc is not None:
            auprc += f", champion {decision.champion_auprc:.4f}"
        lines.append(auprc)
    lines.append(
        f"skill: Mann-Whitney p={decision.skill_p:.2g} (chance AUPRC {decision.chance_auprc:.4f})"
    )
    lines.append(f"holdout: {decision.rows} rows, {decision.positives} positive")
    lines.append("")
    lines += textwrap.wrap(decision.reason, 52)
    info.text(0, 0.82, "\n".join(lines), fontsize=9, va="top", family="monospace",
              transform=info.transAxes)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4f}"


def _write_event(
    config: RetrainConfig, profile: Profile, name: str, event: str, fields: dict[str, Any]
) -> str | None:
    """The model_events point; returns an error text when it could not be written."""
    url = config.events_url or config.influx_url
    if not url:
        return None
    from .influx import InfluxClient, InfluxError, event_line

    database = config.events_database or profile.database
    point = event_line({"model": name, "event": event}, fields)
    try:
        with InfluxClient(
            url, username=config.influx_username, password=config.influx_password, timeout=10
        ) as client:
            client.ensure_database(database)
            client.write_retrying(
                database,
                [point],
                retention_policy=profile.retention_policy,
                attempts=3,
                what="write model_events",
            )
    except (InfluxError, DataError) as exc:
        log.error("event=model_event_not_written model=%s event=%s error=%r", name, event, str(exc))
        return str(exc)
    log.info("event=model_event_written model=%s event=%s database=%s", name, event, database)
    return None


def _mlflow_apply(
    config: RetrainConfig, name: str, version: str, decision: Decision, run_dir: Path
) -> dict[str, Any]:
    """Aliases on the MLflow model version of ``version``, and the decision on its run."""
    from .mlflow_registry import VERSION_TAG, MlflowRegistry
    from .tracking import default_tracking_uri

    uri = default_tracking_uri(config.runs_dir)
    cache = run_dir / ".mlflow-cache"
    reg = MlflowRegistry(uri, cache, signing_key=None)
    aliases = (
        [config.champion_alias, MLFLOW_CHAMPION_ALIAS]
        if decision.promote
        else [config.challenger_alias]
    )
    for alias in dict.fromkeys(aliases):
        reg.promote(name, version, alias)
    client = reg.client
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{VERSION_TAG}` = '{version}' and tags.model = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    run_id = runs[0].info.run_id if runs else None
    if run_id is not None:
        client.set_tag(run_id, "retrain.decision", decision.event)
        client.set_tag(run_id, "retrain.reason", decision.reason[:5000])
        client.set_tag(run_id, "retrain.metric", decision.metric)
        for k in ("challenger_value", "champion_value", "gain", "gain_low", "skill_p"):
            v = getattr(decision, k)
            if v is not None and math.isfinite(v):
                client.log_metric(run_id, f"retrain.{k}", float(v))
        for f in ("retrain.json", "retrain.png"):
            if (run_dir / f).is_file():
                client.log_artifact(run_id, str(run_dir / f), artifact_path="retrain")
    shutil.rmtree(cache, ignore_errors=True)
    return {"tracking_uri": uri, "run_id": run_id, "aliases": list(dict.fromkeys(aliases))}


# -- the job ----------------------------------------------------------------------------------
def _resolve(config: RetrainConfig) -> tuple[Profile | None, Profile, str]:
    """(profile for training — None for credit cards without --profile —, the profile
    for names and InfluxDB, the model name)."""
    from .profile import load_profile
    from .train import resolve_profile

    train_profile = resolve_profile(config.profile)
    names = train_profile if train_profile is not None else load_profile(None)
    if names.label is None:
        raise DataError(f"profile {names.name!r} names no label column: retraining needs one")
    return train_profile, names, config.name or names.name


def _metric(config: RetrainConfig, names: Profile) -> str:
    if config.metric == "auto":
        return "cost" if names.value is not None else "auprc"
    if config.metric not in METRICS:
        raise DataError(f"--metric must be auto, {' or '.join(METRICS)}, got {config.metric!r}")
    if config.metric == "cost" and names.value is None:
        raise DataError(
            f"the cost metric weighs missed positives by the profile's value column, and "
            f"profile {names.name!r} has none: use --metric auprc"
        )
    return config.metric


def retrain(config: RetrainConfig, *, progress: TextIO | None = None) -> RetrainResult:
    """Run the whole job (see the module docstring). Errors propagate after a ``failed``
    event was written (when an InfluxDB for events is configured)."""
    from .registry import Registry, default_registry_root
    from .train import TrainConfig, new_run_dir, train

    progress = progress if progress is not None else sys.stderr
    started = time.perf_counter()
    train_profile, names, name = _resolve(config)
    report: dict[str, Any] = {"model": name, "profile": names.name}
    run_dir: Path | None = None
    try:
        metric = _metric(config, names)
        policy = GatePolicy(
            metric=metric,
            min_gain=config.min_gain,
            confidence=config.confidence,
            min_positives=config.min_positives,
            review_cost=config.review_cost,
            seed=config.seed,
        )
        config.source_kind()  # a bad source is bad input, before anything is created
        if config.cv < 2 or config.trials < 1:
            raise DataError(
                f"--cv must be >= 2 and --trials >= 1 (got {config.cv}, {config.trials})"
            )
        if config.threshold_strategy == "cost" and names.value is None:
            raise DataError(
                f"--threshold-strategy cost needs a value column, and profile {names.name!r} "
                "has none: use f1"
            )
        registry = Registry(config.registry or default_registry_root())
        run_dir = new_run_dir(config.runs_dir, f"retrain-{name}")
        report["run_dir"] = str(run_dir)
        champion_version = None
        if name in registry.models():
            try:
                champion_version = registry.resolve(name, config.champion_alias)
            except ModelsError:
                champion_version = None
        report["champion_version"] = champion_version

        t0 = time.perf_counter()
        df, source = _load_fresh(config, train_profile)
        fit_df, holdout = _split_holdout(df, train_profile, config)
        report["data"] = {
            "source": source,
            "rows": len(df),
            "training_rows": len(fit_df),
            "holdout_rows": len(holdout),
            "holdout": "latest rows" if config.time_split else "stratified",
            "seconds": round(time.perf_counter() - t0, 2),
        }
        print(
            f"retrain model={name} data={len(df)} rows ({source}) training={len(fit_df)} "
            f"holdout={len(holdout)} champion={champion_version or '-'} metric={metric}",
            file=progress,
            flush=True,
        )
        data_dir = run_dir / "data"
        data_dir.mkdir()
        fresh_csv = data_dir / "fresh.csv"
        fit_df.to_csv(fresh_csv, index=False)

        t0 = time.perf_counter()
        result = train(
            TrainConfig(
                name=name,
                profile=train_profile,
                csv=str(fresh_csv),
                candidates=config.candidates,
                search=config.search,
                trials=config.trials,
                timeout=config.timeout,
                cv=config.cv,
                seed=config.seed,
                threshold_strategy=config.threshold_strategy,
                review_cost=config.review_cost,
                time_split=config.time_split,
                registry=str(registry.root),
                data_dir=str(data_dir / "splits"),
                runs_dir=config.runs_dir,
                mlflow=config.mlflow,
            ),
            progress=progress,
        )
        assert result.card is not None
        new_version = result.card.version
        report["challenger_version"] = new_version
        report["training"] = {
            "run_dir": str(result.run_dir),
            "best_candidate": result.best.name,
            "seconds": round(time.perf_counter() - t0, 2),
        }

        label = "Class" if train_profile is None else train_profile.label
        y = holdout[label].to_numpy(dtype=np.int64)
        from .data import value_column

        value = value_column(holdout, train_profile) if metric == "cost" else None
        challenger = _score(registry, name, new_version, holdout)
        champion, problem = None, None
        if champion_version is not None:
            try:
                champion = _score(registry, name, champion_version, holdout)
            except ModelsError as exc:
                problem = f"v{champion_version}: {exc}"
                log.warning("event=champion_unusable model=%s error=%r", name, problem)
        decision = decide(
            y, challenger, champion, value=value, policy=policy, champion_problem=problem
        )

        alias = config.champion_alias if decision.promote else config.challenger_alias
        registry.promote(name, new_version, alias)
        report["aliases"] = registry.aliases(name)
        report["decision"] = decision.to_dict()
        report["gate"] = {k: v for k, v in asdict(policy).items()}
        report["champion_problem"] = problem
        curves = {f"challenger v{new_version}": challenger.scores}
        if champion is not None:
            curves[f"champion v{champion_version}"] = champion.scores
        _plot(run_dir / "retrain.png", name, y, curves, decision)
        report["seconds"] = round(time.perf_counter() - started, 2)
        _save(run_dir, report)
        if config.mlflow or os.environ.get("MLFLOW_TRACKING_URI"):
            report["mlflow"] = _mlflow_apply(config, name, new_version, decision, run_dir)
        text = _event_text(name, decision, None, report)
        report["event"] = {"text": text}
        error = _write_event(
            config,
            names,
            name,
            decision.event,
            {
                "text": text,
                "reason": decision.reason,
                "metric": decision.metric,
                "challenger_version": new_version,
                "champion_version": champion_version,
                "challenger_value": decision.challenger_value,
                "champion_value": decision.champion_value,
                "gain": decision.gain,
                "gain_low": decision.gain_low,
                "min_gain": decision.min_gain,
                "challenger_auprc": decision.challenger_auprc,
                "champion_auprc": decision.champion_auprc,
                "skill_p": decision.skill_p,
                "holdout_rows": decision.rows,
                "holdout_positives": decision.positives,
                "run_dir": str(run_dir),
            },
        )
        if config.events_url or config.influx_url:
            report["event"]["written"] = error is None
            if error:
                report["event"]["error"] = error
        _save(run_dir, report)
        if not config.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        log.info(
            "event=retrain_done model=%s decision=%s version=%s seconds=%.1f",
            name,
            decision.event,
            new_version,
            time.perf_counter() - started,
        )
        return RetrainResult(
            decision,
            run_dir,
            EXIT_PROMOTED if decision.promote else EXIT_KEPT,
            report,
            challenger_version=new_version,
            champion_version=champion_version,
        )
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            error = f"interrupted ({exc.args[0] if exc.args else 'SIGINT'})"
        else:
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ModelsError) else str(exc)
        report["error"] = error
        report["exit_code"] = _exit_code(exc)
        if run_dir is not None:
            _save(run_dir, report)
        fields = {
            "text": _event_text(name, None, error, report),
            "reason": error,
            "champion_version": report.get("champion_version"),
            "challenger_version": report.get("challenger_version"),
            "run_dir": str(run_dir) if run_dir else None,
        }
        _write_event(config, names, name, "failed", fields)
        raise


def _save(run_dir: Path, report: dict[str, Any]) -> None:
    tmp = run_dir / ".retrain.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str, allow_nan=False) + "\n")
    os.replace(tmp, run_dir / "retrain.json")


def _exit_code(exc: BaseException) -> int:
    from .influx import InfluxError, InfluxUnavailable
    from .profile import ProfileError

    if isinstance(exc, InfluxUnavailable):
        return EXIT_FAILED
    if isinstance(exc, (DataError, ProfileError, InfluxError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def run_retrain(
    config: RetrainConfig, *, progress: TextIO | None = None, out: TextIO | None = None
) -> int:
    """:func:`retrain` with its outcome printed and turned into the exit status."""
    out = out if out is not None else sys.stdout
    try:
        result = retrain(config, progress=progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = _exit_code(exc)
        if code == EXIT_FAILED and not isinstance(exc, ModelsError):
            log.exception("retrain failed")
        print(f"error: {exc}", file=sys.stderr)
        return code
    d = result.decision
    assert d is not None
    print(f"{d.event}: {d.reason}", file=out)
    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(result.report.get("aliases", {}).items()))
    print(f"aliases: {aliases}", file=out)
    print(f"report: {result.run_dir / 'retrain.json'} and retrain.png", file=out)
    return result.exit_code


# -- command line ---------------------------------------------------------------------------
def add_retrain_parser(sub, *, add_profile, default_marker) -> argparse.ArgumentParser:
    """``python -m models retrain`` (called by models/__main__.py)."""
    from .pipelines import DEFAULT_CANDIDATES

    env = os.environ
    p = sub.add_parser(
        "retrain",
        help="train a challenger on fresh data; promote it only if it beats the champion",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="Exit status: 0 promoted, 3 kept (the new version is the challenger), "
        '2 bad input, 1 failure. See docs/models.md, "Retraining".',
    )
    p.add_argument("--name", default=default_marker("creditcard"),
                   help="registered model name (default: the profile's name, creditcard)")  # fmt: skip
    add_profile(p)
    src = p.add_argument_group("fresh data (one of; default: the InfluxDB window)")
    src.add_argument("--csv", help="a labelled CSV of the profile's columns")
    src.add_argument("--store", metavar="DIR",
                     help="the watcher's training store (dated folders; --since filters them)")  # fmt: skip
    src.add_argument("--synthetic-rows", type=int, metavar="N",
                     help="N rows of the profile's seeded generator")  # fmt: skip
    src.add_argument("--influx-url", default=env.get("MODELS_INFLUX_URL"),
                     help="InfluxDB 1.x: the labelled window is read from it when no other "
                          "source is given, and model_events are written to it "
                          "(env MODELS_INFLUX_URL)")  # fmt: skip
    src.add_argument("--since", default="7d",
                     help="how far back to read (InfluxQL duration: 7d, 36h; default 7d)")  # fmt: skip
    src.add_argument("--influx-database", default=env.get("MODELS_INFLUX_DATABASE"),
                     help="default: the profile's database (fraud for credit cards)")  # fmt: skip
    src.add_argument("--influx-retention-policy", default=None,
                     help="default: the profile's (autogen)")  # fmt: skip
    src.add_argument("--influx-username", default=env.get("MODELS_INFLUX_USERNAME"),
                     help="env MODELS_INFLUX_USERNAME")  # fmt: skip
    src.add_argument("--influx-password", default=env.get("MODELS_INFLUX_PASSWORD"),
                     help="prefer the environment: MODELS_INFLUX_PASSWORD")  # fmt: skip
    src.add_argument("--max-rows", type=int, default=5_000_000,
                     help="refuse a window holding more points (default 5,000,000)")  # fmt: skip
    g = p.add_argument_group("holdout and gate")
    g.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of the fresh rows both models are compared on (default 0.2)")  # fmt: skip
    g.add_argument("--time-split", action="store_true",
                   help="hold out the latest rows (by the profile's order column) instead of a "
                        "stratified sample; the training split is by time too")  # fmt: skip
    g.add_argument("--metric", choices=("auto", *METRICS), default="auto",
                   help="auto (default): cost when the profile has a value column, else auprc")  # fmt: skip
    g.add_argument("--min-gain", type=float, default=0.01,
                   help="auprc: AUPRC points; cost: fraction of the champion's expected cost "
                        "(default 0.01)")  # fmt: skip
    g.add_argument("--confidence", type=float, default=0.95,
                   help="the gain's bootstrap lower bound at this level must be > 0 (default 0.95)")  # fmt: skip
    g.add_argument("--min-positives", type=int, default=5,
                   help="rows of each class the holdout needs to compare at all (default 5)")  # fmt: skip
    g.add_argument("--champion-alias", default="production")
    g.add_argument("--challenger-alias", default="challenger")
    t = p.add_argument_group("training (as python -m models train)")
    t.add_argument("--candidates", nargs="+", metavar="NAME",
                   help=f"default: the default search ({' '.join(DEFAULT_CANDIDATES)})")  # fmt: skip
    t.add_argument("--search", choices=("default", "full"), default="default")
    t.add_argument("--trials", type=int, default=None,
                   help="Optuna trials per candidate (default 4; 20 with --search full)")  # fmt: skip
    t.add_argument("--timeout", type=float, default=None, help="seconds of tuning per candidate")
    t.add_argument("--cv", type=int, default=3)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threshold-strategy", choices=("f1", "cost"), default="f1")
    t.add_argument("--review-cost", type=float, default=5.0,
                   help="cost of one alert in value units (threshold and the cost metric)")  # fmt: skip
    o = p.add_argument_group("outputs")
    o.add_argument("--registry", default=None, help="registry root (env MODELS_REGISTRY)")
    o.add_argument("--runs-dir", default=env.get("MODELS_RUNS_DIR", "runs"))
    o.add_argument("--mlflow", action="store_true",
                   help="log to MLflow and set its aliases (also when MLFLOW_TRACKING_URI is set)")  # fmt: skip
    o.add_argument("--events-url", default=env.get("MODELS_EVENTS_URL"),
                   help="InfluxDB for the model_events point (default: --influx-url)")  # fmt: skip
    o.add_argument("--events-database", default=None,
                   help="default: the profile's database")  # fmt: skip
    o.add_argument("--keep-data", action="store_true",
                   help="keep the fresh rows and the holdout under the run folder")  # fmt: skip
    return p


def config_from_args(args, profile) -> RetrainConfig:
    trials = args.trials if args.trials is not None else (20 if args.search == "full" else 4)
    return RetrainConfig(
        profile=profile,
        csv=args.csv,
        store=args.store,
        synthetic_rows=args.synthetic_rows,
        influx_url=args.influx_url,
        since=args.since,
        influx_database=args.influx_database,
        influx_retention_policy=args.influx_retention_policy,
        influx_username=args.influx_username,
        influx_password=args.influx_password,
        max_rows=args.max_rows,
        holdout=args.holdout,
        time_split=args.time_split,
        candidates=tuple(args.candidates) if args.candidates else None,
        search=args.search,
        trials=trials,
        timeout=args.timeout,
        cv=args.cv,
        seed=args.seed,
        threshold_strategy=args.threshold_strategy,
        review_cost=args.review_cost,
        metric=args.metric,
        min_gain=args.min_gain,
        confidence=args.confidence,
        min_positives=args.min_positives,
        champion_alias=args.champion_alias,
        challenger_alias=args.challenger_alias,
        registry=args.registry,
        runs_dir=args.runs_dir,
        mlflow=args.mlflow,
        events_url=args.events_url,
        events_database=args.events_database,
        keep_data=args.keep_data,
    )


def cmd_retrain(args, *, name: str | None) -> int:
    """Called by models/__main__.py with the model name (None: the profile's)."""
    import signal
    import threading

    try:
        config = replace(config_from_args(args, args.profile), name=name)
    except ModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def interrupt(signum, _frame):
        # SIGTERM (a scheduler's timeout, a pod deleted) stops like Ctrl-C: a `failed`
        # event says so, the exit status is 130
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        # SIGINT too, explicitly: started in the background by a shell without job
        # control, a process inherits SIGINT ignored and would not stop on it
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)
    return run_retrain(config)
