"""The demo's stages, run in order; every process started is stopped on the way out."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import requests

from models import contract
from models.data import CLASS
from models.registry import Registry, default_registry_root

from .config import DemoConfig
from .errors import DemoError, DemoInterrupted, StageError
from .kapacitor import AlertState, ScoredRecord, alert_body
from .processes import ManagedProcess, free_port, wait_until
from .progress import LiveLine
from .report import PointOutcome, format_summary, quality, write_json, write_plot

__all__ = ["PROJECT_ROOT", "DemoResult", "run_demo"]

log = logging.getLogger("demo")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: points per write request of the publisher in the --influx path
PUBLISH_BATCH = 5000


@dataclass
class DemoResult:
    run_dir: Path
    report: dict[str, Any]


@contextlib.contextmanager
def stage(name: str, out: TextIO | None = None) -> Iterator[None]:
    """Run a stage; any error leaves it as a :class:`StageError` naming the stage."""
    if out is not None:
        print(f"==> {name}", file=out, flush=True)
    log.info("event=stage_start stage=%r", name)
    t0 = time.perf_counter()
    try:
        yield
    except StageError:
        raise
    except (KeyboardInterrupt, SystemExit, DemoInterrupted):
        raise
    except Exception as exc:  # every failure leaves with the stage's name on it
        raise StageError(name, str(exc) or type(exc).__name__) from exc
    log.info("event=stage_done stage=%r seconds=%.2f", name, time.perf_counter() - t0)


class AlertPoster:
    """Posts alert bodies to the sink's webhook from a small thread pool (one HTTP
    session per thread); retries connection errors, 429 and 5xx with backoff."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        workers: int,
        line: LiveLine,
        attempts: int = 5,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.attempts = attempts
        self.timeout = timeout
        self.line = line
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-post")
        self.futures: list[tuple[str, Future[str | None]]] = []

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(s)
        return s

    def _post(self, body: bytes) -> str | None:
        """None when the sink accepted the alert, else the last error."""
        error = "not sent"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt))
            try:
                r = self._session().post(
                    self.url, data=body, headers=self.headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code in (200, 201, 202):
                self.line.add_alert(True)
                return None
            error = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code != 429 and r.status_code < 500:
                break  # the sink refused this alert; retrying would not change that
        self.line.add_alert(False)
        log.warning("event=alert_post_failed error=%r", error)
        return error

    def submit(self, key: str, body: bytes) -> None:
        self.futures.append((key, self._pool.submit(self._post, body)))

    def results(self) -> tuple[list[str], dict[str, str]]:
        """Wait for every post; (accepted keys, {key: error})."""
        ok, failed = [], {}
        for key, fut in self.futures:
            err = fut.result()
            if err is None:
                ok.append(key)
            else:
                failed[key] = err
        return ok, failed

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self._sessions:
            s.close()


def _percentile_merge(windows: Sequence[tuple[int, dict[str, float]]]) -> dict[str, Any]:
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


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def run_demo(
    config: DemoConfig, *, out: TextIO | None = None, status: TextIO | None = None
) -> DemoResult:
    """Run every stage; raise :class:`StageError` on a failure. ``out`` gets the stage
    headers and the summary (stdout), ``status`` the live line (stderr)."""
    out = out if out is not None else sys.stdout
    status = status if status is not None else sys.stderr
    if config.profile:
        from models.profile import DEFAULT_PROFILE, load_profile

        with stage("load profile", None):
            profile = load_profile(config.profile)
        if profile.name != DEFAULT_PROFILE:
            from .profile_runner import run_profile_demo

            return run_profile_demo(config, profile, out=out, status=status)
    started = time.perf_counter()
    python = config.python or sys.executable
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="demo-"))
        stack.callback(shutil.rmtree, tmp, True)

        # -- stage 1: data --------------------------------------------------------------
        with stage("prepare data", out):
            from models.train import new_run_dir

            from .prepare import load_or_prepare_splits

            run_dir = new_run_dir(config.out, "demo")
            data_dir = config.data_dir or (tmp / "data" if config.small else Path("data"))
            splits, reused = load_or_prepare_splits(
                Path(data_dir),
                csv=config.csv,
                synthetic_rows=config.rows_for_synthetic,
                seed=config.seed,
                use_default_csv=not config.small,
            )
            test = splits.test
            if config.n is not None and config.n < len(test):
                test = test.iloc[: config.n].reset_index(drop=True)
            elif config.n is not None and config.n > len(test):
                print(
                    f"    --n {config.n:,} is more than the test split's {len(test):,} rows; "
                    "replaying every row once",
                    file=out,
                )
            print(
                f"    {'reused' if reused else 'wrote'} splits in {data_dir} from {splits.source}: "
                + ", ".join(f"{p} {v['rows']:,} ({v['positives']} fraud)" for p, v in splits.summary().items()),
                file=out,
                flush=True,
            )  # fmt: skip

        # -- stage 2: model -------------------------------------------------------------
        with stage("train model", out):
            from .prepare import ensure_model

            registry_root = config.registry or (
                tmp / "registry" if config.small else default_registry_root()
            )
            registry = Registry(registry_root)
            card, trained = ensure_model(
                registry,
                splits,
                name=config.model,
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
                 "--log-level", "info"],
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
                f"    alert_sink pid {sink.pid} on {sink_url}, store {alerts_db}",
                file=out,
                flush=True,
            )

        # -- stage 4: the points, straight from the split or through InfluxDB -------------
        source = f"demo-{run_dir.name.removeprefix('demo-')}"
        influx_info: dict[str, Any] | None = None
        time_of: dict[str, int] = {}
        if config.influx_url:
            from .influx import read_points

            with stage("publish to influxdb", out):
                test_csv = tmp / "publish.csv"
                test[[*contract.FEATURES, CLASS, contract.TXN_ID]].to_csv(test_csv, index=False)
                pub = ManagedProcess(
                    "publisher",
                    [python, "-m", "publisher", "--influx-url", config.influx_url,
                     "--database", contract.DATABASE, "--csv", str(test_csv),
                     "--rate", "0", "--count", str(len(test)), "--mode", "sequential",
                     "--batch-size", str(PUBLISH_BATCH), "--source", source,
                     "--startup-timeout", f"{config.startup_timeout:g}",
                     "--shutdown-timeout", "15",
                     "--log-level", "info"],
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
                    f"    published {len(test):,} points to {config.influx_url} "
                    f"(database {contract.DATABASE}, measurement {contract.INPUT_MEASUREMENT}, "
                    f"source={source}) in {publish_s:.1f} s",
                    file=out,
                    flush=True,
                )
            with stage("read from influxdb", out):
                t0 = time.perf_counter()
                rows = read_points(config.influx_url, source=source)
                if len(rows) != len(test):
                    raise DemoError(
                        f"InfluxDB returned {len(rows):,} points of source {source}, "
                        f"but {len(test):,} were published"
                    )
                for r in rows:
                    time_of[str(r[contract.TXN_ID])] = int(r["time"])
                print(
                    f"    read {len(rows):,} points back in time order "
                    f"(epoch=ns, chunked) in {time.perf_counter() - t0:.1f} s",
                    file=out,
                    flush=True,
                )
                influx_info = {
                    "url": config.influx_url,
                    "database": contract.DATABASE,
                    "measurement": contract.INPUT_MEASUREMENT,
                    "source": source,
                    "published": len(test),
                    "read_back": len(rows),
                    "publish_seconds": round(publish_s, 3),
                }
        else:
            rows = test.to_dict("records")

        inputs: dict[str, dict[str, Any]] = {}
        for r in rows:
            txn = str(r[contract.TXN_ID])
            label = r.get(contract.LABEL, r.get(CLASS))
            fields = {f: float(r[f]) for f in contract.FEATURES if r.get(f) is not None}
            fields[contract.TXN_ID] = txn
            if label is not None:
                fields[contract.LABEL] = int(label)
            inputs[txn] = fields

        # -- stage 5: replay through the agent, alert, post -------------------------------
        with stage("replay", out):
            from udf_agent.replay import build_payloads, run_replay

            payloads = build_payloads(rows, source=source)
            options = {
                "model": config.model,
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
            line = LiveLine(status, total=len(payloads))
            poster = AlertPoster(
                sink_url + "/kapacitor", token, workers=config.post_workers, line=line
            )
            stack.callback(poster.close)
            state = AlertState()
            scored: dict[str, dict[str, Any]] = {}
            lat_windows: list[tuple[int, dict[str, float]]] = []
            agent_seconds = 0.0
            score_errors = 0
            violations: list[str] = []
            model_tags: set[tuple[str, str]] = set()
            line.start()
            t_replay = time.perf_counter()
            try:
                for start in range(0, len(payloads), window):
                    chunk = payloads[start : start + window]
                    done_before = start

                    def on_progress(sent: int, back: int, _base: int = done_before) -> None:
                        line.scored = _base + back

                    rep = run_replay(
                        sock,
                        chunk,
                        options,
                        rate=config.rate,
                        collect=True,
                        on_progress=on_progress,
                        task_id="demo",
                    )
                    violations.extend(rep.violations)
                    lat_windows.append((rep.received, rep.latency_ms))
                    agent_seconds += rep.seconds
                    score_errors += rep.score_errors
                    line.scored = start + rep.received
                    line.anomalies += rep.anomalies
                    # The alert task sees the scored points in time order.
                    for sp in sorted(rep.points, key=lambda p: p.time):
                        fields = dict(inputs.get(sp.txn_id, {contract.TXN_ID: sp.txn_id}))
                        if sp.label is not None:
                            fields[contract.LABEL] = sp.label
                        for k, v in (
                            (contract.SCORE, sp.score),
                            (contract.IS_ANOMALY, sp.is_anomaly),
                            (contract.THRESHOLD, sp.threshold),
                            (contract.SCORE_CHALLENGER, sp.score_challenger),
                            (contract.SCORE_ERROR, sp.score_error),
                        ):
                            if v is not None:
                                fields[k] = v
                        rec = ScoredRecord(
                            time_ns=time_of.get(sp.txn_id, sp.time),
                            tags={
                                contract.SOURCE_TAG: source,
                                contract.MODEL_TAG: sp.model,
                                contract.MODEL_VERSION_TAG: sp.model_version,
                            },
                            fields=fields,
                        )
                        model_tags.add((sp.model, sp.model_version))
                        scored[sp.txn_id] = {"rec": rec, "alert": False}
                        if rec.tags[contract.MODEL_TAG] != config.model or rec.is_anomaly is None:
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
                                    measurement=contract.SCORED_MEASUREMENT,
                                ),
                            )
                    if violations:
                        break
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
            received = len(scored)
            if received != len(payloads):
                raise DemoError(f"{len(payloads) - received} point(s) did not come back scored")
        with stage("post alerts", out):
            if failed:
                first_key, first_err = next(iter(failed.items()))
                raise DemoError(
                    f"{len(failed)} of {len(failed) + len(accepted)} alert(s) were not accepted "
                    f"by the sink (first: txn {first_key}: {first_err}); log {sink.log_path}"
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
            outcomes = []
            for txn, item in scored.items():
                rec = item["rec"]
                f = rec.fields
                outcomes.append(
                    PointOutcome(
                        txn_id=txn,
                        time_ns=rec.time_ns,
                        score=_float_or_none(f.get(contract.SCORE)),
                        is_anomaly=bool(f.get(contract.IS_ANOMALY)),
                        label=f.get(contract.LABEL),
                        amount=float(f.get("Amount", 0.0)),
                        alerted=txn in alerted,
                    )
                )
            q = quality(outcomes)
            model_version = sorted(v for m, v in model_tags if m == config.model) or [card.version]
            report: dict[str, Any] = {
                "run_dir": str(run_dir),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": 0.0,
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
                    "data_dir": str(data_dir),
                    "splits_reused": reused,
                    "splits": splits.summary(),
                    "test_rows": len(test),
                    "test_fraud": int(test[CLASS].sum()),
                },
                "model": {
                    "name": card.name,
                    "version": card.version,
                    "versions_seen": model_version,
                    "framework": card.framework,
                    "candidate": card.data.get("candidate"),
                    "threshold": threshold,
                    "registry": str(registry.root),
                    "card_metrics": dict(card.metrics),
                    "trained": trained,
                },
                "replay": {
                    "points": received,
                    "score_errors": score_errors,
                    "anomalies": line.anomalies,
                    "throughput": received / agent_seconds if agent_seconds else 0.0,
                    "agent_seconds": agent_seconds,
                    "wall_seconds": replay_wall,
                    "latency_ms": _percentile_merge(lat_windows),
                    "task_options": options,
                    "source": source,
                },
                "alerts": {
                    "rule": "CRITICAL when is_anomaly == TRUE, no recoveries "
                    "(tickscripts/templates/fraud_alert.tick)",
                    "posted": len(accepted),
                    "failed": len(failed),
                    "sink_url": sink_url,
                    "sink_documents": sink_docs,
                    "txn_ids": sorted(accepted),
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
        # Stop the services before the summary so nothing is left running when it prints.
        stack.close()
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(report, run_dir / "report.json")
    print(format_summary(report), file=out, flush=True)
    return DemoResult(run_dir=run_dir, report=report)
