"""Static checks of the TICKscripts, their task vars files and kapacitor.conf.

Kapacitor cannot run here, so this file carries a small tokenizer/parser for the subset of
TICKscript the project uses (typed ``var`` declarations, ``dbrp``, chains of ``|`` ``@``
``.`` calls with literal, var and lambda arguments) and checks the scripts against what
they talk to: the UDF agent's declared options (exact types, as Kapacitor checks them),
the data contract's measurement/field/tag names, the UDFs configured in kapacitor.conf
and the agent's documented socket path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from models import contract
from models.profile import Profile, load_profile, profile_names
from udf_agent.drift import DRIFT_OPTION_SPECS, parse_drift_options
from udf_agent.options import OPTION_SPECS, parse_init_options
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame

ROOT = Path(__file__).resolve().parents[1]
TICK_DIR = ROOT / "tickscripts"
CONF = ROOT / "compose" / "kapacitor" / "kapacitor.conf"
ENTRYPOINT = ROOT / "compose" / "kapacitor" / "entrypoint.sh"

# from SHARED_NAMES.md: the agent's sockets on the `udf-socket` volume
UDF_SOCKETS = {
    "score": "/var/run/tick-anomaly/udf.sock",
    "score_batch": "/var/run/tick-anomaly/udf-batch.sock",
    "drift": "/var/run/tick-anomaly/udf-drift.sock",
}
#: the options each UDF of kapacitor.conf declares (its InfoResponse)
UDF_OPTION_SPECS = {"score": OPTION_SPECS, "score_batch": OPTION_SPECS, "drift": DRIFT_OPTION_SPECS}
#: how the agent parses each UDF's init options
UDF_OPTION_PARSERS = {
    "score": parse_init_options,
    "score_batch": parse_init_options,
    "drift": parse_drift_options,
}

# -- tokenizer --------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>//[^\n]*)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<ref>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:\.\d+)?(?:ms|us|u|µ|ns|s|m|h|d|w)(?![A-Za-z0-9_]))
  | (?P<float>\d+\.\d+(?:[eE][-+]?\d+)?)
  | (?P<int>\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|=~|!~|[|@.(),=<>+\-*/!:\[\]])
    """,
    re.VERBOSE,
)
KEYWORDS = {"var", "dbrp", "lambda", "TRUE", "FALSE", "AND", "OR"}


@dataclass
class Tok:
    kind: str
    text: str
    line: int

    @property
    def value(self):
        if self.kind in ("string", "ref"):
            return self.text[1:-1].replace("\\'", "'").replace('\\"', '"')
        if self.kind == "int":
            return int(self.text)
        if self.kind == "float":
            return float(self.text)
        return self.text


class TickSyntaxError(ValueError):
    pass


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    pos, line = 0, 1
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m:
            raise TickSyntaxError(f"line {line}: unexpected character {src[pos]!r}")
        kind = m.lastgroup
        text = m.group()
        if kind not in ("ws", "comment"):
            if kind == "ident" and text in KEYWORDS:
                kind = text
            toks.append(Tok(kind, text, line))
        line += text.count("\n")
        pos = m.end()
    return toks


# -- parser -----------------------------------------------------------------------------------


@dataclass
class Arg:
    kind: str  # string | int | float | duration | bool | var | lambda | star | ref
    value: object
    line: int
    refs: list[str] = field(default_factory=list)  # "field" references inside a lambda
    funcs: list[str] = field(default_factory=list)


@dataclass
class Call:
    op: str  # '|' node, '@' UDF node, '.' property
    name: str
    args: list[Arg]
    line: int


@dataclass
class VarDecl:
    name: str
    type: str  # declared or inferred: string, int, float, duration, bool, lambda, chain
    default: object = None
    required: bool = False
    source: str | None = None  # for chains: the var or `stream` they start from


@dataclass
class Script:
    dbrps: list[tuple[str, str]] = field(default_factory=list)
    vars: dict[str, VarDecl] = field(default_factory=dict)
    chains: list[tuple[str, list[Call]]] = field(default_factory=list)  # (start, calls)

    def calls(self, op: str | None = None, name: str | None = None) -> list[Call]:
        return [
            c
            for _, chain in self.chains
            for c in chain
            if (op is None or c.op == op) and (name is None or c.name == name)
        ]

    def nodes(self) -> list[tuple[Call, list[Call]]]:
        """Each chaining node (`|` or `@`) with its property calls."""
        out: list[tuple[Call, list[Call]]] = []
        for _, chain in self.chains:
            for c in chain:
                if c.op in "|@":
                    out.append((c, []))
                elif out:
                    out[-1][1].append(c)
        return out


TYPE_NAMES = {"string", "int", "float", "bool", "duration", "lambda", "regex", "list", "star"}
LITERAL_KINDS = {"string", "int", "float", "duration", "TRUE", "FALSE"}


