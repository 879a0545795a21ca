"""Stage ``replay``: the points through the agent as Kapacitor's ``@score()`` node sends
them, the alert task's rule over what comes back, and the alerts posted as they arise.

The points go in windows (one task connection each: all at once, or 2 s worth with
``--rate``), so that with a rate alerts appear while the replay runs. Each window's scored
points are matched to their input rows by time (point i of a window is sent with time
t0 + i, and the driver refuses a window in which any point is missing, repeated or
unknown), rebuilt as the scored measurement's points and fed to the alert task in time
order; its alerts go to the sink from a small thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models import contract

from .alerts import AlertPoster
from .config import DemoConfig
from .errors import DemoError
from .kapacitor import AlertTask, ScoredRecord
from .model import ReadyModel
from .progress import LiveLine
from .services import Agent, Sink
from .stage import Workspace

__all__ = ["Replayed", "Scored", "replay", "task_options"]


@dataclass(frozen=True)
class Scored:
    """One point back from the agent, as the alert task sees it, and its row's value."""

    ident: str
    record: ScoredRecord
    value: float


@dataclass
class Replayed:
    scored: list[Scored]
    options: dict[str, str]
    window: int
    #: per window: (points received, latency percentiles in ms)
    latency_windows: list[tuple[int, dict[str, float]]]
    agent_seconds: float
    wall_seconds: float
    score_errors: int
    anomalies: int
    #: versions of the task's model that scored (its tag on the scored points)
    versions: list[str]
    accepted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def task_options(config: DemoConfig, model: str) -> dict[str, str]:
    """The ``@score()`` node's options, as the scoring task sets them."""
    options = {
        "model": model,
        "version": config.version,
        "field": contract.SCORE,
        "maxBatch": str(config.max_batch),
        "maxDelay": config.max_delay,
    }
    if config.threshold is not None:
        options["threshold"] = repr(config.threshold)
    return options


def _window(config: DemoConfig, points: int) -> int:
    if config.window:
        return config.window
    return points if config.rate == 0 else max(200, int(config.rate * 2))


def _record(ws: Workspace, row: dict[str, Any], sp: Any, *, from_influx: bool) -> ScoredRecord:
    """The scored measurement's point: the input fields, the agent's outputs, the tags."""
    profile = ws.dataset.profile
    fields = ws.dataset.input_fields(row)
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
    return ScoredRecord(
        # through InfluxDB the point keeps its InfluxDB time, as Kapacitor's would
        time_ns=int(row["time"]) if from_influx else sp.time,
        tags={
            contract.SOURCE_TAG: ws.source,
            contract.MODEL_TAG: sp.model,
            contract.MODEL_VERSION_TAG: sp.model_version,
        },
        fields=fields,
    )


def replay(
    ws: Workspace,
    agent: Agent,
    sink: Sink,
    model: ReadyModel,
    rows: Sequence[dict[str, Any]],
    *,
    from_influx: bool,
) -> Replayed:
    """The ``replay`` stage; every alert has been answered by the sink when it returns."""
    from udf_agent.replay import build_payloads, run_replay

    config, dataset = ws.config, ws.dataset
    name = dataset.model_name(config.model)
    payloads = build_payloads(rows, source=ws.source, profile=dataset.data_profile)
    options = task_options(config, name)
    window = _window(config, len(payloads))
    line = LiveLine(ws.status, total=len(payloads))
    poster = AlertPoster(sink.webhook, sink.token, workers=config.post_workers, line=line)
    ws.stack.callback(poster.close)
    task = AlertTask(
        model=name, measurement=dataset.profile.scored_measurement, texts=dataset.alert_texts()
    )
    out = Replayed([], options, window, [], 0.0, 0.0, 0, 0, [])
    versions: set[str] = set()
    violations: list[str] = []
    line.start()
    t0 = time.perf_counter()
    try:
        for start in range(0, len(payloads), window):
            chunk = payloads[start : start + window]

            def on_progress(sent: int, back: int, _base: int = start) -> None:
                line.scored = _base + back

            rep = run_replay(
                agent.socket,
                chunk,
                options,
                rate=config.rate,
                collect=True,
                on_progress=on_progress,
                task_id="demo",
                profile=dataset.data_profile,
            )
            out.latency_windows.append((rep.received, rep.latency_ms))
            out.agent_seconds += rep.seconds
            out.score_errors += rep.score_errors
            line.scored = start + rep.received
            line.anomalies += rep.anomalies
            violations += rep.violations
            if violations or len(rep.points) != len(chunk):
                break
            # every point came back once: the k-th in time order is the window's k-th row
            for k, sp in enumerate(sorted(rep.points, key=lambda p: p.time)):
                row = rows[start + k]
                rec = _record(ws, row, sp, from_influx=from_influx)
                out.scored.append(Scored(sp.txn_id, rec, dataset.value(row)))
                if sp.model == name:
                    versions.add(sp.model_version)
                body = task.feed(rec)
                if body is not None:
                    poster.submit(sp.txn_id, body)
        out.wall_seconds = time.perf_counter() - t0
        out.accepted, out.failed = poster.results()
    finally:
        line.stop()
    out.anomalies = line.anomalies
    out.versions = sorted(versions) or [model.card.version]
    if violations:
        raise DemoError(
            "the agent broke the socket-UDF protocol: "
            + "; ".join(violations[:5])
            + f" (agent log {agent.process.log_path})"
        )
    if len(out.scored) != len(payloads):
        raise DemoError(f"{len(payloads) - len(out.scored)} point(s) did not come back scored")
    return out
