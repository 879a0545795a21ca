"""How long an agent restart leaves points unscored, with the task supervisor running.

A real agent (``python -m udf_agent``, its own process, stream and batch sockets), a real
``influxd``, the Kapacitor-API peer (``tests/kapacitor_peer.py``: the project's
``score_creditcard`` task, failing on a dead UDF as Kapacitor 1.5 does) and the supervisor
(in this process, default settings). A publisher writes ``--rate`` points/s; each round
stops the agent with SIGTERM, leaves it down ``--downtime`` seconds, starts a new one and
measures:

- *detect*: agent stopped -> the task seen failed (Kapacitor fails it at the next point);
- *re-enable*: the new agent's socket exists -> the task executing again (target <= 5 s);
- *unscored live*: points written while the task was down (what the restart costs without
  a backfill);
- *backfilled*: re-enable -> every point of the gap scored; *left unscored* after it
  (target 0).

    .venv/bin/python -m bench.bench_supervise [--restarts 5] [--rate 200] [--downtime 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
TASK = "score_creditcard"


def _helpers():
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from agent_helpers import register_tiny
    from influxdb_server import InfluxDBServer
    from kapacitor_peer import KapacitorPeer

    return register_tiny, InfluxDBServer, KapacitorPeer


class _Publisher(threading.Thread):
    def __init__(self, peer, rate: float) -> None:
        super().__init__(name="bench-publisher", daemon=True)
        self.peer, self.rate = peer, rate
        self.sent = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        started = time.perf_counter()
        while not self.stop_event.is_set():
            due = int((time.perf_counter() - started) * self.rate)
            if due <= self.sent:
                self.stop_event.wait(0.005)
                continue
            lines = []
            for _ in range(min(due - self.sent, 200)):
                t = time.time_ns()
                fields = ",".join(f"{f}={rng.gauss(0, 1):.5f}" for f in FEATURES)
                lines.append(
                    f'transactions,source=bench {fields},txn_id="b{self.sent}",label=0i {t}'
                )
                self.sent += 1
            self.peer.publish(lines)


def _agent(reg_root: Path, sock: Path, batch_sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "udf_agent", "--socket", str(sock), "--batch-socket",
         str(batch_sock), "--registry", str(reg_root), "--log-level", "warning"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc


def _wait(cond, timeout: float, step: float = 0.002) -> float | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if cond():
            return time.perf_counter()
        time.sleep(step)
    return None


def _count(influx, measurement: str, since: int = 0, until: int = 2**62) -> int:
    res = influx.query(
        f'SELECT count("V1") FROM "{measurement}" WHERE time >= {since} AND time < {until}',
        db="fraud",
    )
    series = res[0].get("series") if res else None
    return int(series[0]["values"][0][1]) if series else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_supervise", description=__doc__)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="points per second published")
    p.add_argument("--downtime", type=float, default=2.0, help="seconds the agent stays down")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    register_tiny, InfluxDBServer, KapacitorPeer = _helpers()
    from models.registry import Registry
    from udf_agent.supervise import InfluxClient, KapacitorClient, Supervisor, SupervisorConfig

    template = (REPO_ROOT / "tickscripts/templates/score_transactions.tick").read_text()
    task_vars = json.loads((REPO_ROOT / "tickscripts/tasks/score_creditcard.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-supervise-") as tmp:
        tmp_path = Path(tmp)
        reg = Registry(tmp_path / "registry")
        register_tiny(reg)
        sock, batch_sock = tmp_path / "udf.sock", tmp_path / "udf-batch.sock"
        with InfluxDBServer(base_dir=tmp_path / "influxdb") as influx:
            influx.create_database("fraud")
            agent = _agent(reg.root, sock, batch_sock)
            _wait(lambda: sock.exists() and batch_sock.exists(), 60)
            peer = KapacitorPeer(
                udfs={"score": sock, "score_batch": batch_sock}, influx_url=influx.url
            ).start()
            peer.load_task(
                TASK,
                template,
                task_vars["vars"],
                template_id="score_transactions",
                dbrps=task_vars["dbrps"],
            )
            _wait(lambda: peer.tasks[TASK].runner and peer.tasks[TASK].runner.conn, 60)
            sup = Supervisor(
                SupervisorConfig(sockets={"score": sock, "score_batch": batch_sock}),
                KapacitorClient(peer.url),
                influx=InfluxClient(influx.url),
            ).start()
            pub = _Publisher(peer, args.rate)
            pub.start()
            task = peer.tasks[TASK]
            try:
                time.sleep(2.0)
                for _ in range(args.restarts):
                    t_stop = time.perf_counter()
                    since = time.time_ns() - 5 * 10**9
                    agent.send_signal(signal.SIGTERM)
                    agent.wait(30)
                    t_fail = _wait(lambda: not task.executing, 30)
                    time.sleep(max(0.0, args.downtime - (time.perf_counter() - t_stop)))
                    agent = _agent(reg.root, sock, batch_sock)
                    t_sock = _wait(lambda: sock.exists() and batch_sock.exists(), 60)
                    t_up = _wait(lambda: task.executing, 60)  # PATCH enabled done
                    t_conn = _wait(lambda: task.runner and task.runner.conn, 60)
                    until = time.time_ns()
                    time.sleep(0.2)  # the live path's last writes before the re-enable
                    gap_points = _count(influx, "transactions", since, until) - _count(
                        influx, "transactions_scored", since, until
                    )
                    t_filled = _wait(
                        lambda s=since, u=until: (
                            _count(influx, "transactions_scored", s, u)
                            == _count(influx, "transactions", s, u)
                        ),
                        60,
                        0.05,
                    )
                    rows.append(
                        {
                            "detect_s": (t_fail or np.nan) - t_stop,
                            "agent_start_s": (t_sock or np.nan) - t_stop - args.downtime,
                            "reenable_s": (t_up or np.nan) - (t_sock or np.nan),
                            "connect_s": (t_conn or np.nan) - (t_up or np.nan),
                            "down_s": (t_conn or np.nan) - t_stop,
                            "gap_points": gap_points,
                            "backfilled_s": (t_filled or np.nan) - (t_up or np.nan),
                        }
                    )
                    time.sleep(1.0)
            finally:
                pub.stop_event.set()
                pub.join(10)
                peer.wait_idle()
                deadline = time.monotonic() + 60
                while sup.pending_gaps() and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)
                sup.stop()
                agent.send_signal(signal.SIGTERM)
                agent.wait(30)
                peer.stop()
            published = _count(influx, "transactions")
            scored = _count(influx, "transactions_scored")
            unscored = published - scored

    if args.json:
        print(json.dumps({"rounds": rows, "published": published, "unscored": unscored}))
        return 0
    print(
        f"{args.restarts} agent restarts, {args.rate:g} points/s, agent down {args.downtime:g} s "
        "(SIGTERM, new process); supervisor defaults (poll 1 s, probe back-off 0.2-4 s)"
    )
    print(
        f"{'round':>5} {'detect s':>9} {'agent start s':>14} {'re-enable s':>12} "
        f"{'UDF init s':>11} {'scoring down s':>15} {'unscored live':>14} {'backfilled in s':>16}"
    )
    for i, r in enumerate(rows, 1):
        print(
            f"{i:>5} {r['detect_s']:>9.2f} {r['agent_start_s']:>14.2f} {r['reenable_s']:>12.2f} "
            f"{r['connect_s']:>11.2f} {r['down_s']:>15.2f} {r['gap_points']:>14,} "
            f"{r['backfilled_s']:>16.2f}"
        )
    re = np.array([r["reenable_s"] for r in rows])
    print(
        f"re-enable after the socket is back: median {np.nanmedian(re):.2f} s, "
        f"max {np.nanmax(re):.2f} s (target <= 5 s)"
    )
    print(f"published {published:,}, scored {scored:,}: {unscored:,} left unscored (target 0)")
    return 0 if unscored == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
