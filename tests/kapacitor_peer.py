"""An in-process Kapacitor for tests and benchmarks: its HTTP API (v1) and enough task
execution to drive a real UDF agent and a real InfluxDB.

What it answers, and how, follows Kapacitor 1.5's source and the recordings in
``tests/fixtures/kapacitor-api`` (held to them by ``tests/test_supervise.py``):

- ``GET /kapacitor/v1/ping``; ``GET /kapacitor/v1/tasks`` (``fields``, ``offset``,
  ``limit`` = 100 by default, 1.5's field list); ``GET/PATCH/DELETE
  /kapacitor/v1/tasks/ID``; ``POST /kapacitor/v1/tasks``; ``POST
  /kapacitor/v1/replays/batch``; ``GET/DELETE /kapacitor/v1/replays/ID``. Errors are
  ``{"error": "..."}`` with Kapacitor's texts.
- A status change starts or stops a task; PATCHing the status a task already has does
  nothing. A started stream task dials its UDF socket until it exists (up to
  ``dial_timeout``), showing ``executing: true`` meanwhile; it fails (``executing:
  false``, ``error`` = the node's write error) when a point cannot be written to a UDF
  that went away, as Kapacitor does.
- Stream tasks get the points handed to :meth:`KapacitorPeer.publish` (InfluxDB's
  subscription); they send them to the agent and write what it returns to InfluxDB.
- A batch replay runs the batch task's query per ``every`` over ``[start, stop]`` against
  InfluxDB, turns every number into a float (Kapacitor's batch queries do), sends each
  series as one batch to the UDF's socket (stamped with the query's stop time, as
  Kapacitor's query node does), takes back a batch or, from a UDF that provides a stream
  (``@drift()``), its point, applies ``where``/``eval``/``union``/``default`` and writes
  with ``influxDBOut``. A write InfluxDB refuses is logged, and the replay still
  ``finished``, as in Kapacitor.
- ``alert`` nodes: the level from ``.crit()``/``.warn()`` lambdas comparing a field with a
  literal, ``.stateChangesOnly([interval])`` and ``.noRecoveries()`` as Kapacitor applies
  them, the id, message and details Go templates rendered over the point
  (``tests/kapacitor_alert.py``), the body posted to the ``[[httppost]]`` endpoint
  ``.post().endpoint(name)`` names (``alert_endpoints``: name -> (URL, basic auth)).

TICKscripts are read with the independent parser of ``tests/test_tickscripts.py``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from http_serving import serve_in_thread
from test_tickscripts import Arg, parse

from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import FrameDecoder, encode_frame

log = logging.getLogger("kapacitor_peer")

TASK_FIELDS_15 = (
    "link",
    "id",
    "type",
    "dbrps",
    "script",
    "dot",
    "status",
    "executing",
    "error",
    "stats",
    "created",
    "modified",
    "last-enabled",
    "vars",
)
VALID_ID = re.compile(r"^[-\._\w]+$")
NS = 1_000_000_000
_DURATION = {
    "ns": 1,
    "u": 1_000,
    "us": 1_000,
    "µ": 1_000,
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3600 * NS,
    "d": 86400 * NS,
    "w": 7 * 86400 * NS,
}


def rfc3339(ns: int | None) -> str:
    """Go's RFC3339Nano in UTC (trailing zeros trimmed); Go's zero time for None."""
    if ns is None:
        return "0001-01-01T00:00:00Z"
    secs, frac = divmod(int(ns), NS)
    base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def parse_rfc3339(text: str) -> int:
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if m is None:
        raise ValueError(f"parsing time {text!r}")
    base = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return int(base.timestamp()) * NS + int(((m.group(2) or "") + "000000000")[:9])


def duration_ns(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|u|µ|ms|s|m|h|d|w)", str(value).strip())
    if m is None:
        raise ValueError(f"invalid duration {value!r}")
    return int(float(m.group(1)) * _DURATION[m.group(2)])


# -- line protocol ---------------------------------------------------------------------------
@dataclass
class PeerPoint:
    time: int
    name: str
    tags: dict[str, str]
    fields: dict[str, Any]
    database: str = ""
    retention_policy: str = ""


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and not escaped."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_line(text: str) -> PeerPoint:
    key, fields_text, t = _split(text.strip(), " ")
    parts = _split(key, ",")
    tags = dict(_unescape(p).split("=", 1) for p in parts[1:])
    fields: dict[str, Any] = {}
    for item in _split(fields_text, ","):
        k, v = item.split("=", 1)
        if v.startswith('"'):
            fields[_unescape(k)] = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif v.endswith("i"):
            fields[_unescape(k)] = int(v[:-1])
        elif v in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
            fields[_unescape(k)] = v.lower().startswith("t")
        else:
            fields[_unescape(k)] = float(v)
    return PeerPoint(int(t), _unescape(parts[0]), tags, fields)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def format_line(p: PeerPoint, measurement: str) -> str:
    """Line protocol with Go's types: float64, int64 (``i``), bool, string."""
    key = _esc(measurement).replace("\\=", "=")
    for k in sorted(p.tags):
        if p.tags[k] != "":
            key += f",{_esc(k)}={_esc(p.tags[k])}"
    vals = []
    for k, v in sorted(p.fields.items()):
        if isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, int):
            s = f"{v}i"
        elif isinstance(v, float):
            s = repr(v)
        else:
            s = '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        vals.append(f"{_esc(k)}={s}")
    return f"{key} {','.join(vals)} {p.time}"


