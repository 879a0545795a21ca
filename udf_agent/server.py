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
from dataclasses import dataclass, field
from pathlib import Path

from models.registry import Registry

from .connection import Connection, ConnectionConfig
from .errors import AgentError
from .metrics import AgentMetrics
from .protocol import messages as pb
from .scoring import ModelStore

__all__ = ["AgentConfig", "AgentServer"]

log = logging.getLogger("udf_agent.server")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Agent settings (times in seconds)."""

    socket_path: Path
    batch_socket_path: Path | None = None
    registry: Path | None = None
    socket_mode: int = 0o660
    max_frame_bytes: int = 16 * 1024 * 1024
    max_backlog_age: float = 10.0
    reload_interval: float = 0.5
    backend_options: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"AgentConfig(socket={str(self.socket_path)!r}, batch_socket={self.batch_socket_path and str(self.batch_socket_path)!r}, "
            f"registry={self.registry and str(self.registry)!r}, mode={oct(self.socket_mode)})"
        )


class _Listener:
    def __init__(self, path: Path, edge: int, mode: int) -> None:
        self.path = Path(path)
        self.edge = edge
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
        store: ModelStore | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.registry = registry or Registry(config.registry)
        self.store = store or ModelStore(
            self.registry,
            backend_options=config.backend_options,
            reload_interval=config.reload_interval,
            metrics=self.metrics,
        )
        self.metrics.watch_backends(self.store.loaded)
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []
        self._connections: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()

    def start(self) -> AgentServer:
        cfg = self.config
        self._listeners.append(_Listener(cfg.socket_path, pb.STREAM, cfg.socket_mode))
        if cfg.batch_socket_path is not None:
            self._listeners.append(_Listener(cfg.batch_socket_path, pb.BATCH, cfg.socket_mode))
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
                "listening socket=%s edge=%s mode=%s",
                lst.path,
                "batch" if lst.edge else "stream",
                oct(cfg.socket_mode),
            )
        return self

    def _accept_loop(self, lst: _Listener) -> None:
        conn_cfg = ConnectionConfig(
            edge=lst.edge,
            max_frame_bytes=self.config.max_frame_bytes,
            max_backlog_age=self.config.max_backlog_age,
        )
        while not self._stopping.is_set():
            try:
                sock, _ = lst.sock.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):
                    return
                log.warning("accept failed on %s: %s", lst.path, exc)
                continue
            cid = next(self._ids)
            conn = Connection(
                sock, store=self.store, metrics=self.metrics, config=conn_cfg, conn_id=cid
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
                self._threads.append(t)
            self.metrics.connections.inc()
            self.metrics.connections_total.inc()
            log.info("conn=%d accepted on %s", cid, lst.path.name)
            t.start()

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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, flush and close every connection, remove the socket files."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for lst in self._listeners:
            with contextlib.suppress(OSError):
                lst.sock.shutdown(socket.SHUT_RDWR)
            lst.sock.close()
        with self._lock:
            conns = list(self._connections.values())
            threads = list(self._threads)
        # Kapacitor stops these tasks when it next writes to them; say which, for the operator
        # (python -m udf_agent.supervise re-enables them once a new agent listens).
        log.info(
            "stopping with %d connection(s), tasks connected: %s",
            len(conns),
            " ".join(f"{c.session.task}/{c.session.node}" for c in conns if c.session) or "none",
        )
        for c in conns:
            c.shutdown()
        for t in threads:
            t.join(timeout)
        for lst in self._listeners:
            with contextlib.suppress(FileNotFoundError):
                lst.path.unlink()
        self.store.close()
        log.info("stopped; flushed %d connection(s)", len(conns))

    def __enter__(self) -> AgentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
