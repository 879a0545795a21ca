"""Child processes of the demo: started, waited for, and always reaped.

A child's stdout and stderr go through a pipe that a thread copies to its log file line
by line; a readiness pattern given at construction is looked for in every line, so the
demo waits for the event ("listening ...") rather than polling with short timeouts, and
a child that dies before it is ready ends the wait at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

__all__ = ["ManagedProcess", "free_port", "wait_until"]

log = logging.getLogger("demo.processes")

#: the longest the main thread blocks in one wait, so a signal always gets handled
WAIT_SLICE = 0.2


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.05,
) -> bool:
    """Poll ``ready`` until it is true (True), ``alive`` turns false or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return False
        time.sleep(interval)
    return ready()


class ManagedProcess:
    """One subprocess with its output in a log file; ``stop()`` always reaps it.

    The child runs in its own session, so a Ctrl-C in the terminal reaches only the
    demo, which then stops its children in order (SIGTERM, then SIGKILL after
    ``grace`` seconds). ``ready``: a pattern one line of the child's output matches once
    it serves (see :meth:`wait_ready`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready: re.Pattern[str] | str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.ready_pattern = re.compile(ready) if isinstance(ready, str) else ready
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._ready_match: re.Match[str] | None = None
        #: set when the ready line was seen or the output ended (the child is gone)
        self._settled = threading.Event()

    def __repr__(self) -> str:
        return f"ManagedProcess(name={self.name!r}, pid={self.pid}, running={self.running})"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError:
            self._log.close()
            self._log = None
            raise
        self._pump = threading.Thread(
            target=self._copy_output, name=f"demo-{self.name}-output", daemon=True
        )
        self._pump.start()
        log.info("event=started name=%s pid=%d log=%s", self.name, self.proc.pid, self.log_path)
        return self

    def _copy_output(self) -> None:
        """Copy the child's output to its log until the pipe closes; never stop reading
        before that, or the child would block on a full pipe."""
        assert self.proc is not None and self.proc.stdout is not None
        log_file = self._log
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                if log_file is not None:
                    try:
                        log_file.write(raw)
                        log_file.flush()
                    except (OSError, ValueError) as exc:  # disk full, or closed by stop()
                        log.warning("event=log_write_failed name=%s error=%r", self.name, str(exc))
                        log_file = None
                if self._ready_match is None and self.ready_pattern is not None:
                    m = self.ready_pattern.search(raw.decode("utf-8", "replace"))
                    if m is not None:
                        self._ready_match = m
                        self._settled.set()
        finally:
            self._settled.set()
            self.proc.stdout.close()

    def wait_ready(self, timeout: float) -> re.Match[str] | None:
        """The match of the ready pattern once the child prints it; None as soon as the
        child's output ends (it exited) or after ``timeout`` seconds."""
        if self.ready_pattern is None:
            raise ValueError(f"{self.name}: no ready pattern to wait for")
        deadline = time.monotonic() + timeout
        while not self._settled.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # in slices: a signal delivered to another thread still reaches the main one
            self._settled.wait(min(WAIT_SLICE, remaining))
        return self._ready_match

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait ``grace`` s, then SIGKILL; idempotent. Returns the exit status."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("event=kill name=%s pid=%d after_s=%.0f", self.name, proc.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._pump is not None:
            # the child is gone: what it wrote last is copied within moments (a grandchild
            # still holding the pipe open must not hold the demo up)
            self._pump.join(5.0)
            self._pump = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if proc is None else proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
