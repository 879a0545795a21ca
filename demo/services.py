"""Stages ``start udf agent`` and ``start alert sink``: the services as real processes.

Each start waits for the service's own word that it serves (its ``listening`` log line),
then for its first real answer (the agent's info response, the sink's ``GET /health``),
within ``--startup-timeout``; a service that exits first ends the wait at once, with the
end of its log. Everything started is stopped by the run's exit stack.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from models.registry import Registry

from .errors import DemoError
from .processes import ManagedProcess
from .stage import PROJECT_ROOT, Workspace

__all__ = ["Agent", "Sink", "start_agent", "start_sink"]

#: the sink's line once its HTTP server is bound (``--port 0``: the port it was given)
SINK_READY = re.compile(r"event=listening host=\S+ port=(?P<port>\d+)")
#: one try of a first request; a try that times out is repeated until the deadline
ATTEMPT_TIMEOUT = 2.0


@dataclass
class Agent:
    process: ManagedProcess
    socket: Path


@dataclass
class Sink:
    process: ManagedProcess
    url: str
    token: str
    alerts_db: Path
    http: requests.Session

    @property
    def webhook(self) -> str:
        """Where Kapacitor's ``.post()`` handler sends the alerts."""
        return self.url + "/kapacitor"

    def documents(self) -> int:
        """How many alert documents the sink's store holds."""
        health = self.http.get(self.url + "/health", timeout=10).json()
        return int(health.get("store", {}).get("documents", -1))


def _failed(what: str, proc: ManagedProcess, why: str) -> DemoError:
    return DemoError(
        f"{what} (pid {proc.pid}) {why} (exit status {proc.returncode}); "
        f"log {proc.log_path}:\n{proc.log_tail()}"
    )


def _first_answer(
    ask: Callable[[float], None], proc: ManagedProcess, deadline: float
) -> Exception | None:
    """Ask until the service answers (None) or it exits or time runs out (the last error)."""
    error: Exception | None = None
    while proc.running:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            ask(min(ATTEMPT_TIMEOUT, remaining))
            return None
        except Exception as exc:  # not answering yet; the last error is reported
            error = exc
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return error or RuntimeError("it exited")


def start_agent(ws: Workspace, registry: Registry) -> Agent:
    """``python -m udf_agent`` on a socket in the run's temp folder."""
    from udf_agent.replay import query_info

    sock = ws.tmp / "udf.sock"
    agent = ManagedProcess(
        "udf_agent",
        [ws.python, "-m", "udf_agent", "--socket", str(sock), "--registry", str(registry.root),
         "--log-level", "info"],
        log_path=ws.run_dir / "udf_agent.log",
        env=ws.child_env(),
        cwd=PROJECT_ROOT,
        ready=re.compile(f"listening socket={re.escape(str(sock))} udf=score"),
    )  # fmt: skip
    ws.stack.callback(agent.stop)
    agent.start()
    deadline = time.monotonic() + ws.config.startup_timeout
    if agent.wait_ready(ws.config.startup_timeout) is None:
        raise _failed("the agent", agent, f"did not start listening on {sock}")
    # what Kapacitor sends first: an info request
    error = _first_answer(lambda t: query_info(sock, timeout=t), agent, deadline)
    if error is not None:
        raise _failed("the agent", agent, f"did not answer on {sock}: {error}")
    ws.say(f"udf_agent pid {agent.pid} on {sock}")
    return Agent(agent, sock)


def start_sink(ws: Workspace) -> Sink:
    """``python -m alert_sink`` on a port of its choosing, storing into the run folder."""
    token = secrets.token_urlsafe(32)
    token_file = ws.tmp / "sink.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    alerts_db = ws.run_dir / "alerts.db"
    sink = ManagedProcess(
        "alert_sink",
        [ws.python, "-m", "alert_sink", "--host", "127.0.0.1", "--port", "0",
         "--store", f"sqlite:{alerts_db}", "--token-file", str(token_file),
         *ws.dataset.sink_args(), "--log-level", "info"],
        log_path=ws.run_dir / "alert_sink.log",
        env=ws.child_env(),
        cwd=PROJECT_ROOT,
        ready=SINK_READY,
    )  # fmt: skip
    ws.stack.callback(sink.stop)
    sink.start()
    deadline = time.monotonic() + ws.config.startup_timeout
    listening = sink.wait_ready(ws.config.startup_timeout)
    if listening is None:
        raise _failed("the alert sink", sink, "did not start listening")
    url = f"http://127.0.0.1:{listening['port']}"
    http = requests.Session()
    ws.stack.callback(http.close)

    def health(timeout: float) -> None:
        r = http.get(url + "/health", timeout=timeout)
        if r.status_code != 200:
            raise DemoError(f"HTTP {r.status_code}: {r.text[:200]}")

    error = _first_answer(health, sink, deadline)
    if error is not None:
        raise _failed("the alert sink", sink, f"did not answer GET {url}/health: {error}")
    where = ""
    if not ws.dataset.is_cards:
        p = ws.dataset.profile
        where = f", index {p.alert_index} for {p.scored_measurement}"
    ws.say(f"alert_sink pid {sink.pid} on {url}, store {alerts_db}{where}")
    return Sink(sink, url, token, alerts_db, http)