def to_pb(p: PeerPoint) -> Any:
    out = pb.Point()
    out.time = p.time
    out.name = p.name
    out.database = p.database
    out.retentionPolicy = p.retention_policy
    for k, v in p.tags.items():
        out.tags[k] = v
    for k, v in p.fields.items():
        if isinstance(v, bool):
            out.fieldsBool[k] = v
        elif isinstance(v, int):
            out.fieldsInt[k] = v
        elif isinstance(v, float):
            out.fieldsDouble[k] = v
        else:
            out.fieldsString[k] = str(v)
    return out


def from_pb(p: Any) -> PeerPoint:
    fields: dict[str, Any] = {}
    fields.update(p.fieldsDouble)
    fields.update(p.fieldsInt)
    fields.update(p.fieldsString)
    fields.update(p.fieldsBool)
    return PeerPoint(p.time, p.name, dict(p.tags), fields, p.database, p.retentionPolicy)


# -- the program of a task -------------------------------------------------------------------
class PeerError(Exception):
    """A task cannot be defined or run (the message is Kapacitor's)."""


@dataclass
class Node:
    kind: str  # stream | batch | from | query | udf | where | eval | union | influxDBOut | ...
    name: str
    args: list[Any] = field(default_factory=list)
    props: dict[str, list[Any]] = field(default_factory=dict)
    raw: dict[str, list[Arg]] = field(default_factory=dict)
    parents: list[Node] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    label: str = ""  # Kapacitor's node name, e.g. score2


class Program:
    """A parsed task: its nodes wired as Kapacitor would, var values resolved."""

    def __init__(self, script: str, task_vars: Mapping[str, Any]) -> None:
        try:
            parsed = parse(script)
        except ValueError as exc:
            raise PeerError(f"invalid TICKscript: {exc}") from exc
        self.dbrps = parsed.dbrps
        self.decls = parsed.vars
        self.task_vars = task_vars
        self.nodes: list[Node] = []
        chain_ends: dict[str, Node] = {}
        counter = 0
        for (start, calls), name in zip(parsed.chains, self._chain_names(parsed)):
            if start in ("stream", "batch"):
                node = self._add(Node(start, start), counter)
                counter += 1
            elif start in chain_ends:
                node = chain_ends[start]
            else:
                raise PeerError(f"invalid TICKscript: {start} is not a node")
            for call in calls:
                if call.op == ".":
                    node.props[call.name] = [self.value(a) for a in call.args]
                    node.raw[call.name] = call.args
                    continue
                kind = "udf" if call.op == "@" else call.name
                args = [] if call.name == "union" else [self.value(a) for a in call.args]
                child = self._add(Node(kind, call.name, args), counter)
                counter += 1
                child.parents.append(node)
                node.children.append(child)
                if call.name == "union":
                    for a in call.args:
                        other = chain_ends.get(str(a.value))
                        if other is None:
                            raise PeerError(f"invalid TICKscript: union of unknown {a.value}")
                        child.parents.append(other)
                        other.children.append(child)
                node = child
            if name:
                chain_ends[name] = node

    @staticmethod
    def _chain_names(parsed: Any) -> list[str | None]:
        chain_vars = [n for n, d in parsed.vars.items() if d.type == "chain"]
        # parse() appends chains in order; var chains are the ones declared with a name
        names: list[str | None] = []
        it = iter(chain_vars)
        pending = next(it, None)
        for start, _calls in parsed.chains:
            decl = parsed.vars.get(pending) if pending else None
            if decl is not None and decl.source == start:
                names.append(pending)
                pending = next(it, None)
            else:
                names.append(None)
        return names

    def _add(self, node: Node, index: int) -> Node:
        node.label = f"{node.name}{index}"
        self.nodes.append(node)
        return node

    def value(self, arg: Arg) -> Any:
        if arg.kind == "var":
            name = str(arg.value)
            if name in self.task_vars:
                var = self.task_vars[name]
                value, kind = var.get("value"), var.get("type")
            else:
                decl = self.decls[name]
                if decl.required:
                    raise PeerError(f"missing value for var {name!r}.")
                value, kind = decl.default, decl.type
            return _typed(kind, value)
        if arg.kind == "duration":
            return ("duration", duration_ns(arg.value))
        if arg.kind in ("string", "int", "float", "bool"):
            return (arg.kind, arg.value)
        return (arg.kind, arg.value)

    @property
    def type(self) -> str:
        return "batch" if any(n.kind == "batch" for n in self.nodes) else "stream"

    def first(self, kind: str) -> Node | None:
        return next((n for n in self.nodes if n.kind == kind), None)


def _typed(kind: str, value: Any) -> tuple[str, Any]:
    if kind == "duration":
        return ("duration", duration_ns(value))
    if kind == "int":
        return ("int", int(value))
    if kind == "float":
        return ("float", float(value))
    if kind == "bool":
        return ("bool", bool(value))
    return (kind, value)


_PB_TYPE = {
    "string": pb.STRING,
    "int": pb.INT,
    "float": pb.DOUBLE,
    "duration": pb.DURATION,
    "bool": pb.BOOL,
}


