"""InfluxDB 1.x line protocol: the implementation lives in :mod:`models.lineprotocol`, which
every writer of points shares (the publisher, the file-drop watcher, ``models retrain``);
this module keeps the publisher's import path."""

from models.lineprotocol import (
    INT64_MAX,
    INT64_MIN,
    LineProtocolError,
    escape_field_key,
    escape_measurement,
    escape_string,
    escape_tag,
    format_bool,
    format_float,
    format_int,
    line,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
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
