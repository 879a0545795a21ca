"""Helpers for the UDF-agent tests: tiny models, a raw Kapacitor-side client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models import contract
from models.backends import BackendFactory, SklearnBackend, serving_factory
from models.backends.tfserving import TFServingConfig
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import FrameDecoder, encode_frame

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def train_tiny(seed: int = 0, n: int = 2000, shift: float = 0.0):
    """A logistic-regression pipeline on generated 30-feature data (numpy, card order)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(contract.FEATURES)))
    y = (X[:, 1] + X[:, 2] + shift + rng.normal(size=n) > 2.5).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    return model, X, y


def register_tiny(
    registry: Registry,
    name: str = "creditcard",
    *,
    seed: int = 0,
    alias: str | None = "production",
    threshold: float = 0.5,
    framework: str = "sklearn",
    shift: float = 0.0,
):
    model, X, y = train_tiny(seed, shift=shift)
    card = registry.register(
        name, model, features=contract.FEATURES, threshold=threshold, framework=framework
    )
    if alias:
        registry.promote(name, card.version, alias)
    return card, model


class SlowBackend(SklearnBackend):
    """scikit-learn backend that sleeps before each call (a stalled remote backend)."""

    delay = 2.0
    calls: list[int] = []
    fail = False

    def _score(self, X):
        SlowBackend.calls.append(len(X))
        time.sleep(SlowBackend.delay)
        if SlowBackend.fail:
            raise RuntimeError("backend unavailable")
        return super()._score(X)


class GateBackend(SklearnBackend):
    """scikit-learn backend whose calls wait until the test opens the gate: a model call
    that is provably still running, with no timing involved."""

    entered = threading.Event()
    gate = threading.Event()

    @classmethod
    def reset(cls) -> None:
        cls.entered, cls.gate = threading.Event(), threading.Event()

    def _score(self, X):
        type(self).entered.set()
        if not type(self).gate.wait(120):
            raise RuntimeError("the test never opened the gate")
        return super()._score(X)


#: backend kinds that only tests have, by card framework (see ``factory_with_test_kinds``)
TEST_KINDS: dict[str, object] = {"slow": SlowBackend.from_card, "gate": GateBackend.from_card}


def factory_with_test_kinds(**extra: object) -> BackendFactory:
    """The agent's factory plus the test kinds (``framework="slow"`` cards and ``extra``)."""
    return serving_factory(TFServingConfig()).extended({**TEST_KINDS, **extra})


def row_point(row: np.ndarray, *, t: int, txn: str, label: int = 0, source: str = "test") -> Any:
    p = pb.Point()
    p.time = t
    p.name = contract.INPUT_MEASUREMENT
    p.database = contract.DATABASE
    p.retentionPolicy = contract.RETENTION_POLICY
    p.tags[contract.SOURCE_TAG] = source
    for f, v in zip(contract.FEATURES, row):
        p.fieldsDouble[f] = float(v)
    p.fieldsString[contract.TXN_ID] = txn
    p.fieldsInt[contract.LABEL] = label
    return p


def req(**kw: Any) -> bytes:
    return encode_frame(pb.Request(**kw).SerializeToString())


def init_req(options: dict[str, Any], task: str = "t", node: str = "score1") -> bytes:
    r = pb.Request()
    r.init.taskID = task
    r.init.nodeID = node
    for name, value in options.items():
        o = r.init.options.add(name=name)
        v = o.values.add()
        if isinstance(value, bool):
            v.type, v.boolValue = pb.BOOL, value
        elif isinstance(value, int):
            v.type, v.intValue = pb.INT, value
        elif isinstance(value, float):
            v.type, v.doubleValue = pb.DOUBLE, value
        elif isinstance(value, tuple) and value[0] == "duration":
            v.type, v.durationValue = pb.DURATION, value[1]
        else:
            v.type, v.stringValue = pb.STRING, str(value)
    return encode_frame(r.SerializeToString())


OPEN_CLIENTS: list[Client] = []


def close_clients() -> None:
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


def unframe(data: bytes) -> bytes:
    """The body of a single length-prefixed frame."""
    dec = FrameDecoder()
    dec.feed(data)
    (body,) = list(dec.frames())
    return body


class Client:
    """A Kapacitor-side connection speaking raw frames (closed by ``close_clients``)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        OPEN_CLIENTS.append(self)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.dec = FrameDecoder()
        self.pending: list[Any] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            self.eof = True
            return
        self.dec.feed(data)
        self.pending.extend(pb.Response.FromString(b) for b in self.dec.frames())

    def recv(self) -> Any:
        while not self.pending:
            if self.eof:
                raise EOFError("agent closed the connection")
            self._fill()
        return self.pending.pop(0)

    def recv_kind(self, kind: str) -> Any:
        """Next response of ``kind`` (others are kept in order for later)."""
        while True:
            for i, r in enumerate(self.pending):
                if r.WhichOneof("message") == kind:
                    return self.pending.pop(i)
            if self.eof:
                raise EOFError(f"agent closed the connection before a {kind} response")
            self._fill()

    def recv_points(self, n: int) -> list[Any]:
        return [self.recv_kind("point").point for _ in range(n)]

    def read_until_eof(self) -> list[Any]:
        while not self.eof:
            self._fill()
        out, self.pending = self.pending, []
        return out

    def init(self, options: dict[str, Any]) -> Any:
        self.send(init_req(options))
        return self.recv_kind("init").init

    def close(self) -> None:
        self.sock.close()


class AgentProcess:
    """``python -m udf_agent`` as users run it. Its output goes to a file: a pipe that
    nobody reads fills up and blocks the agent's logging."""

    def __init__(self, tmp_path: Path, registry_root: Path, *extra: str, name: str = "agent"):
        self.socket = tmp_path / f"{name}.sock"
        self.log_path = tmp_path / f"{name}.log"
        self.args = [
            sys.executable,
            "-m",
            "udf_agent",
            "--socket",
            str(self.socket),
            "--registry",
            str(registry_root),
            *extra,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> AgentProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        # "agent ready" is logged once every socket listens (a socket file alone may
        # exist a moment before listen()).
        while "agent ready" not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"agent not ready within {timeout:g}s: {self.output()}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the agent and wait for it; kill it (and raise) if it does not exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"agent ignored {signal.Signals(sig).name} for {timeout:g}s: {self.output()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()
