"""Scoring: a shared store of loaded models with alias hot reload, and the per-node
session that turns a micro-batch of points into scored response frames."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import contract
from models.backends import BackendError, ScoringBackend, load_backend
from models.registry import ModelNotFound, Registry, RegistryError

from .errors import OptionError
from .metrics import AgentMetrics
from .options import ScoreOptions
from .protocol.codec import PointEncoder

__all__ = ["ModelStore", "ScoringSession", "parse_model_ref"]

log = logging.getLogger("udf_agent.scoring")

_enc = PointEncoder


def parse_model_ref(text: str, default_name: str) -> tuple[str, str]:
    """``'name@ref'`` -> (name, ref); ``'ref'`` -> (default_name, ref)."""
    if "@" in text:
        name, _, ref = text.partition("@")
        return name.strip(), (ref.strip() or "production")
    return default_name, text.strip()


class ModelStore:
    """Loaded backends shared by every connection, keyed by (name, version, kind).

    Alias resolution is cached and re-checked when ``aliases.json`` changes (its mtime
    is looked at no more than every ``reload_interval`` seconds), so promoting a new
    version reaches running tasks without a restart.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        backend_options: dict[str, Any] | None = None,
        reload_interval: float = 0.5,
        max_loaded: int = 8,
        clock: Callable[[], float] = time.monotonic,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.backend_options = dict(backend_options or {})
        self.reload_interval = reload_interval
        self.max_loaded = max_loaded
        self.clock = clock
        self.metrics = metrics
        self._lock = threading.Lock()
        self._load_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._backends: OrderedDict[tuple[str, str, str], ScoringBackend] = OrderedDict()
        # (name, ref) -> (version, aliases mtime_ns, checked_at)
        self._resolved: dict[tuple[str, str], tuple[str, int, float]] = {}
        self._failed: dict[tuple[str, str, str], str] = {}

    def _aliases_mtime(self, name: str) -> int:
        try:
            return os.stat(self.registry.aliases_path(name)).st_mtime_ns
        except OSError:
            return 0

    def resolve(self, name: str, ref: str) -> str:
        """Version for ``name@ref``; cheap when nothing changed."""
        key = (name, ref)
        if ref.isdigit():  # a version number never moves: resolve (validate) once
            if key not in self._resolved:
                self._resolved[key] = (self.registry.resolve(name, ref), 0, 0.0)
            return self._resolved[key][0]
        now = self.clock()
        cached = self._resolved.get(key)
        if cached is not None and now - cached[2] < self.reload_interval:
            return cached[0]
        mtime = self._aliases_mtime(name)
        if cached is not None and cached[1] == mtime:
            self._resolved[key] = (cached[0], mtime, now)
            return cached[0]
        version = self.registry.resolve(name, ref)
        self._resolved[key] = (version, mtime, now)
        return version

    def keep(self, name: str, ref: str, version: str) -> None:
        """Treat ``name@ref`` as resolved to ``version`` until aliases.json changes again
        (used when loading a newly promoted version failed)."""
        self._resolved[(name, ref)] = (version, self._aliases_mtime(name), self.clock())

    def backend(self, name: str, version: str, kind: str | None = None) -> ScoringBackend:
        key = (name, version, kind or "")
        with self._lock:
            b = self._backends.get(key)
            if b is not None:
                self._backends.move_to_end(key)
                return b
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per key even when many connections ask at once
            with self._lock:
                b = self._backends.get(key)
            if b is not None:
                return b
            if kind in ("tf", "tfserving") or (
                kind is None and self._framework(name, version) == "tf"
            ):
                from .backends import ensure_tfserving_registered

                ensure_tfserving_registered()
            started = time.perf_counter()
            b = load_backend(self.registry, name, version, kind=kind, **self.backend_options)
            log.info(
                "model loaded model=%s version=%s backend=%s seconds=%.3f",
                name,
                version,
                type(b).__name__,
                time.perf_counter() - started,
            )
            with self._lock:
                self._backends[key] = b
                while len(self._backends) > self.max_loaded:
                    # Not closed: the order follows loads, not use, so a running task may
                    # still score with it; it is released with the last session holding it.
                    self._backends.popitem(last=False)
            return b

    def loaded(self) -> list[tuple[str, str, ScoringBackend]]:
        """(name, version, backend) of every loaded backend, for metrics."""
        with self._lock:
            return [(name, version, b) for (name, version, _), b in self._backends.items()]

    def _framework(self, name: str, version: str) -> str:
        return self.registry.card(name, version).framework

    def close(self) -> None:
        with self._lock:
            for b in self._backends.values():
                b.close()
            self._backends.clear()


