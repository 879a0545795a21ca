"""The alert TICKscript's rule and Kapacitor's alert JSON, mirrored without Kapacitor.

``tickscripts/templates/fraud_alert.tick`` alerts CRITICAL on every scored point whose
``is_anomaly`` is true, with no recoveries, and posts Kapacitor's standard alert body.
This module builds byte-for-byte the same shape (see the recorded bodies in
``tests/fixtures`` / the shared Kapacitor fixtures): Go's number formatting in the
``message`` (text/template) and ``details`` (html/template, so values are HTML-escaped),
``time`` as RFC 3339 with trailing zeros trimmed, ``columns`` = ``time`` then the fields
in byte order, one row, and the alert state of the (single, ungrouped) stream for
``previousLevel`` and ``duration``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import contract

__all__ = [
    "AlertState",
    "AlertTask",
    "ScoredRecord",
    "alert_body",
    "alert_id",
    "alerts_for",
    "go_json_float",
    "go_json_str",
    "go_print",
    "render_template",
    "rfc3339_nano",
]

#: the alert node of tickscripts/templates/fraud_alert.tick
ID_TEMPLATE = "fraud:{model}"  # Kapacitor's id template sees tags, not fields
MESSAGE_TEMPLATE = (
    "Suspected fraud: txn {txn_id} scored {score} (threshold {threshold}), "
    "amount {amount}, model {model} v{model_version}"
)
DETAILS_TEMPLATE = (
    "txn_id={txn_id} score={score} threshold={threshold} amount={amount} "
    "model={model} model_version={model_version} source={source} label={label}"
)
NO_VALUE = "<no value>"  # what Go templates print for a missing map key


@dataclass(frozen=True, slots=True)
class ScoredRecord:
    """One ``transactions_scored`` point as Kapacitor's alert node sees it."""

    time_ns: int
    tags: Mapping[str, str]
    fields: Mapping[str, Any]

    @property
    def is_anomaly(self) -> bool | None:
        v = self.fields.get(contract.IS_ANOMALY)
        return None if v is None else bool(v)


# -- Go formatting ---------------------------------------------------------------------
def _sci(v: float) -> str:
    return np.format_float_scientific(v, unique=True, trim="-", exp_digits=2)


def go_print(value: Any) -> str:
    """``fmt.Sprint(value)`` as a Go template prints a field (``%v``)."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v == 0:
            return "-0" if math.copysign(1.0, v) < 0 else "0"
        exp = int(_sci(v).rsplit("e", 1)[1])
        # %v is %g with the shortest digits: exponent form below 1e-4 and from 1e6 on
        if exp < -4 or exp >= 6:
            return _sci(v)
        return np.format_float_positional(v, unique=True, trim="-")
    return str(value)


def go_json_float(v: float) -> str:
    """A float as Go's encoding/json writes it (``11`` for 11.0, ``1e-7`` for 1e-07)."""
    if not math.isfinite(v):
        raise ValueError(f"JSON cannot carry {v!r}")
    a = abs(v)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = _sci(v)
        mant, exp = s.rsplit("e", 1)
        sign, digits = exp[0], exp[1:].lstrip("0") or "0"
        if len(digits) == 1 and sign == "-":
            return f"{mant}e-{digits}"
        return f"{mant}e{sign}{digits.zfill(2)}"
    return np.format_float_positional(v, unique=True, trim="-")