class Parser:
    def __init__(self, src: str) -> None:
        self.toks = tokenize(src)
        self.i = 0
        self.script = Script()

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise TickSyntaxError("unexpected end of script")
        self.i += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> Tok:
        tok = self.next()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise TickSyntaxError(f"line {tok.line}: expected {text or kind}, got {tok.text!r}")
        return tok

    def parse(self) -> Script:
        while self.peek() is not None:
            tok = self.peek()
            if tok.kind == "var":
                self.parse_var()
            elif tok.kind == "dbrp":
                self.next()
                db = self.expect("ref").value
                self.expect("op", ".")
                rp = self.expect("ref").value
                self.script.dbrps.append((db, rp))
            elif tok.kind == "ident":
                start = self.next().text
                self.script.chains.append((start, self.parse_chain()))
            else:
                raise TickSyntaxError(f"line {tok.line}: unexpected {tok.text!r}")
        return self.script

    def parse_var(self) -> None:
        self.expect("var")
        name_tok = self.expect("ident")
        name = name_tok.text
        if name in self.script.vars:
            raise TickSyntaxError(f"line {name_tok.line}: var {name} declared twice")
        tok = self.next()
        if tok.kind == "ident" and tok.text in TYPE_NAMES:
            self.script.vars[name] = VarDecl(name, tok.text, required=True)
            return
        if tok.kind != "op" or tok.text != "=":
            raise TickSyntaxError(f"line {tok.line}: var {name}: expected a type or '='")
        first = self.peek()
        negative = (
            first.kind == "op"
            and first.text == "-"
            and self.peek(1) is not None
            and self.peek(1).kind in ("int", "float")
        )
        if first.kind in LITERAL_KINDS or negative:
            lit = self.parse_arg()
            self.script.vars[name] = VarDecl(name, lit.kind, default=lit.value)
            if self.peek() is not None and self.peek().kind == "op" and self.peek().text in "|@":
                raise TickSyntaxError(f"line {first.line}: a literal cannot start a chain")
        elif first.kind == "lambda":
            self.next()
            self.expect("op", ":")
            lam = self.parse_lambda(first.line, statement=True)
            self.script.vars[name] = VarDecl(name, "lambda", default=lam)
        else:
            start = self.expect("ident").text
            if start not in ("stream", "batch") and start not in self.script.vars:
                raise TickSyntaxError(f"line {first.line}: {start!r} is not declared")
            chain = self.parse_chain()
            self.script.vars[name] = VarDecl(name, "chain", source=start)
            self.script.chains.append((start, chain))

    def parse_chain(self) -> list[Call]:
        calls: list[Call] = []
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in "|@.":
            self.next()
            name = self.expect("ident")
            self.expect("op", "(")
            args: list[Arg] = []
            if not (self.peek().kind == "op" and self.peek().text == ")"):
                while True:
                    args.append(self.parse_arg())
                    sep = self.next()
                    if sep.text == ")":
                        break
                    if sep.text != ",":
                        raise TickSyntaxError(f"line {sep.line}: expected ',' or ')'")
            else:
                self.next()
            if tok.text == "." and not calls:
                raise TickSyntaxError(f"line {tok.line}: property .{name.text}() without a node")
            calls.append(Call(tok.text, name.text, args, tok.line))
        if not calls:
            tok = self.peek()
            raise TickSyntaxError(f"line {tok.line if tok else '?'}: expected a chain")
        return calls

    def parse_arg(self) -> Arg:
        tok = self.next()
        if tok.kind in ("string", "int", "float", "duration"):
            return Arg(tok.kind, tok.value, tok.line)
        if tok.kind in ("TRUE", "FALSE"):
            return Arg("bool", tok.kind == "TRUE", tok.line)
        if tok.kind == "op" and tok.text == "-" and self.peek().kind in ("int", "float"):
            num = self.next()
            return Arg(num.kind, -num.value, tok.line)
        if tok.kind == "op" and tok.text == "*":
            return Arg("star", "*", tok.line)
        if tok.kind == "ref":
            # Kapacitor: double quotes are field/tag references, only meaningful in lambdas
            raise TickSyntaxError(
                f"line {tok.line}: {tok.text} is a field reference; string literals take "
                "single quotes"
            )
        if tok.kind == "ident":
            if tok.text not in self.script.vars:
                raise TickSyntaxError(f"line {tok.line}: {tok.text!r} is not declared")
            return Arg("var", tok.text, tok.line)
        if tok.kind == "lambda":
            self.expect("op", ":")
            return self.parse_lambda(tok.line)
        raise TickSyntaxError(f"line {tok.line}: unexpected argument {tok.text!r}")

    def parse_lambda(self, line: int, *, statement: bool = False) -> Arg:
        """A lambda argument (up to ``,`` or ``)``), or a var's lambda (``statement``: up
        to the script's end or the first token on a later line that no operator joins)."""
        depth = 0
        body: list[Tok] = []
        while True:
            tok = self.peek()
            if tok is None:
                if statement and body and depth == 0:
                    break
                raise TickSyntaxError(f"line {line}: unterminated lambda")
            if (
                statement
                and body
                and depth == 0
                and tok.line > body[-1].line
                and not _joins(body[-1])
                and not _joins(tok)
            ):
                break
            if tok.kind == "op" and tok.text == "(":
                depth += 1
            elif tok.kind == "op" and tok.text == ")":
                if depth == 0:
                    break
                depth -= 1
            elif tok.kind == "op" and tok.text == "," and depth == 0:
                break
            body.append(self.next())
        if not body:
            raise TickSyntaxError(f"line {line}: empty lambda")
        refs = [t.value for t in body if t.kind == "ref"]
        funcs = [
            t.text for k, t in enumerate(body[:-1]) if t.kind == "ident" and body[k + 1].text == "("
        ]
        for t in body:
            if t.kind == "ident" and t.text not in self.script.vars and t.text not in funcs:
                raise TickSyntaxError(f"line {t.line}: lambda uses undeclared {t.text!r}")
        return Arg("lambda", " ".join(t.text for t in body), line, refs=refs, funcs=funcs)


def _joins(tok: Tok) -> bool:
    """An operator that continues an expression onto the next line."""
    if tok.kind in ("AND", "OR"):
        return True
    return tok.kind == "op" and tok.text not in (")", "]")


def parse(src: str) -> Script:
    return Parser(src).parse()


# -- the checker ------------------------------------------------------------------------------

PB_TYPE = {"string": pb.STRING, "int": pb.INT, "float": pb.DOUBLE, "duration": pb.DURATION}
PB_TYPE["bool"] = pb.BOOL
TYPE_OF_PB = {v: k for k, v in PB_TYPE.items()}


def drift_names(profile: Profile) -> dict[str, set[str]]:
    """The fields and tags of the points the @drift() UDF emits for a model of ``profile``
    (udf_agent/drift.py), with the drift task's data_set tag."""
    fields = {contract.DRIFT_PSI_PREFIX + f for f in profile.feature_names}
    return {
        "fields": fields | set(contract.DRIFT_FIELDS),
        "tags": set(contract.OUTPUT_TAGS) | {contract.DATA_SET_TAG},
    }


def measurements(profile: Profile) -> dict[str, dict[str, set[str]]]:
    """The fields and tags of a data set's input and scored measurements."""
    fields = set(profile.input_fields)
    for extra in (profile.value, profile.order):
        if extra is not None and extra not in profile.tags:
            fields.add(extra)  # the publisher sends them (dashboards sum the value)
    tags = {contract.SOURCE_TAG, *profile.tags}
    return {
        profile.measurement: {"fields": fields, "tags": tags},
        profile.scored_measurement: {
            "fields": fields | set(contract.OUTPUT_FIELDS),
            "tags": tags | set(contract.OUTPUT_TAGS),
        },
    }


CREDITCARD = load_profile("creditcard")
MEASUREMENTS = measurements(CREDITCARD)
assert set(MEASUREMENTS) == {contract.INPUT_MEASUREMENT, contract.SCORED_MEASUREMENT}
TEMPLATE_NAME_RE = re.compile(r'index \.(Fields|Tags) "((?:[^"\\]|\\.)+)"')
# What Kapacitor's alert node hands its .id() template (idInfo); Fields, Level, Time and ID
# exist only for .message() and .details(), and an id naming them fails at the first alert.
ID_TEMPLATE_DATA = {"Name", "TaskName", "Group", "Tags", "ServerInfo"}
TEMPLATE_ACTION_RE = re.compile(r"\{\{(.*?)\}\}")
TEMPLATE_DATA_RE = re.compile(r'(?<![\w."])\.([A-Za-z_]\w*)')
LAMBDA_FUNCS = {"if", "float", "int", "max", "min", "abs", "isPresent", "string", "bool"}


def udf_names(conf: dict) -> set[str]:
    return set(conf.get("udf", {}).get("functions", {}))


def arg_type(arg: Arg, script: Script) -> str:
    if arg.kind == "var":
        return script.vars[arg.value].type
    return arg.kind


def parse_lambda_text(text: str) -> Arg:
    """A lambda var's value as Kapacitor reads it from a task file (``ast.ParseLambda``)."""
    lam = parse(f"var x = lambda: {text}").vars["x"].default
    assert isinstance(lam, Arg) and lam.kind == "lambda"
    return lam


def resolve(arg: Arg, script: Script, values: dict) -> object:
    """The value an argument has in a task: a literal, or its var from the task file, else
    the var's default (a lambda var from a task file comes back parsed)."""
    if arg.kind != "var":
        return arg.value
    decl = script.vars[arg.value]
    if arg.value in values:
        value = values[arg.value]["value"]
        return parse_lambda_text(value) if decl.type == "lambda" else value
    return decl.default


