"""Kapacitor alert JSON → contract documents, without I/O.

Kapacitor's alert node posts one JSON object per alert event::

    {"id", "message", "details", "time", "duration", "level", "previousLevel",
     "recoverable", "data": {"series": [{"name", "tags", "columns", "values"}]}}

Every row of every series becomes one document. Without a profile its keys are exactly
``models.contract.ALERT_DOC_FIELDS``; a series routed to a data-set profile
(:mod:`alert_sink.routing`) gives the contract's fixed fields and every other field of the
row under ``fields.*``; a drift window (series ``model_drift``) gives
``models.contract.DRIFT_ALERT_DOC_FIELDS``. The whole body is validated before anything is
returned, so a bad row rejects the whole request and nothing of it is stored.

An anomaly's ``top_features`` ("V14:+0.42,V4:+0.18") becomes its ``explanation``:
``[{"feature": "V14", "contribution": 0.42}, ...]``, strongest first. The explanation is an
aid, not the alert: a malformed one is left out (``explanation`` null) and reported in the
document's ``warnings``, which the app counts and logs; the alert is indexed all the same.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from models.contract import (
    ALERT_KIND,
    DRIFT_MEASUREMENT,
    EXPLANATION,
    MODEL_TAG,
    MODEL_VERSION_TAG,
    SCORE,
    SOURCE_TAG,
    THRESHOLD,
    TOP_FEATURES,
    parse_top_features,
)
from models.jsontypes import json_type

from .errors import PayloadError
from .routing import DRIFT, FIELDS_PREFIX, LEGACY, Layout, Router

__all__ = ["LEVELS", "NS_MAX", "NS_MIN", "AlertDocument", "parse_alert", "parse_rfc3339_ns"]

LEVELS = ("OK", "INFO", "WARNING", "CRITICAL")
# Kapacitor and InfluxDB time is int64 nanoseconds (years 1677-2262); so is the store's column.
NS_MIN, NS_MAX = -(2**63), 2**63 - 1

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True, slots=True)
class AlertDocument:
    """One contract document and its deterministic Elasticsearch ``_id``."""

    doc_id: str
    timestamp_ns: int
    source: dict[str, Any]
    #: the index it goes to (None: the sink's default index)
    index: str | None = None
    #: the row id (txn_id for credit cards), None when the row has none
    row_id: str | None = None
    #: what was left out of the document and why (a malformed explanation), for the log
    warnings: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.source[ALERT_KIND]


def parse_rfc3339_ns(value: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp (nanosecond precision kept).

    Raises ``ValueError`` when ``value`` is not RFC 3339 or lies outside the int64
    nanosecond range.
    """
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "").ljust(9, "0")
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        dt = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r} ({exc})") from None
    ns = int(dt.timestamp()) * 1_000_000_000 + int(frac)
    if not NS_MIN <= ns <= NS_MAX:
        raise ValueError(f"{value!r} is outside the int64 nanosecond range (years 1677-2262)")
    return ns


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int64(value: Any) -> bool:
    """A whole number within int64 (``1`` or ``1.0``; not NaN, 0.5 or a 400-digit literal)."""
    if not _is_number(value):
        return False
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return False
    return -(2**63) <= value <= 2**63 - 1


def _require_str(obj: dict, key: str, path: str, *, required: bool) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise PayloadError(path, f"missing required key {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise PayloadError(
            f"{path}.{key}" if path else key, f"must be a string, got {json_type(value)}"
        )
    return value


def _timestamp(value: str, path: str) -> int:
    try:
        return parse_rfc3339_ns(value)
    except ValueError as exc:
        raise PayloadError(path, str(exc)) from None


