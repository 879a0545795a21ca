"""Which index an alert goes to, and which document layout its rows take.

A sink started without ``--profile`` writes every alert into its ``--es-index``
(``fraud-alerts``) as the data contract's credit-card documents, exactly as it always has.
Each ``--profile`` adds a route: alerts whose series is the profile's scored measurement
(the series name Kapacitor posts) go to the profile's alert index, as documents with the
contract's fixed fields and every other field of the row under ``fields.*``. A series no
profile names still takes the default route, so nothing is lost when a task of an
unconfigured data set alerts.

Drift alerts (series ``model_drift``, posted by the drift task) are documents of their own
layout (``DRIFT``: ``alert.kind`` = ``drift`` and ``drift.*``) in the same index as the
anomalies of their data set: the one of the profile their ``data_set`` tag names, else the
default index. Every document says what it is about in ``alert.kind`` (``anomaly`` or
``drift``), so a query of anomalies leaves drift alerts out with ``NOT alert.kind:drift``
(documents written before the field existed have none and count as anomalies).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from models import contract
from models.profile import DEFAULT_PROFILE, Profile

from .errors import ConfigError

__all__ = ["DRIFT", "LEGACY", "PROFILE_DOC_FIELDS", "Layout", "Router", "layout_for"]

log = logging.getLogger("alert_sink.routing")

#: the fixed keys of a document of any data set other than credit cards, before fields.*
PROFILE_DOC_FIELDS = [
    "@timestamp",
    "alert.id",
    contract.ALERT_KIND,
    "alert.level",
    "alert.message",
    "task",
    "id",
    "score",
    "threshold",
    "model.name",
    "model.version",
    "label",
    "source",
    contract.EXPLANATION,
]
#: row fields the scoring pipeline writes, with their Elasticsearch types under fields.*
PIPELINE_FIELDS = {
    contract.IS_ANOMALY: "boolean",
    contract.SCORE_CHALLENGER: "float",
    contract.THRESHOLD_CHALLENGER: "float",
    contract.SCORE_ERROR: "keyword",
    "fallback_for": "keyword",
}
FIELDS_PREFIX = "fields."
#: most distinct unrouted series names remembered (one warning each)
MAX_UNROUTED_NAMES = 100


@dataclass(frozen=True)
class Layout:
    """How the rows of one data set's alerts become documents."""

    #: profile name ("" for the contract's credit-card documents without fields.*)
    name: str
    #: None: the sink's default index (--es-index)
    index: str | None
    #: the fixed keys, in document order (fields.* follow when ``carry_fields``)
    keys: tuple[str, ...]
    #: row field holding the row id, and the document key it goes to
    id_field: str
    id_key: str
    label_field: str | None
    #: a row field copied to a fixed key ("Amount" -> "amount" for credit cards)
    value_field: str | None = None
    value_key: str | None = None
    carry_fields: bool = False
    #: field -> "float" | "int" | "string": what a known field must hold
    types: dict[str, str] = field(default_factory=dict, compare=False)
    #: alert.kind of its documents
    kind: str = contract.ALERT_KIND_ANOMALY

    @property
    def consumed(self) -> set[str]:
        """Row fields and tags that fill a fixed key (not repeated under fields.*)."""
        out = {"time", self.id_field, contract.SCORE, contract.THRESHOLD, contract.TOP_FEATURES}
        out |= {contract.MODEL_TAG, contract.MODEL_VERSION_TAG, contract.SOURCE_TAG}
        if self.label_field:
            out.add(self.label_field)
        if self.value_field:
            out.add(self.value_field)
        return out


#: the data contract's credit-card documents, as the sink writes them without --profile
LEGACY = Layout(
    name="",
    index=None,
    keys=tuple(contract.ALERT_DOC_FIELDS),
    id_field=contract.TXN_ID,
    id_key=contract.TXN_ID,
    label_field=contract.LABEL,
    value_field="Amount",
    value_key="amount",
)


#: drift alerts (the drift task's model_drift windows), whatever their data set
DRIFT = Layout(
    name="drift",
    index=None,
    keys=tuple(contract.DRIFT_ALERT_DOC_FIELDS),
    id_field="",
    id_key="",
    label_field=None,
    kind=contract.ALERT_KIND_DRIFT,
)