def check_script(
    script: Script,
    *,
    udfs: set[str],
    task: dict | None = None,
    profile: Profile = CREDITCARD,
) -> list[str]:
    """Every problem found, as readable sentences (empty list = fine). ``task`` is a task
    file (its ``vars`` and ``dbrps``) of the template; the names are checked against
    ``profile``'s measurements and fields."""
    problems: list[str] = []
    task = task or {}
    values = task.get("vars", {})
    known_measurements = measurements(profile)
    writable = {
        profile.scored_measurement,
        contract.MODEL_QUALITY_MEASUREMENT,
        contract.DRIFT_MEASUREMENT,
    }
    want_dbrp = (profile.database, profile.retention_policy)
    task_dbrps = [(d.get("db"), d.get("rp")) for d in task.get("dbrps", [])]
    if script.dbrps and task_dbrps:
        problems.append("dbrp both in the script and in the task file (Kapacitor refuses it)")
    if task and not script.dbrps and not task_dbrps:
        problems.append("no dbrp: the task file must name one (the template has none)")
    dbrps = script.dbrps or task_dbrps or ([want_dbrp] if not task else [])
    if dbrps != [want_dbrp]:
        problems.append(f'expected exactly dbrp "{want_dbrp[0]}"."{want_dbrp[1]}", got {dbrps}')
    starts = {s for s, _ in script.chains} - set(script.vars)
    if not starts <= {"stream", "batch"}:
        problems.append(f"chains start from undeclared {sorted(starts)}")

    def value(arg: Arg) -> object:
        return resolve(arg, script, values)

    source_meas: str | None = None
    produced: set[str] = set()
    join_aliases: set[str] = set()
    drift_out = False  # downstream of @drift(): the names are its output point's
    for node, props in script.nodes():
        pmap = {p.name: p for p in props}
        if node.op == "@":
            if node.name not in udfs:
                problems.append(f"line {node.line}: @{node.name}() is not a UDF in kapacitor.conf")
                continue
            drift_out = drift_out or node.name == "drift"
            for p in props:
                spec = UDF_OPTION_SPECS.get(node.name, OPTION_SPECS).get(p.name)
                if spec is None:
                    problems.append(f"line {p.line}: @{node.name}() has no option .{p.name}()")
                    continue
                got = [arg_type(a, script) for a in p.args]
                want = [TYPE_OF_PB[t] for t in spec]
                if got != want:
                    problems.append(
                        f"line {p.line}: .{p.name}() takes ({', '.join(want)}), "
                        f"got ({', '.join(got)})"
                    )
        elif node.name == "from":
            m = pmap.get("measurement")
            if m is None or len(m.args) != 1 or arg_type(m.args[0], script) != "string":
                problems.append(f"line {node.line}: from() needs .measurement('name')")
                continue
            source_meas = value(m.args[0])
            if source_meas not in known_measurements:
                problems.append(f"line {m.line}: unknown measurement {source_meas!r}")
            for prop, want in (("database", want_dbrp[0]), ("retentionPolicy", want_dbrp[1])):
                if prop in pmap and value(pmap[prop].args[0]) != want:
                    problems.append(f"line {pmap[prop].line}: from().{prop}() is not {want!r}")
            if "groupBy" in pmap:
                tags = known_measurements.get(source_meas, {}).get("tags", set())
                for a in pmap["groupBy"].args:
                    if a.kind != "string" or a.value not in tags:
                        problems.append(f"line {a.line}: groupBy({a.value!r}) is not a tag")
        elif node.name == "query":
            # batch: the query of the data set's input (Kapacitor adds the time range)
            if len(node.args) != 1 or arg_type(node.args[0], script) != "string":
                problems.append(f"line {node.line}: query() needs one query string")
                continue
            text = str(value(node.args[0]))
            ref = r'"((?:[^"\\]|\\.)*)"'
            m = re.fullmatch(rf"SELECT \* FROM {ref}\.{ref}\.{ref}", text)
            if m is None:
                problems.append(f"line {node.line}: query {text!r} is not SELECT * FROM db.rp.m")
                continue
            db, rp, source_meas = (g.replace('\\"', '"').replace("\\\\", "\\") for g in m.groups())
            if (db, rp) != want_dbrp:
                problems.append(f"line {node.line}: query reads {db}.{rp}, not the dbrps")
            if source_meas not in known_measurements:
                problems.append(f"line {node.line}: unknown measurement {source_meas!r}")
            elif source_meas != profile.measurement:
                problems.append(
                    f"line {node.line}: query reads {source_meas!r}, not the data set's input"
                )
            for prop in ("period", "every"):
                if prop not in pmap or arg_type(pmap[prop].args[0], script) != "duration":
                    problems.append(f"line {node.line}: query() needs .{prop}(duration)")
            if "groupBy" in pmap:
                problems.append(f"line {node.line}: a drift window is the whole input")
        elif node.name == "default" and "tag" in pmap:
            produced.add(str(value(pmap["tag"].args[0])))
        elif node.name == "influxDBOut":
            db = pmap.get("database")
            rp = pmap.get("retentionPolicy")
            meas = pmap.get("measurement")
            if not db or value(db.args[0]) != want_dbrp[0]:
                problems.append(
                    f"line {node.line}: influxDBOut() must write database '{want_dbrp[0]}'"
                )
            if not rp or value(rp.args[0]) != want_dbrp[1]:
                problems.append(f"line {node.line}: influxDBOut() must set retentionPolicy")
            if not meas or value(meas.args[0]) not in writable:
                problems.append(f"line {node.line}: influxDBOut() writes an unknown measurement")
        elif node.name == "alert" and "id" in pmap:
            for a in pmap["id"].args:
                for action in TEMPLATE_ACTION_RE.findall(str(value(a))):
                    for name in TEMPLATE_DATA_RE.findall(action):
                        if name not in ID_TEMPLATE_DATA:
                            problems.append(
                                f"line {a.line}: the alert .id() template cannot use .{name} "
                                f"(it has only {', '.join(sorted(ID_TEMPLATE_DATA))})"
                            )
        elif node.name == "join" and "as" in pmap:
            join_aliases |= {a.value for a in pmap["as"].args}
        if "as" in pmap and node.name in ("eval", "sum", "count"):
            produced |= {a.value for a in pmap["as"].args}

    known = known_measurements.get(source_meas or "", {"fields": set(), "tags": set()})
    if drift_out:
        known = drift_names(profile)
        known["tags"] = known["tags"] & ({*contract.OUTPUT_TAGS} | produced)
    names = known["fields"] | known["tags"]

    def check_refs(lam: Arg, line: int) -> None:
        for ref in lam.refs:
            prefix, _, rest = ref.partition(".")
            ok = ref in names or ref in produced or (rest and prefix in join_aliases)
            if not ok:
                problems.append(f'line {line}: lambda references unknown "{ref}"')
        for f in lam.funcs:
            if f not in LAMBDA_FUNCS:
                problems.append(f"line {line}: unknown lambda function {f}()")

    for node, props in script.nodes():
        for c in [node, *props]:
            for a in c.args:
                check_refs(a, a.line)
                v = value(a)
                if isinstance(v, str) and arg_type(a, script) == "string":
                    for kind, name in TEMPLATE_NAME_RE.findall(v):
                        name = name.replace('\\"', '"').replace("\\\\", "\\")
                        pool = known["fields"] if kind == "Fields" else known["tags"]
                        if name not in pool:
                            problems.append(f"line {a.line}: template names unknown {kind} {name}")
    # lambda vars, as the task sets them: a lambda inlines them, so their fields count
    for name, decl in script.vars.items():
        if decl.type == "lambda":
            lam = resolve(Arg("var", name, 0), script, values)
            if isinstance(lam, Arg):
                check_refs(lam, lam.line)
    return problems


