"""The ``@drift()`` UDF: population stability of a window of input points against the
distributions a model was trained on (the card's ``reference`` section).

A batch TICKscript queries the input measurement over a window and sends each batch
here (Kapacitor's batch edge); the agent bins the window's rows with the reference's
edges as they arrive (chunk by chunk: memory stays flat), scores them with the same model
for the score distribution, and at the batch's end emits one point (stream edge):

- name: ``.measurement()`` (default ``model_drift``), time: the batch's ``tmax``
- tags: the batch's tags, ``model``, ``model_version``
- fields: ``psi_<feature>`` per feature, ``psi_score``, ``psi_max`` (the largest
  feature PSI), ``drift_feature`` (which feature), ``drift_level`` (``ok``, ``warning``,
  ``critical``; ``insufficient`` below ``.minCount()`` rows, when no PSI is judged),
  ``count`` (rows in the window), ``unscored`` (rows missing a feature)

Alerts on ``psi_max`` are the TICKscript's (the same alert sink path as anomalies).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from models import contract
from models.drift import CRITICAL, WARNING, DriftAccumulator, drift_level
from models.errors import InvalidScores, ModelsError
from models.provider import Follower, ModelProvider

from .errors import OptionError
from .metrics import AgentMetrics
from .options import read_options
from .protocol import messages as pb
from .protocol.codec import encode_frame
from .scoring import _extract

__all__ = [
    "DRIFT_OPTION_SPECS",
    "DriftOptions",
    "DriftSession",
    "drift_info_response",
    "parse_drift_options",
]

log = logging.getLogger("udf_agent.drift")

DRIFT_OPTION_SPECS: dict[str, tuple[int, ...]] = {
    "model": (pb.STRING,),
    "version": (pb.STRING,),
    "minCount": (pb.INT,),
    "warn": (pb.DOUBLE,),
    "crit": (pb.DOUBLE,),
    "measurement": (pb.STRING,),
}

DRIFT_OPTION_HELP = {
    "model": "registered model name (required), e.g. .model('creditcard')",
    "version": "alias or version number as a string, default 'production'",
    "minCount": "fewest rows in a window for its PSI to be judged, default 200",
    "warn": "PSI above which drift_level is 'warning', default 0.1",
    "crit": "PSI above which drift_level is 'critical', default 0.25",
    "measurement": "name of the emitted point, default 'model_drift'",
}

DRIFT_MEASUREMENT = "model_drift"


@dataclass(frozen=True)
class DriftOptions:
    model: str
    version: str = "production"
    min_count: int = 200
    warn: float = WARNING
    crit: float = CRITICAL
    measurement: str = DRIFT_MEASUREMENT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def drift_info_response() -> Any:
    """InfoResponse of ``@drift()``: wants batches, provides one point per batch."""
    resp = pb.Response()
    resp.info.wants = pb.BATCH
    resp.info.provides = pb.STREAM
    for name, types in DRIFT_OPTION_SPECS.items():
        resp.info.options[name].valueTypes.extend(types)
    return resp


def parse_drift_options(options: Any) -> DriftOptions:
    values, problems = read_options(options, DRIFT_OPTION_SPECS, DRIFT_OPTION_HELP)
    model = values.get("model")
    if not model:
        problems.append("missing .model(name): " + DRIFT_OPTION_HELP["model"])
    version = str(values.get("version", "production")).strip()
    if not version:
        problems.append(".version() must not be empty")
    min_count = values.get("minCount", 200)
    if min_count < 1:
        problems.append(f".minCount({min_count}) must be at least 1")
    warn, crit = values.get("warn", WARNING), values.get("crit", CRITICAL)
    if not (0 < warn <= crit):
        problems.append(f".warn({warn}) and .crit({crit}) must satisfy 0 < warn <= crit")
    measurement = values.get("measurement", DRIFT_MEASUREMENT)
    if not measurement:
        problems.append(".measurement() must not be empty")
    if problems:
        raise OptionError("; ".join(problems))
    return DriftOptions(
        model=model,
        version=version,
        min_count=int(min_count),
        warn=float(warn),
        crit=float(crit),
        measurement=measurement,
    )


def _field_key(feature: str) -> str:
    return f"psi_{feature}"


class DriftSession:
    """State of one ``@drift()`` node: its model and the window being accumulated."""

    def __init__(
        self,
        options: DriftOptions,
        provider: ModelProvider,
        *,
        metrics: AgentMetrics | None = None,
        task: str = "",
        node: str = "",
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.task = task
        self.node = node
        self.model: Follower = provider.follow(options.model, options.version)
        try:
            backend = self.model.current()
        except (ModelsError, OSError) as exc:
            self.model.close()
            raise OptionError(f"model {options.model}@{options.version}: {exc}") from exc
        reference = backend.card.data.get("reference")
        if not isinstance(reference, dict) or not reference.get("features"):
            self.model.close()
            raise OptionError(
                f"{backend.name} v{backend.version} has no reference distributions in its card; "
                "train it again (python -m models train) to record them"
            )
        self._window: DriftAccumulator | None = None
        self._unscored = 0
        self._begin: Any = None

    # the connection's protocol for a session
    @property
    def threshold(self) -> float:
        return self.model.backend.threshold

    @property
    def primary(self) -> Follower:
        return self.model

    def snapshot(self) -> bytes:
        state = {"options": self.options.to_json(), "model_version": self.model.version}
        return json.dumps(state, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        state = json.loads(data.decode())
        if not isinstance(state, dict) or "options" not in state:
            raise ValueError("snapshot is not a drift snapshot (no options)")

    def check_point_outputs(self, point: Any) -> list[str]:
        return []  # the output is a new point, not the input one

    def close(self) -> None:
        self.model.close()

    # -- windows -------------------------------------------------------------------
    def consume(self, points: Sequence[Any], begin: bytes | None, end: bytes | None) -> list[bytes]:
        """Add a chunk of a Kapacitor batch; at the batch's end, the drift point."""
        if begin is not None or self._window is None:
            self.model.refresh()
            backend = self.model.backend
            self._window = DriftAccumulator(backend.card.data["reference"], backend.feature_names)
            self._unscored = 0
            self._begin = pb.Request.FromString(begin).begin if begin is not None else None
        backend = self.model.backend
        if points:
            errors: list[str | None] = [None] * len(points)
            X = _extract(points, backend.feature_names, errors, None, backend.card.feature_types)
            good = [i for i, e in enumerate(errors) if e is None]
            self._unscored += len(points) - len(good)
            if good:
                Xg = X[good]
                try:
                    scores = backend.score(Xg)
                except InvalidScores as exc:
                    scores = exc.scores
                except ModelsError as exc:
                    log.warning("drift: scoring the window failed task=%s: %s", self.task, exc)
                    scores = None
                self._window.add(Xg, scores)
        if end is None:
            return []
        frame = self._emit(pb.Request.FromString(end).end, backend)
        self._window = None
        return [frame]

    def _emit(self, end: Any, backend: Any) -> bytes:
        window = self._window
        assert window is not None
        p = pb.Point()
        p.name = self.options.measurement
        p.time = end.tmax
        p.group = end.group
        for k, v in end.tags.items():
            p.tags[k] = v
        p.tags[contract.MODEL_TAG] = backend.name
        p.tags[contract.MODEL_VERSION_TAG] = backend.version
        p.fieldsInt["count"] = window.count
        p.fieldsInt["unscored"] = self._unscored
        if window.count < self.options.min_count:
            p.fieldsString["drift_level"] = "insufficient"
        else:
            values = window.result()
            features = {k: v for k, v in values.items() if k != "score"}
            for f, v in features.items():
                p.fieldsDouble[_field_key(f)] = v
            if "score" in values:
                p.fieldsDouble["psi_score"] = values["score"]
            worst = max(features, key=lambda k: features[k])
            p.fieldsDouble["psi_max"] = features[worst]
            p.fieldsString["drift_feature"] = worst
            level = drift_level(
                features[worst], warning=self.options.warn, critical=self.options.crit
            )
            p.fieldsString["drift_level"] = level
            if self.metrics is not None:
                self.metrics.drift_windows.labels(backend.name, level).inc()
            if level != "ok":
                log.info(
                    "drift model=%s version=%s level=%s feature=%s psi=%.3f rows=%d task=%s",
                    backend.name,
                    backend.version,
                    level,
                    worst,
                    features[worst],
                    window.count,
                    self.task,
                )
        return encode_frame(pb.Response(point=p).SerializeToString())