def layout_for(profile: Profile) -> Layout:
    """The documents of ``profile``'s alerts. The credit-card profile keeps the contract's
    keys (txn_id, amount, label, source) and adds fields.*; any other data set has the
    fixed keys of PROFILE_DOC_FIELDS (its row id under ``id``) and fields.*."""
    types: dict[str, str] = {}
    for f in profile.features:
        types[f.name] = "string" if f.categorical else f.type
    types[profile.id_column] = "string"
    for t in profile.tags:
        types[t] = "string"
    for extra in (profile.value, profile.order):
        if extra is not None and extra not in types:
            types[extra] = "float"
    label = profile.label_field if profile.label is not None else None
    if label:
        types[label] = "int"
    if profile.name == DEFAULT_PROFILE:
        return Layout(
            name=profile.name,
            index=profile.alert_index,
            keys=tuple(contract.ALERT_DOC_FIELDS),
            id_field=profile.id_column,
            id_key=contract.TXN_ID,
            label_field=label,
            value_field=profile.value,
            value_key="amount" if profile.value else None,
            carry_fields=True,
            types=types,
        )
    return Layout(
        name=profile.name,
        index=profile.alert_index,
        keys=tuple(PROFILE_DOC_FIELDS),
        id_field=profile.id_column,
        id_key="id",
        label_field=label,
        carry_fields=True,
        types=types,
    )


class Router:
    """Series name -> layout (and index); see the module docstring."""

    def __init__(self, profiles: Sequence[Profile] = (), *, default_index: str) -> None:
        self.default_index = default_index
        self.profiles = tuple(profiles)
        self._routes: dict[str, Layout] = {}
        #: data set name -> its drift layout (the profile's index)
        self._drift: dict[str, Layout] = {}
        for p in self.profiles:
            if p.scored_measurement == contract.DRIFT_MEASUREMENT:
                raise ConfigError(
                    f"profile {p.name!r}: the scored measurement cannot be "
                    f"{contract.DRIFT_MEASUREMENT!r}, the drift task's measurement"
                )
            self._drift[p.name] = replace(DRIFT, name=f"drift:{p.name}", index=p.alert_index)
            other = self._routes.get(p.scored_measurement)
            if other is not None:
                raise ConfigError(
                    f"profiles {other.name!r} and {p.name!r} both name the scored measurement "
                    f"{p.scored_measurement!r}: an alert could not tell which index it goes to"
                )
            self._routes[p.scored_measurement] = layout_for(p)
        self._unrouted: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        routes = ", ".join(f"{k!r}->{v.index!r}" for k, v in self._routes.items())
        return f"Router(default={self.default_index!r}, routes=[{routes}])"

    def layout(self, series: str, tags: Mapping[str, str] | None = None) -> Layout:
        found = self._routes.get(series)
        if found is not None:
            return found
        if series == contract.DRIFT_MEASUREMENT:
            data_set = (tags or {}).get(contract.DATA_SET_TAG, "")
            found = self._drift.get(data_set)
            if found is not None:
                return found
            if self._drift:
                self._warn_once(
                    f"drift:{data_set}",
                    "event=unrouted_drift data_set=%r index=%s (no --profile names it)",
                    data_set,
                )
            return DRIFT
        if self._routes:
            with self._lock:
                first = series not in self._unrouted
                if first and len(self._unrouted) < MAX_UNROUTED_NAMES:
                    self._unrouted.add(series)
            if first:
                log.warning(
                    "event=unrouted_series series=%r index=%s (no --profile names it: "
                    "credit-card documents in the default index)",
                    series,
                    self.default_index,
                )
        return LEGACY

    def _warn_once(self, key: str, message: str, value: str) -> None:
        with self._lock:
            first = key not in self._unrouted
            if first and len(self._unrouted) < MAX_UNROUTED_NAMES:
                self._unrouted.add(key)
        if first:
            log.warning(message, value, self.default_index)

    def index_of(self, layout: Layout) -> str:
        return layout.index or self.default_index

    def indices(self) -> dict[str, list[Layout]]:
        """Every index the sink writes, with the layouts whose documents it holds (each
        holds drift alerts too)."""
        out: dict[str, list[Layout]] = {self.default_index: [LEGACY, DRIFT]}
        for layout in [*self._routes.values(), *self._drift.values()]:
            out.setdefault(self.index_of(layout), []).append(layout)
        return out


def routes_summary(router: Router) -> Iterable[str]:
    for series, layout in router._routes.items():
        yield f"{series}->{router.index_of(layout)}"
