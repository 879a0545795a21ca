"""The demo's stages, run in order; every process started is stopped on the way out.

One path for every data set (:mod:`demo.dataset`): ``prepare data`` (:mod:`demo.prepare`),
``train model`` (:mod:`demo.model`), ``start udf agent`` and ``start alert sink``
(:mod:`demo.services`), with ``--influx`` ``publish to influxdb`` and ``read from
influxdb`` (:mod:`demo.influx`), ``replay`` (:mod:`demo.replay`), ``post alerts``
(:mod:`demo.alerts`) and ``report`` (:mod:`demo.report`).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .alerts import confirm_alerts
from .config import DemoConfig
from .dataset import Dataset
from .influx import publish, read_back
from .model import ensure_model
from .prepare import prepare_data
from .replay import replay
from .report import build_report, format_summary, write_json
from .services import start_agent, start_sink
from .stage import PROJECT_ROOT, Workspace, stage

__all__ = ["PROJECT_ROOT", "DemoResult", "run_demo"]


@dataclass
class DemoResult:
    run_dir: Path
    report: dict[str, Any]


def run_demo(
    config: DemoConfig, *, out: TextIO | None = None, status: TextIO | None = None
) -> DemoResult:
    """Run every stage; raise :class:`StageError` on a failure. ``out`` gets the stage
    headers and the summary (stdout), ``status`` the live line (stderr)."""
    from models.train import new_run_dir

    out = out if out is not None else sys.stdout
    status = status if status is not None else sys.stderr
    started = time.perf_counter()
    with stage("load profile", None):
        dataset = Dataset.load(config.profile)  # None: credit cards
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="demo-"))
        stack.callback(shutil.rmtree, tmp, True)

        with stage("prepare data", out):
            run_dir = new_run_dir(config.out, "demo")
            ws = Workspace(config, dataset, out, status, stack, tmp, run_dir, started)
            data = prepare_data(ws)
        with stage("train model", out):
            model = ensure_model(ws, data)
        with stage("start udf agent", out):
            agent = start_agent(ws, model.registry)
        with stage("start alert sink", out):
            sink = start_sink(ws)

        # the points, straight from the split or as InfluxDB holds them
        influx = None
        if config.influx_url:
            with stage("publish to influxdb", out):
                published = publish(ws, data.test)
            with stage("read from influxdb", out):
                rows, influx = read_back(ws, published)
        else:
            rows = data.test.to_dict("records")

        with stage("replay", out):
            replayed = replay(ws, agent, sink, model, rows, from_influx=influx is not None)
        with stage("post alerts", out):
            documents = confirm_alerts(ws, sink, replayed.accepted, replayed.failed)
        with stage("report", out):
            report = build_report(
                ws, data, model, agent, sink, replayed, sink_documents=documents, influx=influx
            )
        # Stop the services before the summary so nothing is left running when it prints.
        stack.close()
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(report, run_dir / "report.json")
    print(format_summary(report), file=out, flush=True)
    return DemoResult(run_dir=run_dir, report=report)
