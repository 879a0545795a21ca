"""Reading a scoring task's TICKscript, and writing the batch task that backfills its gap.

Only the subset of TICKscript a scoring task needs is understood: ``dbrp`` statements,
``var`` declarations (typed, or with a literal, lambda or list default) and chains of
``|node()``, ``@udf()`` and ``.property()`` calls. Arguments are kept as source text, so
the backfill task repeats the scoring task's own declarations and option calls verbatim
and Kapacitor resolves them with the same vars: same model, options and output.

A stream task is backfilled when its scoring chain is ``stream |from() @udf() ...
|influxDBOut()`` with nothing else in between (``from()`` may name a measurement,
database and retention policy); anything else raises :class:`ScriptError`, and the task
is still re-enabled, only not backfilled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ScriptError

__all__ = [
    "ScoringTask",
    "backfill_script",
    "parse",
    "read_scoring_task",
    "udfs_used",
]

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>//[^\n]*)
  | (?P<string>'''.*?'''|'(?:[^'\\\n]|\\.)*')
  | (?P<ref>"(?:[^"\\\n]|\\.)*")
  | (?P<duration>\d+(?:\.\d+)?(?:ms|us|u|µ|ns|s|m|h|d|w)(?![A-Za-z0-9_]))
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|=~|!~|[|@.(),=<>+\-*/!:\[\]%])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int
    line: int


def tokenize(src: str) -> list[Token]:
    out: list[Token] = []
    pos, line = 0, 1
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if m is None:
            raise ScriptError(f"line {line}: cannot read {src[pos : pos + 20]!r}")
        kind, text = m.lastgroup or "", m.group()
        if kind not in ("ws", "comment"):
            out.append(Token(kind, text, m.start(), m.end(), line))
        line += text.count("\n")
        pos = m.end()
    return out


@dataclass
class Call:
    """``|name(args)``, ``@name(args)`` or ``.name(args)``; args are token spans."""

    op: str
    name: str
    args: list[list[Token]]
    start: int
    end: int


@dataclass
class Statement:
    kind: str  # dbrp | var | chain
    start: int
    end: int
    name: str | None = None  # var name
    head: str | None = None  # first identifier of a chain (stream, batch or a var)
    calls: list[Call] = field(default_factory=list)
    value: list[Token] = field(default_factory=list)  # a var's literal default
    dbrp: tuple[str, str] | None = None


@dataclass
class Program:
    src: str
    statements: list[Statement]

    def text(self, start: int, end: int) -> str:
        return self.src[start:end]


_TYPES = {"string", "int", "float", "bool", "duration", "lambda", "regex", "list", "star"}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ScriptError("unexpected end of script")
        self.i += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> Token:
        tok = self.next()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise ScriptError(f"line {tok.line}: expected {text or kind}, got {tok.text!r}")
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text in ops

    def parse(self) -> Program:
        out: list[Statement] = []
        while (tok := self.peek()) is not None:
            if tok.kind == "ident" and tok.text == "dbrp":
                self.next()
                db = self.expect("ref")
                self.expect("op", ".")
                rp = self.expect("ref")
                out.append(
                    Statement(
                        "dbrp", tok.start, rp.end, dbrp=(_unquote(db.text), _unquote(rp.text))
                    )
                )
            elif tok.kind == "ident" and tok.text == "var":
                out.append(self.parse_var())
            elif tok.kind == "ident":
                self.next()
                calls = self.parse_chain()
                out.append(Statement("chain", tok.start, calls[-1].end, head=tok.text, calls=calls))
            else:
                raise ScriptError(f"line {tok.line}: unexpected {tok.text!r}")
        return Program(self.src, out)

    def parse_var(self) -> Statement:
        start = self.next()
        name = self.expect("ident").text
        tok = self.next()
        if tok.kind == "ident" and tok.text in _TYPES:
            return Statement("var", start.start, tok.end, name=name)
        if tok.kind != "op" or tok.text != "=":
            raise ScriptError(f"line {tok.line}: var {name}: expected a type or '='")
        first = self.peek()
        if first is None:
            raise ScriptError(f"line {tok.line}: var {name} has no value")
        if first.kind == "ident" and first.text not in ("TRUE", "FALSE", "lambda"):
            self.next()
            if self.at_op("|", "@", "."):
                calls = self.parse_chain()
                return Statement(
                    "chain", start.start, calls[-1].end, name=name, head=first.text, calls=calls
                )
            return Statement("var", start.start, first.end, name=name, value=[first])
        value = self.parse_value()
        return Statement("var", start.start, value[-1].end, name=name, value=value)

    def parse_chain(self) -> list[Call]:
        calls: list[Call] = []
        while self.at_op("|", "@", "."):
            op = self.next()
            name = self.expect("ident")
            self.expect("op", "(")
            args: list[list[Token]] = []
            if self.at_op(")"):
                end = self.next()
            else:
                while True:
                    args.append(self.parse_expr())
                    sep = self.next()
                    if sep.text == ")":
                        end = sep
                        break
                    if sep.text != ",":
                        raise ScriptError(f"line {sep.line}: expected ',' or ')'")
            if op.text == "." and not calls:
                raise ScriptError(f"line {op.line}: .{name.text}() without a node")
            calls.append(Call(op.text, name.text, args, op.start, end.end))
        if not calls:
            tok = self.peek()
            raise ScriptError(f"line {tok.line if tok else '?'}: expected a chain")
        return calls

    def parse_expr(self) -> list[Token]:
        """Tokens of one call argument: balanced brackets, up to ``,`` or ``)`` at depth 0."""
        out: list[Token] = []
        depth = 0
        while (tok := self.peek()) is not None:
            if tok.kind == "op" and tok.text in "([":
                depth += 1
            elif tok.kind == "op" and tok.text in ")]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and tok.kind == "op" and tok.text == ",":
                break
            out.append(self.next())
        if not out:
            tok = self.peek()
            raise ScriptError(f"line {tok.line if tok else '?'}: empty argument")
        return out

    def parse_value(self) -> list[Token]:
        """Tokens of a var's value: up to the first token on a later line, outside
        brackets, that neither follows nor is an operator (the next statement)."""
        out: list[Token] = []
        depth = 0
        while (tok := self.peek()) is not None:
            if (
                out
                and depth == 0
                and tok.line > out[-1].line
                and not _binary(out[-1])
                and not _binary(tok)
            ):
                break
            if tok.kind == "op" and tok.text in "([":
                depth += 1
            elif tok.kind == "op" and tok.text in ")]":
                depth -= 1
            out.append(self.next())
        return out


def _binary(tok: Token) -> bool:
    if tok.kind == "op":
        return tok.text not in (")", "]")
    return tok.kind == "ident" and tok.text in ("AND", "OR", "lambda")


def _unquote(text: str) -> str:
    if text.startswith("'''"):
        return text[3:-3]
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(src: str) -> Program:
    """Parse a TICKscript into statements; raises :class:`ScriptError`."""
    return _Parser(src).parse()


def udfs_used(src: str) -> set[str]:
    """Names of the UDFs a script calls (``@name()``), read from its tokens."""
    toks = tokenize(src)
    return {
        b.text
        for a, b in zip(toks, toks[1:])
        if a.kind == "op" and a.text == "@" and b.kind == "ident"
    }


# -- resolving values ------------------------------------------------------------------------
_DURATION_NS = {
    "ns": 1,
    "u": 1_000,
    "us": 1_000,
    "µ": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}


def _literal(tok: Token) -> Any:
    if tok.kind == "string":
        return _unquote(tok.text)
    if tok.kind == "number":
        return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
    if tok.kind == "duration":
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(.*)", tok.text)
        assert m is not None
        return int(float(m.group(1)) * _DURATION_NS[m.group(2)])
    if tok.kind == "ident" and tok.text in ("TRUE", "FALSE"):
        return tok.text == "TRUE"
    raise ScriptError(f"line {tok.line}: {tok.text!r} is not a literal")


class _Scope:
    """Values of a script's vars: the task's ``vars`` first, then the script's defaults."""

    def __init__(self, program: Program, task_vars: Mapping[str, Any]) -> None:
        self.defaults = {
            s.name: s.value for s in program.statements if s.kind == "var" and s.name is not None
        }
        self.task_vars = task_vars

    def value(self, tokens: list[Token], what: str) -> Any:
        if (
            len(tokens) == 2
            and tokens[0].kind == "op"
            and tokens[0].text == "-"
            and tokens[1].kind in ("number", "duration")
        ):
            return -_literal(tokens[1])  # a negative literal (``var threshold = -1.0``)
        if len(tokens) != 1:
            raise ScriptError(f"{what} is an expression; only a literal or a var is understood")
        tok = tokens[0]
        if tok.kind == "ident" and tok.text not in ("TRUE", "FALSE"):
            name = tok.text
            if name in self.task_vars:
                var = self.task_vars[name]
                return var.get("value") if isinstance(var, Mapping) else var
            default = self.defaults.get(name)
            if default is None:
                raise ScriptError(f"{what}: var {name} has no value")
            return self.value(default, what)
        return _literal(tok)


