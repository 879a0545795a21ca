"""A real InfluxDB 1.x (``influxd``) on free loopback ports with its own temp directories.

Importable helper for tests, benchmarks and the demo::

    with InfluxDBServer() as influx:
        influx.create_database("fraud")
        influx.write("fraud", "m v=1 1")
        influx.query("SELECT * FROM m", db="fraud")

``stop()`` / ``start()`` keep the data, meta and WAL directories, so a restart
behaves like a real server restart. ``auth=("admin", "secret")`` starts it with
authentication enabled and an admin user already created.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

__all__ = ["InfluxDBServer", "InfluxDBServerError", "free_port"]


class InfluxDBServerError(RuntimeError):
    """influxd could not be started, stopped or queried."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta}"
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = {subscriber}

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth_enabled}
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  max-body-size = 0

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


class InfluxDBServer:
    """One influxd process. Ports are chosen once and kept across restarts."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        auth: tuple[str, str] | None = None,
        http_port: int | None = None,
        startup_timeout: float = 30.0,
        subscriber: bool = False,
    ) -> None:
        self.binary = binary or shutil.which("influxd") or "influxd"
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="influxd-"))
        self.auth = auth
        #: forward writes to CREATE SUBSCRIPTION destinations (off: no background writes)
        self.subscriber = subscriber
        self.http_port = http_port or free_port()
        self.rpc_port = free_port()
        self.startup_timeout = startup_timeout
        self.config_path = self.base_dir / "influxdb.conf"
        self.log_path = self.base_dir / "influxd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._session = requests.Session()
        if auth:
            self._session.auth = auth

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"InfluxDBServer(url={self.url!r}, dir={str(self.base_dir)!r}, {state})"

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        for sub in ("meta", "data", "wal"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            _CONFIG.format(
                rpc_port=self.rpc_port,
                http_port=self.http_port,
                meta=self.base_dir / "meta",
                data=self.base_dir / "data",
                wal=self.base_dir / "wal",
                auth_enabled="true" if self.auth else "false",
                subscriber="true" if self.subscriber else "false",
            )
        )

    def start(self) -> InfluxDBServer:
        if self.running:
            return self
        self._write_config()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(
                [self.binary, "run", "-config", str(self.config_path)],
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            self._log_file.close()
            raise InfluxDBServerError(f"cannot run {self.binary!r}: {exc}") from exc
        self._wait_ready()
        if self.auth:
            self._ensure_admin()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise InfluxDBServerError(
                    f"influxd exited with {self._proc.returncode}; log:\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.url + "/ping", timeout=1)
                if r.status_code == 204:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise InfluxDBServerError(f"influxd not ready after {self.startup_timeout}s")

    def _ensure_admin(self) -> None:
        assert self.auth is not None
        user, password = self.auth
        # With no user yet, InfluxDB accepts an unauthenticated CREATE USER ... WITH ALL PRIVILEGES.
        q = f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
        r = requests.post(self.url + "/query", data={"q": q}, timeout=10)
        if r.status_code not in (200, 401, 403):  # 401/403: admin exists already (restart)
            raise InfluxDBServerError(f"cannot create admin user: {r.status_code} {r.text}")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self.stop()

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def close(self) -> None:
        """Stop and remove the directories this object created."""
        self.stop()
        self._session.close()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> InfluxDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- client helpers --------------------------------------------------------------------
    def query(
        self, q: str, *, db: str | None = None, epoch: str | None = "ns", post: bool = False
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; return the ``results`` list (raises on any error)."""
        params: dict[str, str] = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        if post:
            r = self._session.post(self.url + "/query", data=params, timeout=30)
        else:
            r = self._session.get(self.url + "/query", params=params, timeout=30)
        if r.status_code != 200:
            raise InfluxDBServerError(f"query {q!r} failed: {r.status_code} {r.text}")
        results = r.json().get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxDBServerError(f"query {q!r} failed: {res['error']}")
        return results

    def rows(self, q: str, *, db: str) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts (column -> value), all series concatenated."""
        out: list[dict[str, Any]] = []
        for res in self.query(q, db=db):
            for series in res.get("series", []):
                cols = series["columns"]
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(cols, values))
                    row.update(tags)
                    out.append(row)
        return out

    def count(self, measurement: str, field: str, *, db: str) -> int:
        res = self.query(f'SELECT count("{field}") FROM "{measurement}"', db=db)
        series = res[0].get("series") if res else None
        return int(series[0]["values"][0][1]) if series else 0

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', post=True, epoch=None)

    def write(self, db: str, lines: str | bytes, precision: str = "ns") -> None:
        r = self._session.post(
            self.url + "/write",
            params={"db": db, "precision": precision},
            data=lines if isinstance(lines, bytes) else lines.encode(),
            timeout=30,
        )
        if r.status_code != 204:
            raise InfluxDBServerError(f"write failed: {r.status_code} {r.text}")