def check_vars_file(data: dict, template: Script) -> list[str]:
    problems: list[str] = []
    given = data.get("vars", {})
    for name, decl in template.vars.items():
        if decl.type == "chain":
            continue
        if decl.required and name not in given:
            problems.append(f"var {name} ({decl.type}) has no default and is not set")
    for name, var in given.items():
        decl = template.vars.get(name)
        if decl is None or decl.type == "chain":
            problems.append(f"var {name} is not a var of the template")
            continue
        if var.get("type") != decl.type:
            problems.append(f"var {name}: type {var.get('type')!r}, template says {decl.type!r}")
        value = var.get("value")
        ok = {
            "string": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "duration": isinstance(value, str) and parse_duration(value) is not None,
            "lambda": isinstance(value, str) and _lambda_ok(value),
        }.get(decl.type, True)
        if not ok:
            problems.append(f"var {name}: value {value!r} is not a valid {decl.type}")
    if "dbrps" in data and template.dbrps:
        problems.append("dbrps given both in the template (dbrp statement) and the vars file")
    return problems


def _lambda_ok(text: str) -> bool:
    try:
        parse_lambda_text(text)
    except (TickSyntaxError, AssertionError):
        return False
    return True


_DUR = {"ns": 1, "u": 1e3, "us": 1e3, "µ": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_DUR |= {"d": 86400e9, "w": 604800e9}


def parse_duration(text: str) -> int | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|u|µ|ms|s|m|h|d|w)", text)
    return int(float(m.group(1)) * _DUR[m.group(2)]) if m else None


def resolved_udf_options(script: Script, values: dict) -> list:
    """The InitRequest options Kapacitor would send for the script's @score() node."""
    options = []
    for node, props in script.nodes():
        if node.op != "@":
            continue
        for p in props:
            opt = pb.Option(name=p.name)
            for a in p.args:
                kind = arg_type(a, script)
                val = a.value
                if a.kind == "var":
                    decl = script.vars[a.value]
                    val = values[a.value]["value"] if a.value in values else decl.default
                v = opt.values.add(type=PB_TYPE[kind])
                if kind == "string":
                    v.stringValue = val
                elif kind == "int":
                    v.intValue = int(val)
                elif kind == "float":
                    v.doubleValue = float(val)
                elif kind == "bool":
                    v.boolValue = bool(val)
                else:
                    v.durationValue = val if isinstance(val, int) else parse_duration(val)
            options.append(opt)
    return options


def parsed_udf_options(script: Script, values: dict):
    """The options of the script's UDF node, parsed by the agent as at init (one UDF per
    template)."""
    (udf,) = script.calls("@")
    return UDF_OPTION_PARSERS[udf.name](resolved_udf_options(script, values))


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conf() -> dict:
    return tomllib.loads(CONF.read_text())


def _templates() -> dict[str, Path]:
    return {p.stem: p for p in sorted((TICK_DIR / "templates").glob("*.tick"))}


def _task_files() -> list[Path]:
    return sorted(p for p in (TICK_DIR / "tasks").iterdir() if p.suffix in (".json", ".tick"))


# -- the shipped scripts ---------------------------------------------------------------------


def test_there_are_scripts_to_check():
    assert set(_templates()) >= {"score_transactions", "fraud_alert", "model_quality"}
    assert len(_task_files()) >= 4


@pytest.mark.parametrize("path", list(_templates().values()), ids=lambda p: p.name)
def test_template_parses_and_matches_contract_and_agent(path, conf):
    script = parse(path.read_text())
    assert check_script(script, udfs=udf_names(conf)) == []


@pytest.mark.parametrize("path", _task_files(), ids=lambda p: p.name)
def test_task_vars_fit_their_template(path, conf):
    if path.suffix == ".tick":
        assert check_script(parse(path.read_text()), udfs=udf_names(conf)) == []
        return
    data = json.loads(path.read_text())
    templates = _templates()
    assert data["template-id"] in templates, f"{path.name}: no template {data['template-id']}"
    template = parse(templates[data["template-id"]].read_text())
    assert check_vars_file(data, template) == []
    # the template as this task resolves it: credit-card names, the task's dbrps
    assert check_script(template, udfs=udf_names(conf), task=data) == []
    # what the agent will receive at init must be accepted by the agent's own parser
    if template.calls("@"):
        opts = parsed_udf_options(template, data["vars"])
        assert opts.model == data["vars"]["model"]["value"]


def test_scoring_tasks_cover_sklearn_and_tfserving():
    backends = {}
    for path in _task_files():
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if data["template-id"] == "score_transactions":
                v = data["vars"]
                backends[v["model"]["value"]] = v.get("backend", {}).get("value", "sklearn")
                if backends[v["model"]["value"]] == "tfserving":
                    assert v["fallback"]["value"], "a TF Serving task needs a local fallback"
    assert backends == {"creditcard": "sklearn", "creditcard_tf": "tfserving"}


def test_alert_template_posts_every_critical_point_through_the_conf_endpoint(conf):
    script = parse((TICK_DIR / "templates" / "fraud_alert.tick").read_text())
    (alert, props), *_ = [(n, p) for n, p in script.nodes() if n.name == "alert"]
    names = [p.name for p in props]
    assert "stateChangesOnly" not in names  # every anomalous point alerts
    assert {"id", "message", "details", "crit", "post", "endpoint", "timeout", "log"} <= set(names)
    assert "noRecoveries" in names
    # no URL and no header in the script: the named [[httppost]] endpoint carries both
    post = next(p for p in props if p.name == "post")
    assert post.args == [] and "header" not in names
    (endpoint,) = next(p for p in props if p.name == "endpoint").args
    assert endpoint.kind == "var" and script.vars[endpoint.value].type == "string"
    assert script.vars[endpoint.value].default == "alert-sink"
    assert script.vars[endpoint.value].default in {e["endpoint"] for e in conf["httppost"]}
    (timeout,) = next(p for p in props if p.name == "timeout").args
    assert script.vars[timeout.value].type == "duration"
    text = " ".join(
        str(resolve(a, script, {}))
        for p in props
        for a in p.args
        if p.name in ("message", "details")
    )
    for name in ("txn_id", "score", "threshold", "Amount", "model"):
        assert f'"{name}"' in text


def test_score_template_uses_the_cards_threshold_unless_a_task_sets_one():
    from udf_agent.options import CARD_THRESHOLD

    script = parse((TICK_DIR / "templates" / "score_transactions.tick").read_text())
    decl = script.vars["threshold"]
    assert decl.type == "float" and not decl.required and decl.default == CARD_THRESHOLD
    for path, data in _vars_files("score_transactions"):
        opts = parse_init_options(resolved_udf_options(script, data["vars"]))
        if "threshold" in data["vars"]:
            assert "on purpose" in data["vars"]["threshold"].get("description", ""), path.name
        else:
            assert opts.threshold is None, path.name  # the card's