# -- the scoring task ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ScoringTask:
    """What a backfill needs to know of a scoring task (read from its script and vars)."""

    task_id: str
    udf: str
    type: str  # stream | batch
    model: str
    score_field: str
    out_database: str
    out_retention_policy: str
    out_measurement: str
    #: stream tasks only: the input the ``from()`` node reads
    database: str = ""
    retention_policy: str = ""
    measurement: str = ""
    #: source text kept verbatim for the backfill task
    declarations: tuple[str, ...] = ()
    udf_text: str = ""
    out_text: str = ""
    #: why this task cannot be backfilled ("" when it can)
    unsupported: str = ""

    @property
    def backfillable(self) -> bool:
        return not self.unsupported


def _props(calls: list[Call], i: int) -> tuple[list[Call], int]:
    """The property calls following node ``calls[i]``, and the index after them."""
    j = i + 1
    while j < len(calls) and calls[j].op == ".":
        j += 1
    return calls[i + 1 : j], j


def read_scoring_task(task: Mapping[str, Any], udfs: Iterable[str]) -> ScoringTask | None:
    """Describe a task from Kapacitor's API (``id``, ``type``, ``script``, ``vars``,
    ``dbrps``) if its script calls one of ``udfs``; None when it calls none.

    Raises :class:`ScriptError` when the script cannot be read at all; a task that can be
    read but not backfilled comes back with ``unsupported`` set.
    """
    src = task.get("script") or ""
    wanted = set(udfs)
    used = udfs_used(src) & wanted
    if not used:
        return None
    program = parse(src)
    scope = _Scope(program, task.get("vars") or {})
    task_id = str(task.get("id", ""))
    task_type = str(task.get("type") or "stream")
    chains = [
        s for s in program.statements if s.kind == "chain" and any(c.op == "@" for c in s.calls)
    ]
    scoring = [s for s in chains if any(c.op == "@" and c.name in wanted for c in s.calls)]
    udf = sorted(used)[0]
    base: dict[str, Any] = {"task_id": task_id, "udf": udf, "type": task_type}
    if len(scoring) != 1:
        return _unsupported(base, "the UDF is called from more than one chain")
    chain = scoring[0]
    calls = chain.calls
    at = next(i for i, c in enumerate(calls) if c.op == "@" and c.name in wanted)
    udf_call = calls[at]
    base["udf"] = udf_call.name
    udf_props, after_udf = _props(calls, at)
    try:
        options = {p.name: scope.value(p.args[0], f".{p.name}()") for p in udf_props if p.args}
    except ScriptError as exc:
        return _unsupported(base, str(exc))
    base["model"] = str(options.get("model", ""))
    base["score_field"] = str(options.get("field", "score"))
    dbrps = [s.dbrp for s in program.statements if s.kind == "dbrp" and s.dbrp]
    if not dbrps:
        dbrps = [(d.get("db", ""), d.get("rp", "")) for d in task.get("dbrps") or []]

    # the output: |influxDBOut() right after the UDF
    if after_udf >= len(calls) or calls[after_udf].name != "influxDBOut":
        return _unsupported(base, "the UDF's output does not go straight to |influxDBOut()")
    out_props, end = _props(calls, after_udf)
    if end != len(calls):
        return _unsupported(base, "the chain goes on after |influxDBOut()")
    out = {p.name: p for p in out_props}
    try:
        base["out_database"] = str(scope.value(out["database"].args[0], ".database()"))
        base["out_retention_policy"] = (
            str(scope.value(out["retentionPolicy"].args[0], ".retentionPolicy()"))
            if "retentionPolicy" in out
            else ""
        )
        base["out_measurement"] = str(scope.value(out["measurement"].args[0], ".measurement()"))
    except KeyError as exc:
        return _unsupported(base, f"|influxDBOut() sets no .{exc.args[0]}()")
    except (ScriptError, IndexError) as exc:
        return _unsupported(base, f"|influxDBOut(): {exc}")
    base["udf_text"] = program.text(udf_call.start, calls[after_udf - 1].end)
    base["out_text"] = program.text(calls[after_udf].start, calls[-1].end)
    base["declarations"] = tuple(
        program.text(s.start, s.end) for s in program.statements if s.kind == "var"
    )
    if not base["model"]:
        return _unsupported(base, "no .model() on the UDF")

    if task_type == "batch":
        return ScoringTask(**base)
    # stream |from() [.measurement() .database() .retentionPolicy()] @udf()
    if chain.head != "stream" or at == 0 or calls[0].name != "from":
        return _unsupported(base, "the UDF does not read straight from stream|from()")
    from_props, after_from = _props(calls, 0)
    if after_from != at:
        return _unsupported(base, "nodes between |from() and the UDF")
    props = {p.name: p for p in from_props}
    extra = set(props) - {"measurement", "database", "retentionPolicy"}
    if extra:
        return _unsupported(base, f"|from() uses .{sorted(extra)[0]}()")
    if "measurement" not in props:
        return _unsupported(base, "|from() names no measurement")
    try:
        db, rp = dbrps[0] if len(dbrps) == 1 else ("", "")
        if "database" in props:
            db = str(scope.value(props["database"].args[0], ".database()"))
        if "retentionPolicy" in props:
            rp = str(scope.value(props["retentionPolicy"].args[0], ".retentionPolicy()"))
        base["measurement"] = str(scope.value(props["measurement"].args[0], ".measurement()"))
    except (ScriptError, IndexError) as exc:
        return _unsupported(base, f"|from(): {exc}")
    if not db or not rp:
        return _unsupported(base, "cannot tell which database and retention policy it reads")
    base["database"], base["retention_policy"] = db, rp
    return ScoringTask(**base)