class _WarnThrottle:
    """Logs the first of a run of like warnings, then at most one per ``every`` seconds
    saying how many were held back. A backend outage fails every micro-batch, hundreds a
    second; the metrics count each one, the log need not repeat it."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self._clock = clock
        self._seen: dict[Any, tuple[float, int]] = {}  # key -> (last logged, held back)

    def warning(self, key: Any, msg: str, *args: Any) -> None:
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every:
            self._seen[key] = (last[0], last[1] + 1)
            return
        if last is not None and last[1]:
            msg, args = msg + " (%d like warnings held back)", (*args, last[1])
        log.warning(msg, *args)
        self._seen[key] = (now, 0)


@dataclass
class _Model:
    name: str
    ref: str
    version: str
    backend: ScoringBackend


class ScoringSession:
    """State of one ``@score()`` node: options, resolved models, output encoding."""

    def __init__(
        self,
        options: ScoreOptions,
        store: ModelStore,
        *,
        metrics: AgentMetrics | None = None,
        task: str = "",
        node: str = "",
    ) -> None:
        self.options = options
        self.store = store
        self.metrics = metrics
        self.task = task
        self.node = node
        self._warn = _WarnThrottle()
        self.primary = self._load(options.model, options.version, options.backend, "model")
        self.fallback = None
        if options.fallback:
            name, ref = parse_model_ref(options.fallback, options.model)
            self.fallback = self._load(name, ref, None, "fallback")
        self._check_features()
        self._check_outputs()
        self._set_model_info(self.primary, 1)
        # The challenger is optional: a task may name an alias that is promoted later, and a
        # shadow model that cannot be used never stops the champion from scoring.
        self.challenger: _Model | None = None
        self._challenger_ref = (
            parse_model_ref(options.challenger, options.model) if options.challenger else None
        )
        self._challenger_next_check = 0.0
        self._challenger_waiting = False  # "not set yet" logged for the current wait
        self._challenger_refused: str | None = None  # version that could not be used
        if self._challenger_ref is not None:
            self.challenger = self._find_challenger()

    # -- models ------------------------------------------------------------
    def _load(self, name: str, ref: str, kind: str | None, role: str) -> _Model:
        try:
            version = self.store.resolve(name, ref)
            backend = self.store.backend(name, version, kind)
        except (RegistryError, BackendError) as exc:
            raise OptionError(f"{role} {name}@{ref}: {exc}") from exc
        return _Model(name, ref, version, backend)

    def _check_features(self) -> None:
        m = self.fallback
        if m is not None and m.backend.feature_names != self.primary.backend.feature_names:
            raise OptionError(self._features_differ(m))

    def _features_differ(self, m: _Model) -> str:
        return (
            f"{m.name} v{m.version} expects features different from "
            f"{self.primary.name} v{self.primary.version}; they cannot share a node"
        )

    # -- challenger ------------------------------------------------------------
    def _find_challenger(self) -> _Model | None:
        """Look for the challenger (at most every ``reload_interval`` seconds): its alias
        may be promoted after the task started. Returns None while it is missing or
        unusable; a version that failed is not tried again until the alias moves."""
        now = self.store.clock()
        if now < self._challenger_next_check:
            return None
        self._challenger_next_check = now + self.store.reload_interval
        name, ref = self._challenger_ref  # type: ignore[misc]
        try:
            version = self.store.resolve(name, ref)
        except (RegistryError, OSError) as exc:
            if not self._challenger_waiting:
                log.info(
                    "challenger not available, scoring without it until it is "
                    "model=%s ref=%s task=%s node=%s reason=%s",
                    name,
                    ref,
                    self.task,
                    self.node,
                    exc,
                )
                self._challenger_waiting = True
            return None
        if version == self._challenger_refused:
            return None
        try:
            backend = self.store.backend(name, version, None)
            m = _Model(name, ref, version, backend)
            if backend.feature_names != self.primary.backend.feature_names:
                raise OptionError(self._features_differ(m))
        except (RegistryError, BackendError, OptionError, OSError) as exc:
            self._challenger_refused = version
            log.error(
                "challenger not used, the champion scores alone model=%s ref=%s version=%s "
                "task=%s node=%s error=%s",
                name,
                ref,
                version,
                self.task,
                self.node,
                exc,
            )
            if self.metrics is not None:
                self.metrics.errors.labels("challenger_failed").inc()
            return None
        self._challenger_waiting = False
        self._challenger_refused = None
        log.info(
            "challenger active model=%s ref=%s version=%s task=%s node=%s",
            name,
            ref,
            version,
            self.task,
            self.node,
        )
        return m

    def _refresh_challenger(self, m: _Model) -> _Model | None:
        """Follow the challenger's alias; stop shadow scoring when the alias is removed."""
        try:
            self.store.resolve(m.name, m.ref)
        except ModelNotFound:
            log.info(
                "challenger removed, scoring without it model=%s ref=%s version=%s task=%s node=%s",
                m.name,
                m.ref,
                m.version,
                self.task,
                self.node,
            )
            self._challenger_waiting = True
            return None
        except (RegistryError, OSError):
            pass  # _refresh reports it and keeps the current version
        new = self._refresh(m, "challenger")
        if new is not m and new.backend.feature_names != self.primary.backend.feature_names:
            self._warn.warning(
                ("challenger_features", new.name, new.version),
                "challenger not switched, keeping version %s: %s",
                m.version,
                self._features_differ(new),
            )
            if self.metrics is not None:
                self.metrics.errors.labels("challenger_failed").inc()
            self.store.keep(m.name, m.ref, m.version)
            return m
        return new

    def output_fields(self) -> list[str]:
        """Fields this node adds to a point."""
        out = [self.options.field, contract.IS_ANOMALY, contract.THRESHOLD, contract.SCORE_ERROR]
        if self.challenger is not None:
            out.append(contract.SCORE_CHALLENGER)
        return out

    def _check_outputs(self) -> None:
        """An output may not overwrite an input: the model's features and the data
        contract's own fields and tags are known at init (a point's other fields are not)."""
        inputs = {f: "a field of the input measurement" for f in contract.INPUT_FIELDS}
        inputs.update(
            (f, f"a feature of {self.primary.name} v{self.primary.version}")
            for f in self.primary.backend.feature_names
        )
        problems = [
            f".field({name!r}) would overwrite {inputs[name]}"
            if name == self.options.field
            else f"output field {name!r} would overwrite {inputs[name]}"
            for name in self.output_fields()
            if name in inputs
        ]
        tags = [contract.SOURCE_TAG]
        problems += [
            f"output {name!r} would overwrite the input tag {name!r}"
            for name in (self.options.field, *contract.OUTPUT_TAGS)
            if name in tags
        ]
        if problems:
            raise OptionError("; ".join(problems) + "; choose another .field() name")

    def check_point_outputs(self, point: Any) -> list[str]:
        """Output names already present in ``point`` (its fields or tags): checked on the
        first point of a connection, whose fields the init could not know."""
        present = []
        for name in self.output_fields():
            if (
                name in point.fieldsDouble
                or name in point.fieldsInt
                or name in point.fieldsString
                or name in point.fieldsBool
            ):
                present.append(name)
        present += [t for t in (*contract.OUTPUT_TAGS, "fallback_for") if t in point.tags]
        return present

    def _set_model_info(self, m: _Model, value: int) -> None:
        if self.metrics is not None:
            self.metrics.model_info.labels(m.name, m.ref, m.version).set(value)

    def _refresh(self, m: _Model, role: str) -> _Model:
        """Follow an alias to a newly promoted version; keep the old one if it fails."""
        try:
            version = self.store.resolve(m.name, m.ref)
            if version == m.version:
                return m
            backend = self.store.backend(
                m.name, version, self.options.backend if role == "model" else None
            )
        except (RegistryError, BackendError, OSError) as exc:
            log.error(
                "model reload failed, keeping current model=%s ref=%s version=%s error=%s",
                m.name,
                m.ref,
                m.version,
                exc,
            )
            if self.metrics is not None:
                self.metrics.errors.labels("reload_failed").inc()
            # Do not retry on every batch; look again when aliases.json changes.
            self.store.keep(m.name, m.ref, m.version)
            return m
        log.info(
            "model switch role=%s model=%s ref=%s from_version=%s to_version=%s task=%s node=%s",
            role,
            m.name,
            m.ref,
            m.version,
            version,
            self.task,
            self.node,
        )
        new = _Model(m.name, m.ref, version, backend)
        if role == "model":
            self._set_model_info(m, 0)
            self._set_model_info(new, 1)
            if self.metrics is not None:
                self.metrics.reloads.labels(m.name).inc()
        return new

    @property
    def threshold(self) -> float:
        return self._threshold(self.primary)

    def _threshold(self, m: _Model) -> float:
        """``.threshold()``, else the card of the model that scored (fallback included)."""
        t = self.options.threshold
        return t if t is not None else m.backend.threshold

    # -- snapshot ------------------------------------------------------------
    def snapshot(self) -> bytes:
        state = {
            "options": self.options.to_json(),
            "model": self.primary.name,
            "model_version": self.primary.version,
        }
        return json.dumps(state, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        """Accept a snapshot taken by this agent; raises ValueError if it is not one."""
        state = json.loads(data.decode())
        if not isinstance(state, dict) or "options" not in state:
            raise ValueError("snapshot is not an agent snapshot (no options)")
        try:
            old = ScoreOptions.from_json(state["options"])
        except (TypeError, AttributeError) as exc:  # not a dict, or no model
            raise ValueError(f"snapshot options are not this agent's: {exc}") from exc
        if old != self.options:
            log.info(
                "restore: options changed since the snapshot; using the new ones task=%s", self.task
            )
        if state.get("model_version") != self.primary.version:
            log.info(
                "restore: snapshot used version %s, alias %s now resolves to %s task=%s",
                state.get("model_version"),
                self.primary.ref,
                self.primary.version,
                self.task,
            )

    # -- scoring -------------------------------------------------------------
    def score(self, points: Sequence[Any], payloads: Sequence[bytes | None]) -> list[bytes]:
        """Score ``points`` (parsed Point messages) in one call; return response frames
        in the same order. Never drops a point: failures become ``score_error``."""
        self.primary = self._refresh(self.primary, "model")
        if self.challenger is not None:
            self.challenger = self._refresh_challenger(self.challenger)
        elif self._challenger_ref is not None:
            self.challenger = self._find_challenger()
        if self.fallback is not None:
            self.fallback = self._refresh(self.fallback, "fallback")
        features = self.primary.backend.feature_names
        n = len(points)
        errors: list[str | None] = [None] * n
        X = _extract(points, features, errors, self.metrics)
        good = np.flatnonzero([e is None for e in errors]) if n else np.empty(0, dtype=np.intp)
        scores = np.full(n, np.nan)
        used = self.primary
        if good.size:
            used, s, err = self._score_with_fallback(X[good] if good.size < n else X)
            if err is None:
                scores[good] = s
                for j in self._bad_scores(s, used).tolist():
                    errors[good[j]] = f"bad_score: the model returned {s[j]!r}, not a probability"
                    scores[good[j]] = np.nan
            else:
                for i in good:
                    errors[i] = err
        challenger_scores = None
        if self.challenger is not None and good.size and used is self.primary:
            try:
                cs = np.asarray(
                    self.challenger.backend.score(X[good] if good.size < n else X),
                    dtype=np.float64,
                ).reshape(-1)
                if cs.shape[0] != good.size:
                    raise BackendError(f"returned {cs.shape[0]} scores for {good.size} rows")
                cs[self._bad_scores(cs, self.challenger)] = np.nan
                challenger_scores = np.full(n, np.nan)
                challenger_scores[good] = cs
            except Exception as exc:  # shadow model problems never affect the champion
                self._warn.warning(
                    ("challenger", self.challenger.name, type(exc)),
                    "challenger scoring failed model=%s error=%s",
                    self.challenger.name,
                    exc,
                )
                if self.metrics is not None:
                    self.metrics.errors.labels("challenger_failed").inc()
        return self._encode(points, payloads, scores, errors, used, challenger_scores)

    def _score_with_fallback(self, X: np.ndarray) -> tuple[_Model, np.ndarray | None, str | None]:
        m = self.metrics
        last_reason = "no backend"
        for model in (self.primary, self.fallback):
            if model is None:
                continue
            started = time.perf_counter()
            try:
                s = np.asarray(model.backend.score(X), dtype=np.float64).reshape(-1)
                if s.shape[0] != X.shape[0]:
                    raise BackendError(
                        f"backend returned {s.shape[0]} scores for {X.shape[0]} rows"
                    )
            except Exception as exc:  # any backend failure turns into fallback/score_error
                reason = f"backend {model.name} v{model.version}: {type(exc).__name__}: {exc}"
                self._warn.warning(
                    (model.name, model.version, type(exc)),
                    "scoring failed rows=%d %s",
                    X.shape[0],
                    reason,
                )
                if m is not None:
                    m.errors.labels("backend_failed").inc()
                last_reason = reason[:200]
                continue
            if m is not None:
                m.scoring_seconds.observe(time.perf_counter() - started)
                m.batch_size.observe(X.shape[0])
                m.points_scored.labels(model.name, model.version).inc(X.shape[0])
                if model is self.fallback:
                    m.fallbacks.inc()
            return model, s, None
        return self.primary, None, last_reason

    def _bad_scores(self, s: np.ndarray, model: _Model) -> np.ndarray:
        """Indexes of scores that are not probabilities (NaN, infinite, outside [0, 1]):
        they become score_error=bad_score, never a score field."""
        bad = np.flatnonzero(~((s >= 0.0) & (s <= 1.0)))  # NaN compares false
        if bad.size:
            if self.metrics is not None:
                self.metrics.errors.labels("bad_score").inc(bad.size)
            self._warn.warning(
                ("bad_score", model.name, model.version),
                "backend returned %d score(s) that are not probabilities model=%s version=%s "
                "first=%r",
                bad.size,
                model.name,
                model.version,
                float(s[bad[0]]),
            )
        return bad

    def _encode(
        self,
        points: Sequence[Any],
        payloads: Sequence[bytes | None],
        scores: np.ndarray,
        errors: list[str | None],
        used: _Model,
        challenger_scores: np.ndarray | None,
    ) -> list[bytes]:
        threshold = self._threshold(used)
        tags = _enc.tag(contract.MODEL_TAG, used.name) + _enc.tag(
            contract.MODEL_VERSION_TAG, used.version
        )
        if used is not self.primary:
            tags += _enc.tag("fallback_for", self.primary.name)
        const = tags + _enc.double(contract.THRESHOLD, threshold)
        score_prefix = _enc.double_prefix(self.options.field)
        true_entry = _enc.boolean(contract.IS_ANOMALY, True)
        false_entry = _enc.boolean(contract.IS_ANOMALY, False)
        ch_prefix = _enc.double_prefix(contract.SCORE_CHALLENGER)
        if challenger_scores is not None and self.challenger is not None:
            # the challenger's own decision threshold, so dashboards compare like with like
            ch_prefix = (
                _enc.double(contract.THRESHOLD_CHALLENGER, self._threshold(self.challenger))
                + ch_prefix
            )
        pack = _PACK
        frame = _enc.frame
        out = []
        score_list = scores.tolist()
        ch_list = challenger_scores.tolist() if challenger_scores is not None else None
        error_count = 0
        for i, p in enumerate(points):
            body = payloads[i]
            if body is None:
                body = p.SerializeToString()
            err = errors[i]
            if err is None:
                s = score_list[i]
                extra = (
                    const + score_prefix + pack(s) + (true_entry if s >= threshold else false_entry)
                )
                if ch_list is not None and ch_list[i] == ch_list[i]:  # a bad one is left out
                    extra += ch_prefix + pack(ch_list[i])
            else:
                error_count += 1
                extra = const + _enc.string(contract.SCORE_ERROR, err)
            out.append(frame(body, extra))
        if error_count and self.metrics is not None:
            # reasons were counted where they arose; this counts the points affected
            self.metrics.errors.labels("unscored_point").inc(error_count)
        return out

    def passthrough(
        self, points: Sequence[Any], payloads: Sequence[bytes | None], reason: str
    ) -> list[bytes]:
        """Emit points unscored with ``score_error`` (overload, internal error)."""
        n = len(points)
        return self._encode(points, payloads, np.full(n, np.nan), [reason] * n, self.primary, None)


_PACK = __import__("struct").Struct("<d").pack


def _extract(
    points: Sequence[Any],
    features: list[str],
    errors: list[str | None],
    metrics: AgentMetrics | None = None,
) -> np.ndarray:
    """Feature matrix in card order. Fast path: every feature in fieldsDouble. Rows with a
    missing or non-finite value are re-examined (fieldsInt, wrong types) and either
    fixed or marked with an error reason."""
    n = len(points)
    if n == 0:
        return np.empty((0, len(features)))
    # Map.get, not indexing: indexing a protobuf map inserts and returns a default 0.0
    # for a missing key, which would score a point with invented values.
    rows = [list(map(p.fieldsDouble.get, features)) for p in points]
    X = np.array(rows, dtype=np.float64).reshape(n, len(features))
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    for i in bad.tolist():
        p = points[i]
        fd, fi = p.fieldsDouble, p.fieldsInt
        missing: list[str] = []
        problems: list[str] = []
        reason = None
        for j, f in enumerate(features):
            if f in fd:
                v = fd[f]
                if not math.isfinite(v):
                    problems.append(f"{f} is {v}")
                    reason = reason or "non_finite_feature"
            elif f in fi:
                X[i, j] = float(fi[f])
            elif f in p.fieldsString or f in p.fieldsBool:
                problems.append(f"{f} is not numeric")
                reason = reason or "non_numeric_feature"
            else:
                missing.append(f)
                reason = reason or "missing_feature"
        if missing:
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            problems.insert(0, "missing " + ", ".join(missing[:3]) + more)
        if problems:
            if metrics is not None:
                metrics.errors.labels(reason).inc()
            errors[i] = "; ".join(problems[:4])
    return X