def test_drift_template_judges_windows_of_the_input_and_alerts_through_the_conf_endpoint(conf):
    script = parse((TICK_DIR / "templates" / "model_drift.tick").read_text())
    nodes = dict((n.name, (n, {p.name: p for p in props})) for n, props in script.nodes())
    query, qprops = nodes["query"]
    assert resolve(query.args[0], script, {}) == (
        f'SELECT * FROM "{contract.DATABASE}"."{contract.RETENTION_POLICY}".'
        f'"{contract.INPUT_MEASUREMENT}"'
    )
    # the work item's window: 10 minutes, judged every minute, both vars
    for prop, default in (("period", "10m"), ("every", "1m")):
        (arg,) = qprops[prop].args
        assert arg.kind == "var" and script.vars[arg.value].default == default
    # windows end on the minute: replicas of the task write the same points, post the same
    # alerts (Kapacitor stamps a batch with its query's stop time)
    assert "align" in qprops
    # the UDF wants a batch and emits one point per batch: a stream edge on from there,
    # which Kapacitor's alert, where, default and influxDBOut nodes all take
    (udf,) = script.calls("@")
    assert udf.name == "drift" and "drift" in udf_names(conf)
    _, uprops = nodes["drift"]
    assert {"model", "version", "warn", "crit", "minCount"} <= set(uprops)
    levels = {p: script.vars[uprops[p].args[0].value].default for p in ("warn", "crit")}
    assert levels == {"warn": 0.1, "crit": 0.25}
    _, dprops = nodes["default"]
    assert [a.value for a in dprops["tag"].args][0] == contract.DATA_SET_TAG
    _, oprops = nodes["influxDBOut"]
    assert oprops["measurement"].args[0].value == contract.DRIFT_MEASUREMENT
    where, _ = nodes["where"]
    assert where.args[0].refs == ["drift_level"] and "insufficient" in where.args[0].value
    _, aprops = nodes["alert"]
    assert {"id", "message", "details", "warn", "crit", "stateChangesOnly", "post"} <= set(aprops)
    assert "noRecoveries" not in aprops  # the end of a drift is news too
    assert aprops["warn"].args[0].value == "\"drift_level\" == 'warning'"
    assert aprops["crit"].args[0].value == "\"drift_level\" == 'critical'"
    (endpoint,) = aprops["endpoint"].args
    assert script.vars[endpoint.value].default in {e["endpoint"] for e in conf["httppost"]}
    alert_id = resolve(aprops["id"].args[0], script, {})
    assert alert_id == 'drift:{{ index .Tags "model" }}'
    message = resolve(aprops["message"].args[0], script, {})
    for name in ("drift_feature", "psi_max", "psi_score", "count"):
        assert f'"{name}"' in message


def test_model_quality_writes_documented_fields():
    script = parse((TICK_DIR / "templates" / "model_quality.tick").read_text())
    final_eval = [p for n, props in script.nodes() if n.name == "eval" for p in props][-1]
    fields = [a.value for a in final_eval.args]
    assert fields == ["precision", "recall", "alert_rate", "tp", "fp", "fn", "flagged", "total"]
    out = [p for n, props in script.nodes() if n.name == "influxDBOut" for p in props]
    assert any(p.name == "measurement" and p.args[0].value == "model_quality" for p in out)
    assert contract.MODEL_QUALITY_MEASUREMENT == "model_quality"
    # every division is guarded against a zero denominator
    divisions = [a.value for n, _ in script.nodes() if n.name == "eval" for a in n.args]
    assert all("max (" in d for d in divisions if "/" in d)


# -- kapacitor.conf ----------------------------------------------------------------------------


def test_kapacitor_conf_udfs_match_the_agent_sockets(conf):
    funcs = conf["udf"]["functions"]
    assert {name: f["socket"] for name, f in funcs.items()} == UDF_SOCKETS
    assert all(f["timeout"] == "10s" for f in funcs.values())


def test_every_udf_used_in_scripts_is_configured(conf):
    used = {c.name for p in _templates().values() for c in parse(p.read_text()).calls("@")}
    assert used and used <= udf_names(conf)


def test_kapacitor_conf_loads_tasks_and_reaches_influxdb(conf):
    assert conf["load"] == {"enabled": True, "dir": "/etc/kapacitor/load"}
    (influx,) = conf["influxdb"]
    assert influx["urls"] == ["http://influxdb:8086"] and not influx["disable-subscriptions"]
    (post,) = conf["httppost"]
    assert post["url"] == "http://alert-sink:9000/kapacitor"


SECRET_NAME = re.compile(r"token|passw|secret|auth|bearer|credential|api_?key", re.I)
SECRET_VALUE = re.compile(r"bearer|basic |@[A-Z_]+@|://[^/@\s]+:[^/@\s]+@", re.I)


def _vars_files(template: str | None = None) -> list[tuple[Path, dict]]:
    out = []
    for path in _task_files():
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if template is None or data["template-id"] == template:
                out.append((path, data))
    return out


def test_no_secret_in_any_template_or_task():
    """What Kapacitor's task API (and `kapacitor show`) prints holds no credential."""
    for path, data in _vars_files():
        for name, var in data["vars"].items():
            assert not SECRET_NAME.search(name), f"{path.name}: var {name} looks like a secret"
            assert not SECRET_VALUE.search(str(var["value"])), f"{path.name}: {name}={var}"
    for path in _templates().values():
        script = parse(path.read_text())
        for name, decl in script.vars.items():
            assert not SECRET_NAME.search(name), f"{path.name}: var {name} looks like a secret"
            assert not SECRET_VALUE.search(str(decl.default or "")), f"{path.name}: {name}"
        assert not SECRET_VALUE.search(path.read_text()), path.name


def test_the_checks_catch_a_secret():
    assert SECRET_NAME.search("alert_authorization") and SECRET_NAME.search("sink_token")
    assert SECRET_VALUE.search("Bearer @ALERT_SINK_TOKEN@")
    assert SECRET_VALUE.search("http://user:pw@alert-sink:9000/kapacitor")
    assert not SECRET_VALUE.search("http://alert-sink:9000/kapacitor")


def test_kapacitor_conf_holds_no_credential_and_declares_what_the_environment_fills(conf):
    (post,) = conf["httppost"]
    assert post["endpoint"] == "alert-sink"
    # basic auth (redacted by Kapacitor's config API), password only from the environment:
    # KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD needs the key declared here to apply
    assert post["basic-auth"] == {"username": "kapacitor", "password": ""}
    assert "headers" not in post
    (influx,) = conf["influxdb"]
    assert influx["username"] == "" and influx["password"] == ""
    assert "KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD" in ENTRYPOINT.read_text()


# -- task sets: every scoring task has its alert and live-quality task -----------------------


def _models_of(template: str) -> dict[str, str]:
    return {data["vars"]["model"]["value"]: path.name for path, data in _vars_files(template)}


def test_every_scored_model_has_its_alert_quality_and_drift_task():
    scored = _models_of("score_transactions")
    alerted = _models_of("fraud_alert")
    evaluated = _models_of("model_quality")
    watched = _models_of("model_drift")
    assert scored, "no scoring task"
    assert set(scored) == set(alerted) == set(evaluated) == set(watched)
    for model in scored:
        assert scored[model] == f"score_{model}.json"
        assert alerted[model] == f"fraud_alert_{model}.json"
        assert evaluated[model] == f"model_quality_{model}.json"
        assert watched[model] == f"drift_{model}.json"


def test_every_scoring_task_shadow_scores_the_challenger():
    for path, data in _vars_files("score_transactions"):
        assert data["vars"]["challenger"]["value"] == "challenger", path.name


def test_task_files_are_what_the_generator_writes(tmp_path):
    gen = _gen_tasks()
    assert gen.main(["--check"]) == 0
    # the check can fail: a hand edit, and a task file the generator does not know
    gen.main(["--out-dir", str(tmp_path)])
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 0
    edited = tmp_path / "score_creditcard.json"
    edited.write_text(edited.read_text().replace('"production"', '"3"'))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1
    gen.main(["--out-dir", str(tmp_path)])
    (tmp_path / "score_other.json").write_text("{}")
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_the_generator_gives_each_deployment_four_tasks():
    gen = _gen_tasks()
    extra = gen.Deployment(model="other", description="x", challenger=None, threshold=0.3)
    files = gen.task_files((*gen.DEPLOYMENTS, extra))
    assert {n for n in files if n.endswith("_other.json")} == {
        "score_other.json",
        "fraud_alert_other.json",
        "model_quality_other.json",
        "drift_other.json",
    }
    score = files["score_other.json"]["vars"]
    assert score["threshold"]["value"] == 0.3 and "challenger" not in score
    quiet = gen.Deployment(model="quiet", description="x", drift=False, explain=0)
    files = gen.task_files((quiet,))
    assert "drift_quiet.json" not in files and len(files) == 3
    assert files["score_quiet.json"]["vars"]["explain"]["value"] == 0
    with pytest.raises(ValueError, match="deployed twice"):
        gen.task_files((extra, extra))


