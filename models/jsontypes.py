"""JSON type names for error messages, shared by the services that validate JSON bodies."""

from __future__ import annotations

from typing import Any

__all__ = ["json_type"]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``null``, ``boolean``, ``number``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
