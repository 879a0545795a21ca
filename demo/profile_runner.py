"""``python -m demo --profile NAME``: the demo's stages for any data set.

The same stages as the credit-card demo (demo/runner.py), every name taken from the
profile: its splits and a model trained for it when the registry has none, the agent and
the alert sink (routing the profile's series to its alert index) as real processes,
optionally the publisher into a real InfluxDB and back, the replay of the test split
through the agent as Kapacitor sends it, the alert task's rule and JSON with the
profile's alert texts, and the report.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import requests

from models import contract
from models.profile import Profile
from models.profile_tasks import alert_texts
from models.registry import Registry, default_registry_root

from .config import DemoConfig
from .errors import DemoError
from .kapacitor import AlertState, ScoredRecord, alert_body
from .processes import ManagedProcess, free_port, wait_until
from .progress import LiveLine
from .report import PointOutcome, format_summary, quality, write_json, write_plot
from .runner import PROJECT_ROOT, PUBLISH_BATCH, AlertPoster, DemoResult, _percentile_merge, stage

__all__ = ["run_profile_demo"]


def _typed(profile: Profile, row: dict[str, Any]) -> dict[str, Any]:
    """A row's fields as the input point carries them (float, int, string)."""
    fields: dict[str, Any] = {}
    for f in profile.features:
        v = row.get(f.name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if f.categorical:
            fields[f.name] = str(v)
        elif f.type == "int":
            fields[f.name] = int(v)
        else:
            fields[f.name] = float(v)
    return fields


def _value(profile: Profile, row: dict[str, Any]) -> float:
    if profile.value is None:
        return 0.0
    v = row.get(profile.value)
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _require_profile_replay() -> None:
    """The replay driver must build and read a data set's points (``profile=``)."""
    import inspect

    from udf_agent.replay import build_payloads, run_replay

    for fn in (build_payloads, run_replay):
        if "profile" not in inspect.signature(fn).parameters:
            raise DemoError(
                f"udf_agent.replay.{fn.__name__} takes no profile: this checkout's agent "
                "cannot replay other data sets than credit cards"
            )


def run_profile_demo(
    config: DemoConfig,
    profile: Profile,
    *,
    out: TextIO | None = None,
    status: TextIO | None = None,
) -> DemoResult:
    out = out if out is not None else sys.stdout
    status = status if status is not None else sys.stderr
    started = time.perf_counter()
    python = config.python or sys.executable
    model_name = config.model if config.model != "creditcard" else profile.name
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="demo-"))
        stack.callback(shutil.rmtree, tmp, True)

        # -- stage 1: data --------------------------------------------------------------
        with stage("prepare data", out):
            from models.train import new_run_dir

            from .profile_data import load_or_prepare_profile_splits

            run_dir = new_run_dir(config.out, "demo")
            data_dir = config.data_dir or (tmp / "data" if config.small else Path("data"))
            rows = config.synthetic_rows or (5_000 if config.small else 10_000)
            splits, reused = load_or_prepare_profile_splits(
                profile, Path(data_dir), csv=config.csv, rows=rows, seed=config.seed
            )
            test = splits.test
            if config.n is not None and config.n < len(test):
                test = test.iloc[: config.n].reset_index(drop=True)
            label = profile.label
            _require_profile_replay()
            print(
                f"    {'reused' if reused else 'wrote'} splits in {Path(data_dir) / profile.name} "
                f"from {splits.source}: "
                + ", ".join(f"{p} {v['rows']:,} ({v['positives']} positive)" for p, v in splits.summary().items()),
                file=out,
                flush=True,
            )  # fmt: skip

        # -- stage 2: model -------------------------------------------------------------
        with stage("train model", out):
            from .profile_data import train_profile_model

            registry_root = config.registry or (
                tmp / "registry" if config.small else default_registry_root()
            )
            registry = Registry(registry_root)
            card, trained = train_profile_model(
                registry,
                profile,
                splits,
                name=model_name,
                ref=config.version,
                seed=config.seed,
                progress=out,
            )
            threshold = config.threshold if config.threshold is not None else card.threshold
            print(
                f"    {'trained and promoted' if trained else 'using registered'} "
                f"{card.name} v{card.version} ({card.data.get('candidate', card.framework)}), "
                f"threshold {threshold:.4g}, registry {registry.root}",
                file=out,
                flush=True,
            )

        # -- stage 3: processes ---------------------------------------------------------
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        profile_ref = str(profile.path) if profile.path is not None else profile.name
        with stage("start udf agent", out):
            from udf_agent.replay import query_info

            sock = tmp / "udf.sock"
            agent = ManagedProcess(
                "udf_agent",
                [python, "-m", "udf_agent", "--socket", str(sock), "--registry",
                 str(registry.root), "--log-level", "info"],
                log_path=run_dir / "udf_agent.log",
                env=env,
                cwd=PROJECT_ROOT,
            )  # fmt: skip
            stack.callback(agent.stop)
            agent.start()

            def agent_ready() -> bool:
                if not sock.exists():
                    return False
                try:
                    query_info(sock, timeout=2.0)
                except Exception:  # not listening yet, or not answering yet
                    return False
                return True

            if not wait_until(
                agent_ready, timeout=config.startup_timeout, alive=lambda: agent.running
            ):
                raise DemoError(
                    f"the agent (pid {agent.pid}) did not answer on {sock} "
                    f"(exit status {agent.returncode}); log {agent.log_path}:\n{agent.log_tail()}"
                )
            print(f"    udf_agent pid {agent.pid} on {sock}", file=out, flush=True)

        with stage("start alert sink", out):
            token = secrets.token_urlsafe(32)
            token_file = tmp / "sink.token"
            token_file.touch(mode=0o600)
            token_file.write_text(token + "\n")
            port = free_port()
            alerts_db = run_dir / "alerts.db"
            sink = ManagedProcess(
                "alert_sink",
                [python, "-m", "alert_sink", "--host", "127.0.0.1", "--port", str(port),
                 "--store", f"sqlite:{alerts_db}", "--token-file", str(token_file),
                 "--profile", profile_ref, "--log-level", "info"],
                log_path=run_dir / "alert_sink.log",
                env=env,
                cwd=PROJECT_ROOT,
            )  # fmt: skip
            stack.callback(sink.stop)
            sink.start()
            sink_url = f"http://127.0.0.1:{port}"
            http = requests.Session()
            stack.callback(http.close)

            def sink_ready() -> bool:
                try:
                    return http.get(sink_url + "/health", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            if not wait_until(
                sink_ready, timeout=config.startup_timeout, alive=lambda: sink.running
            ):
                raise DemoError(
                    f"the alert sink (pid {sink.pid}) did not answer GET {sink_url}/health "
                    f"(exit status {sink.returncode}); log {sink.log_path}:\n{sink.log_tail()}"
                )
            print(
                f"    alert_sink pid {sink.pid} on {sink_url}, store {alerts_db}, "
                f"index {profile.alert_index} for {profile.scored_measurement}",
                file=out,
                flush=True,
            )

        # -- stage 4: the points, straight from the split or through InfluxDB -------------
        source = f"demo-{run_dir.name.removeprefix('demo-')}"
        influx_info: dict[str, Any] | None = None
        records = test.to_dict("records")
        for r in records:
            if profile.id is not None:
                r[profile.id] = str(r[profile.id])
        if config.influx_url:
            from .influx import read_points

            with stage("publish to influxdb", out):
                test_csv = tmp / "publish.csv"
                test.to_csv(test_csv, index=False)
                pub = ManagedProcess(
                    "publisher",
                    [python, "-m", "publisher", "--profile", profile_ref,
                     "--influx-url", config.influx_url, "--csv", str(test_csv),
                     "--rate", "0", "--count", str(len(test)), "--mode", "sequential",
                     "--batch-size", str(PUBLISH_BATCH), "--source", source,
                     "--startup-timeout", f"{config.startup_timeout:g}",
                     "--shutdown-timeout", "15", "--log-level", "info"],
                    log_path=run_dir / "publisher.log",
                    env=env,
                    cwd=PROJECT_ROOT,
                )  # fmt: skip
                stack.callback(pub.stop)
                t0 = time.perf_counter()
                pub.start()
                rc = pub.wait(timeout=600)
                if rc != 0:
                    raise DemoError(
                        f"the publisher exited with status {rc}; log {pub.log_path}:\n"
                        f"{pub.log_tail()}"
                    )
                publish_s = time.perf_counter() - t0
                print(
                    f"    published {len(test):,} points to {config.influx_url} (database "
                    f"{profile.database}, measurement {profile.measurement}, source={source}) "
                    f"in {publish_s:.1f} s",
                    file=out,
                    flush=True,
                )
            with stage("read from influxdb", out):
                back = read_points(
                    config.influx_url,
                    source=source,
                    database=profile.database,
                    retention_policy=profile.retention_policy,
                    measurement=profile.measurement,
                )
                if len(back) != len(test):
                    raise DemoError(
                        f"InfluxDB returned {len(back):,} points of source {source}, "
                        f"but {len(test):,} were published"
                    )
                for r in back:  # the CSV's label column, as the replay reads rows
                    if label is not None and profile.label_field in r:
                        r[label] = r[profile.label_field]
                records = back
                print(f"    read {len(back):,} points back in time order", file=out, flush=True)
                influx_info = {
                    "url": config.influx_url,
                    "database": profile.database,
                    "measurement": profile.measurement,
                    "source": source,
                    "published": len(test),
                    "read_back": len(back),
                    "publish_seconds": round(publish_s, 3),
                }

        # -- stage 5: replay through the agent, alert, post -------------------------------
        with stage("replay", out):
            from udf_agent.replay import build_payloads, run_replay

            payloads = build_payloads(records, source=source, profile=profile)
            options = {
                "model": model_name,
                "version": config.version,
                "field": contract.SCORE,
                "maxBatch": str(config.max_batch),
                "maxDelay": config.max_delay,
            }
            if config.threshold is not None:
                options["threshold"] = repr(config.threshold)
            window = config.window or (
                len(payloads) if config.rate == 0 else max(200, int(config.rate * 2))
            )
            texts = alert_texts(profile)
            line = LiveLine(status, total=len(payloads))
            poster = AlertPoster(
                sink_url + "/kapacitor", token, workers=config.post_workers, line=line
            )
            stack.callback(poster.close)
            state = AlertState()
            outcomes_in: list[tuple[str, ScoredRecord, float]] = []
            lat_windows: list[tuple[int, dict[str, float]]] = []
            agent_seconds = 0.0
            score_errors = 0
            violations: list[str] = []
            versions: set[str] = set()
            line.start()
            t_replay = time.perf_counter()
            try:
                for start in range(0, len(payloads), window):
                    chunk = payloads[start : start + window]

                    def on_progress(sent: int, back: int, _base: int = start) -> None:
                        line.scored = _base + back

                    rep = run_replay(
                        sock,
                        chunk,
                        options,
                        rate=config.rate,
                        collect=True,
                        on_progress=on_progress,
                        task_id="demo",
                        profile=profile,
                    )
                    violations.extend(rep.violations)
                    lat_windows.append((rep.received, rep.latency_ms))
                    agent_seconds += rep.seconds
                    score_errors += rep.score_errors
                    line.scored = start + rep.received
                    line.anomalies += rep.anomalies
                    if violations:
                        break
                    # point i of a window was sent at time t0 + i: its row is start + i
                    first = min((sp.time for sp in rep.points), default=0)
                    for sp in sorted(rep.points, key=lambda p: p.time):
                        row = records[start + sp.time - first]
                        fields = _typed(profile, row)
                        fields[profile.id_column] = sp.txn_id
                        if sp.label is not None:
                            fields[profile.label_field] = sp.label
                        for k, v in (
                            (contract.SCORE, sp.score),
                            (contract.IS_ANOMALY, sp.is_anomaly),
                            (contract.THRESHOLD, sp.threshold),
                            (contract.SCORE_CHALLENGER, sp.score_challenger),
                            (contract.SCORE_ERROR, sp.score_error),
                        ):
                            if v is not None:
                                fields[k] = v
                        time_ns = int(row["time"]) if config.influx_url else sp.time
                        rec = ScoredRecord(
                            time_ns=time_ns,
                            tags={
                                contract.SOURCE_TAG: source,
                                contract.MODEL_TAG: sp.model,
                                contract.MODEL_VERSION_TAG: sp.model_version,
                            },
                            fields=fields,
                        )
                        versions.add(sp.model_version)
                        outcomes_in.append((sp.txn_id, rec, _value(profile, row)))
                        if sp.model != model_name or rec.is_anomaly is None:
                            continue
                        level, previous, duration = state.update(rec)
                        if level == "CRITICAL":
                            poster.submit(
                                sp.txn_id,
                                alert_body(
                                    rec,
                                    level=level,
                                    previous=previous,
                                    duration_ns=duration,
                                    measurement=profile.scored_measurement,
                                    texts=texts,
                                ),
                            )
                replay_wall = time.perf_counter() - t_replay
                accepted, failed = poster.results()
            finally:
                line.stop()
            if violations:
                raise DemoError(
                    "the agent broke the socket-UDF protocol: "
                    + "; ".join(violations[:5])
                    + f" (agent log {agent.log_path})"
                )
            if len(outcomes_in) != len(payloads):
                raise DemoError(
                    f"{len(payloads) - len(outcomes_in)} point(s) did not come back scored"
                )
        with stage("post alerts", out):
            if failed:
                first_key, first_err = next(iter(failed.items()))
                raise DemoError(
                    f"{len(failed)} of {len(failed) + len(accepted)} alert(s) were not accepted "
                    f"by the sink (first: {profile.id_column} {first_key}: {first_err}); "
                    f"log {sink.log_path}"
                )
            health = http.get(sink_url + "/health", timeout=5).json()
            sink_docs = int(health.get("store", {}).get("documents", -1))
            print(
                f"    {len(accepted):,} alerts accepted by {sink_url}/kapacitor; "
                f"the sink's store holds {sink_docs:,}",
                file=out,
                flush=True,
            )

        # -- stage 6: report --------------------------------------------------------------
        with stage("report", out):
            alerted = set(accepted)
            outcomes = [
                PointOutcome(
                    txn_id=ident,
                    time_ns=rec.time_ns,
                    score=None if rec.fields.get(contract.SCORE) is None
                    else float(rec.fields[contract.SCORE]),
                    is_anomaly=bool(rec.fields.get(contract.IS_ANOMALY)),
                    label=rec.fields.get(profile.label_field),
                    amount=value,
                    alerted=ident in alerted,
                )
                for ident, rec, value in outcomes_in
            ]  # fmt: skip
            q = quality(outcomes)
            report: dict[str, Any] = {
                "run_dir": str(run_dir),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": 0.0,
                "profile": {
                    "name": profile.name,
                    "measurement": profile.measurement,
                    "scored_measurement": profile.scored_measurement,
                    "database": profile.database,
                    "id": profile.id_column,
                    "label": profile.label_field,
                    "value": profile.value,
                    "alert_index": profile.alert_index,
                },
                "config": {
                    "rate": config.rate,
                    "n": config.n,
                    "window": window,
                    "small": config.small,
                    "influx_url": config.influx_url,
                    "max_batch": config.max_batch,
                    "max_delay": config.max_delay,
                },
                "data": {
                    "source": splits.source,
                    "data_dir": str(Path(data_dir) / profile.name),
                    "splits_reused": reused,
                    "splits": splits.summary(),
                    "test_rows": len(test),
                    "test_fraud": int(test[label].sum()),
                },
                "model": {
                    "name": card.name,
                    "version": card.version,
                    "versions_seen": sorted(versions) or [card.version],
                    "framework": card.framework,
                    "candidate": card.data.get("candidate"),
                    "threshold": threshold,
                    "registry": str(registry.root),
                    "card_metrics": dict(card.metrics),
                    "trained": trained,
                },
                "replay": {
                    "points": len(outcomes_in),
                    "score_errors": score_errors,
                    "anomalies": line.anomalies,
                    "throughput": len(outcomes_in) / agent_seconds if agent_seconds else 0.0,
                    "agent_seconds": agent_seconds,
                    "wall_seconds": replay_wall,
                    "latency_ms": _percentile_merge(lat_windows),
                    "task_options": options,
                    "source": source,
                },
                "alerts": {
                    "rule": "CRITICAL when is_anomaly == TRUE, no recoveries "
                    "(tickscripts/templates/fraud_alert.tick with the profile's alert texts)",
                    "posted": len(accepted),
                    "failed": len(failed),
                    "sink_url": sink_url,
                    "sink_documents": sink_docs,
                    "index": profile.alert_index,
                    "ids": sorted(accepted),
                },
                "quality": q,
                "influx": influx_info,
                "files": {
                    "json": str(run_dir / "report.json"),
                    "plot": str(run_dir / "report.png"),
                    "alerts_db": str(alerts_db),
                    "logs": [str(agent.log_path), str(sink.log_path)],
                },
                "processes": {"udf_agent": agent.pid, "alert_sink": sink.pid},
            }
            write_plot(
                outcomes,
                run_dir / "report.png",
                threshold=threshold,
                title=(
                    f"{card.name} v{card.version} on {len(outcomes):,} test points "
                    f"({splits.source}) | precision {q['precision']:.2f} recall "
                    f"{q['recall']:.2f} F1 {q['f1']:.2f} | {len(accepted)} alerts"
                ),
            )
        stack.close()
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(report, run_dir / "report.json")
    print(format_summary(report), file=out, flush=True)
    return DemoResult(run_dir=run_dir, report=report)
