"""Unix-socket server: accepts Kapacitor connections, one thread pair per connection."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from models.backends import BackendFactory, serving_factory
from models.backends.tfserving import TFServingConfig
from models.provider import ModelProvider
from models.registry import Registry, open_registry

from .connection import Connection, ConnectionConfig
from .errors import AgentError
from .flow import InflightBudget
from .metrics import AgentMetrics
from .protocol import messages as pb
from .protocol.codec import encode_frame

__all__ = ["AgentConfig", "AgentServer"]

log = logging.getLogger("udf_agent.server")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Agent settings (times in seconds)."""

    socket_path: Path
    batch_socket_path: Path | None = None
    #: socket of the ``@drift()`` UDF (batch in, one point per batch out)
    drift_socket_path: Path | None = None
    registry: Path | None = None
    socket_mode: int = 0o660
    max_frame_bytes: int = 16 * 1024 * 1024
    max_backlog_age: float = 10.0
    reload_interval: float = 0.5
    #: a model version that failed to load is tried again after this long (or when its
    #: alias moves)
    retry_interval: float = 10.0
    #: model versions kept loaded (those a task uses are never unloaded)
    max_loaded: int = 8
    #: how TF models reach TF Serving
    tfserving: TFServingConfig = field(default_factory=TFServingConfig)
    #: follow models in MLflow's registry (``registry`` is then the download cache)
    mlflow_tracking_uri: str | None = None
    #: points one connection may hold between reading and writing back (upper bound; the
    #: bound in force adapts to about ``drain_seconds`` of scoring)
    max_inflight: int = 4096
    #: points the whole agent may hold
    max_inflight_total: int = 32768
    drain_seconds: float = 1.0
    #: a peer that reads nothing for this long is disconnected
    write_timeout: float = 30.0
    #: connections beyond this are refused with an error response (counted, logged)
    max_connections: int = 64
    #: a connection that has not completed init by then is closed
    init_timeout: float = 30.0
    #: stop(): points held are scored within about this time, then passed on unscored
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "max_inflight",
            "max_inflight_total",
            "max_connections",
            "max_frame_bytes",
            "max_loaded",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in (
            "drain_seconds",
            "write_timeout",
            "init_timeout",
            "shutdown_timeout",
            "max_backlog_age",
        ):
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        if self.reload_interval < 0 or self.retry_interval < 0:
            problems.append("reload_interval and retry_interval must not be negative")
        if problems:
            raise AgentError("invalid agent configuration: " + "; ".join(problems))

    def __repr__(self) -> str:
        return (
            f"AgentConfig(socket={str(self.socket_path)!r}, batch_socket={self.batch_socket_path and str(self.batch_socket_path)!r}, "
            f"registry={self.registry and str(self.registry)!r}, mode={oct(self.socket_mode)}, "
            f"max_connections={self.max_connections}, max_inflight={self.max_inflight}, "
            f"max_inflight_total={self.max_inflight_total})"
        )