def _gen_tasks():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "gen_tasks", ROOT / "compose" / "scripts" / "gen_tasks.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_tasks"] = module
    spec.loader.exec_module(module)
    return module


# -- the checker itself can fail ---------------------------------------------------------------

GOOD = """
var model string
var threshold = 0.5
dbrp "fraud"."autogen"
stream
    |from()
        .measurement('transactions')
    @score()
        .model(model)
        .threshold(threshold)
        .maxDelay(5ms)
    |influxDBOut()
        .database('fraud')
        .retentionPolicy('autogen')
        .measurement('transactions_scored')
"""


def test_checker_accepts_the_reference_script():
    assert check_script(parse(GOOD), udfs={"score"}) == []


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (".threshold(threshold)", ".threshold(1)", ".threshold() takes (float), got (int)"),
        (".maxDelay(5ms)", ".maxDelay(5)", ".maxDelay() takes (duration), got (int)"),
        (".model(model)", ".model(model, 'x')", ".model() takes (string), got (string, string)"),
        (".maxDelay(5ms)", ".maxDelay(5ms)\n        .shadow(TRUE)", "no option .shadow()"),
        ("@score()", "@scorer()", "@scorer() is not a UDF in kapacitor.conf"),
        ("'transactions')", "'transaction')", "unknown measurement 'transaction'"),
        ("'transactions_scored'", "'scored'", "writes an unknown measurement"),
        ('"fraud"."autogen"', '"telegraf"."autogen"', "dbrp"),
        (
            "@score()",
            '|where(lambda: "amount" > 10)\n    @score()',
            'unknown "amount"',
        ),
    ],
)
def test_checker_reports_mistakes(old, new, expected):
    src = GOOD.replace(old, new)
    assert src != GOOD
    problems = check_script(parse(src), udfs={"score"})
    assert any(expected in p for p in problems), problems


DRIFT_GOOD = """
var model string
var q = 'SELECT * FROM "fraud"."autogen"."transactions"'
dbrp "fraud"."autogen"
var w = batch
    |query(q)
        .period(10m)
        .every(1m)
    @drift()
        .model(model)
        .warn(0.1)
    |default()
        .tag('data_set', 'creditcard')
w
    |influxDBOut()
        .database('fraud')
        .retentionPolicy('autogen')
        .measurement('model_drift')
w
    |alert()
        .crit(lambda: "drift_level" == 'critical')
        .message('{{ index .Fields "drift_feature" }} {{ index .Tags "data_set" }}')
"""


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('"transactions"\'', '"transactions_scored"\'', "not the data set's input"),
        ('"transactions"\'', '"transaction"\'', "unknown measurement 'transaction'"),
        ('"autogen"."transactions"', '"other"."transactions"', "not the dbrps"),
        ("SELECT *", "SELECT V1", "is not SELECT * FROM"),
        (".every(1m)", ".every(1m)\n        .groupBy('source')", "the whole input"),
        (".every(1m)", "", "needs .every(duration)"),
        (".warn(0.1)", ".warn(1)", ".warn() takes (float), got (int)"),
        (".warn(0.1)", ".threshold(0.5)", "@drift() has no option .threshold()"),
        ('"drift_level" ==', '"score" ==', 'unknown "score"'),
        ('"drift_feature"', '"V14"', "unknown Fields V14"),
        (".tag('data_set', 'creditcard')", ".tag('set', 'creditcard')", "unknown Tags data_set"),
        ("'model_drift'", "'drift'", "writes an unknown measurement"),
    ],
)
def test_checker_reports_mistakes_in_a_drift_task(old, new, expected):
    assert check_script(parse(DRIFT_GOOD), udfs={"drift"}) == []
    src = DRIFT_GOOD.replace(old, new)
    assert src != DRIFT_GOOD
    problems = check_script(parse(src), udfs={"drift"})
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "src, expected",
    [
        ('stream\n |from().measurement("transactions")', "string literals take single quotes"),
        ("stream\n |from().measurement(m)", "'m' is not declared"),
        ("stream\n |from(.measurement('x')", "unexpected argument"),
        ("var x 5", "expected a type or '='"),
        ('stream\n |eval(lambda: "a" + nope)', "undeclared 'nope'"),
    ],
)
def test_parser_rejects_bad_syntax(src, expected):
    with pytest.raises(TickSyntaxError, match=re.escape(expected)):
        parse(src)


def test_vars_file_checker_reports_mismatches():
    template = parse(GOOD)
    assert check_vars_file({"vars": {"model": {"type": "string", "value": "m"}}}, template) == []
    problems = check_vars_file(
        {
            "dbrps": [{"db": "fraud", "rp": "autogen"}],
            "vars": {
                "threshold": {"type": "int", "value": 1},
                "extra": {"type": "string", "value": "x"},
            },
        },
        template,
    )
    text = "\n".join(problems)
    assert "var model (string) has no default" in text
    assert "var threshold: type 'int', template says 'float'" in text
    assert "var extra is not a var of the template" in text
    assert "dbrps given both" in text


# -- entrypoint: token from the environment, socket wait, Kapacitor's own user --------------


def _entry_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "KAPACITOR_CONF": str(CONF),
        "KAPACITOR_DATA_DIR": str(data),
        "KAPACITOR_USER": "nobody",
        "UDF_SOCKETS": "",
        "UDF_WAIT_SECONDS": "1",
    }
    env.update(extra)
    return env


def _run_entry(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *cmd], env=env, capture_output=True, text=True, timeout=30
    )


SHOW = 'echo "uid=$(id -u) groups=$(id -G) pw=$KAPACITOR_HTTPPOST_0_BASIC_AUTH_PASSWORD token=${ALERT_SINK_TOKEN:-}"'


def test_entrypoint_passes_the_token_as_kapacitors_basic_auth_override(tmp_path):
    token = "Zm9vYmFy-_.~+/="
    r = _run_entry(_entry_env(tmp_path, ALERT_SINK_TOKEN=token), "sh", "-c", SHOW)
    assert r.returncode == 0, r.stderr
    assert f"pw={token} " in r.stdout
    assert r.stdout.rstrip().endswith("token=")  # the variable it came in is not passed on
    # nothing is rendered to disk: the configuration is used as it is
    assert list((tmp_path / "data").iterdir()) == []


def test_entrypoint_reads_token_file(tmp_path):
    (tmp_path / "token").write_text("abc123\n")
    env = _entry_env(tmp_path, ALERT_SINK_TOKEN_FILE=str(tmp_path / "token"))
    r = _run_entry(env, "sh", "-c", SHOW)
    assert r.returncode == 0, r.stderr
    assert "pw=abc123 " in r.stdout


