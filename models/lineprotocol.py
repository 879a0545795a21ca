r"""InfluxDB 1.x line protocol: names and values escaped the way ``influxd`` 1.x reads them.

The rules (InfluxDB 1.x line protocol reference, "Special characters", checked against a
real ``influxd`` in tests/test_publisher_profile.py):

- measurement and field keys: ``,``, ``=``, space and ``"`` are escaped with a backslash
  (``influxd`` reads each of those escapes back as the character);
- tag keys and tag values: ``,``, ``=`` and space are escaped; a double quote is written
  as it is (``influxd`` keeps a ``\"`` in a tag as two characters);
- string field values sit in double quotes; ``"`` and ``\`` inside are escaped.

A backslash inside a name is *not* an escape character for ``influxd`` 1.x (``a\b`` is
stored as it is), so it is written as it is. Before one of the escaped characters, or at
the end of a name, it cannot be written unambiguously (``influxd`` reads ``a\\,b`` as
the field key ``a\\`` followed by a separator, and ``a\`` swallows the ``=`` after it):
such names, and any name or string holding a newline or another control character (line
protocol cannot carry them), are refused with :class:`LineProtocolError` instead of being
written wrong.

Every writer of points shares this module: the publisher, the file-drop watcher
(``models watch``) and the ``model_events`` of ``models retrain``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "LineProtocolError",
    "escape_field_key",
    "escape_measurement",
    "escape_string",
    "escape_tag",
    "format_bool",
    "format_float",
    "format_int",
    "line",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_AMBIGUOUS = re.compile(r'\\[, ="]')


class LineProtocolError(ValueError):
    """A name or value that InfluxDB 1.x line protocol cannot carry."""


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise LineProtocolError(f"{what} must be a string, got {type(text).__name__}")
    bad = next((ch for ch in text if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise LineProtocolError(
            f"{what} {text!r} holds the control character {bad!r}, which line protocol cannot carry"
        )


def _check_name(name: str, what: str) -> None:
    _check_text(name, what)
    if not name:
        raise LineProtocolError(f"{what} must not be empty")
    if name.endswith("\\"):
        raise LineProtocolError(
            f"{what} {name!r} ends with a backslash, which InfluxDB 1.x line protocol would "
            "read as escaping the separator after it; rename it"
        )
    if _AMBIGUOUS.search(name):
        raise LineProtocolError(
            f"{what} {name!r} has a backslash before a comma, space, '=' or '\"', which "
            "InfluxDB 1.x line protocol cannot carry unambiguously; rename it"
        )


def _escape(name: str, chars: str) -> str:
    return "".join("\\" + ch if ch in chars else ch for ch in name)


def escape_measurement(name: str) -> str:
    _check_name(name, "measurement")
    return _escape(name, ', ="')


def escape_field_key(name: str) -> str:
    _check_name(name, "field key")
    return _escape(name, ', ="')


def escape_tag(text: str, what: str = "tag") -> str:
    """A tag key or tag value."""
    _check_name(text, what)
    return _escape(text, ", =")


def escape_string(value: str, what: str = "string field") -> str:
    """A string field value, quotes included."""
    _check_text(value, what)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_float(value: float) -> str:
    """A float field value (no ``i`` suffix, so InfluxDB stores a float)."""
    v = float(value)
    if not math.isfinite(v):
        raise LineProtocolError(f"a float field cannot be {v!r}")
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def format_int(value: int) -> str:
    v = int(value)
    if not INT64_MIN <= v <= INT64_MAX:
        raise LineProtocolError(f"{v} does not fit a 64-bit integer field")
    return f"{v}i"


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Iterable[tuple[str, str]],
    timestamp: int | None = None,
) -> str:
    """One point. ``fields`` are (name, already formatted value) pairs; empty tag values
    are left out (InfluxDB refuses them); tags are sorted by key, as InfluxDB advises."""
    head = escape_measurement(measurement)
    for k in sorted(tags):
        v = tags[k]
        if v:
            head += f",{escape_tag(k, 'tag key')}={escape_tag(v, 'tag value')}"
    body = ",".join(f"{escape_field_key(k)}={v}" for k, v in fields)
    if not body:
        raise LineProtocolError("a point needs at least one field")
    out = f"{head} {body}"
    return out if timestamp is None else f"{out} {int(timestamp)}"