def _html_escape(text: str) -> str:
    # html/template's escaper for text content (the characters it rewrites)
    return (
        text.replace("&", "&amp;")
        .replace("'", "&#39;")
        .replace("+", "&#43;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("\x00", "\ufffd")
    )


def rfc3339_nano(t_ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: nanoseconds, trailing zeros trimmed."""
    secs, frac = divmod(int(t_ns), 1_000_000_000)
    base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    ns = f"{frac:09d}".rstrip("0")
    return f"{base}.{ns}Z" if ns else f"{base}Z"


def go_json_str(text: str) -> str:
    """A JSON string as Go's encoding/json writes it (``<``, ``>``, ``&`` escaped)."""
    return (
        json.dumps(text, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _json_value(v: Any) -> str:
    if isinstance(v, str):
        return go_json_str(v)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return go_json_float(float(v))
    raise TypeError(f"unsupported field value {v!r}")


# -- the alert node --------------------------------------------------------------------
def alert_id(rec: ScoredRecord) -> str:
    return ID_TEMPLATE.format(model=rec.tags.get(contract.MODEL_TAG, NO_VALUE))


def _template_values(rec: ScoredRecord) -> dict[str, str]:
    f, t = rec.fields, rec.tags
    return {
        "txn_id": go_print(f.get(contract.TXN_ID)),
        "score": go_print(f.get(contract.SCORE)),
        "threshold": go_print(f.get(contract.THRESHOLD)),
        "amount": go_print(f.get("Amount")),
        "label": go_print(f.get(contract.LABEL)),
        "model": t.get(contract.MODEL_TAG, NO_VALUE),
        "model_version": t.get(contract.MODEL_VERSION_TAG, NO_VALUE),
        "source": t.get(contract.SOURCE_TAG, NO_VALUE),
    }


@dataclass
class AlertState:
    """Level history of one alert group (the stream is not grouped: one group)."""

    level: str = "OK"
    first_triggered_ns: int | None = None

    def update(self, rec: ScoredRecord) -> tuple[str, str, int]:
        """Feed one point; return (level, previous level, duration ns)."""
        level = "CRITICAL" if rec.is_anomaly else "OK"
        previous = self.level
        if level != "OK" and (previous == "OK" or self.first_triggered_ns is None):
            self.first_triggered_ns = rec.time_ns
        duration = 0 if level == "OK" else rec.time_ns - (self.first_triggered_ns or rec.time_ns)
        self.level = level
        return level, previous, max(0, duration)


_ACTION = re.compile(r'\{\{\s*index\s+\.(Fields|Tags)\s+"((?:[^"\\]|\\.)*)"\s*\}\}')


def render_template(template: str, rec: ScoredRecord, *, html: bool = False) -> str:
    """A task's alert template (``{{ index .Fields "NAME" }}`` / ``.Tags`` actions only, as
    models.profile_tasks writes them) for one point: text/template for the id and message,
    html/template (values HTML-escaped) for the details."""

    def action(m: re.Match[str]) -> str:
        name = m.group(2).replace('\\"', '"').replace("\\\\", "\\")
        if m.group(1) == "Tags":
            value = rec.tags.get(name, NO_VALUE)
        else:
            value = go_print(rec.fields.get(name))
        return _html_escape(value) if html else value

    return _ACTION.sub(action, template)


def alert_body(
    rec: ScoredRecord,
    *,
    level: str,
    previous: str,
    duration_ns: int,
    measurement: str,
    texts: Mapping[str, str] | None = None,
) -> bytes:
    """The JSON Kapacitor's ``.post()`` sends for this point (compact, Go key order).
    ``texts``: the alert task's ``alert_id``, ``message`` and ``details`` templates of a
    data set (models.profile_tasks.alert_texts); None: the credit-card alert task's."""
    values = _template_values(rec)
    esc = {k: _html_escape(v) for k, v in values.items()}
    if texts is None:
        ident = alert_id(rec)
        message = MESSAGE_TEMPLATE.format(**values)
        details = DETAILS_TEMPLATE.format(**esc)
    else:
        ident = render_template(texts["alert_id"], rec)
        message = render_template(texts["message"], rec)
        details = render_template(texts["details"], rec, html=True)
    time_s = rfc3339_nano(rec.time_ns)
    names = sorted(rec.fields)
    columns = ["time", *names]
    row = [go_json_str(time_s), *(_json_value(rec.fields[k]) for k in names)]
    tags = ",".join(f"{go_json_str(k)}:{go_json_str(rec.tags[k])}" for k in sorted(rec.tags))
    series = (
        '{"name":' + go_json_str(measurement) + ',"tags":{' + tags + "}"
        + ',"columns":[' + ",".join(go_json_str(c) for c in columns) + "]"
        + ',"values":[[' + ",".join(row) + "]]}"
    )  # fmt: skip
    body = (
        '{"id":' + go_json_str(ident)
        + ',"message":' + go_json_str(message)
        + ',"details":' + go_json_str(details)
        + ',"time":' + go_json_str(time_s)
        + ',"duration":' + str(int(duration_ns))
        + ',"level":' + go_json_str(level)
        + ',"data":{"series":[' + series + "]}"
        + ',"previousLevel":' + go_json_str(previous)
        + ',"recoverable":true}'
    )  # fmt: skip
    return body.encode("utf-8")


class AlertTask:
    """The alert task over scored points fed in time order:
    ``where(lambda: "model" == model AND isPresent("is_anomaly"))`` then
    ``crit(lambda: "is_anomaly" == TRUE)`` with ``.noRecoveries()``: every critical point
    is posted; OK points only move the state."""

    def __init__(
        self,
        *,
        model: str,
        measurement: str = contract.SCORED_MEASUREMENT,
        texts: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.measurement = measurement
        self.texts = texts
        self.state = AlertState()

    def feed(self, rec: ScoredRecord) -> bytes | None:
        """The body posted for this point, or None."""
        if rec.tags.get(contract.MODEL_TAG) != self.model or rec.is_anomaly is None:
            return None
        level, previous, duration = self.state.update(rec)
        if level != "CRITICAL":
            return None
        return alert_body(
            rec,
            level=level,
            previous=previous,
            duration_ns=duration,
            measurement=self.measurement,
            texts=self.texts,
        )


def alerts_for(
    records: Iterable[ScoredRecord], *, model: str, measurement: str = contract.SCORED_MEASUREMENT
) -> list[tuple[ScoredRecord, bytes]]:
    """Apply the alert task to scored points in time order; return the posted alerts."""
    task = AlertTask(model=model, measurement=measurement)
    out = []
    for rec in sorted(records, key=lambda r: r.time_ns):
        body = task.feed(rec)
        if body is not None:
            out.append((rec, body))
    return out
