"""What every stage shares: its header and failure naming, and the run's workspace."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .config import DemoConfig
from .dataset import Dataset
from .errors import DemoInterrupted, StageError

__all__ = ["PROJECT_ROOT", "Workspace", "stage"]

log = logging.getLogger("demo")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


@dataclass
class Workspace:
    """One run: its settings and data set, where its output goes, its folders, and the
    exit stack that stops what the stages started (in reverse order)."""

    config: DemoConfig
    dataset: Dataset
    #: stage headers, progress lines and the summary (stdout)
    out: TextIO
    #: the live status line (stderr)
    status: TextIO
    stack: contextlib.ExitStack
    #: removed at the end: the agent's socket, the token, training data
    tmp: Path
    #: runs/demo-<timestamp>/: the report, the sink's store, the logs
    run_dir: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def python(self) -> str:
        return self.config.python or sys.executable

    @property
    def source(self) -> str:
        """The ``source`` tag of this run's points."""
        return f"demo-{self.run_dir.name.removeprefix('demo-')}"

    def child_env(self) -> dict[str, str]:
        """The services' environment: unbuffered output, this checkout's packages first."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    def say(self, text: str) -> None:
        """One progress line under the current stage's header."""
        print(f"    {text}", file=self.out, flush=True)