def _unsupported(base: dict[str, Any], why: str) -> ScoringTask:
    fill = {
        "model": "",
        "score_field": "score",
        "out_database": "",
        "out_retention_policy": "",
        "out_measurement": "",
    }
    return ScoringTask(**{**fill, **base, "unsupported": why})


# -- the backfill task -----------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tick_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _duration(ns: int) -> str:
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{max(1, ns // 1_000)}u"


def backfill_script(
    task: ScoringTask,
    *,
    batch_udf: str,
    start_ns: int,
    chunk_ns: int,
    int_fields: Iterable[str] = (),
    header: str = "",
) -> str:
    """A batch task scoring ``task``'s input from ``start_ns`` on through ``batch_udf`` with
    the same option calls and the same ``|influxDBOut()``.

    The replay that runs it sets the upper bound (Kapacitor adds ``time >= start AND time <
    stop`` per ``chunk_ns`` query); the ``time >`` here cuts the first chunk at the gap's
    start. Kapacitor reads every number of a batch query as a float, so each field in
    ``int_fields`` is turned back into an integer before the write (the output measurement
    holds it as an integer; a float would be refused as a field type conflict). Points
    without that field pass unchanged.
    """
    if not task.backfillable:
        raise ScriptError(f"task {task.task_id} cannot be backfilled: {task.unsupported}")
    if task.type != "stream":
        raise ScriptError("a batch task is backfilled by replaying it, not rewritten")
    udf_text = re.sub(r"^@\s*" + re.escape(task.udf), "@" + batch_udf, task.udf_text)
    source = f"{_ident(task.database)}.{_ident(task.retention_policy)}.{_ident(task.measurement)}"
    query = f"SELECT * FROM {source} WHERE time > {int(start_ns) - 1}"
    names = {d.split()[1] for d in task.declarations if len(d.split()) > 1}
    prefix = "backfill"
    while any(n.startswith(prefix) for n in names):
        prefix += "_"
    lines = [f"// {header}" if header else "// gap backfill"]
    lines.append(f"dbrp {_ident(task.database)}.{_ident(task.retention_policy)}")
    lines.append("")
    lines.extend(task.declarations)
    lines.append("")
    lines.append(f"var {prefix}_scored = batch")
    lines.append(f"    |query({_tick_string(query)})")
    lines.append(f"        .period({_duration(chunk_ns)})")
    lines.append(f"        .every({_duration(chunk_ns)})")
    lines.append("        .groupBy(*)")
    lines.append("    " + udf_text)
    current = f"{prefix}_scored"
    for k, name in enumerate(sorted(set(int_fields))):
        ref = _ident(name)
        cast, rest = f"{prefix}_int{k}", f"{prefix}_keep{k}"
        lines.append(f"var {cast} = {current}")
        lines.append(f"    |where(lambda: isPresent({ref}))")
        lines.append(f"    |eval(lambda: int({ref}))")
        lines.append(f"        .as({_tick_string(name)})")
        lines.append("        .keep()")
        lines.append(f"var {rest} = {current}")
        lines.append(f"    |where(lambda: !isPresent({ref}))")
        lines.append(f"var {prefix}_{k} = {cast}")
        lines.append(f"    |union({rest})")
        current = f"{prefix}_{k}"
    lines.append(current)
    lines.append("    " + task.out_text)
    return "\n".join(lines) + "\n"
