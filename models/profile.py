"""Data-set profiles: one small TOML file that tells every component what a data set is.

A profile (``profiles/NAME.toml``) names the InfluxDB database, retention policy and
measurements, the row id and the label, the model's features with their types (float,
int, or categorical with its levels), the columns sent as tags or dropped, an optional
value column for cost figures, and where alerts go. Training, the publisher, the UDF
agent (through the model card), the TICKscripts, the alert sink and the dashboards all
read it, so a user brings their own data by writing one file instead of editing code.

``profiles/creditcard.toml`` is the default: with no ``--profile`` every component behaves
as it always has for the credit-card data set. :func:`infer_profile` writes a profile
from a CSV.

Example::

    name = "machine_failure"
    description = "Milling machine failures (AI4I 2020 schema)"

    [influxdb]
    database = "maintenance"
    retention_policy = "autogen"
    measurement = "machine_readings"
    scored_measurement = "machine_readings_scored"

    [columns]
    id = "UDI"
    label = "Machine failure"
    tags = []
    drop = ["Product ID", "TWF", "HDF", "PWF", "OSF", "RNF"]

    [[features]]
    name = "Type"
    type = "categorical"
    levels = ["H", "L", "M"]

    [[features]]
    name = "Air temperature [K]"
    type = "float"

    [alerts]
    index = "machine-failure-alerts"
    message_fields = ["UDI", "Type", "Torque [Nm]"]
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ModelsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_PROFILE",
    "FEATURE_TYPES",
    "PROFILES_DIR",
    "Feature",
    "Profile",
    "ProfileError",
    "infer_profile",
    "load_profile",
    "profile_names",
]

#: where shipped and user profiles live (``--profile NAME`` looks here):
#: ``$TICK_PROFILES_DIR``, else ``profiles/`` at the project root
PROFILES_DIR = Path(
    os.environ.get("TICK_PROFILES_DIR") or Path(__file__).resolve().parent.parent / "profiles"
)
DEFAULT_PROFILE = "creditcard"
FEATURE_TYPES = ("float", "int", "categorical")

#: most levels a categorical feature may have (one-hot encoded inside the model)
MAX_LEVELS = 200
#: a text column with at most this many distinct values is inferred as categorical
INFER_MAX_LEVELS = 50

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_INDEX = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,254}")
#: field and tag names the scoring pipeline writes; a data set may not use them
RESERVED = frozenset(
    {
        "time",
        "score",
        "is_anomaly",
        "threshold",
        "score_challenger",
        "threshold_challenger",
        "score_error",
        "model",
        "model_version",
        "fallback_for",
        "source",
        "top_features",
    }
)


class ProfileError(ModelsError, ValueError):
    """A profile that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Feature:
    """One model input: a column of the data set and its type."""

    name: str
    type: str = "float"
    #: the known values of a categorical feature (an unseen one is still scored: the
    #: model's encoder treats it as none of these)
    levels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.type == "categorical"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.categorical:
            out["levels"] = list(self.levels)
        return out


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A validated data-set profile (see the module docstring for the file format)."""

    name: str
    description: str = ""
    database: str
    retention_policy: str = "autogen"
    measurement: str
    scored_measurement: str
    #: column holding a unique row id (written as a string field of the same name); None:
    #: the publisher numbers the rows
    id: str | None = None
    #: field name of the generated id when ``id`` is None
    id_field: str = "id"
    #: column holding the 0/1 ground truth (None: an unlabelled data set)
    label: str | None = None
    #: InfluxDB field carrying the label (for live evaluation only, never a model input)
    label_field: str = "label"
    features: tuple[Feature, ...]
    tags: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    #: a numeric column whose sum measures what an alert saves or costs (Amount for cards)
    value: str | None = None
    #: a numeric column that orders rows in time (time-ordered splits); None: file order
    order: str | None = None
    alert_index: str
    #: fields shown in an alert's message, beside the score
    message_fields: tuple[str, ...] = ()
    #: the file it was read from (None when built in code)
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived ------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[Feature]:
        return [f for f in self.features if f.categorical]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def id_column(self) -> str:
        """The field that identifies a row in InfluxDB and in alerts."""
        return self.id or self.id_field

    @property
    def input_fields(self) -> list[str]:
        """Every field of an input point: features, the id, the label (if any)."""
        out = [*self.feature_names, self.id_column]
        if self.label is not None:
            out.append(self.label_field)
        return out

    @property
    def csv_columns(self) -> list[str]:
        """The columns a CSV of this data set has (tags, id and label included)."""
        cols = [*self.feature_names]
        for c in (*self.tags, self.id, self.label):
            if c is not None and c not in cols:
                cols.append(c)
        return cols

    def card_section(self) -> dict[str, Any]:
        """What a model card records of its profile: enough for any service to feed the
        model raw values (types and levels) without the profile file."""
        return {
            "name": self.name,
            "features": [f.to_dict() for f in self.features],
            "id": self.id_column,
            "label": self.label_field if self.label is not None else None,
            "tags": list(self.tags),
            "value": self.value,
            "measurement": self.measurement,
            "scored_measurement": self.scored_measurement,
            "database": self.database,
        }

    # -- files --------------------------------------------------------------------
    def to_toml(self) -> str:
        """The profile as a TOML document (:func:`load_profile` reads it back)."""
        lines = [f"name = {_q(self.name)}"]
        if self.description:
            lines.append(f"description = {_q(self.description)}")
        lines += [
            "",
            "[influxdb]",
            f"database = {_q(self.database)}",
            f"retention_policy = {_q(self.retention_policy)}",
            f"measurement = {_q(self.measurement)}",
            f"scored_measurement = {_q(self.scored_measurement)}",
            "",
            "[columns]",
        ]
        if self.id is not None:
            lines.append(f"id = {_q(self.id)}")
        else:
            lines.append(f"id_field = {_q(self.id_field)}")
        if self.label is not None:
            lines.append(f"label = {_q(self.label)}")
            lines.append(f"label_field = {_q(self.label_field)}")
        if self.value is not None:
            lines.append(f"value = {_q(self.value)}")
        if self.order is not None:
            lines.append(f"order = {_q(self.order)}")
        lines.append(f"tags = {_qlist(self.tags)}")
        lines.append(f"drop = {_qlist(self.drop)}")
        for f in self.features:
            lines += ["", "[[features]]", f"name = {_q(f.name)}", f"type = {_q(f.type)}"]
            if f.categorical:
                lines.append(f"levels = {_qlist(f.levels)}")
        lines += [
            "",
            "[alerts]",
            f"index = {_q(self.alert_index)}",
            f"message_fields = {_qlist(self.message_fields)}",
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_toml()
        load_profile_text(text, source=str(path))  # never write what cannot be read back
        path.write_text(text, encoding="utf-8")
        return path

    def with_levels(self, levels: Mapping[str, Iterable[str]]) -> Profile:
        """A copy with the categorical features' levels replaced (from training data)."""
        feats = tuple(
            replace(f, levels=tuple(sorted(set(levels[f.name]))))
            if f.categorical and f.name in levels
            else f
            for f in self.features
        )
        return replace(self, features=feats)


