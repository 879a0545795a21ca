"""Request-body parsing and validation, without Flask: bytes in, a feature matrix out, or a
:class:`~api.errors.ValidationFailed` that lists every problem with its record index and
field. Strict on purpose: booleans and numeric strings are not numbers, NaN and Infinity
are refused (Python's ``json`` would accept them), unknown keys are errors. A model with
categorical features (a profile's, recorded in its card) takes strings for those: any
string, since a level never seen in training is its encoder's job, not an error."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.contract import TXN_ID
from models.jsontypes import json_type

from .errors import BadRequest, ValidationFailed

__all__ = ["ParsedBatch", "json_type", "parse_json", "validate_records"]

#: the one non-feature key a record may carry; echoed back in its prediction
ECHO_KEYS = (TXN_ID,)
MAX_TXN_ID_LENGTH = 256


@dataclass(frozen=True)
class ParsedBatch:
    """Validated records: ``X`` in feature order, ``txn_ids`` (``None`` where absent) and
    whether the body was a single object (not a list)."""

    X: np.ndarray
    txn_ids: list[str | None]
    single: bool


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number (finite numbers only)")


def parse_json(body: bytes) -> Any:
    """Decode a JSON body strictly (no NaN/Infinity); :class:`BadRequest` if it is not JSON."""
    if not body or not body.strip():
        raise BadRequest("request body is empty; send a JSON object or an array of objects")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8 text: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except ValueError as exc:  # raised by _reject_constant
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


def _problem(index: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}


def _check_value(index: int | None, name: str, value: Any, problems: list) -> None:
    if type(value) is float:
        if not math.isfinite(value):
            problems.append(_problem(index, name, "must be a finite number"))
        return
    if type(value) is int:
        try:
            float(value)
        except OverflowError:
            problems.append(_problem(index, name, "number is out of the float range"))
        return
    problems.append(_problem(index, name, f"expected a number, got {json_type(value)}"))


def _check_category(index: int | None, name: str, value: Any, problems: list) -> None:
    if type(value) is not str or not value:
        problems.append(
            _problem(index, name, f"expected a category label (a non-empty string), got "
                     f"{json_type(value)}")
        )  # fmt: skip
    elif len(value) > MAX_TXN_ID_LENGTH:
        problems.append(_problem(index, name, f"longer than {MAX_TXN_ID_LENGTH} characters"))


def _check_record(
    index: int | None,
    record: Any,
    features: Sequence[str],
    feature_set: frozenset,
    problems: list,
    categorical: frozenset = frozenset(),
    id_key: str = TXN_ID,
) -> None:
    if not isinstance(record, dict):
        problems.append(
            _problem(index, None, f"a record must be a JSON object, got {json_type(record)}")
        )
        return
    for name in features:
        if name not in record:
            problems.append(_problem(index, name, "missing feature"))
        elif name in categorical:
            _check_category(index, name, record[name], problems)
        else:
            _check_value(index, name, record[name], problems)
    for key in record:
        if key in feature_set:
            continue
        if key == id_key:
            value = record[key]
            if not isinstance(value, str):
                problems.append(_problem(index, key, f"expected a string, got {json_type(value)}"))
            elif len(value) > MAX_TXN_ID_LENGTH:
                problems.append(_problem(index, key, f"longer than {MAX_TXN_ID_LENGTH} characters"))
            continue
        problems.append(
            _problem(
                index,
                key,
                f"unknown field (allowed: the model's {len(features)} features and "
                f"optional {id_key})",
            )
        )


_NUMBER_TYPES = (int, float)


def validate_records(
    payload: Any,
    features: Sequence[str],
    *,
    max_batch: int,
    types: Sequence[str] | None = None,
    id_key: str = TXN_ID,
) -> ParsedBatch:
    """Turn a decoded body (one record or a list of records) into a :class:`ParsedBatch`.

    ``types`` gives each feature's type (``float``, ``int``, ``categorical``; all numbers
    when omitted); ``id_key`` is the optional id echoed back (``txn_id`` for cards)."""
    single = isinstance(payload, dict)
    if single:
        records = [payload]
    elif isinstance(payload, list):
        records = payload
    else:
        raise ValidationFailed(
            [
                _problem(
                    None,
                    None,
                    "body must be a JSON object (one record) or an array of records, "
                    f"got {json_type(payload)}",
                )
            ]
        )
    if not records:
        raise ValidationFailed([_problem(None, None, "empty batch: send at least one record")])
    if len(records) > max_batch:
        raise ValidationFailed(
            [
                _problem(
                    None,
                    None,
                    f"batch of {len(records)} records exceeds the maximum of {max_batch}; "
                    "split it into smaller requests",
                )
            ]
        )
    feature_set = frozenset(features)
    n_features = len(features)
    categorical = frozenset(
        name for name, kind in zip(features, types or (), strict=False) if kind == "categorical"
    )
    if categorical:
        return _validate_mixed(records, features, feature_set, categorical, id_key, single)
    rows: list[list[Any]] = []
    txn_ids: list[str | None] = []
    bad = False
    # Fast path: exact key set and plain numbers. Anything else goes through the slow
    # path below, which names every problem.
    for record in records:
        if type(record) is not dict:
            bad = True
            break
        has_txn_id = id_key in record
        txn_id = record.get(id_key)
        extra = len(record) - n_features - has_txn_id
        if extra != 0 or not feature_set.issubset(record.keys()):
            bad = True
            break
        if has_txn_id and (type(txn_id) is not str or len(txn_id) > MAX_TXN_ID_LENGTH):
            bad = True
            break
        row = [record[name] for name in features]
        for v in row:
            if type(v) not in _NUMBER_TYPES:
                bad = True
                break
        if bad:
            break
        rows.append(row)
        txn_ids.append(txn_id)
    X = None
    if not bad:
        try:
            X = np.array(rows, dtype=np.float64).reshape(len(rows), n_features)
        except OverflowError:
            bad = True
        else:
            bad = not bool(np.isfinite(X).all())
    if bad or X is None:
        problems: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            _check_record(i, record, features, feature_set, problems, id_key=id_key)
        if not problems:  # pragma: no cover - the fast path and the checks disagree
            problems.append(_problem(None, None, "invalid records"))
        raise ValidationFailed(problems)
    return ParsedBatch(X=X, txn_ids=txn_ids, single=single)


def _validate_mixed(
    records: list[Any],
    features: Sequence[str],
    feature_set: frozenset,
    categorical: frozenset,
    id_key: str,
    single: bool,
) -> ParsedBatch:
    """Records of a model with categorical features: every record checked, an object
    matrix out (strings in the categorical columns, floats in the others)."""
    problems: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        _check_record(i, record, features, feature_set, problems, categorical, id_key)
    if problems:
        raise ValidationFailed(problems)
    X = np.empty((len(records), len(features)), dtype=object)
    for i, record in enumerate(records):
        for j, name in enumerate(features):
            value = record[name]
            X[i, j] = value if name in categorical else float(value)
    return ParsedBatch(X=X, txn_ids=[r.get(id_key) for r in records], single=single)