def test_entrypoint_runs_kapacitor_as_its_user_with_the_socket_group(tmp_path, request):
    if os.geteuid() != 0:
        # not root: the command runs as the current user, as the image's entrypoint does
        r = _run_entry(_entry_env(tmp_path, ALERT_SINK_TOKEN="t"), "sh", "-c", SHOW)
        assert r.returncode == 0 and f"uid={os.geteuid()} " in r.stdout
        return
    import pwd

    nobody = pwd.getpwnam("nobody")
    # pytest's tmp_path is private to root; the socket must be reachable by "nobody"
    base = Path(tempfile.mkdtemp(prefix="kapacitor-entry-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    sock_dir = base / "sockets"
    sock_dir.mkdir()
    os.chown(sock_dir, 0, 10001)
    os.chmod(sock_dir, 0o2770)
    env = _entry_env(tmp_path, ALERT_SINK_TOKEN="t", UDF_SOCKETS=str(sock_dir / "udf.sock"))
    (tmp_path / "data" / "kapacitor.rendered.conf").write_text("old, with a token")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(sock_dir / "udf.sock"))  # group 10001 from the setgid directory
        srv.listen(1)
        os.chmod(sock_dir / "udf.sock", 0o660)
        env = _entry_env(tmp_path, ALERT_SINK_TOKEN="t", UDF_SOCKETS=str(sock_dir / "udf.sock"))
        probe = SHOW + f'; test -w "{sock_dir / "udf.sock"}" && echo socket-writable'
        r = _run_entry(env, "sh", "-c", probe)
    assert r.returncode == 0, r.stderr
    assert f"uid={nobody.pw_uid} groups={nobody.pw_gid} 10001" in r.stdout
    assert "socket-writable" in r.stdout
    # the data directory now belongs to Kapacitor's user; the old rendered file is gone
    assert (tmp_path / "data").stat().st_uid == nobody.pw_uid
    assert not (tmp_path / "data" / "kapacitor.rendered.conf").exists()
    # an explicit group that is not the socket's is used, with a warning
    env["UDF_SOCKET_GID"] = "10002"
    env["UDF_SOCKETS"] = ""
    r = _run_entry(env, "sh", "-c", SHOW)
    assert f"groups={nobody.pw_gid} 10002" in r.stdout


def test_entrypoint_removes_a_rendered_configuration_left_by_an_older_one(tmp_path, request):
    # on Kubernetes it is started as a non-root user: the token must not stay on the volume
    data = tmp_path / "data"
    data.mkdir()
    (data / "kapacitor.rendered.conf").write_text("old, with a token")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        base = Path(tempfile.mkdtemp(prefix="kapacitor-entry-"))
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
        base.chmod(0o755)
        data = Path(shutil.copytree(data, base / "data"))
        for path in (data, data / "kapacitor.rendered.conf"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}"]
        prefix.append("--clear-groups")
    env = _entry_env(tmp_path, ALERT_SINK_TOKEN="t", KAPACITOR_DATA_DIR=str(data))
    r = subprocess.run(
        [*prefix, "sh", str(ENTRYPOINT), "sh", "-c", "id -u"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() != "0", "started as a non-root user"
    assert not (data / "kapacitor.rendered.conf").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({}, "no alert-sink token"),
        ({"ALERT_SINK_TOKEN": "bad|token"}, "may only contain"),
        ({"ALERT_SINK_TOKEN": "ok", "UDF_SOCKETS": "/nonexistent/udf.sock"}, "UDF socket"),
        ({"ALERT_SINK_TOKEN": "ok", "KAPACITOR_CONF": "/nonexistent.conf"}, "not found"),
        ({"ALERT_SINK_TOKEN_FILE": "/nonexistent/token"}, "not readable"),
    ],
)
@pytest.mark.slow
def test_entrypoint_refuses_clearly(tmp_path, extra, message):
    r = _run_entry(_entry_env(tmp_path, **extra), "true")
    assert r.returncode == 64
    assert message in r.stderr


# -- the shipped scoring task through the real agent -----------------------------------------


def test_the_shipped_task_scores_with_the_cards_threshold_and_picks_up_a_challenger(tmp_path):
    """The options Kapacitor sends for score_creditcard (template defaults + vars file), on
    the agent's real socket: the scored points carry the card's tuned threshold, not 0.5,
    and shadow scoring starts once the challenger alias is promoted."""
    import numpy as np
    from agent_helpers import Client, close_clients, register_tiny, req, row_point

    from models.registry import Registry
    from udf_agent.server import AgentConfig, AgentServer

    data = json.loads((TICK_DIR / "tasks" / "score_creditcard.json").read_text())
    template = parse((TICK_DIR / "templates" / "score_transactions.tick").read_text())
    registry = Registry(tmp_path / "registry")
    card, model = register_tiny(registry, data["vars"]["model"]["value"], threshold=0.224)
    server = AgentServer(
        AgentConfig(socket_path=tmp_path / "udf.sock", registry=registry.root, reload_interval=0.0),
        registry=registry,
    ).start()
    try:
        init = pb.Request()
        init.init.taskID, init.init.nodeID = "score_creditcard", "score2"
        init.init.options.extend(resolved_udf_options(template, data["vars"]))
        c = Client(server.config.socket_path)
        c.send(encode_frame(init.SerializeToString()))
        assert c.recv_kind("init").init.success
        X = np.random.default_rng(3).normal(size=(40, len(contract.FEATURES)))
        X[:, 1:3] += 1.5  # some points above 0.224 and below 0.5
        for i, row in enumerate(X[:20]):
            c.send(req(point=row_point(row, t=i + 1, txn=f"t{i}")))
        got = c.recv_points(20)
        scores = model.predict_proba(X[:20])[:, 1]
        assert any(0.224 <= s < 0.5 for s in scores), "the check needs scores between the two"
        for p, s in zip(got, scores):
            assert p.fieldsDouble["threshold"] == card.threshold == 0.224
            assert p.fieldsBool["is_anomaly"] == (s >= 0.224)
            assert "score_challenger" not in p.fieldsDouble
        card2, model2 = register_tiny(registry, card.name, seed=9, alias=None, threshold=0.6)
        registry.promote(card.name, card2.version, "challenger")
        for i, row in enumerate(X[20:]):
            c.send(req(point=row_point(row, t=100 + i, txn=f"u{i}")))
        got = c.recv_points(20)
        np.testing.assert_allclose(
            [p.fieldsDouble["score_challenger"] for p in got],
            model2.predict_proba(X[20:])[:, 1],
            rtol=1e-12,
        )
        assert {p.fieldsDouble["threshold_challenger"] for p in got} == {0.6}
        assert {p.fieldsDouble["threshold"] for p in got} == {0.224}
    finally:
        close_clients()
        server.stop()


# -- task files of any data set (profiles) ---------------------------------------------------

AWKWARD_PROFILE = """
name = "awkward"
[influxdb]
database = "plant db, north"
retention_policy = "one week"
measurement = "machine readings,v=1"
scored_measurement = "machine readings scored"
[columns]
id = "Row ID"
label = "Machine failure"
label_field = "failure flag"
tags = ["Plant site"]
[[features]]
name = "Air temperature [K]"
type = "float"
[[features]]
name = "Type = kind"
type = "categorical"
levels = ["H", "L"]
[[features]]
name = "O'Neil's index (a=b)"
type = "int"
[alerts]
index = "awkward-alerts"
message_fields = ["Row ID", "Type = kind", "Plant site", "failure flag"]
"""


def _profiles() -> dict[str, Profile]:
    from models.profile import load_profile_text

    shipped = {name: load_profile(name) for name in profile_names()}
    return {**shipped, "awkward": load_profile_text(AWKWARD_PROFILE)}


def _load_dir(tmp_path: Path, profile: Profile, **kw) -> Path:
    from models.profile_tasks import Deployment, write_load_dir

    d = Deployment(model=f"m_{profile.name}", description="x", profile=profile, **kw)
    write_load_dir(tmp_path, [d])
    return tmp_path


def test_the_templates_default_to_the_creditcard_names():
    """The credit-card task files set no data-set var: the defaults must be its names."""
    from models.profile_tasks import profile_vars

    for template, wanted in profile_vars(CREDITCARD).items():
        script = parse((TICK_DIR / "templates" / f"{template}.tick").read_text())
        assert not script.dbrps, f"{template}: a dbrp statement would fix the database"
        for name, (kind, value) in wanted.items():
            decl = script.vars[name]
            assert decl.type == kind, (template, name)
            if kind == "lambda":
                assert decl.default.value == parse_lambda_text(value).value, (template, name)
            else:
                assert decl.default == value, (template, name)


@pytest.mark.parametrize("name", list(_profiles()))
def test_generated_task_files_pass_every_check(name, tmp_path, conf):
    profile = _profiles()[name]
    out = _load_dir(tmp_path, profile)
    model = f"m_{profile.name}"
    files = sorted(p.name for p in (out / "tasks").iterdir())
    assert files == sorted(
        [
            f"score_{model}.json",
            f"fraud_alert_{model}.json",
            f"model_quality_{model}.json",
            f"drift_{model}.json",
        ]
    )
    for template in (out / "templates").iterdir():
        assert template.read_bytes() == (TICK_DIR / "templates" / template.name).read_bytes()
    for path in (out / "tasks").iterdir():
        data = json.loads(path.read_text())
        assert data["dbrps"] == [{"db": profile.database, "rp": profile.retention_policy}]
        template = parse((out / "templates" / f"{data['template-id']}.tick").read_text())
        assert check_vars_file(data, template) == [], path.name
        problems = check_script(template, udfs=udf_names(conf), task=data, profile=profile)
        assert problems == [], (path.name, problems)
        if data["template-id"] == "score_transactions":
            opts = parsed_udf_options(template, data["vars"])
            assert opts.model == model and opts.threshold is None and opts.explain == 3
        if data["template-id"] == "model_drift":
            opts = parsed_udf_options(template, data["vars"])
            assert (opts.model, opts.warn, opts.crit) == (model, 0.1, 0.25)
            data_set = resolve(
                next(a for p in template.calls(".", "tag") for a in p.args[1:]), template,
                data["vars"],
            )  # fmt: skip
            assert data_set == profile.name  # the alert sink routes drift alerts by it
        if data["template-id"] == "fraud_alert":
            message = resolve(
                next(a for p in template.calls(".", "message") for a in p.args), template,
                data["vars"],
            )  # fmt: skip
            for field_name in profile.message_fields:
                assert f'"{field_name}" }}}}' in message, (field_name, message)


def test_the_checks_catch_a_wrong_name_in_a_profile_task(tmp_path, conf):
    profile = _profiles()["machine_failure"]
    out = _load_dir(tmp_path, profile)
    template = {
        t: parse((out / "templates" / f"{t}.tick").read_text())
        for t in ("score_transactions", "fraud_alert", "model_quality", "model_drift")
    }
    model = "m_machine_failure"

    def problems(kind: str, edit) -> list[str]:
        data = json.loads((out / "tasks" / f"{kind}_{model}.json").read_text())
        edit(data)
        tid = data["template-id"]
        return check_script(template[tid], udfs=udf_names(conf), task=data, profile=profile)

    def var(name, value):
        return lambda d: d["vars"][name].update(value=value)

    cases = [
        ("model_quality", var("positive", '"Machine failure" == 1'), 'unknown "Machine failure"'),
        ("fraud_alert", var("message", '{{ index .Fields "Torque" }}'), "unknown Fields Torque"),
        ("fraud_alert", var("alert_id", '{{ index .Fields "UDI" }}'), "cannot use .Fields"),
        ("score", var("measurement", "transactions"), "unknown measurement 'transactions'"),
        ("score", lambda d: d.update(dbrps=[{"db": "fraud", "rp": "autogen"}]), "dbrp"),
        ("score", lambda d: d.pop("dbrps"), "no dbrp"),
        ("model_quality", var("database", "fraud"), "must write database 'maintenance'"),
        (
            "drift",
            var("input_query", 'SELECT * FROM "maintenance"."autogen"."transactions"'),
            "unknown measurement 'transactions'",
        ),
        (
            "drift",
            var("input_query", 'SELECT * FROM "fraud"."autogen"."machine_readings"'),
            "not the dbrps",
        ),
        (
            "drift",
            lambda d: d["vars"].update(
                message={"type": "string", "value": '{{ index .Fields "psi_Torque" }}'}
            ),
            "unknown Fields psi_Torque",
        ),
        ("drift", var("database", "fraud"), "must write database 'maintenance'"),
    ]
    for kind, edit, expected in cases:
        found = problems(kind, edit)
        assert any(expected in p for p in found), (expected, found)


def test_a_data_set_without_a_label_gets_no_quality_task(tmp_path):
    from dataclasses import replace

    profile = replace(_profiles()["machine_failure"], label=None, message_fields=("UDI",))
    out = _load_dir(tmp_path, profile)
    assert sorted(p.name for p in (out / "tasks").iterdir()) == [
        "drift_m_machine_failure.json",
        "fraud_alert_m_machine_failure.json",
        "score_m_machine_failure.json",
    ]


@pytest.mark.slow
def test_models_profile_tasks_writes_a_load_directory(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "models", "profile", "tasks", "machine_failure", "-o",
         str(tmp_path), "--model", "mf", "--threshold", "0.3", "--no-challenger",
         "--drift-period", "5m", "--drift-crit", "0.3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    score = json.loads((tmp_path / "tasks" / "score_mf.json").read_text())
    assert score["vars"]["threshold"]["value"] == 0.3 and "challenger" not in score["vars"]
    assert score["vars"]["measurement"]["value"] == "machine_readings"
    assert (tmp_path / "templates" / "score_transactions.tick").is_file()
    drift = json.loads((tmp_path / "tasks" / "drift_mf.json").read_text())["vars"]
    assert drift["model"]["value"] == "mf" and drift["data_set"]["value"] == "machine_failure"
    assert drift["period"]["value"] == "5m" and drift["crit"]["value"] == 0.3
    assert (
        drift["input_query"]["value"] == 'SELECT * FROM "maintenance"."autogen"."machine_readings"'
    )
    assert (tmp_path / "templates" / "model_drift.tick").is_file()
    out = tmp_path / "quiet"
    r = subprocess.run(
        [sys.executable, "-m", "models", "profile", "tasks", "machine_failure", "-o", str(out),
         "--no-drift", "--explain", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not (out / "tasks" / "drift_machine_failure.json").exists()
    score = json.loads((out / "tasks" / "score_machine_failure.json").read_text())
    assert score["vars"]["explain"]["value"] == 5
    for bad in (["--drift-warn", "0.3", "--drift-crit", "0.2"], ["--drift-period", "10"],
                ["--explain", "11"]):  # fmt: skip
        r = subprocess.run(
            [sys.executable, "-m", "models", "profile", "tasks", "machine_failure", "-o",
             str(out), *bad],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 2 and bad[0] in r.stderr, (bad, r.stderr)
    r = subprocess.run(
        [sys.executable, "-m", "models", "profile", "tasks", "nope", "-o", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "no profile 'nope'" in r.stderr
