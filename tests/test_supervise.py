"""The task supervisor (``python -m udf_agent.supervise``) against the Kapacitor-API peer
(``tests/kapacitor_peer.py``, held to the recordings of a real Kapacitor 1.5 in
``tests/fixtures/kapacitor-api``), a real agent on real Unix sockets and, for the backfill,
a real ``influxd``."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from agent_helpers import register_tiny
from conftest import WAIT, eventually, free_port
from kapacitor_peer import KapacitorPeer

from models.registry import Registry
from udf_agent.server import AgentConfig, AgentServer
from udf_agent.supervise import (
    BACKFILL_PREFIX,
    Backoff,
    Gap,
    InfluxClient,
    KapacitorClient,
    KapacitorError,
    ScriptError,
    Supervisor,
    SupervisorConfig,
    SupervisorMetrics,
    backfill_script,
    read_scoring_task,
    udfs_used,
)
from udf_agent.supervise.__main__ import mask_url
from udf_agent.supervise.kapacitor import TASK_FIELDS, format_time, parse_time
from udf_agent.supervise.tickscript import parse

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).parent / "fixtures" / "kapacitor-api"
TEMPLATE = (ROOT / "tickscripts" / "templates" / "score_transactions.tick").read_text()
TASK_FILE = json.loads((ROOT / "tickscripts" / "tasks" / "score_creditcard.json").read_text())
TASK_VARS = TASK_FILE["vars"]
TASK_DBRPS = TASK_FILE["dbrps"]
FEATURES = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
TASK = "score_creditcard"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def wait_for(cond, timeout: float = WAIT, what: str = "condition"):
    return eventually(cond, timeout, what)


class Rig:
    """A real agent (in-process, stream and batch sockets), the Kapacitor peer with the
    project's score_creditcard task, optionally a real influxd."""

    def __init__(
        self,
        tmp_path: Path,
        influx=None,
        threshold: float = 0.5,
        task_vars: dict | None = None,
    ) -> None:
        self.reg = Registry(tmp_path / "registry")
        register_tiny(self.reg)
        self.sock = tmp_path / "udf.sock"
        self.batch_sock = tmp_path / "udf-batch.sock"
        self.influx = influx
        if influx is not None:
            influx.create_database("fraud")
        self.agent: AgentServer | None = None
        self.start_agent()
        self.peer = KapacitorPeer(
            udfs={"score": self.sock, "score_batch": self.batch_sock},
            influx_url=influx.url if influx is not None else None,
        ).start()
        task_vars = json.loads(json.dumps(task_vars or TASK_VARS))
        task_vars["threshold"] = {"type": "float", "value": threshold}
        self.peer.load_task(
            TASK, TEMPLATE, task_vars, template_id="score_transactions", dbrps=TASK_DBRPS
        )
        wait_for(lambda: self.task.executing and self.task.runner.conn, what="task connected")
        self.n = 0
        self.published: list[str] = []

    @property
    def task(self):
        return self.peer.tasks[TASK]

    def start_agent(self) -> None:
        config = AgentConfig(
            socket_path=self.sock, batch_socket_path=self.batch_sock, registry=self.reg.root
        )
        self.agent = AgentServer(config).start()

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.stop()
        self.agent = None

    def publish(self, k: int) -> list[int]:
        rng = random.Random(self.n)
        lines, times = [], []
        for _ in range(k):
            t = time.time_ns()
            fields = ",".join(f"{f}={rng.gauss(0, 1):.6f}" for f in FEATURES)
            lines.append(
                f'transactions,source=pub {fields},txn_id="t{self.n}",label={self.n % 2}i {t}'
            )
            self.n += 1
            times.append(t)
        self.peer.publish(lines)
        return times

    def supervisor(self, **kw) -> Supervisor:
        config = SupervisorConfig(
            sockets={"score": self.sock, "score_batch": self.batch_sock},
            backfill_overlap=kw.pop("backfill_overlap", 0.0),
            **kw,
        )
        influx = InfluxClient(self.influx.url) if self.influx is not None else None
        return Supervisor(config, KapacitorClient(self.peer.url), influx=influx)

    def fail_task(self) -> None:
        """Stop the agent and write a point: Kapacitor's task fails on it."""
        self.stop_agent()
        self.publish(1)
        wait_for(lambda: not self.task.executing, what="the task to fail")

    def patches(self) -> list[tuple[str, str]]:
        return [(p, b.get("status")) for m, p, b in self.peer.requests if m == "PATCH"]

    def close(self) -> None:
        self.peer.stop()
        if self.agent is not None:
            self.agent.stop()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def influx_rig(tmp_path, influxdb):
    r = Rig(tmp_path, influxdb, threshold=0.37)
    yield r
    r.close()