def init_options(node: Node, info: Any | None) -> list[Any]:
    """The InitRequest options of a UDF node; checked against the UDF's InfoResponse as
    Kapacitor does when a task is defined."""
    out = []
    for name, values in node.props.items():
        if info is not None:
            if name not in info.options:
                raise PeerError(f"invalid TICKscript: no method or property {name!r} on UDFNode")
            want = list(info.options[name].valueTypes)
            got = [_PB_TYPE.get(k) for k, _ in values]
            if got != want:
                raise PeerError(
                    f"invalid TICKscript: line ?: invalid option {name}: got {got} want {want}"
                )
        opt = pb.Option(name=name)
        for kind, v in values:
            ov = opt.values.add()
            ov.type = _PB_TYPE[kind]
            if kind == "string":
                ov.stringValue = v
            elif kind == "int":
                ov.intValue = v
            elif kind == "float":
                ov.doubleValue = v
            elif kind == "duration":
                ov.durationValue = v
            else:
                ov.boolValue = v
        out.append(opt)
    return out


_LAMBDA_PRESENT = re.compile(r'^(!\s*)?isPresent \( "((?:[^"\\]|\\.)*)" \)$')
_LAMBDA_INT = re.compile(r'^int \( "((?:[^"\\]|\\.)*)" \)$')


_LAMBDA_COMPARE = re.compile(
    r'^"((?:[^"\\]|\\.)*)" (==|!=) (?:\'((?:[^\'\\]|\\.)*)\'|(TRUE|FALSE))$'
)


def _compare(text: str, p: PeerPoint) -> bool:
    """``"field" == 'literal'``, ``!=``, or against TRUE/FALSE. A missing field is an
    evaluation error, which Kapacitor logs, dropping the point."""
    m = _LAMBDA_COMPARE.match(str(text))
    if m is None:
        raise PeerError(f"the peer does not evaluate lambda: {text}")
    name = m.group(1)
    if name not in p.fields and name not in p.tags:
        raise _MissingField(name)
    value = p.fields.get(name, p.tags.get(name))
    want: Any = m.group(3) if m.group(4) is None else m.group(4) == "TRUE"
    return (value == want) == (m.group(2) == "==")


class _MissingField(Exception):
    pass


def _where(node: Node, p: PeerPoint) -> bool:
    text = node.args[0][1]
    m = _LAMBDA_PRESENT.match(str(text))
    if m is None:
        try:
            return _compare(text, p)
        except _MissingField:
            return False
    present = m.group(2) in p.fields or m.group(2) in p.tags
    return not present if m.group(1) else present


def _eval(node: Node, p: PeerPoint) -> PeerPoint | None:
    lambdas = node.args
    names = [v for _, v in node.props.get("as", [])]
    out = dict(p.fields) if "keep" in node.props else {}
    for (_, text), name in zip(lambdas, names):
        m = _LAMBDA_INT.match(str(text))
        if m is None:
            raise PeerError(f"the peer does not evaluate eval({text})")
        if m.group(1) not in p.fields:
            return None  # Kapacitor logs the missing field and drops the point
        out[name] = int(p.fields[m.group(1)])
    return PeerPoint(p.time, p.name, dict(p.tags), out, p.database, p.retention_policy)