def _q(value: str) -> str:
    # a TOML basic string: JSON's escapes are valid TOML
    return json.dumps(value, ensure_ascii=False)


def _qlist(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


# -- validation -------------------------------------------------------------------
def _problem(p: Profile, key: str, what: str) -> ProfileError:
    where = f"profile {p.path}" if p.path is not None else f"profile {p.name!r}"
    return ProfileError(f"{where}: {key}: {what}")


def _check_identifier(p: Profile, key: str, value: object) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise _problem(
            p, key, f"must be a non-empty name without surrounding spaces, got {value!r}"
        )
    if any(ord(ch) < 32 for ch in value) or '"' in value or "\\" in value:
        raise _problem(p, key, f"{value!r} holds a control character, a quote or a backslash")
    if len(value.encode()) > 255:
        raise _problem(p, key, "is longer than 255 bytes")


def _validate(p: Profile) -> None:
    if not isinstance(p.name, str) or not _NAME.fullmatch(p.name):
        raise _problem(
            p, "name", f"{p.name!r} must be lowercase letters, digits and _, starting with a letter"
        )
    for key in ("database", "retention_policy", "measurement", "scored_measurement"):
        _check_identifier(p, f"influxdb.{key}", getattr(p, key))
    if p.measurement == p.scored_measurement:
        raise _problem(p, "influxdb.scored_measurement", "must differ from the input measurement")
    if not isinstance(p.alert_index, str) or not _INDEX.fullmatch(p.alert_index):
        raise _problem(
            p,
            "alerts.index",
            f"{p.alert_index!r} is not an Elasticsearch index name (lowercase, no spaces, "
            "not starting with -, _ or +)",
        )
    if not p.features:
        raise _problem(p, "features", "the profile names no feature")
    seen: set[str] = set()
    for i, f in enumerate(p.features):
        key = f"features[{i}]"
        _check_identifier(p, f"{key}.name", f.name)
        if f.name in seen:
            raise _problem(p, f"{key}.name", f"{f.name!r} is named twice")
        seen.add(f.name)
        if f.type not in FEATURE_TYPES:
            raise _problem(
                p, f"{key}.type", f"{f.type!r} must be one of {', '.join(FEATURE_TYPES)}"
            )
        if f.categorical:
            if not f.levels:
                raise _problem(p, f"{key}.levels", f"categorical {f.name!r} lists no level")
            if len(f.levels) > MAX_LEVELS:
                raise _problem(p, f"{key}.levels", f"{len(f.levels)} levels; at most {MAX_LEVELS}")
            if not all(isinstance(v, str) and v for v in f.levels):
                raise _problem(p, f"{key}.levels", "levels must be non-empty strings")
            if len(set(f.levels)) != len(f.levels):
                raise _problem(p, f"{key}.levels", "a level is listed twice")
        elif f.levels:
            raise _problem(p, f"{key}.levels", f"only a categorical feature has levels ({f.type})")
    for key in ("id", "label", "value", "order"):
        value = getattr(p, key)
        if value is not None:
            _check_identifier(p, f"columns.{key}", value)
    _check_identifier(p, "columns.id_field", p.id_field)
    _check_identifier(p, "columns.label_field", p.label_field)
    for key in ("tags", "drop", "message_fields"):
        for v in getattr(p, key):
            _check_identifier(p, key, v)
    feats = set(p.feature_names)
    if p.id is not None and p.id in feats:
        raise _problem(p, "columns.id", f"{p.id!r} is also a feature; an id is never a model input")
    if p.label is not None:
        if p.label in feats:
            raise _problem(p, "columns.label", f"{p.label!r} is also a feature (that leaks it)")
        if p.label_field in feats or p.label_field == p.id_column:
            raise _problem(p, "columns.label_field", f"{p.label_field!r} is already used")
    for t in p.tags:
        if t in feats or t in (p.id, p.label):
            raise _problem(p, "columns.tags", f"{t!r} is also a feature, the id or the label")
    for d in p.drop:
        if d in feats or d in p.tags or d in (p.id, p.label, p.value, p.order):
            raise _problem(p, "columns.drop", f"{d!r} is dropped but also used by the profile")
    if p.value is not None and p.value in feats and p.feature(p.value).categorical:
        raise _problem(p, "columns.value", f"{p.value!r} is categorical; a value must be numeric")
    if p.order is not None and p.order in feats and p.feature(p.order).categorical:
        raise _problem(p, "columns.order", f"{p.order!r} is categorical; it cannot order rows")
    names = [*p.feature_names, *p.tags, p.id_column] + (
        [p.label_field] if p.label is not None else []
    )
    clash = sorted({n for n in names if n in RESERVED})
    if clash:
        raise _problem(
            p,
            "columns",
            f"{', '.join(map(repr, clash))} is written by the scoring pipeline; rename the "
            "column in the CSV",
        )
    known = {*p.feature_names, p.id_column, *p.tags} | (
        {p.label_field} if p.label is not None else set()
    )
    for m in p.message_fields:
        if m not in known:
            raise _problem(
                p, "alerts.message_fields", f"{m!r} is not a feature, the id, a tag or the label"
            )


# -- reading ----------------------------------------------------------------------
def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is not None and not isinstance(value, kind):
        raise ProfileError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def load_profile_text(text: str, *, source: str = "<text>") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {source}: not valid TOML: {exc}") from None
    return _from_mapping(data, source)


def _from_mapping(data: Mapping[str, Any], source: str) -> Profile:
    where = f"profile {source}"
    known = {"name", "description", "influxdb", "columns", "features", "alerts"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {sorted(known)})")
    influx = _get(data, "influxdb", dict, where) or {}
    cols = _get(data, "columns", dict, where) or {}
    alerts = _get(data, "alerts", dict, where) or {}
    for table, allowed, name in (
        (influx, {"database", "retention_policy", "measurement", "scored_measurement"}, "influxdb"),
        (
            cols,
            {"id", "id_field", "label", "label_field", "tags", "drop", "value", "order"},
            "columns",
        ),
        (alerts, {"index", "message_fields"}, "alerts"),
    ):
        extra = sorted(set(table) - allowed)
        if extra:
            raise ProfileError(f"{where}: [{name}] has unknown key(s) {', '.join(extra)}")
    raw_features = _get(data, "features", list, where) or []
    features = []
    for i, f in enumerate(raw_features):
        if not isinstance(f, dict):
            raise ProfileError(f"{where}: features[{i}] must be a table ([[features]])")
        extra = sorted(set(f) - {"name", "type", "levels"})
        if extra:
            raise ProfileError(f"{where}: features[{i}] has unknown key(s) {', '.join(extra)}")
        levels = f.get("levels") or []
        if not isinstance(levels, list):
            raise ProfileError(f"{where}: features[{i}].levels must be a list")
        features.append(
            Feature(name=f.get("name"), type=f.get("type", "float"), levels=tuple(levels))
        )
    required = [
        ("name", data.get("name")),
        ("influxdb.database", influx.get("database")),
        ("influxdb.measurement", influx.get("measurement")),
        ("influxdb.scored_measurement", influx.get("scored_measurement")),
        ("alerts.index", alerts.get("index")),
    ]
    missing = [k for k, v in required if v is None]
    if missing:
        raise ProfileError(f"{where}: missing {', '.join(missing)}")
    for key in ("tags", "drop"):
        if not isinstance(cols.get(key, []), list):
            raise ProfileError(f"{where}: columns.{key} must be a list")
    if not isinstance(alerts.get("message_fields", []), list):
        raise ProfileError(f"{where}: alerts.message_fields must be a list")
    try:
        return Profile(
            name=data["name"],
            description=data.get("description", ""),
            database=influx["database"],
            retention_policy=influx.get("retention_policy", "autogen"),
            measurement=influx["measurement"],
            scored_measurement=influx["scored_measurement"],
            id=cols.get("id"),
            id_field=cols.get("id_field", "id"),
            label=cols.get("label"),
            label_field=cols.get("label_field", "label"),
            features=tuple(features),
            tags=tuple(cols.get("tags", [])),
            drop=tuple(cols.get("drop", [])),
            value=cols.get("value"),
            order=cols.get("order"),
            alert_index=alerts["index"],
            message_fields=tuple(alerts.get("message_fields", [])),
            path=Path(source) if source != "<text>" else None,
        )
    except ProfileError:
        raise
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from None


def profile_names(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles in ``directory`` (the shipped ones by default)."""
    return sorted(p.stem for p in Path(directory).glob("*.toml"))


def load_profile(ref: str | Path | None = None, *, directory: Path = PROFILES_DIR) -> Profile:
    """A profile by name (``profiles/NAME.toml``) or by path; the default with no ``ref``."""
    if ref is None or ref == "":
        ref = DEFAULT_PROFILE
    ref_text = str(ref)
    path = Path(ref_text)
    looks_like_path = path.suffix == ".toml" or "/" in ref_text or path.is_file()
    if not looks_like_path:
        path = Path(directory) / f"{ref_text}.toml"
        if not path.is_file():
            known = ", ".join(profile_names(directory)) or "none"
            raise ProfileError(
                f"no profile {ref_text!r} in {directory} (known: {known}); pass a path to a "
                "TOML file, or write one with `python -m models profile infer`"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc}") from exc
    return load_profile_text(text, source=str(path))


# -- inference --------------------------------------------------------------------
def infer_profile(
    csv: str | Path,
    *,
    name: str,
    label: str | None,
    id: str | None = None,
    drop: Sequence[str] = (),
    categorical: Sequence[str] = (),
    tags: Sequence[str] = (),
    value: str | None = None,
    order: str | None = None,
    database: str | None = None,
    max_rows: int = 200_000,
) -> Profile:
    """A profile for ``csv``: every column not named as the id, label, a tag or dropped
    becomes a feature, typed from its values (integers, floats, or text with at most
    ``INFER_MAX_LEVELS`` distinct values as categorical; ``categorical`` forces it). A
    column that cannot be a feature (free text, empty or partly empty, a constant,
    NaN/inf) is an error naming it, with what to do; so is every such column at once.
    Column names are taken as the header writes them (surrounding spaces stripped, as
    the data loader does)."""
    import csv as _csv

    import numpy as np
    import pandas as pd

    path = Path(csv)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = [c.strip() for c in next(_csv.reader(f), [])]
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, nrows=max_rows, encoding="utf-8-sig"
        )
    except (OSError, UnicodeDecodeError, _csv.Error, pd.errors.ParserError) as exc:
        raise ProfileError(f"{path}: cannot read as CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ProfileError(f"{path}: the file is empty (no header)") from None
    if not header:
        raise ProfileError(f"{path}: the file is empty (no header)")
    unnamed = [i + 1 for i, c in enumerate(header) if not c]
    if unnamed:
        raise ProfileError(f"{path}: column(s) {unnamed} of the header have no name")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise ProfileError(f"{path}: duplicated column(s) {dupes}")
    df = df.set_axis(header, axis=1)
    columns = header
    if df.empty:
        raise ProfileError(f"{path}: no data rows")
    named = {"label": label, "id": id, "value": value, "order": order}
    for role, col in named.items():
        if col is not None and col not in columns:
            raise ProfileError(
                f"{path}: --{role} {col!r} is not a column (columns: "
                f"{', '.join(map(repr, columns))})"
            )
    for role, cols in (("drop", drop), ("categorical", categorical), ("tags", tags)):
        missing = [c for c in cols if c not in columns]
        if missing:
            raise ProfileError(f"{path}: --{role} names unknown column(s) {missing}")
    if label is not None:
        values = set(df[label].str.strip())
        if not values <= {"0", "1", "0.0", "1.0"}:
            raise ProfileError(
                f"{path}: label {label!r} must hold 0 and 1 only; found {sorted(values)[:6]}"
            )
    if id is not None:
        ids = df[id].str.strip()
        if ids.eq("").any():
            line = int(np.flatnonzero(ids.eq("").to_numpy())[0]) + 2
            raise ProfileError(f"{path}: id {id!r} is empty at line {line}")
        if ids.duplicated().any():
            raise ProfileError(
                f"{path}: id {id!r} is not unique ({ids[ids.duplicated()].iloc[0]!r} repeats)"
            )
    skip = {c for c in (label, id) if c} | set(drop) | set(tags)
    features: list[Feature] = []
    problems: list[str] = []
    for col in columns:
        if col in skip:
            continue
        text = df[col].str.strip()
        empty = text.eq("")
        blank = empty | text.str.lower().isin(["nan", "na", "null", "none"])
        if blank.all():
            problems.append(f"{col!r} is empty (drop it with --drop)")
            continue
        numbers = pd.to_numeric(text.where(~blank), errors="coerce")
        numeric = col not in categorical and not (numbers.isna() & ~blank).any()
        # a number column treats NaN/null spellings as missing; a text column only ""
        missing = blank if numeric else empty
        if missing.any():
            line = int(np.flatnonzero(missing.to_numpy())[0]) + 2
            problems.append(
                f"{col!r} has {int(missing.sum())} empty value(s), first at line {line}: fill "
                "them or drop the column with --drop"
            )
            continue
        if not numeric:
            if col in (value, order):
                problems.append(f"{col!r} is text, but --{'value' if col == value else 'order'} "
                                "needs a numeric column")  # fmt: skip
                continue
            levels = sorted(set(text))
            if col not in categorical and len(levels) > INFER_MAX_LEVELS:
                problems.append(
                    f"{col!r} is text with {len(levels)} distinct values: too many for a "
                    f"categorical feature (at most {INFER_MAX_LEVELS}); drop it with --drop "
                    "or make it an id with --id"
                )
                continue
            if len(levels) > MAX_LEVELS:
                problems.append(f"{col!r} has {len(levels)} levels; at most {MAX_LEVELS}")
                continue
            if len(levels) < 2:
                problems.append(
                    f"{col!r} holds one value only ({levels[0]!r}): it cannot inform a model; "
                    "--drop it"
                )
                continue
            features.append(Feature(name=col, type="categorical", levels=tuple(levels)))
            continue
        arr = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(arr).any():
            problems.append(f"{col!r} holds infinite values")
            continue
        if np.all(arr == arr[0]):
            problems.append(
                f"{col!r} is constant ({arr[0]:g}): it cannot inform a model; --drop it"
            )
            continue
        integral = all("." not in t and "e" not in t.lower() for t in text) and bool(
            np.all(np.abs(arr) < 2**53)
        )
        features.append(Feature(name=col, type="int" if integral else "float"))
    if problems:
        raise ProfileError(f"{path}: unusable column(s): " + "; ".join(problems))
    if not features:
        raise ProfileError(f"{path}: no feature column is left")
    base = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    message = [c for c in (id,) if c] + [f.name for f in features[:2]]
    if value is not None and value not in message:
        message.append(value)
    try:
        return Profile(
            name=name,
            description=f"inferred from {path.name}",
            database=database or base,
            measurement=f"{base}_points",
            scored_measurement=f"{base}_scored",
            id=id,
            label=label,
            features=tuple(features),
            tags=tuple(tags),
            drop=tuple(drop),
            value=value,
            order=order,
            alert_index=f"{base.replace('_', '-')}-alerts",
            message_fields=tuple(message),
        )
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