def run_until(sup: Supervisor, cond, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wait = sup.poll_once()
        if cond():
            return
        time.sleep(min(wait, 0.2))
    pytest.fail(f"timed out waiting for {what}")


# -- the peer against the recordings ------------------------------------------------------------


def _same_shape(ours, theirs, where: str) -> None:
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        assert set(ours) == set(theirs), f"{where}: keys {set(ours) ^ set(theirs)}"
        for k in ("status", "executing", "type", "id", "dbrps", "template-id", "recording-time"):
            if k in theirs and k != "id":
                assert ours[k] == theirs[k], f"{where}: {k} {ours[k]!r} != {theirs[k]!r}"
        if "tasks" in theirs:
            assert len(ours["tasks"]) == len(theirs["tasks"]), where
            for a, b in zip(ours["tasks"], theirs["tasks"]):
                _same_shape(a, b, where)
    else:
        assert ours == theirs, where


def _replay(peer: KapacitorPeer, name: str, *, exact: bool = True):
    import requests

    rec = recorded(name)
    req = rec["request"]
    body = req.get("body")
    r = requests.request(
        req["method"],
        peer.url + req["path"],
        params=req.get("params"),
        data=None if body is None else json.dumps(body),
        timeout=10,
    )
    ours = r.json() if r.content else None
    assert r.status_code == rec["status"], (name, r.status_code, ours)
    _same_shape(ours, rec["response"], name)
    theirs = rec["response"]
    if exact and isinstance(theirs, dict) and set(theirs) == {"error"}:
        assert ours["error"] == theirs["error"], name
    return ours, theirs


def _error_of(answer) -> str:
    task = answer["tasks"][0] if "tasks" in answer else answer
    return re.sub(r"@->\S+udf\.sock", "@->SOCK", task["error"])


@pytest.mark.slow
def test_peer_answers_as_the_recorded_kapacitor(tmp_path, influxdb):
    # the task exactly as it was defined when the answers were recorded
    recorded_vars = recorded("task-failed")["response"]["vars"]
    rig = Rig(
        tmp_path, influxdb, threshold=recorded_vars["threshold"]["value"], task_vars=recorded_vars
    )
    try:
        peer = rig.peer
        _replay(peer, "ping")
        _replay(peer, "tasks-executing")
        _replay(peer, "tasks-fields-executing")
        rig.fail_task()
        ours, theirs = _replay(peer, "tasks-fields-failed")
        assert _error_of(ours) == _error_of(theirs)
        ours, theirs = _replay(peer, "task-failed")
        assert ours["template-id"] == "score_transactions" and ours["vars"] == theirs["vars"]
        ours, theirs = _replay(peer, "patch-enabled-noop")
        assert _error_of(ours) == _error_of(theirs)  # still the failed run's error
        _replay(peer, "patch-disabled")
        _replay(peer, "patch-enabled-socket-missing")  # "executing" while it dials
        _replay(peer, "tasks-fields-dialling")
        assert rig.task.runner.conn is None
        rig.start_agent()
        wait_for(lambda: rig.task.runner.conn, what="the dialling task to connect")
        _replay(peer, "tasks-fields-dialled")
        _replay(peer, "define-backfill")
        _replay(peer, "define-backfill-exists")
        ours, theirs = _replay(peer, "define-invalid-script", exact=False)
        assert ours["error"].startswith("invalid TICKscript")
        _replay(peer, "define-dbrp-twice")
        _replay(peer, "replay-batch")
        tid = recorded("replay-batch")["request"]["body"]["id"]
        wait_for(lambda: peer.replays[tid].status != "running", what="the replay")
        _replay(peer, "replay-finished")
        for name in (
            "replay-delete",
            "task-delete",
            "replay-delete-missing",
            "task-delete-missing",
            "replay-missing",
            "task-missing",
            "patch-missing",
            "replay-batch-missing-task",
            "replay-batch-stream-task",
            "tasks-fields-bad-field",
            "patch-disabled-by-person",
            "tasks-fields-disabled",
            "patch-enabled-again",
        ):
            _replay(peer, name)
    finally:
        rig.close()


def test_the_supervisor_sends_the_backfill_script_a_real_kapacitor_ran():
    task = recorded("task-failed")["response"]
    body = recorded("define-backfill")["request"]["body"]
    start = int(re.search(r"WHERE time > (\d+)", body["script"]).group(1)) + 1
    info = read_scoring_task(task, ["score", "score_batch"])
    script = backfill_script(
        info,
        batch_udf="score_batch",
        start_ns=start,
        chunk_ns=10 * 10**9,
        int_fields=["label"],
        header="recorded backfill",
    )
    assert script == body["script"]
    assert body["vars"] == task["vars"] and body["status"] == "disabled"


def test_reads_the_recorded_task():
    info = read_scoring_task(recorded("task-failed")["response"], ["score", "score_batch"])
    assert (info.task_id, info.udf, info.type, info.model, info.score_field) == (
        TASK,
        "score",
        "stream",
        "creditcard",
        "score",
    )
    assert (info.database, info.retention_policy, info.measurement) == (
        "fraud",
        "autogen",
        "transactions",
    )
    assert (info.out_database, info.out_retention_policy, info.out_measurement) == (
        "fraud",
        "autogen",
        "transactions_scored",
    )
    assert info.backfillable
    assert set(TASK_FIELDS) <= set(recorded("tasks-fields-failed")["response"]["tasks"][0])


def test_kapacitor_times_keep_nanoseconds():
    for text in ("2026-11-29T15:50:28.55374024Z", "2026-11-29T15:49:43.507570916Z"):
        ns = parse_time(text)
        assert format_time(ns).rstrip("0Z").rstrip(".") == text.rstrip("Z").rstrip("0")
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("") is None
    assert parse_time("2026-11-29T15:50:28Z") % 10**9 == 0


# -- re-enabling -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failed_task_is_reenabled_once_the_socket_answers_not_before(rig):
    sup = rig.supervisor(backfill=False)
    rig.fail_task()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        time.sleep(min(sup.poll_once(), 0.2))
    assert rig.patches() == []  # nothing is enabled while the socket refuses
    assert not rig.task.executing
    probes = sup.metrics.probes.labels(str(rig.sock), "refused")._value.get()
    assert probes >= 2
    rig.start_agent()
    run_until(sup, lambda: rig.task.executing, what="the re-enable")
    path = f"/kapacitor/v1/tasks/{TASK}"
    assert rig.patches() == [(path, "disabled"), (path, "enabled")]
    assert sup.metrics.recoveries.labels(TASK)._value.get() == 1
    assert sup.metrics.task_up.labels(TASK)._value.get() == 1
    wait_for(lambda: rig.task.runner.conn, what="the task's UDF connection")
    before = rig.agent.metrics.points_in._value.get()
    rig.publish(5)
    wait_for(lambda: rig.agent.metrics.points_in._value.get() == before + 5, what="scoring")
    for _ in range(3):
        sup.poll_once()
    assert len(rig.patches()) == 2  # an executing task is left as it is


def test_enabling_an_enabled_task_is_not_a_reenable(rig):
    # what a naive supervisor would do, and why ours disables first: the recorded no-op
    rig.fail_task()
    rig.start_agent()
    client = KapacitorClient(rig.peer.url)
    answer = client.set_status(TASK, "enabled")
    assert answer["executing"] is False and not rig.task.executing


def test_backoff_is_capped_exponential_with_jitter():
    b = Backoff(0.2, 4.0, random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(4.0, 0.2 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= b.delay(attempt) <= ceiling
    assert len({round(b.delay(3), 6) for _ in range(20)}) > 1  # jittered


@pytest.mark.slow
def test_probes_back_off_while_the_socket_refuses(rig):
    clock = [1000.0]
    probes: list[float] = []

    def refuse(path, timeout):
        probes.append(clock[0])
        return "Connection refused"

    rig.fail_task()
    sup = Supervisor(
        SupervisorConfig(sockets={"score": rig.sock}, backfill=False, backoff_max=2.0),
        KapacitorClient(rig.peer.url),
        monotonic=lambda: clock[0],
        probe=refuse,
        rng=random.Random(1),
    )
    for _ in range(200):  # 20 s of fake time, polled every 0.1 s
        sup.poll_once()
        clock[0] += 0.1
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert 8 <= len(probes) <= 25, probes
    assert all(g >= 0.1 - 1e-9 for g in gaps)
    assert max(gaps) <= 2.0 + 0.1 + 1e-9  # capped
    assert gaps[0] < gaps[3]  # growing
    assert rig.patches() == []


def test_a_new_socket_file_is_probed_at_once_not_at_the_end_of_the_backoff(rig, tmp_path):
    clock = [1000.0]
    probes: list[float] = []
    sock = tmp_path / "new-agent.sock"

    def probe(path, timeout):
        probes.append(clock[0])
        return None if path.exists() else "No such file or directory"

    rig.fail_task()
    rig.start_agent()  # the task's own agent is back; the supervisor watches `sock`
    sup = Supervisor(
        SupervisorConfig(sockets={"score": sock}, backfill=False),
        KapacitorClient(rig.peer.url),
        monotonic=lambda: clock[0],
        probe=probe,
        rng=random.Random(2),
    )
    for _ in range(80):  # 8 s: the back-off has grown to seconds
        sup.poll_once()
        clock[0] += 0.1
    assert rig.patches() == [] and len(probes) <= 8
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    try:
        sup.poll_once()  # the very next poll probes the new file and re-enables
        assert probes[-1] == clock[0]
        assert rig.patches()[-1] == (f"/kapacitor/v1/tasks/{TASK}", "enabled")
    finally:
        listener.close()


@pytest.mark.slow
def test_the_running_supervisor_never_spins(rig):
    rig.fail_task()
    calls = []

    def refuse(path, timeout):
        calls.append(time.monotonic())
        return "Connection refused"

    sup = Supervisor(
        SupervisorConfig(sockets={"score": rig.sock}, backfill=False, poll_interval=0.05),
        KapacitorClient(rig.peer.url),
        probe=refuse,
    ).start()
    time.sleep(1.5)
    started = time.monotonic()
    sup.stop(timeout=4.0)
    assert time.monotonic() - started < 30.0  # it stops (how fast: test_cli_serves_...)
    lists = [r for r in rig.peer.requests if r[0] == "GET" and r[1] == "/kapacitor/v1/tasks"]
    # 0.2 s doubling to 4 s: a handful of probes in 1.5 s, never a tight loop (a busy
    # machine may run fewer, never more)
    assert 1 <= len(calls) <= 8, calls
    assert len(lists) <= 1.5 / 0.05 + 2


def test_a_task_disabled_by_a_person_is_left_alone(rig):
    sup = rig.supervisor(backfill=False)
    rig.fail_task()
    sup.poll_once()
    KapacitorClient(rig.peer.url).set_status(TASK, "disabled")  # the person
    rig.start_agent()
    for _ in range(5):
        sup.poll_once()
        time.sleep(0.05)
    assert rig.patches() == [(f"/kapacitor/v1/tasks/{TASK}", "disabled")]
    assert rig.task.status == "disabled"
    assert sup.metrics.tasks.labels("disabled")._value.get() == 1


def test_a_refused_reenable_is_retried_with_backoff(rig):
    sup = rig.supervisor(backfill=False)
    rig.fail_task()
    rig.start_agent()
    rig.peer.inject("PATCH", f"/kapacitor/v1/tasks/{TASK}", 500, "boltdb: database is locked", 2)
    run_until(sup, lambda: rig.task.executing, what="the re-enable after refusals")
    assert sup.metrics.reenable_errors.labels(TASK)._value.get() == 2
    assert sup.metrics.recoveries.labels(TASK)._value.get() == 1


def test_kapacitor_unreachable_is_counted_and_backed_off():
    metrics = SupervisorMetrics()
    sup = Supervisor(
        SupervisorConfig(poll_interval=0.5),
        KapacitorClient(f"http://127.0.0.1:{free_port()}", timeout=1.0),
        metrics=metrics,
    )
    waits = [sup.poll_once() for _ in range(4)]
    assert all(w >= 0.5 for w in waits)
    assert metrics.polls.labels("error")._value.get() == 4
    assert metrics.errors.labels("kapacitor")._value.get() == 4


@pytest.mark.slow
def test_the_task_list_is_read_page_by_page():
    with KapacitorPeer() as peer:
        for i in range(230):
            peer.load_task(
                f"t{i:03d}", 'dbrp "fraud"."autogen"\nstream\n    |from()\n', status="disabled"
            )
        tasks = list(KapacitorClient(peer.url).tasks())
        assert [t["id"] for t in tasks] == [f"t{i:03d}" for i in range(230)]
        offsets = [r for r in peer.requests if r[1] == "/kapacitor/v1/tasks"]
        assert len(offsets) == 3


def test_kapacitor_errors_keep_its_message_and_status(rig):
    client = KapacitorClient(rig.peer.url)
    with pytest.raises(KapacitorError, match="no task exists") as info:
        client.task("nope")
    assert info.value.status == 404
    client.delete_task("nope")  # absent is fine, as in Kapacitor


# -- the backfill, against a real influxd ---------------------------------------------------------


def _scored(influx, since: int = 0) -> dict[int, dict]:
    rows = influx.rows(
        f"SELECT * FROM transactions_scored WHERE time >= {since} GROUP BY *", db="fraud"
    )
    return {r["time"]: r for r in rows}


def _fail_and_recover(rig: Rig, sup: Supervisor) -> tuple[list[int], list[int], list[int]]:
    before = rig.publish(40)
    rig.peer.wait_idle()
    sup.poll_once()
    rig.stop_agent()
    gap = rig.publish(30)  # the first one fails the task; none is scored
    wait_for(lambda: not rig.task.executing, what="the task to fail")
    sup.poll_once()
    rig.start_agent()
    run_until(sup, lambda: rig.task.executing, what="the re-enable")
    wait_for(lambda: rig.task.runner.conn, what="the UDF connection")
    after = rig.publish(20)
    rig.peer.wait_idle()
    return before, gap, after


def _run_gap(sup: Supervisor) -> Gap:
    (gap,) = sup.pending_gaps()
    wait_for(lambda: time.time_ns() > gap.end_ns + 1.1e9, what="the gap's end to pass")
    assert sup.backfill_once(gap)
    return gap


@pytest.mark.slow
def test_backfill_covers_exactly_the_gap_and_is_idempotent(influx_rig):
    rig, influx = influx_rig, influx_rig.influx
    sup = rig.supervisor()
    before, gap_times, after = _fail_and_recover(rig, sup)
    assert len(_scored(influx)) == 60  # the gap's 30 points were not scored live
    gap = _run_gap(sup)

    # the batch UDF saw the gap's points and nothing else
    assert sorted(t for _, t in rig.peer.batch_points) == sorted(gap_times)
    assert gap.start_ns <= min(gap_times) and max(gap_times) < gap.end_ns
    assert max(before) < gap.start_ns and gap.end_ns <= min(after)
    assert rig.peer.write_errors == []

    scored = _scored(influx)
    inputs = influx.rows("SELECT * FROM transactions GROUP BY *", db="fraud")
    assert sorted(scored) == sorted(r["time"] for r in inputs)  # every point, once
    live = scored[before[0]]
    for t in gap_times:
        row, source = scored[t], next(r for r in inputs if r["time"] == t)
        assert row["txn_id"] == source["txn_id"] and row["label"] == source["label"]
        assert row["source"] == "pub"
        assert (row["model"], row["model_version"]) == (live["model"], live["model_version"])
        assert row["threshold"] == 0.37  # the task's own option, not the card's
        assert 0.0 <= row["score"] <= 1.0 and row["is_anomaly"] == (row["score"] >= 0.37)
    keys = influx.query('SHOW FIELD KEYS FROM "transactions_scored"', db="fraud")
    types = dict(keys[0]["series"][0]["values"])
    assert types["label"] == "integer" and types["is_anomaly"] == "boolean"
    assert sup.metrics.backfill_points.labels(TASK)._value.get() == 30
    assert sup.metrics.unscored.labels(TASK)._value.get() == 0

    # twice: the same points, same timestamps and tags; nothing new, nothing doubled
    rig.peer.batch_points.clear()
    sup.add_gap(Gap(gap.task_id, gap.start_ns, gap.end_ns))
    assert sup.backfill_once(sup.pending_gaps()[0], force=True)
    assert sorted(t for _, t in rig.peer.batch_points) == sorted(gap_times)
    again = _scored(influx)
    assert again == scored
    assert sup.metrics.backfill_points.labels(TASK)._value.get() == 30
    # unforced, a gap without unscored points is not even replayed
    rig.peer.batch_points.clear()
    assert sup.backfill_once(Gap(gap.task_id, gap.start_ns, gap.end_ns))
    assert rig.peer.batch_points == []
    assert sup.metrics.backfills.labels(TASK, "nothing")._value.get() == 1

    # the backfill task and its replay are gone from Kapacitor
    assert not [t for t in rig.peer.tasks if t.startswith(BACKFILL_PREFIX)]
    assert not rig.peer.replays
    assert sup.flush_events()
    events = influx.rows("SELECT * FROM udf_events", db="fraud")
    assert [e["event"] for e in events].count("backfilled") == 2
    assert {e["event"] for e in events} == {"failed", "reenabled", "backfilled"}
    reenabled = next(e for e in events if e["event"] == "reenabled")
    assert (reenabled["gap_start_ns"], reenabled["gap_end_ns"]) == (gap.start_ns, gap.end_ns)
    assert reenabled["end_ms"] == gap.end_ns // 10**6 and "score_creditcard" in reenabled["text"]
    assert [e["points"] for e in events if e["event"] == "backfilled"] == [30, 0]


@pytest.mark.slow
def test_a_gap_the_write_drops_is_reported_unscored(influx_rig, monkeypatch):
    # Kapacitor reads every number of a batch query as a float: without the integer
    # casts InfluxDB refuses the writes, and the replay still says "finished"
    rig = influx_rig
    sup = rig.supervisor()
    _fail_and_recover(rig, sup)
    monkeypatch.setattr(InfluxClient, "integer_fields", lambda self, **kw: set())
    _run_gap(sup)
    assert any("field type conflict" in e for e in rig.peer.write_errors)
    assert sup.metrics.unscored.labels(TASK)._value.get() == 30
    assert sup.metrics.backfill_points.labels(TASK)._value.get() == 0


@pytest.mark.slow
def test_a_task_reenabled_by_someone_else_is_still_backfilled(influx_rig):
    rig = influx_rig
    sup = rig.supervisor()
    rig.publish(10)
    rig.peer.wait_idle()
    rig.fail_task()
    sup.poll_once()  # seen failed; the agent is down, so no re-enable
    rig.publish(5)
    rig.start_agent()
    client = KapacitorClient(rig.peer.url)
    client.set_status(TASK, "disabled")
    client.set_status(TASK, "enabled")  # a person, or Kapacitor's load service
    sup.poll_once()
    (gap,) = sup.pending_gaps()
    assert gap.note == "re-enabled by someone else"
    wait_for(lambda: rig.task.runner.conn, what="the UDF connection")
    _run_gap(sup)
    assert sup.metrics.backfill_points.labels(TASK)._value.get() == 6


@pytest.mark.slow
def test_points_written_while_kapacitor_was_down_are_backfilled(influx_rig):
    rig, influx = influx_rig, influx_rig.influx
    sup = rig.supervisor()
    rig.publish(10)
    rig.peer.wait_idle()
    sup.poll_once()
    rig.peer.go_down()  # a Kapacitor restart: nothing failed, the points just never came
    assert sup.poll_once() >= sup.config.poll_interval
    missed = rig.publish(15)
    rig.peer.come_back()
    wait_for(lambda: rig.task.runner.conn, what="the task to start again")
    rig.publish(5)
    rig.peer.wait_idle()
    sup.poll_once()
    (gap,) = sup.pending_gaps()
    assert gap.note == "Kapacitor was unreachable" and gap.start_ns < min(missed)
    _run_gap(sup)
    # the window around the outage is replayed whole (idempotent): the missed points in it
    assert set(missed) <= {t for _, t in rig.peer.batch_points}
    assert len(_scored(influx)) == 30 and rig.peer.write_errors == []


@pytest.mark.slow
def test_scores_lost_while_influxdb_was_down_are_written_again(influx_rig):
    rig, influx = influx_rig, influx_rig.influx
    sup = rig.supervisor()
    rig.peer.hold_writes = True  # Kapacitor's influxDBOut buffers before it writes
    rig.publish(10)
    rig.peer.wait_idle()
    sup.poll_once()
    influx.stop()
    sup.poll_once()  # InfluxDB does not answer
    rig.peer.flush()  # the buffered scores are refused and dropped
    assert rig.peer.write_errors
    influx.start()
    rig.peer.hold_writes = False
    sup.poll_once()
    (gap,) = sup.pending_gaps()
    assert gap.note == "InfluxDB was unreachable"
    _run_gap(sup)
    assert len(_scored(influx)) == 10
    assert sup.metrics.backfill_points.labels(TASK)._value.get() == 10


@pytest.mark.slow
def test_an_operator_can_backfill_any_range_from_the_command_line(influx_rig):
    rig, influx = influx_rig, influx_rig.influx
    rig.fail_task()  # no supervisor ran: the task is down and its points unscored
    missed = rig.publish(12)
    rig.start_agent()
    client = KapacitorClient(rig.peer.url)
    client.set_status(TASK, "disabled")
    client.set_status(TASK, "enabled")
    wait_for(lambda: rig.task.runner.conn, what="the task to start again")
    start, stop = format_time(min(missed) - 10**6), str(max(missed) + 1)
    r = subprocess.run(
        [sys.executable, "-m", "udf_agent.supervise", "--kapacitor-url", rig.peer.url,
         "--influx-url", influx.url, "--socket", str(rig.sock), "--batch-socket",
         str(rig.batch_sock), "--backfill-task", TASK, "--backfill-from", start,
         "--backfill-to", stop],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "12 point(s) newly scored" in r.stderr
    assert {t for t in missed} <= set(_scored(influx))
    events = influx.rows("SELECT * FROM udf_events", db="fraud")
    assert [e["points"] for e in events if e["event"] == "backfilled"] == [12]


@pytest.mark.slow
def test_gap_start_is_just_after_the_last_point_the_model_scored(influxdb):
    influxdb.create_database("fraud")
    t0 = time.time_ns() - 60 * 10**9
    influxdb.write(
        "fraud",
        "\n".join(
            [
                f"transactions_scored,model=creditcard score=0.1 {t0}",
                f'transactions_scored,model=creditcard score_error="nan" {t0 + 10}',
                f"transactions_scored,model=other score=0.2 {t0 + 20}",
                f"transactions_scored,model=creditcard_tf,fallback_for=creditcard score=0.3 {t0 - 5}",
            ]
        ),
    )
    info = read_scoring_task(recorded("task-failed")["response"], ["score"])
    sup = Supervisor(SupervisorConfig(), KapacitorClient("http://127.0.0.1:1"),
                     influx=InfluxClient(influxdb.url))  # fmt: skip
    assert sup.gap_start(info, t0 - 100) == t0 + 11  # score_error counts as written
    assert sup.gap_start(info, t0 + 50) == t0 + 50  # nothing since the run began
    influxdb.write(
        "fraud", f"transactions_scored,model=x,fallback_for=creditcard score=1 {t0 + 30}"
    )
    assert sup.gap_start(info, t0 - 100) == t0 + 31  # scored by the fallback model


def test_udf_events_carry_any_text_and_a_point_that_cannot_be_encoded_is_counted(influxdb):
    influxdb.create_database("fraud")
    sup = Supervisor(SupervisorConfig(), KapacitorClient("http://127.0.0.1:1"),
                     influx=InfluxClient(influxdb.url))  # fmt: skip
    t0 = time.time_ns() - 10**9
    error = 'udf "score" failed:\n  read unix @->/sockets/x.sock: "broken pipe"\ttwice'
    sup._emit("failed", "score, my=task", "first", t0, error=error, points=3)
    sup._emit("failed", "bad\\", "never writable", t0 + 1)  # a tag ending with a backslash
    sup._emit("reenabled", "score, my=task", "second", t0 + 2, gap_start_ns=t0)
    assert sup.flush_events()
    rows = influxdb.rows('SELECT * FROM "udf_events" ORDER BY time ASC', db="fraud")
    assert [r["text"] for r in rows] == ["first", "second"]
    assert rows[0]["task"] == "score, my=task" and rows[0]["points"] == 3
    assert rows[0]["error"] == error.replace("\n", " ").replace("\t", " ")
    assert rows[1]["gap_start_ns"] == t0
    assert sup.metrics.errors.labels("event")._value.get() == 1
    assert not sup._events  # the unwritable point is let go, not retried forever


def test_unfinished_backfills_resume_from_udf_events(influxdb):
    influxdb.create_database("fraud")
    now = time.time_ns()
    influxdb.write(
        "fraud",
        "\n".join(
            [
                f'udf_events,task=a,event=reenabled gap_start_ns=1i,gap_end_ns={now - 10}i,text="x" {now - 20}',
                f'udf_events,task=a,event=backfilled gap_start_ns=1i,gap_end_ns={now - 10}i,text="x" {now - 5}',
                f'udf_events,task=b,event=reenabled gap_start_ns={now - 50}i,gap_end_ns={now - 9}i,text="x" {now - 50}',
            ]
        ),
    )
    sup = Supervisor(SupervisorConfig(), KapacitorClient("http://127.0.0.1:1"),
                     influx=InfluxClient(influxdb.url))  # fmt: skip
    assert sup.resume_gaps() == 1
    (gap,) = sup.pending_gaps()
    assert (gap.task_id, gap.start_ns, gap.end_ns) == ("b", now - 50, now - 9)


def test_pending_gaps_are_bounded_and_merged():
    sup = Supervisor(SupervisorConfig(max_pending=2), KapacitorClient("http://127.0.0.1:1"))
    assert sup.add_gap(Gap("a", 10, 20)) and sup.add_gap(Gap("a", 5, 15))
    assert [(g.start_ns, g.end_ns) for g in sup.pending_gaps()] == [(5, 20)]
    assert sup.add_gap(Gap("b", 1, 2))
    assert not sup.add_gap(Gap("c", 1, 2))
    assert sup.metrics.refused.labels("backfill")._value.get() == 1


# -- TICKscripts ---------------------------------------------------------------------------------


def test_every_project_template_parses():
    for path in (ROOT / "tickscripts" / "templates").glob("*.tick"):
        program = parse(path.read_text())
        assert any(s.kind == "chain" for s in program.statements), path
    assert udfs_used(TEMPLATE) == {"score"}
    assert udfs_used((ROOT / "tickscripts/templates/fraud_alert.tick").read_text()) == set()


def _task(script: str) -> dict:
    return {"id": "x", "type": "stream", "script": script, "vars": {}, "dbrps": []}


@pytest.mark.parametrize(
    "change, reason",
    [
        ("        .measurement(measurement)",
         "        .measurement(measurement)\n        .where(lambda: TRUE)",
         ),
        ("@score()", "|eval(lambda: 1).as('one')\n    @score()"),
        (".precision('ns')", ".precision('ns')\n    |log()"),
    ],
)  # fmt: skip
def test_scripts_the_backfill_cannot_mirror_are_marked(change, reason):
    script = TEMPLATE.replace(change, reason)
    info = read_scoring_task(
        {**_task(script), "vars": {"model": {"type": "string", "value": "m"},
                                   "threshold": {"type": "float", "value": 0.5}}},
        ["score"],
    )  # fmt: skip
    assert not info.backfillable and info.unsupported
    with pytest.raises(ScriptError):
        backfill_script(info, batch_udf="score_batch", start_ns=1, chunk_ns=10**9)


def test_backfill_script_names_do_not_collide_with_the_tasks_vars():
    script = TEMPLATE.replace("var model string", "var model string\nvar backfill_scored = 1")
    info = read_scoring_task(
        {**_task(script), "vars": {"model": {"type": "string", "value": "m"},
                                   "threshold": {"type": "float", "value": 0.5}}},
        ["score"],
    )  # fmt: skip
    out = backfill_script(info, batch_udf="score_batch", start_ns=5, chunk_ns=1500 * 10**6,
                          int_fields=["label", "n"])  # fmt: skip
    names = re.findall(r"^var (\w+)", out, re.M)
    assert len(names) == len(set(names)) and "var backfill_scored = 1" in out
    assert re.search(r"^var \w+ = batch$", out, re.M)
    assert ".every(1500ms)" in out and "WHERE time > 4" in out
    assert out.count("|union(") == 2 and "@score_batch()" in out and "@score()" not in out


def test_a_garbled_script_is_an_error_not_a_crash():
    with pytest.raises(ScriptError):
        parse("stream |from() .measurement('x' ")
    assert udfs_used("stream @score()") == {"score"}


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_serves_metrics_and_stops_within_5s_on_sigterm_and_sigint(rig, tmp_path):
    rig.fail_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", UDF_SUPERVISOR_KAPACITOR_URL=rig.peer.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "udf_agent.supervise", "--socket", str(tmp_path / "none.sock"),
             "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--poll-interval", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            text = wait_for(lambda p=port: _metrics(p), what="the metrics endpoint")
            wait_for(
                lambda p=port: FAILED_GAUGE in (_metrics(p) or ""),
                what="the failed task in the metrics",
            )
            assert "udf_supervisor_polls_total" in text
            started = time.monotonic()
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
            # a hang, not a slow machine, would take this long (tests/test_signals.py
            # prints how long stops take)
            assert time.monotonic() - started < 30.0
            assert proc.returncode == 0, out
            assert f"signal {sig.name} received" in out and "stopped" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
    assert rig.patches() == []  # its socket never answered


FAILED_GAUGE = 'udf_supervisor_tasks{state="failed"} 1.0'


def _metrics(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


@pytest.mark.slow
def test_cli_refuses_bad_numbers_naming_the_flag():
    env = dict(os.environ, UDF_SUPERVISOR_POLL_INTERVAL="soon")
    r = subprocess.run(
        [sys.executable, "-m", "udf_agent.supervise", "--kapacitor-url", "http://x:9092"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "--poll-interval" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "udf_agent.supervise", "--kapacitor-url", "http://x:9092",
         "--backoff-min", "5", "--backoff-max", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "--backoff-max" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "udf_agent.supervise"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("UDF_SUPERVISOR_")},
    )  # fmt: skip
    assert r.returncode == 2 and "--kapacitor-url" in r.stderr


def test_passwords_in_urls_are_masked():
    assert mask_url("http://admin:s3cret@kapacitor:9092") == "http://admin:***@kapacitor:9092"
    assert mask_url("http://kapacitor:9092") == "http://kapacitor:9092"


# -- the whole thing, as processes ------------------------------------------------------------------


@pytest.mark.slow
def test_agent_restart_leaves_nothing_unscored(tmp_path, influxdb):
    """``python -m udf_agent`` restarted (SIGTERM, new process) under a steady stream, with
    ``python -m udf_agent.supervise`` running: every point ends up scored exactly once."""
    influxdb.create_database("fraud")
    reg = Registry(tmp_path / "registry")
    register_tiny(reg)
    sock, batch_sock = tmp_path / "udf.sock", tmp_path / "udf-batch.sock"

    def agent():
        proc = subprocess.Popen(
            [sys.executable, "-m", "udf_agent", "--socket", str(sock), "--batch-socket",
             str(batch_sock), "--registry", str(reg.root)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )  # fmt: skip
        wait_for(lambda: sock.exists() and batch_sock.exists(), 30, "the agent's sockets")
        return proc

    procs = []
    proc = agent()
    procs.append(proc)
    peer = KapacitorPeer(udfs={"score": sock, "score_batch": batch_sock}, influx_url=influxdb.url)
    peer.start()
    sup = None
    try:
        peer.load_task(
            TASK, TEMPLATE, TASK_VARS, template_id="score_transactions", dbrps=TASK_DBRPS
        )
        wait_for(lambda: peer.tasks[TASK].runner.conn, what="the task's connection")
        sup = subprocess.Popen(
            [sys.executable, "-m", "udf_agent.supervise", "--kapacitor-url", peer.url,
             "--socket", str(sock), "--batch-socket", str(batch_sock), "--influx-url",
             influxdb.url, "--poll-interval", "0.2", "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )  # fmt: skip
        stop = threading.Event()
        sent = [0]

        def publisher():
            rng = random.Random(3)
            while not stop.is_set():
                lines = []
                for _ in range(10):
                    fields = ",".join(f"{f}={rng.gauss(0, 1):.5f}" for f in FEATURES)
                    lines.append(f'transactions,source=pub {fields},txn_id="p{sent[0]}",label=0i '
                                 f"{time.time_ns()}")  # fmt: skip
                    sent[0] += 1
                peer.publish(lines)
                stop.wait(0.05)

        pub = threading.Thread(target=publisher, daemon=True)
        pub.start()
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert "until re-enabled: score_creditcard/score2" in out
        time.sleep(1.0)
        procs.append(agent())
        time.sleep(3)
        stop.set()
        pub.join(10)
        peer.wait_idle()

        def all_scored():
            n = influxdb.count("transactions_scored", "score", db="fraud")
            return n == sent[0]

        wait_for(all_scored, 60, "every point to be scored")
        scored = influxdb.rows("SELECT txn_id FROM transactions_scored", db="fraud")
        assert len({r["txn_id"] for r in scored}) == len(scored) == sent[0]
    finally:
        if sup is not None:
            sup.send_signal(signal.SIGTERM)
            log_text = sup.communicate(timeout=10)[0]
            assert sup.returncode == 0, log_text
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=30)
        peer.stop()


@pytest.mark.parametrize(
    "task_file",
    sorted((ROOT / "tickscripts" / "tasks").glob("score_*.json")),
    ids=lambda p: p.stem,
)
def test_every_shipped_scoring_task_can_be_backfilled_as_shipped(task_file):
    """The task files exactly as Kapacitor loads them (template defaults included, such
    as ``var threshold = -1.0``): the supervisor must understand each one."""
    from udf_agent.supervise.tickscript import backfill_script, read_scoring_task

    spec = json.loads(task_file.read_text())
    template = (ROOT / "tickscripts" / "templates" / f"{spec['template-id']}.tick").read_text()
    task = {
        "id": task_file.stem,
        "type": "stream",
        "script": template,
        "vars": spec["vars"],
        "template-id": spec["template-id"],
    }
    info = read_scoring_task(task, {"score", "score_batch"})
    assert info is not None and not info.unsupported, info
    assert info.out_measurement == "transactions_scored" and info.model
    script = backfill_script(info, batch_udf="score_batch", start_ns=1, chunk_ns=10**9)
    # the same options, the card's threshold (the template's -1.0) included
    assert "@score_batch()" in script and "var threshold = -1.0" in script


# -- drift tasks: re-enabled, never backfilled ------------------------------------------------


class _TaskStore:
    """Kapacitor's task API as the supervisor uses it (list, read, PATCH the status), for
    one batch task: what the recordings show for a status change."""

    def __init__(self, task: dict) -> None:
        self.task_ = task
        self.patches: list[str] = []

    def tasks(self):
        return [dict(self.task_)]

    def task(self, task_id: str) -> dict:
        assert task_id == self.task_["id"]
        return dict(self.task_)

    def set_status(self, task_id: str, status: str) -> dict:
        self.patches.append(status)
        if status != self.task_["status"]:
            self.task_.update(status=status, executing=status == "enabled", error="")
            if status == "enabled":
                self.task_["last-enabled"] = format_time(time.time_ns())
        return dict(self.task_)


class _NoGapInflux:
    """InfluxDB that answers pings; any question about a gap fails the test."""

    def ping(self) -> None:
        return None

    def __getattr__(self, name: str):
        raise AssertionError(f"a drift task asked InfluxDB for {name}: there is no gap to find")


def test_a_drift_task_is_reenabled_once_its_socket_answers_and_never_backfilled(tmp_path):
    spec = json.loads((ROOT / "tickscripts" / "tasks" / "drift_creditcard.json").read_text())
    script = (ROOT / "tickscripts" / "templates" / "model_drift.tick").read_text()
    assert udfs_used(script) == {"drift"}
    store = _TaskStore(
        {
            "id": "drift_creditcard",
            "type": "batch",
            "status": "enabled",
            "executing": False,
            "error": "drift2: write error: broken pipe",
            "script": script,
            "vars": spec["vars"],
            "dbrps": spec["dbrps"],
            "last-enabled": format_time(time.time_ns() - 10**9),
        }
    )
    drift_sock = tmp_path / "udf-drift.sock"
    config = SupervisorConfig(
        sockets={"drift": drift_sock},
        udfs=("score", "score_batch", "drift"),
        reenable_only=frozenset({"drift"}),
        backoff_min=0.01,
        backoff_max=0.05,
    )
    sup = Supervisor(config, store, influx=_NoGapInflux())
    sup.poll_once()
    assert store.patches == []  # the drift socket does not answer yet
    agent = AgentServer(
        AgentConfig(
            socket_path=tmp_path / "udf.sock",
            drift_socket_path=drift_sock,
            registry=tmp_path / "registry",
        )
    ).start()
    try:
        run_until(sup, lambda: store.task_["executing"], what="the drift task re-enabled")
    finally:
        agent.stop()
    assert store.patches == ["disabled", "enabled"]
    assert sup.pending_gaps() == []
    events = [(e.tags["event"], e.fields) for e in sup._events]
    assert [name for name, _ in events] == ["failed", "reenabled"]
    assert "gap_start_ns" not in events[1][1]  # nothing to backfill: the next windows judge it
    assert sup.metrics.recoveries.labels("drift_creditcard")._value.get() == 1
    # a supervisor that is not given the drift socket leaves drift tasks alone
    store.task_.update(executing=False)
    other = Supervisor(SupervisorConfig(), store, influx=_NoGapInflux())
    other.poll_once()
    assert store.patches == ["disabled", "enabled"]