# -- UDF connections ---------------------------------------------------------------------------
class UdfConnection:
    """Kapacitor's side of one UDF node's connection."""

    def __init__(self, path: Path, *, task_id: str, node: str, options: list[Any]) -> None:
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.dec = FrameDecoder()
        self.pending: list[Any] = []
        try:
            self.sock.settimeout(30)
            self.sock.connect(str(path))
            init = pb.Request()
            init.init.taskID = task_id
            init.init.nodeID = node
            init.init.options.extend(options)
            self.send(init)
            resp = self.recv()
            if resp is None or resp.WhichOneof("message") != "init":
                raise PeerError(f"{node}: no init response")
            if not resp.init.success:
                raise PeerError(f"{node}: failed to initialize UDF: {resp.init.error}")
        except BaseException:
            self.sock.close()
            raise

    def send(self, req: Any) -> None:
        self.sock.sendall(encode_frame(req.SerializeToString()))

    def recv(self) -> Any | None:
        while not self.pending:
            data = self.sock.recv(1 << 18)
            if not data:
                return None
            self.dec.feed(data)
            self.pending.extend(pb.Response.FromString(b) for b in self.dec.frames())
        return self.pending.pop(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while self.sock.recv(1 << 16):
                pass
        self.sock.close()


def query_info(path: Path, timeout: float = 5.0) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(encode_frame(pb.Request(info=pb.InfoRequest()).SerializeToString()))
        dec = FrameDecoder()
        while True:
            data = s.recv(65536)
            if not data:
                raise PeerError("UDF closed the info connection")
            dec.feed(data)
            for body in dec.frames():
                return pb.Response.FromString(body).info


# -- tasks -------------------------------------------------------------------------------------
@dataclass
class PeerTask:
    id: str
    type: str
    dbrps: list[dict[str, str]]
    script: str
    vars: dict[str, Any]
    status: str = "disabled"
    error: str = ""
    template_id: str = ""
    created: int = 0
    modified: int = 0
    last_enabled: int | None = None
    runner: StreamRunner | None = None

    @property
    def executing(self) -> bool:
        return self.runner is not None and self.runner.alive


class StreamRunner:
    """One executing stream task: points in, UDF, downstream nodes, InfluxDB."""

    def __init__(self, peer: KapacitorPeer, task: PeerTask, program: Program) -> None:
        self.peer = peer
        self.task = task
        self.program = program
        self.udf = program.first("udf")
        self.source = program.first("from")
        self.queue: queue.Queue[PeerPoint | None] = queue.Queue(maxsize=100_000)
        self.alive = True
        self.conn: UdfConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"peer-task-{task.id}", daemon=True)
        self._reader: threading.Thread | None = None
        self._thread.start()

    def feed(self, p: PeerPoint) -> None:
        if self.alive:
            self.queue.put(p)

    def _dial(self) -> UdfConnection | None:
        assert self.udf is not None
        path = self.peer.udfs[self.udf.name]
        deadline = time.monotonic() + self.peer.dial_timeout
        while not self._stop.is_set():
            try:
                info = self.peer.info(self.udf.name)
                return UdfConnection(
                    path,
                    task_id=self.task.id,
                    node=self.udf.label,
                    options=init_options(self.udf, info),
                )
            except (OSError, PeerError):
                if time.monotonic() > deadline:
                    raise
                self._stop.wait(0.02)
        return None

    def _run(self) -> None:
        try:
            if self.udf is not None:
                self.conn = self._dial()
                if self.conn is None:
                    return
                self._reader = threading.Thread(target=self._read, daemon=True)
                self._reader.start()
            while not self._stop.is_set():
                try:
                    p = self.queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if p is None:
                    break
                if self.source is not None and not _from_matches(self.source, p):
                    continue
                if self.conn is None:
                    self.peer.downstream(self.source, p, self.task.id)
                    continue
                try:
                    self.conn.send(pb.Request(point=to_pb(p)))
                except OSError as exc:
                    assert self.udf is not None
                    self._fail(
                        f"{self.udf.label}: stopping UDF server: write error: write unix "
                        f"@->{self.conn.path}: write: {_errno_text(exc)}"
                    )
                    return
        except (OSError, PeerError) as exc:
            self._fail(str(exc))
            return
        finally:
            if self.conn is not None:
                self.conn.close()
            if self._reader is not None:
                self._reader.join(10)
            self.alive = False

    def _read(self) -> None:
        assert self.conn is not None
        while True:
            try:
                resp = self.conn.recv()
            except OSError:
                return
            if resp is None:
                return
            if resp.WhichOneof("message") == "point":
                self.peer.downstream(self.udf, from_pb(resp.point), self.task.id)

    def _fail(self, error: str) -> None:
        self.alive = False
        self.peer._task_failed(self.task, error)

    def stop(self) -> None:
        self._stop.set()
        self.queue.put(None)
        self._thread.join(10)


