"""What Kapacitor's alert node posts for a point, built the way the node builds it: the
.id(), .message() and .details() Go templates of a task rendered over the point, the level
from the task's .warn()/.crit() lambdas, and the JSON body of the recorded Kapacitor 1.5
posts (``/work/shared/fixtures/kapacitor-alert-post``) with the point as its one row.

The Go template subset is the one the project's templates use (Go's text/template):
``{{ index .Fields "x" }}``, ``{{ index .Tags "x" }}``, ``{{ .Level }}``, ``{{ .ID }}``,
``{{ . }}``, ``{{ with PIPELINE }}...{{ end }}`` and ``{{ printf "FORMAT" ARG }}`` with ARG
``.`` or ``(index .Fields "x")``. Values print as Go's ``%v`` does; a missing map key
prints ``<no value>``, and ``with`` skips nil, empty strings, zero and false, as in Go.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from es_peer import alert_bodies

__all__ = ["alert_body", "go_value", "render"]

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_STRING = r'"((?:[^"\\]|\\.)*)"'
_INDEX = re.compile(r"^index \.(Fields|Tags) " + _STRING + r"$")
_PRINTF = re.compile(r"^printf " + _STRING + r" (.+)$")
_MISSING = object()


def go_value(value: Any) -> str:
    """``fmt.Sprint(value)``: floats in the shortest form, with an exponent below 1e-4 or
    from 1e21 on."""
    if value is _MISSING or value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        d = Decimal(repr(value))
        exp = d.adjusted()
        if -4 <= exp < 21:
            text = format(d, "f")
            return text.rstrip("0").rstrip(".") if "." in text else text
        digits = format(d.normalize(), "e")  # 1.5e+21 -> Go: 1.5e+21
        mantissa, e = digits.split("e")
        sign, num = e[0], e[1:].lstrip("0")
        return f"{mantissa}e{sign}{num.rjust(2, '0')}"
    return str(value)


def _unquote(text: str) -> str:
    return json.loads(f'"{text}"')


def _eval(expr: str, data: dict, dot: Any) -> Any:
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")"):
        return _eval(expr[1:-1], data, dot)
    if expr == ".":
        return dot
    m = _INDEX.match(expr)
    if m:
        return data[m.group(1)].get(_unquote(m.group(2)), _MISSING)
    m = _PRINTF.match(expr)
    if m:
        arg = _eval(m.group(2), data, dot)
        if arg is _MISSING:
            return "%!f(<nil>)"
        return _unquote(m.group(1)) % arg
    if re.fullmatch(r"\.[A-Z]\w*", expr):
        return data[expr[1:]]
    raise ValueError(f"the test renderer does not know {{{{ {expr} }}}}")


def _truthy(value: Any) -> bool:
    return value is not _MISSING and value is not None and bool(value)


def render(template: str, data: dict) -> str:
    """Render ``template`` with ``data`` (Fields, Tags, Level, ID, ...)."""
    out: list[str] = []
    # a stack of (emitting, dot) for nested {{ with }}
    stack: list[tuple[bool, Any]] = [(True, data)]
    pos = 0
    for m in _ACTION.finditer(template):
        emitting, dot = stack[-1]
        if emitting:
            out.append(template[pos : m.start()])
        pos = m.end()
        action = m.group(1).strip()
        if action.startswith("with "):
            value = _eval(action[5:], data, dot) if emitting else None
            stack.append((emitting and _truthy(value), value))
        elif action == "end":
            if len(stack) == 1:
                raise ValueError("{{ end }} without {{ with }}")
            stack.pop()
        elif emitting:
            out.append(go_value(_eval(action, data, dot)))
    if len(stack) != 1:
        raise ValueError("unclosed {{ with }}")
    out.append(template[pos:])
    return "".join(out)


def alert_body(
    *,
    name: str,
    time_rfc3339: str,
    tags: dict[str, str],
    fields: dict[str, Any],
    id_template: str,
    message_template: str,
    details_template: str,
    level: str,
    previous_level: str = "OK",
    task: str = "",
    duration_ns: int = 0,
    recoverable: bool = True,
) -> bytes:
    """The JSON body Kapacitor's ``.post()`` sends for one point, shaped as the recorded
    ones: ``id``, ``message``, ``details``, ``time``, ``duration``, ``level``, ``data``
    (one series: its name and tags, ``time`` then the fields in byte order), ``previousLevel``,
    ``recoverable``."""
    recorded = json.loads(next(iter(alert_bodies().values())))
    id_data = {"Name": name, "TaskName": task, "Group": "nil", "Tags": tags}
    alert_id = render(id_template, id_data)
    info = {**id_data, "ID": alert_id, "Fields": fields, "Level": level, "Time": time_rfc3339}
    message = render(message_template, info)
    details = render(details_template, {**info, "Message": message})
    columns = ["time", *sorted(fields)]
    body = dict.fromkeys(recorded)  # the recorded key order
    body.update(
        id=alert_id,
        message=message,
        details=details,
        time=time_rfc3339,
        duration=duration_ns,
        level=level,
        data={
            "series": [
                {
                    "name": name,
                    "tags": dict(tags),
                    "columns": columns,
                    "values": [[time_rfc3339, *(_json_number(fields[c]) for c in columns[1:])]],
                }
            ]
        },
        previousLevel=previous_level,
        recoverable=recoverable,  # false with .noRecoveries()
    )
    return json.dumps(body, separators=(",", ":")).encode()


def _json_number(value: Any) -> Any:
    """Go's JSON encoder writes a whole float64 without a fraction (``11``, not ``11.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value