def task_from_details(details: str | None) -> str | None:
    """``TaskName`` from Kapacitor's default details (an HTML-escaped JSON dump), if any."""
    if not details:
        return None
    text = html.unescape(details).strip()
    if not text.startswith("{"):
        return None
    try:
        dump = json.loads(text)
    except ValueError:
        return None
    task = dump.get("TaskName") if isinstance(dump, dict) else None
    return task if isinstance(task, str) and task else None


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_path(value: Any, path: str) -> str | None:
    """Path of the first string (key or value) that UTF-8 cannot encode, else None."""
    if isinstance(value, str):
        return path if _not_utf8(value) else None
    if isinstance(value, dict):
        children = [(f"{path}.{k}" if path else k, k, v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{i}]", None, v) for i, v in enumerate(value)]
    else:
        return None
    for here, key, item in children:
        if key is not None and _not_utf8(key):
            return here
        found = _surrogate_path(item, here)
        if found is not None:
            return found
    return None


def _number(value: Any, path: str, column: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise PayloadError(path, f"column {column!r} must be a number, got {json_type(value)}")
    try:
        result = float(value)
    except OverflowError:  # an integer literal too large for a double
        raise PayloadError(
            path, f"column {column!r} is out of range: it does not fit a 64-bit float"
        ) from None
    if not math.isfinite(result):
        raise PayloadError(path, f"column {column!r} must be finite")
    return result


def _doc_id(alert_id: str, alert_time: str, name: str, tags: dict, row_time: str, key: str) -> str:
    # Everything that identifies one row of one alert event, and nothing that a re-delivery
    # could change: a re-posted identical alert hashes to the same id and overwrites.
    canonical = json.dumps(
        [alert_id, alert_time, name, sorted(tags.items()), row_time, key],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]


def _field_value(value: Any, path: str, column: str, kind: str | None) -> Any:
    """A row value carried under fields.*: checked against the profile's type for the
    column (``float``, ``int``, ``string``) or, for any other column, any number that fits
    64 bits, a string or a boolean."""
    if kind == "float":
        return _number(value, path, column)
    if kind == "int":
        if not _is_int64(value):
            raise PayloadError(
                path, f"column {column!r} must be an integer, got {json_type(value)}"
            )
        return int(value)
    if kind == "string":
        if not isinstance(value, str):
            raise PayloadError(path, f"column {column!r} must be a string, got {json_type(value)}")
        return value
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _is_int64(value):
            raise PayloadError(
                path, f"column {column!r} is out of range: it does not fit a 64-bit integer"
            )
        return value
    if isinstance(value, float):
        return _number(value, path, column)
    raise PayloadError(
        path, f"column {column!r} must be a number, a string or a boolean, got {json_type(value)}"
    )


def parse_alert(
    body: bytes | str, *, task: str | None = None, router: Router | None = None
) -> list[AlertDocument]:
    """Validate a whole Kapacitor alert body and return its documents.

    ``task`` is the optional ``?task=`` of the post URL. The task name is taken, in order,
    from the details dump's ``TaskName``, then ``task``, then the series name. ``router``
    picks each series' layout and index from its name (None: the contract's credit-card
    documents for every series). Raises :class:`PayloadError` naming the first problem.
    """
    try:
        alert = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("", "body is nested too deeply") from None
    if not isinstance(alert, dict):
        raise PayloadError("", f"body must be a JSON object, got {json_type(alert)}")
    try:
        # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 store can hold.
        json.dumps(alert, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise PayloadError("", "body is nested too deeply") from None
    except UnicodeEncodeError:
        raise PayloadError(
            _surrogate_path(alert, "") or "body", "string holds an unpaired UTF-16 surrogate escape"
        ) from None

    alert_id = _require_str(alert, "id", "", required=True)
    if not alert_id:
        raise PayloadError("id", "must not be empty")
    message = _require_str(alert, "message", "", required=False) or ""
    details = _require_str(alert, "details", "", required=False)
    alert_time = _require_str(alert, "time", "", required=True)
    alert_ns = _timestamp(alert_time, "time")
    level = _require_str(alert, "level", "", required=True)
    if level not in LEVELS:
        raise PayloadError("level", f"must be one of {', '.join(LEVELS)}, got {level!r}")
    previous = _require_str(alert, "previousLevel", "", required=False)
    if previous is not None and previous not in LEVELS:
        raise PayloadError("previousLevel", f"must be one of {', '.join(LEVELS)}, got {previous!r}")
    if (
        "duration" in alert
        and alert["duration"] is not None
        and not (isinstance(alert["duration"], int) and not isinstance(alert["duration"], bool))
    ):
        raise PayloadError(
            "duration", f"must be an integer (ns), got {json_type(alert['duration'])}"
        )
    if "recoverable" in alert and not isinstance(alert["recoverable"], (bool, type(None))):
        raise PayloadError(
            "recoverable", f"must be a boolean, got {json_type(alert['recoverable'])}"
        )
    if task is not None and not task:
        task = None
    task_name = task_from_details(details) or task

    data = alert.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PayloadError("data", f"must be an object, got {json_type(data)}")
    series_list = data.get("series")
    if series_list is None:
        series_list = []
    if not isinstance(series_list, list):
        raise PayloadError("data.series", f"must be an array, got {json_type(series_list)}")

    base = {
        "alert.id": alert_id,
        "alert.level": level,
        "alert.message": message,
    }
    docs: list[AlertDocument] = []
    for s_idx, series in enumerate(series_list):
        path = f"data.series[{s_idx}]"
        if not isinstance(series, dict):
            raise PayloadError(path, f"must be an object, got {json_type(series)}")
        name = _require_str(series, "name", path, required=False) or ""
        tags = series.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise PayloadError(f"{path}.tags", "must be an object of string values")
        columns = series.get("columns")
        if not isinstance(columns, list) or not columns:
            raise PayloadError(f"{path}.columns", "must be a non-empty array of strings")
        for c_idx, col in enumerate(columns):
            if not isinstance(col, str):
                raise PayloadError(
                    f"{path}.columns[{c_idx}]", f"must be a string, got {json_type(col)}"
                )
        if len(set(columns)) != len(columns):
            raise PayloadError(f"{path}.columns", "column names must be unique")
        layout = router.layout(name, tags) if router is not None else _default_layout(name)
        rows = series.get("values") or []
        if not isinstance(rows, list):
            raise PayloadError(f"{path}.values", f"must be an array, got {json_type(rows)}")
        for r_idx, row in enumerate(rows):
            rpath = f"{path}.values[{r_idx}]"
            if not isinstance(row, list):
                raise PayloadError(rpath, f"must be an array, got {json_type(row)}")
            if len(row) != len(columns):
                raise PayloadError(rpath, f"row has {len(row)} values but {len(columns)} columns")
            fields = dict(zip(columns, row, strict=True))
            docs.append(
                _row_document(
                    base,
                    fields,
                    tags,
                    name,
                    rpath,
                    alert_id,
                    alert_time,
                    alert_ns,
                    task_name,
                    f"{s_idx}:{r_idx}",
                    layout,
                )
            )
    if not docs:
        # An alert without rows is still an alert: index its top-level facts.
        docs.append(
            _row_document(
                base, {}, {}, "", "data", alert_id, alert_time, alert_ns, task_name, "-", LEGACY
            )
        )
    return docs


def _default_layout(series: str) -> Layout:
    """Without a router: drift windows as drift documents, anything else as credit cards."""
    return DRIFT if series == DRIFT_MEASUREMENT else LEGACY


def _explanation(value: Any, rpath: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(the explanation, None) or (None, why it was left out)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"{rpath}: column {TOP_FEATURES!r} is not a string ({json_type(value)})"
    try:
        pairs = parse_top_features(value)
    except ValueError as exc:
        return None, f"{rpath}: column {TOP_FEATURES!r} is malformed: {exc}"
    return [{"feature": f, "contribution": c} for f, c in pairs], None


def _int_field(value: Any, path: str, column: str) -> int | None:
    if value is None:
        return None
    if not _is_int64(value):
        raise PayloadError(path, f"column {column!r} must be an integer, got {json_type(value)}")
    return int(value)


def _str_field(value: Any, path: str, column: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise PayloadError(path, f"column {column!r} must be a string, got {json_type(value)}")


def _drift_values(fields: dict, rpath: str) -> dict[str, Any]:
    """The drift.* keys of a model_drift row (udf_agent/drift.py)."""
    return {
        "drift.feature": _str_field(fields.get("drift_feature"), rpath, "drift_feature"),
        "drift.psi": _number(fields.get("psi_max"), rpath, "psi_max"),
        "drift.psi_score": _number(fields.get("psi_score"), rpath, "psi_score"),
        "drift.level": _str_field(fields.get("drift_level"), rpath, "drift_level"),
        "drift.count": _int_field(fields.get("count"), rpath, "count"),
        "drift.unscored": _int_field(fields.get("unscored"), rpath, "unscored"),
    }


def _row_document(
    base: dict,
    fields: dict,
    tags: dict,
    name: str,
    rpath: str,
    alert_id: str,
    alert_time: str,
    alert_ns: int,
    task_name: str | None,
    position: str,
    layout: Layout = LEGACY,
) -> AlertDocument:
    row_time = fields.get("time")
    if row_time is None:
        row_time, row_ns = alert_time, alert_ns
    elif isinstance(row_time, str):
        row_ns = _timestamp(row_time, f"{rpath} column 'time'")
    else:
        raise PayloadError(rpath, f"column 'time' must be a string, got {json_type(row_time)}")

    id_col = layout.id_field
    row_id = fields.get(id_col, tags.get(id_col))
    if row_id is not None and not isinstance(row_id, str):
        raise PayloadError(rpath, f"column {id_col!r} must be a string, got {json_type(row_id)}")
    label_col = layout.label_field
    label = fields.get(label_col) if label_col else None
    if label is not None and not _is_int64(label):
        raise PayloadError(
            rpath, f"column {label_col!r} must be an integer, got {json_type(label)}"
        )
    model_name = fields.get(MODEL_TAG, tags.get(MODEL_TAG))
    model_version = fields.get(MODEL_VERSION_TAG, tags.get(MODEL_VERSION_TAG))
    source = tags.get(SOURCE_TAG, fields.get(SOURCE_TAG))
    for col, value in ((MODEL_TAG, model_name), (MODEL_VERSION_TAG, model_version)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise PayloadError(rpath, f"{col!r} must be a string, got {json_type(value)}")
    if source is not None and not isinstance(source, str):
        raise PayloadError(rpath, f"{SOURCE_TAG!r} must be a string, got {json_type(source)}")

    warnings: list[str] = []
    values = {
        "@timestamp": row_time,
        **base,
        ALERT_KIND: layout.kind,
        "task": task_name or name or None,
        layout.id_key: row_id,
        "score": _number(fields.get(SCORE), rpath, SCORE),
        "threshold": _number(fields.get(THRESHOLD), rpath, THRESHOLD),
        "model.name": None if model_name is None else str(model_name),
        "model.version": None if model_version is None else str(model_version),
        "label": None if label is None else int(label),
        "source": source,
    }
    if layout.value_key:
        col = layout.value_field
        values[layout.value_key] = _number(fields.get(col), rpath, col)
    if layout.kind == DRIFT.kind:
        values.update(_drift_values(fields, rpath))
    else:
        values[EXPLANATION], problem = _explanation(fields.get(TOP_FEATURES), rpath)
        if problem:
            warnings.append(problem)
    doc = {key: values.get(key) for key in layout.keys}
    if layout.carry_fields:
        consumed = layout.consumed
        for col, value in fields.items():
            if col in consumed or value is None:
                continue
            doc[FIELDS_PREFIX + col] = _field_value(value, rpath, col, layout.types.get(col))
        for tag in sorted(tags):
            if tag not in consumed and FIELDS_PREFIX + tag not in doc:
                doc[FIELDS_PREFIX + tag] = tags[tag]
    key = row_id if row_id is not None else f"row:{position}"
    return AlertDocument(
        doc_id=_doc_id(alert_id, alert_time, name, tags, row_time, key),
        timestamp_ns=row_ns,
        source=doc,
        index=layout.index,
        row_id=row_id,
        warnings=tuple(warnings),
    )