def _errno_text(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _from_matches(node: Node, p: PeerPoint) -> bool:
    m = node.props.get("measurement")
    return m is None or m[0][1] == p.name


@dataclass
class Replay:
    id: str
    task: str
    start: int
    stop: int
    recording_time: bool
    clock: str
    date: int
    status: str = "running"
    error: str = ""
    progress: float = 0.0

    def json(self) -> dict[str, Any]:
        return {
            "link": {"rel": "self", "href": f"/kapacitor/v1/replays/{self.id}"},
            "id": self.id,
            "task": self.task,
            "recording": "",
            "recording-time": self.recording_time,
            "clock": self.clock,
            "date": rfc3339(self.date),
            "error": self.error,
            "status": self.status,
            "progress": self.progress,
            "stats": {},
        }


# -- the peer ----------------------------------------------------------------------------------
class KapacitorPeer:
    def __init__(
        self,
        *,
        udfs: Mapping[str, Path] | None = None,
        influx_url: str | None = None,
        auth: tuple[str, str] | None = None,
        dial_timeout: float = 300.0,
        flush_interval: float = 0.05,
        alert_endpoints: Mapping[str, tuple[str, tuple[str, str] | None]] | None = None,
    ) -> None:
        self.udfs = {k: Path(v) for k, v in (udfs or {}).items()}
        #: kapacitor.conf's [[httppost]]: endpoint name -> (URL, basic auth)
        self.alert_endpoints = dict(alert_endpoints or {})
        #: (task, alert node) -> {alert id: (level, time it was last posted)}
        self._alert_state: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
        #: every alert body posted, with the answer's status
        self.alerts_posted: list[tuple[bytes, int]] = []
        self.influx_url = influx_url
        self.auth = auth
        self.dial_timeout = dial_timeout
        self.flush_interval = flush_interval
        self.tasks: dict[str, PeerTask] = {}
        self.replays: dict[str, Replay] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.injected: list[tuple[str, str, int, str]] = []
        #: (task, point time) of every point a batch UDF was sent
        self.batch_points: list[tuple[str, int]] = []
        self.write_errors: list[str] = []
        self.down = False
        #: keep scored points buffered (as influxDBOut's 10 s flush interval does)
        self.hold_writes = False
        self.lock = threading.RLock()
        self._infos: dict[str, Any] = {}
        self._writes: list[tuple[str, str, str]] = []  # (db, rp, line)
        self._writes_lock = threading.Condition()
        self._stop = threading.Event()
        self._session = requests.Session()
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> KapacitorPeer:
        peer = self

        class Handler(_Handler):
            pass

        Handler.peer = peer
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._threads.append(serve_in_thread(self._http))
        flush = threading.Thread(target=self._flush_loop, daemon=True)
        flush.start()
        self._threads.append(flush)
        return self

    @property
    def url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def stop(self) -> None:
        with self.lock:
            runners = [t.runner for t in self.tasks.values() if t.runner is not None]
        for r in runners:
            r.stop()
        self.flush()
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for t in self._threads:
            t.join(10)
        self._session.close()

    def __enter__(self) -> KapacitorPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests do ---------------------------------------------------------------------------
    def load_task(
        self,
        task_id: str,
        script: str,
        task_vars: Mapping[str, Any] | None = None,
        *,
        template_id: str = "",
        status: str = "enabled",
        dbrps: Sequence[Mapping[str, str]] = (),
    ) -> PeerTask:
        """Define a task as the load directory does (a template's script and vars file,
        whose ``dbrps`` name the database when the script has no dbrp statement)."""
        vars_ = {
            k: {"type": v["type"], "value": v["value"], "description": v.get("description", "")}
            for k, v in (task_vars or {}).items()
        }
        body = {"id": task_id, "script": script, "vars": vars_, "status": "disabled"}
        if dbrps:
            body["dbrps"] = [dict(d) for d in dbrps]
        task = self._create(body, template_id=template_id)
        if status == "enabled":
            self._set_status(task, "enabled")
        return task

    def publish(self, lines: Iterable[str], *, db: str = "fraud", rp: str = "autogen") -> None:
        """Write points to InfluxDB and hand them to the stream tasks (the subscription)."""
        lines = list(lines)
        if self.influx_url:
            r = self._session.post(
                self.influx_url + "/write",
                params={"db": db, "rp": rp, "precision": "ns"},
                data="\n".join(lines).encode(),
                timeout=30,
            )
            r.raise_for_status()
        points = [parse_line(x) for x in lines]
        for p in points:
            p.database, p.retention_policy = db, rp
        if self.down:
            return  # the subscription's delivery fails
        with self.lock:
            runners = [
                t.runner for t in self.tasks.values() if t.runner is not None and t.type == "stream"
            ]
        for r in runners:
            for p in points:
                if _dbrp_matches(r.task, p):
                    r.feed(p)

    def go_down(self) -> None:
        """Kapacitor stops: its API refuses connections, its tasks stop, and the points
        InfluxDB receives meanwhile never reach it."""
        with self.lock:
            self.down = True
            runners = [t.runner for t in self.tasks.values() if t.runner is not None]
        for r in runners:
            r.stop()
        with self.lock:
            for t in self.tasks.values():
                t.runner = None

    def come_back(self) -> None:
        """Kapacitor starts again and starts every enabled task (``last-enabled`` is not
        changed by a start-up, only by an API update)."""
        with self.lock:
            self.down = False
            tasks = [t for t in self.tasks.values() if t.status == "enabled" and t.type == "stream"]
        for task in tasks:
            runner = StreamRunner(self, task, Program(task.script, task.vars))
            with self.lock:
                task.runner = runner

    def inject(self, method: str, path: str, status: int, error: str, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with an error."""
        with self.lock:
            self.injected.extend([(method, path, status, error)] * times)

    def info(self, udf: str) -> Any:
        info = self._infos.get(udf)
        if info is None:
            info = query_info(self.udfs[udf])
            self._infos[udf] = info
        return info

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every stream task has handed its points on and the writes are flushed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                busy = any(
                    t.runner is not None and t.runner.alive and not t.runner.queue.empty()
                    for t in self.tasks.values()
                )
            if not busy:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        if not self.hold_writes:
            self.flush()

    # -- execution -------------------------------------------------------------------------------
    def downstream(self, node: Node | None, p: PeerPoint, task_id: str) -> None:
        if node is None:
            return
        for child in node.children:
            self._process(child, p, task_id)

    def _process(self, node: Node, p: PeerPoint, task_id: str) -> None:
        if node.kind == "where":
            if _where(node, p):
                self.downstream(node, p, task_id)
        elif node.kind == "eval":
            out = _eval(node, p)
            if out is not None:
                self.downstream(node, out, task_id)
        elif node.kind == "union":
            self.downstream(node, p, task_id)
        elif node.kind == "default":
            tags, fields = dict(p.tags), dict(p.fields)
            if "tag" in node.props:
                (_, key), (_, value) = node.props["tag"]
                tags.setdefault(key, value)
            if "field" in node.props:
                (_, key), (_, value) = node.props["field"]
                fields.setdefault(key, value)
            out = PeerPoint(p.time, p.name, tags, fields, p.database, p.retention_policy)
            self.downstream(node, out, task_id)
        elif node.kind == "alert":
            self._alert(node, p, task_id)
        elif node.kind == "influxDBOut":
            db = node.props["database"][0][1]
            rp = node.props.get("retentionPolicy", [("string", "")])[0][1]
            m = node.props["measurement"][0][1]
            with self._writes_lock:
                self._writes.append((db, rp, format_line(p, m)))
        else:
            raise PeerError(f"the peer does not run |{node.name}()")

    def _alert(self, node: Node, p: PeerPoint, task_id: str) -> None:
        """Kapacitor's alert node for one point: level, state per alert id, post."""
        from kapacitor_alert import alert_body, render

        level = "OK"
        for prop, name in (("crit", "CRITICAL"), ("warn", "WARNING"), ("info", "INFO")):
            if prop in node.props:
                try:
                    if _compare(node.props[prop][0][1], p):
                        level = name
                        break
                except _MissingField:
                    continue
        id_template = node.props.get("id", [("string", "{{ .Name }}:{{ .Group }}")])[0][1]
        id_data = {"Name": p.name, "TaskName": task_id, "Group": "nil", "Tags": p.tags}
        alert_id = render(id_template, id_data)
        states = self._alert_state.setdefault((task_id, node.label), {})
        previous, last_sent = states.get(alert_id, ("OK", 0))
        send = level != previous
        if level == "OK" and previous != "OK" and "noRecoveries" in node.props:
            send = False
        if "stateChangesOnly" not in node.props:
            send = level != "OK" or send
        elif node.props["stateChangesOnly"] and level != "OK" and not send:
            interval = node.props["stateChangesOnly"][0][1]
            send = p.time - last_sent >= interval
        states[alert_id] = (level, p.time if send else last_sent)
        if not send or "post" not in node.props:
            return
        endpoint = node.props.get("endpoint", [("string", "example")])[0][1]
        if endpoint not in self.alert_endpoints:
            raise PeerError(f"{node.label}: no [[httppost]] endpoint {endpoint!r}")
        url, auth = self.alert_endpoints[endpoint]
        body = alert_body(
            name=p.name,
            time_rfc3339=rfc3339(p.time),
            tags=p.tags,
            fields=p.fields,
            id_template=id_template,
            message_template=node.props.get("message", [("string", "")])[0][1],
            details_template=node.props.get("details", [("string", "")])[0][1],
            level=level,
            previous_level=previous,
            task=task_id,
            recoverable="noRecoveries" not in node.props,
        )
        try:
            r = self._session.post(
                url, data=body, auth=auth, timeout=10,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            status = r.status_code
        except requests.RequestException:
            status = 0  # Kapacitor logs the failed post and does not retry
        self.alerts_posted.append((body, status))

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if not self.hold_writes:
                self.flush()

    def flush(self) -> None:
        with self._writes_lock:
            writes, self._writes = self._writes, []
        if not writes or not self.influx_url:
            return
        by_target: dict[tuple[str, str], list[str]] = {}
        for db, rp, text in writes:
            by_target.setdefault((db, rp), []).append(text)
        for (db, rp), lines in by_target.items():
            try:
                r = self._session.post(
                    self.influx_url + "/write",
                    params={"db": db, "rp": rp, "precision": "ns"},
                    data="\n".join(lines).encode(),
                    timeout=30,
                )
            except requests.RequestException as exc:
                # influxDBOut logs the failed write and drops the points (no retry)
                self.write_errors.append(str(exc))
                log.error("failed to write points to InfluxDB: %s", exc)
                continue
            if r.status_code != 204:
                # Kapacitor's influxDBOut logs "failed to write points to InfluxDB" and goes on
                self.write_errors.append(r.text)
                log.error("failed to write points to InfluxDB: %s", r.text)

    def _task_failed(self, task: PeerTask, error: str) -> None:
        with self.lock:
            task.error = error
            task.runner = None

    # -- the API ---------------------------------------------------------------------------------
    def _task_json(self, task: PeerTask, fields: Iterable[str] | None = None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "link": {"rel": "self", "href": f"/kapacitor/v1/tasks/{task.id}"},
            "id": task.id,
            "template-id": task.template_id,
            "type": task.type,
            "dbrps": task.dbrps,
            "script": task.script,
            "vars": task.vars,
            "dot": f"digraph {task.id} {{\n}}",
            "status": task.status,
            "executing": task.executing,
            "error": task.error,
            "stats": {},
            "created": rfc3339(task.created),
            "modified": rfc3339(task.modified),
            "last-enabled": rfc3339(task.last_enabled),
        }
        if fields is None:
            return full
        return {f: full[f] for f in fields}

    def _create(self, body: Mapping[str, Any], *, template_id: str = "") -> PeerTask:
        task_id = str(body.get("id") or uuid.uuid4())
        if not VALID_ID.match(task_id):
            raise _HTTPError(
                400, f"task ID must contain only letters, numbers, '-', '.' and '_'. {task_id!r}"
            )
        with self.lock:
            if task_id in self.tasks:
                raise _HTTPError(400, f"task {task_id} already exists")
        script = str(body.get("script") or "")
        if not script:
            raise _HTTPError(400, "must provide TICKscript")
        vars_ = {
            k: {
                "type": v.get("type"),
                "value": duration_ns(v.get("value"))
                if v.get("type") == "duration"
                else v.get("value"),
                "description": v.get("description", ""),
            }
            for k, v in (body.get("vars") or {}).items()
        }
        try:
            program = Program(script, vars_)
        except (PeerError, KeyError) as exc:
            raise _HTTPError(400, str(exc)) from exc
        dbrps = list(body.get("dbrps") or [])
        if program.dbrps and dbrps:
            raise _HTTPError(400, "cannot specify dbrp in both implicitly and explicitly")
        if not program.dbrps and not dbrps:
            raise _HTTPError(400, "must specify dbrp")
        if program.dbrps:
            dbrps = [{"db": db, "rp": rp} for db, rp in program.dbrps]
        udf = program.first("udf")
        if udf is not None and udf.name in self.udfs:
            with contextlib.suppress(OSError, PeerError):
                try:
                    init_options(udf, self.info(udf.name))
                except PeerError as exc:
                    raise _HTTPError(400, str(exc)) from exc
        now = time.time_ns()
        task = PeerTask(
            id=task_id,
            type=program.type,
            dbrps=dbrps,
            script=script,
            vars=vars_,
            template_id=template_id,
            created=now,
            modified=now,
        )
        with self.lock:
            self.tasks[task_id] = task
        if body.get("status") == "enabled":
            self._set_status(task, "enabled")
        return task

    def _set_status(self, task: PeerTask, status: str) -> dict[str, Any]:
        """Kapacitor's handleUpdateTask: store, then start or stop on a change only; the
        answer is built after that, from its copy of the task (the error as it was)."""
        with self.lock:
            changed = status in ("enabled", "disabled") and status != task.status
            if status in ("enabled", "disabled"):
                task.status = status
            task.modified = time.time_ns()
            if changed and status == "enabled":
                task.last_enabled = task.modified
            stale_error = task.error
            runner = task.runner
        if changed and status == "disabled":
            if runner is not None:
                runner.stop()
            with self.lock:
                task.runner = None
        elif changed:
            with self.lock:
                task.error = ""
            if task.type == "stream":
                runner = StreamRunner(self, task, Program(task.script, task.vars))
                with self.lock:
                    task.runner = runner
        with self.lock:
            answer = self._task_json(task)
        answer["error"] = stale_error
        return answer

    def _replay_batch(self, body: Mapping[str, Any]) -> Replay:
        task_id = str(body.get("task", ""))
        with self.lock:
            task = self.tasks.get(task_id)
        if task is None:
            raise _HTTPError(404, "task load: no task exists")
        if task.type == "stream":
            raise _HTTPError(400, f"cannot replay batch against stream task: {task_id}")
        replay = Replay(
            id=str(body.get("id") or uuid.uuid4()),
            task=task_id,
            start=parse_rfc3339(body["start"]),
            stop=parse_rfc3339(body["stop"]),
            recording_time=bool(body.get("recording-time", False)),
            clock=str(body.get("clock") or "fast"),
            date=time.time_ns(),
        )
        with self.lock:
            self.replays[replay.id] = replay
        t = threading.Thread(target=self._run_replay, args=(replay, task), daemon=True)
        t.start()
        return replay

    def _run_replay(self, replay: Replay, task: PeerTask) -> None:
        try:
            program = Program(task.script, task.vars)
            query = program.first("query")
            if query is None:
                raise PeerError("no query node")
            if not replay.recording_time:
                raise PeerError("the peer replays with recording-time only")
            udf = program.first("udf")
            conn = None
            if udf is not None:
                conn = UdfConnection(
                    self.udfs[udf.name],
                    task_id=task.id,
                    node=udf.label,
                    options=init_options(udf, self.info(udf.name)),
                )
            try:
                for batch, stop in self._batches(query, replay):
                    if conn is None or udf is None:
                        for p in batch:
                            self.downstream(query, p, task.id)
                        continue
                    self._through_udf(conn, udf, batch, task.id, stop)
            finally:
                if conn is not None:
                    conn.close()
            self.flush()
            replay.status, replay.progress = "finished", 1.0
        except (OSError, PeerError, requests.RequestException) as exc:
            replay.status, replay.error = "failed", f"running replay: {exc}"

    def _batches(self, query: Node, replay: Replay) -> Iterable[list[PeerPoint]]:
        text = query.args[0][1]
        period = query.props["period"][0][1]
        every = query.props["every"][0][1]
        group_by = [v for _, v in query.props.get("groupBy", [])]
        m = re.fullmatch(r"(?is)\s*(SELECT\s+.+?\s+FROM\s+\S+)(?:\s+WHERE\s+(.+))?\s*", text)
        if m is None:
            raise PeerError(f"the peer cannot read the query {text!r}")
        db_m = re.match(r'(?is)SELECT\s+.+?\s+FROM\s+"([^"]+)"\.', m.group(1))
        db = db_m.group(1) if db_m else ""
        now = time.time_ns()
        current = replay.start
        while True:
            current += every
            if current > replay.stop or current > now:
                break
            start, stop = current - period, current
            cond = f"time >= '{rfc3339(start)}' AND time < '{rfc3339(stop)}'"
            where = f"({m.group(2)}) AND {cond}" if m.group(2) else cond
            q = f"{m.group(1)} WHERE {where}"
            if group_by:
                q += " GROUP BY " + ", ".join("*" if g == "*" else f'"{g}"' for g in group_by)
            r = self._session.get(
                self.influx_url + "/query", params={"q": q, "db": db, "epoch": "ns"}, timeout=30
            )
            r.raise_for_status()
            for res in r.json().get("results", []):
                if "error" in res:
                    raise PeerError(res["error"])
                for series in res.get("series") or []:
                    batch = []
                    for row in series.get("values") or []:
                        fields = {}
                        for col, v in zip(series["columns"][1:], row[1:]):
                            if v is None:
                                continue
                            # every JSON number becomes a float64 (edge.ResultToBufferedBatches)
                            fields[col] = (
                                float(v)
                                if isinstance(v, (int, float)) and not isinstance(v, bool)
                                else v
                            )
                        if fields:
                            batch.append(
                                PeerPoint(
                                    int(row[0]),
                                    series["name"],
                                    dict(series.get("tags") or {}),
                                    fields,
                                )
                            )
                    yield batch, stop

    def _through_udf(
        self, conn: UdfConnection, udf: Node, batch: list[PeerPoint], task_id: str, stop: int
    ) -> None:
        if not batch:
            return
        # a UDF that wants a batch and provides a stream (@drift()) answers with points
        # only: the peer takes one per batch, what @drift() emits
        streams = self.info(udf.name).provides == pb.STREAM
        name = batch[0].name
        begin = pb.Request()
        begin.begin.name = name
        for k, v in batch[0].tags.items():
            begin.begin.tags[k] = v
        begin.begin.size = len(batch)
        conn.send(begin)
        for p in batch:
            self.batch_points.append((task_id, p.time))
            conn.send(pb.Request(point=to_pb(p)))
        end = pb.Request()
        end.end.name = name
        end.end.tmax = stop  # the batch's time: its query's stop (Kapacitor's query node)
        conn.send(end)
        while True:
            resp = conn.recv()
            if resp is None:
                raise PeerError(f"{udf.label}: UDF closed the connection")
            kind = resp.WhichOneof("message")
            if kind == "point":
                self.downstream(udf, from_pb(resp.point), task_id)
                if streams:
                    return
            elif kind == "end":
                return
            elif kind == "error":
                raise PeerError(f"{udf.label}: {resp.error.error}")


def _dbrp_matches(task: PeerTask, p: PeerPoint) -> bool:
    return any(d["db"] == p.database and d["rp"] == p.retention_policy for d in task.dbrps)


class _HTTPError(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class _Handler(BaseHTTPRequestHandler):
    peer: KapacitorPeer

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body, indent=4).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        peer = self.peer
        if peer.down:
            self.close_connection = True  # as a refused connection looks to a client
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._reply(400, {"error": "invalid JSON"})
        with peer.lock:
            peer.requests.append((method, path, body))
            hit = next((i for i in peer.injected if i[0] == method and path.startswith(i[1])), None)
            if hit is not None:
                peer.injected.remove(hit)
        if peer.auth is not None:
            expected = "Basic " + base64.b64encode(":".join(peer.auth).encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._reply(401, {"error": "authorization failed"})
        if hit is not None:
            return self._reply(hit[2], {"error": hit[3]})
        try:
            status, answer = self._route(method, path, params, body)
        except _HTTPError as exc:
            return self._reply(exc.status, {"error": exc.error})
        self._reply(status, answer)

    def _route(self, method: str, path: str, params: dict, body: Any) -> tuple[int, Any]:
        peer = self.peer
        base = "/kapacitor/v1"
        if path == base + "/ping":
            return 204, None
        if path == base + "/tasks" and method == "GET":
            fields = params.get("fields")
            if fields:
                for f in fields:
                    if f not in TASK_FIELDS_15:
                        raise _HTTPError(400, f"unsupported field {f!r}".replace("'", '"'))
                fields = list(dict.fromkeys([*fields, "id", "link"]))
            offset = int(params.get("offset", ["0"])[0])
            limit = int(params.get("limit", ["100"])[0])
            with peer.lock:
                tasks = [peer.tasks[k] for k in sorted(peer.tasks)][offset : offset + limit]
                listed = [peer._task_json(t, fields or TASK_FIELDS_15) for t in tasks]
            return 200, {"tasks": listed}
        if path == base + "/tasks" and method == "POST":
            task = peer._create(body or {})
            with peer.lock:
                return 200, peer._task_json(task)
        if path.startswith(base + "/tasks/"):
            task_id = path[len(base + "/tasks/") :]
            with peer.lock:
                task = peer.tasks.get(task_id)
            if method == "DELETE":
                if task is not None:
                    peer._set_status(task, "disabled")
                    with peer.lock:
                        peer.tasks.pop(task_id, None)
                return 204, None
            if task is None:
                if method == "PATCH":
                    raise _HTTPError(404, "task does not exist, cannot update")
                raise _HTTPError(404, "no task exists")
            if method == "GET":
                with peer.lock:
                    return 200, peer._task_json(task)
            if method == "PATCH":
                return 200, peer._set_status(task, str((body or {}).get("status", "")))
        if path == base + "/replays/batch" and method == "POST":
            return 201, peer._replay_batch(body or {}).json()
        if path.startswith(base + "/replays/"):
            replay_id = path[len(base + "/replays/") :]
            with peer.lock:
                replay = peer.replays.get(replay_id)
                if method == "DELETE":
                    peer.replays.pop(replay_id, None)
                    return 204, None
            if replay is None:
                raise _HTTPError(404, "could not find replay: no replay exists")
            return 200, replay.json()
        raise _HTTPError(404, f"not found: {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