class _Listener:
    def __init__(self, path: Path, edge: int, mode: int, kind: str = "score") -> None:
        self.path = Path(path)
        self.edge = edge
        self.kind = kind
        self.sock = self._bind(mode)

    def _bind(self, mode: int) -> socket.socket:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise AgentError(f"{path} exists and is not a socket; refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                log.info("removing stale socket file %s", path)
                path.unlink()
            else:
                probe.close()
                raise AgentError(f"another agent is already listening on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, mode)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise AgentError(f"cannot listen on {path}: {exc}") from exc
        return sock


class AgentServer:
    """Serve the score UDF on a stream socket (and optionally a batch socket)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        registry: Registry | None = None,
        metrics: AgentMetrics | None = None,
        factory: BackendFactory | None = None,
        provider: ModelProvider | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.registry = registry or open_registry(config.registry, config.mlflow_tracking_uri)
        self.provider = provider or ModelProvider(
            self.registry,
            factory if factory is not None else serving_factory(config.tfserving),
            reload_interval=config.reload_interval,
            retry_interval=config.retry_interval,
            max_loaded=config.max_loaded,
        )
        self.metrics.watch_backends(self.provider.loaded)
        self.budget = InflightBudget(config.max_inflight_total)
        self.metrics.inflight.set_function(lambda: self.budget.total)
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []
        self._connections: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._refusals_logged_at = float("-inf")

    def start(self) -> AgentServer:
        cfg = self.config
        self._listeners.append(_Listener(cfg.socket_path, pb.STREAM, cfg.socket_mode))
        if cfg.batch_socket_path is not None:
            self._listeners.append(_Listener(cfg.batch_socket_path, pb.BATCH, cfg.socket_mode))
        if cfg.drift_socket_path is not None:
            self._listeners.append(
                _Listener(cfg.drift_socket_path, pb.BATCH, cfg.socket_mode, kind="drift")
            )
        for lst in self._listeners:
            t = threading.Thread(
                target=self._accept_loop,
                args=(lst,),
                name=f"udf-accept-{lst.path.name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
            log.info(
                "listening socket=%s udf=%s edge=%s mode=%s",
                lst.path,
                lst.kind,
                "batch" if lst.edge else "stream",
                oct(cfg.socket_mode),
            )
        reaper = threading.Thread(target=self._reap_loop, name="udf-init-timeout", daemon=True)
        reaper.start()
        self._threads.append(reaper)
        return self

    def _accept_loop(self, lst: _Listener) -> None:
        cfg = self.config
        conn_cfg = ConnectionConfig(
            edge=lst.edge,
            kind=lst.kind,
            max_frame_bytes=cfg.max_frame_bytes,
            max_backlog_age=cfg.max_backlog_age,
            max_inflight=cfg.max_inflight,
            drain_seconds=cfg.drain_seconds,
            write_timeout=cfg.write_timeout,
        )
        while not self._stopping.is_set():
            try:
                sock, _ = lst.sock.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):
                    return
                log.warning("accept failed on %s: %s", lst.path, exc)
                continue
            if self.connection_count >= cfg.max_connections:
                self._refuse(sock, lst)
                continue
            cid = next(self._ids)
            conn = Connection(
                sock,
                provider=self.provider,
                metrics=self.metrics,
                config=conn_cfg,
                conn_id=cid,
                budget=self.budget,
            )
            t = threading.Thread(
                target=self._serve, args=(conn,), name=f"udf-conn-{cid}", daemon=True
            )
            with self._lock:
                # stop() sets the flag before it takes this lock to list connections, so a
                # connection accepted in between is either listed there or closed here,
                # never left running unflushed while the store closes.
                if self._stopping.is_set():
                    log.info("conn=%d accepted while stopping; closed", cid)
                    sock.close()
                    return
                self._connections[cid] = conn
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            self.metrics.connections.inc()
            self.metrics.connections_total.inc()
            log.info("conn=%d accepted on %s", cid, lst.path.name)
            t.start()

    def _refuse(self, sock: socket.socket, lst: _Listener) -> None:
        """Answer a connection over the limit with an error response and close it: the
        peer (Kapacitor) logs the reason instead of a bare reset."""
        self.metrics.connections_refused.inc()
        message = (
            f"udf agent refused the connection: {self.config.max_connections} connections "
            "are open (--max-connections)"
        )
        now = time.monotonic()
        if now - self._refusals_logged_at >= 10.0:  # a flood logs once per 10 s
            self._refusals_logged_at = now
            log.warning("connection refused on %s: %s", lst.path.name, message)
        resp = pb.Response()
        resp.error.error = message
        try:
            sock.settimeout(1.0)
            sock.sendall(encode_frame(resp.SerializeToString()))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def _reap_loop(self) -> None:
        """Close connections that have not completed init within ``init_timeout``."""
        timeout = self.config.init_timeout
        while not self._stopping.wait(min(1.0, timeout / 4)):
            now = time.monotonic()
            with self._lock:
                late = [
                    c
                    for c in self._connections.values()
                    if not c.initialized and now - c.accepted_at > timeout
                ]
            for c in late:
                self.metrics.errors.labels("init_timeout").inc()
                c.abort(f"no successful init within {timeout:g}s")

    def _serve(self, conn: Connection) -> None:
        try:
            conn.run()
        finally:
            with self._lock:
                self._connections.pop(conn.id, None)
            self.metrics.connections.dec()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def connected_tasks(self) -> list[tuple[str, str]]:
        """(task, node) of every initialized connection."""
        with self._lock:
            return sorted((c.task, c.node) for c in self._connections.values() if c.initialized)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; score and write back what every connection holds, then close
        them and remove the socket files. Within ``timeout`` (default: the config's
        shutdown_timeout) plus a short grace: points not scored by then are written back
        unscored, and connections whose peer does not read are cut."""
        if self._stopping.is_set():
            return
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        self._stopping.set()
        for lst in self._listeners:
            with contextlib.suppress(OSError):
                lst.sock.shutdown(socket.SHUT_RDWR)
            lst.sock.close()
        with self._lock:
            conns = list(self._connections.values())
            threads = list(self._threads)
        tasks = sorted({f"{c.task}/{c.node}" for c in conns if c.initialized})
        if tasks:
            # Kapacitor stops these tasks when it next writes to them and does not re-enable
            # them by itself; say which, for the operator (python -m udf_agent.supervise
            # re-enables them once a new agent listens).
            log.warning(
                "stopping with %d task connection(s) open; these tasks will stop executing "
                "until re-enabled: %s",
                len(tasks),
                " ".join(tasks),
            )
        start = time.monotonic()
        # Score for half the budget; a backend call in progress then has the other half
        # to finish while later points are written back unscored.
        score_deadline = start + 0.5 * timeout
        for c in conns:
            c.shutdown(score_deadline)
        deadline = start + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = list(self._connections.values())
        for c in stuck:
            c.abort(f"still open {timeout:g}s after the stop request")
        grace = time.monotonic() + 1.0
        for t in threads if stuck else ():
            t.join(max(0.0, grace - time.monotonic()))
        for lst in self._listeners:
            with contextlib.suppress(FileNotFoundError):
                lst.path.unlink()
        self.provider.close()
        log.info("stopped in %.2fs; flushed %d connection(s)", time.monotonic() - start, len(conns))

    def __enter__(self) -> AgentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
