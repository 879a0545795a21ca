"""Scoring: the per-node session that turns a micro-batch of points into scored response
frames, with models from the agent's :class:`~models.provider.ModelProvider` (shared by
every connection, aliases followed as they move)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models import contract
from models.contract import format_top_features, parse_top_features
from models.errors import InvalidScores, ModelNotFound, ModelsError
from models.provider import Follower, LoadFailure, ModelProvider

from .errors import OptionError
from .metrics import AgentMetrics
from .options import ScoreOptions
from .protocol.codec import PointEncoder

__all__ = ["ScoringSession", "format_top_features", "parse_model_ref", "parse_top_features"]

log = logging.getLogger("udf_agent.scoring")

_enc = PointEncoder


def parse_model_ref(text: str, default_name: str) -> tuple[str, str]:
    """``'name@ref'`` -> (name, ref); ``'ref'`` -> (default_name, ref)."""
    if "@" in text:
        name, _, ref = text.partition("@")
        return name.strip(), (ref.strip() or "production")
    return default_name, text.strip()


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


class ScoringSession:
    """State of one ``@score()`` node: options, followed models, output encoding.

    The primary model (and the fallback) must load at init, or init fails with the reason.
    The challenger is optional: a task may name an alias that is promoted later, and a
    shadow model that cannot be used never stops the champion from scoring.
    """

    def __init__(
        self,
        options: ScoreOptions,
        provider: ModelProvider,
        *,
        metrics: AgentMetrics | None = None,
        task: str = "",
        node: str = "",
    ) -> None:
        self.options = options
        self.provider = provider
        self.metrics = metrics
        self.task = task
        self.node = node
        self._warn = _WarnThrottle()
        self._reported: dict[str, LoadFailure | None] = {}
        self.fallback: Follower | None = None
        self.challenger: Follower | None = None
        self.primary = self._follow(options.model, options.version, options.backend, "model")
        try:
            if options.fallback:
                name, ref = parse_model_ref(options.fallback, options.model)
                self.fallback = self._follow(name, ref, None, "fallback")
                if self.fallback.backend.feature_names != self.primary_backend.feature_names:
                    raise OptionError(self._features_differ(self.fallback))
            self._check_outputs()
        except BaseException:
            self.close()
            raise
        self._set_model_info(self.primary, self.primary.version, 1)
        self._challenger_ref = (
            parse_model_ref(options.challenger, options.model) if options.challenger else None
        )
        self._challenger_next_check = float("-inf")
        self._challenger_waiting = False  # "not available yet" logged for the current wait
        self._challenger_refused: str | None = None  # a version that could not be used
        if self._challenger_ref is not None:
            self._find_challenger()

    # -- models ------------------------------------------------------------
    def _follow(self, name: str, ref: str, kind: str | None, role: str) -> Follower:
        f = self.provider.follow(name, ref, kind)
        try:
            f.current()
        except (ModelsError, OSError) as exc:
            f.close()
            raise OptionError(f"{role} {name}@{ref}: {exc}") from exc
        return f

    @property
    def primary_backend(self) -> Any:
        return self.primary.backend

    def _features_differ(self, f: Follower) -> str:
        return (
            f"{f.name} v{f.version} expects features different from "
            f"{self.primary.name} v{self.primary.version}; they cannot share a node"
        )

    def output_fields(self) -> list[str]:
        """Fields this node adds to a point."""
        out = [self.options.field, contract.IS_ANOMALY, contract.THRESHOLD, contract.SCORE_ERROR]
        if self.options.challenger:
            out += [contract.SCORE_CHALLENGER, contract.THRESHOLD_CHALLENGER]
        if self.options.explain:
            out.append(contract.TOP_FEATURES)
        return out

    def _check_outputs(self) -> None:
        """An output may not overwrite an input: the model's features and the data
        contract's own fields and tags are known at init (a point's other fields are not)."""
        profile = self.primary_backend.card.profile
        if profile:  # a profile's model: its id and label fields
            fields = [profile.get("id"), profile.get("label")]
            tags = [contract.SOURCE_TAG, *(profile.get("tags") or [])]
        else:
            fields, tags = contract.INPUT_FIELDS, [contract.SOURCE_TAG]
        inputs = {f: "a field of the input measurement" for f in fields if f}
        inputs.update(
            (f, f"a feature of {self.primary.name} v{self.primary.version}")
            for f in self.primary_backend.feature_names
        )
        problems = [
            f".field({name!r}) would overwrite {inputs[name]}"
            if name == self.options.field
            else f"output field {name!r} would overwrite {inputs[name]}"
            for name in self.output_fields()
            if name in inputs
        ]
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

    def _set_model_info(self, f: Follower, version: str | None, value: int) -> None:
        if self.metrics is not None and version is not None:
            self.metrics.model_info.labels(f.name, f.ref, version).set(value)

    def _refresh(self, f: Follower, role: str) -> None:
        """Follow an alias to a newly promoted version; the follower keeps the old one
        when the new one fails (reported once per failure, retried later)."""
        old = f.version
        if f.refresh():
            log.info(
                "model switch role=%s model=%s ref=%s from_version=%s to_version=%s task=%s "
                "node=%s",
                role,
                f.name,
                f.ref,
                old,
                f.version,
                self.task,
                self.node,
            )
            if role == "model":
                self._set_model_info(f, old, 0)
                self._set_model_info(f, f.version, 1)
                if self.metrics is not None:
                    self.metrics.reloads.labels(f.name).inc()
            return
        failure = f.last_failure
        if failure is not None and failure is not self._reported.get(role):
            self._reported[role] = failure
            log.error(
                "model reload failed, keeping current role=%s model=%s ref=%s version=%s "
                "task=%s node=%s error=%s",
                role,
                f.name,
                f.ref,
                f.version,
                self.task,
                self.node,
                failure.message,
            )
            if self.metrics is not None:
                self.metrics.errors.labels("reload_failed").inc()

    # -- challenger ------------------------------------------------------------
    def _find_challenger(self) -> None:
        """Look for the challenger (at most every ``reload_interval`` seconds): its alias
        may be promoted after the task started. A version that could not be used is not
        tried again until the alias moves."""
        p = self.provider
        now = p.clock()
        if now < self._challenger_next_check:
            return
        self._challenger_next_check = now + p.reload_interval
        name, ref = self._challenger_ref  # type: ignore[misc]
        try:
            version = p.resolve(name, ref)
        except (ModelsError, OSError) as exc:
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
            return
        if version == self._challenger_refused:
            return
        f = p.follow(name, ref)
        try:
            backend = f.current()
            if backend.feature_names != self.primary_backend.feature_names:
                raise OptionError(self._features_differ(f))
        except (ModelsError, OptionError, OSError) as exc:
            f.close()
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
            return
        self.challenger = f
        self._challenger_waiting = False
        self._challenger_refused = None
        log.info(
            "challenger active model=%s ref=%s version=%s task=%s node=%s",
            name,
            ref,
            f.version,
            self.task,
            self.node,
        )

    def _refresh_challenger(self) -> None:
        """Follow the challenger's alias; stop shadow scoring when the alias is removed or
        moves to a version that cannot score these points."""
        f = self.challenger
        assert f is not None
        try:
            self.provider.resolve(f.name, f.ref)
        except ModelNotFound:
            log.info(
                "challenger removed, scoring without it model=%s ref=%s version=%s task=%s node=%s",
                f.name,
                f.ref,
                f.version,
                self.task,
                self.node,
            )
            self._drop_challenger(waiting=True)
            return
        except (ModelsError, OSError):
            pass  # the follower reports it and keeps the current version
        self._refresh(f, "challenger")
        if f.backend.feature_names != self.primary_backend.feature_names:
            self._warn.warning(
                ("challenger_features", f.name, f.version),
                "challenger dropped: %s",
                self._features_differ(f),
            )
            if self.metrics is not None:
                self.metrics.errors.labels("challenger_failed").inc()
            self._challenger_refused = f.version
            self._drop_challenger(waiting=False)

    def _drop_challenger(self, *, waiting: bool) -> None:
        if self.challenger is not None:
            self.challenger.close()
        self.challenger = None
        self._challenger_waiting = waiting
        self._challenger_next_check = float("-inf")

    @property
    def threshold(self) -> float:
        return self._threshold(self.primary_backend)

    def _threshold(self, backend: Any) -> float:
        """``.threshold()``, else the card of the model that scored (fallback included)."""
        t = self.options.threshold
        return t if t is not None else backend.threshold

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
        self._refresh(self.primary, "model")
        if self.challenger is not None:
            self._refresh_challenger()
        elif self._challenger_ref is not None:
            self._find_challenger()
        if self.fallback is not None:
            self._refresh(self.fallback, "fallback")
        primary = self.primary_backend
        n = len(points)
        errors: list[str | None] = [None] * n
        X = _extract(
            points, primary.feature_names, errors, self.metrics, primary.card.feature_types
        )
        good = np.flatnonzero([e is None for e in errors]) if n else np.empty(0, dtype=np.intp)
        scores = np.full(n, np.nan)
        used = primary
        if good.size:
            used, s, err, bad = self._score_with_fallback(X[good] if good.size < n else X)
            if err is None:
                scores[good] = s
                for j in bad:
                    errors[good[j]] = f"bad_score: the model returned {s[j]!r}, not a probability"
                    scores[good[j]] = np.nan
            else:
                for i in good:
                    errors[i] = err
        challenger_scores = None
        challenger = self.challenger.backend if self.challenger is not None else None
        if challenger is not None and good.size and used is primary:
            challenger_scores = np.full(n, np.nan)
            try:
                challenger_scores[good] = challenger.score(X[good] if good.size < n else X)
            except InvalidScores as exc:  # keep the good ones; bad ones are left out
                if exc.scores is not None:
                    cs = exc.scores.copy()
                    cs[exc.bad] = np.nan
                    challenger_scores[good] = cs
                self._count_bad_scores(challenger, exc)
            except Exception as exc:  # shadow model problems never affect the champion
                challenger_scores = None
                self._warn.warning(
                    ("challenger", challenger.name, type(exc)),
                    "challenger scoring failed model=%s error=%s",
                    challenger.name,
                    exc,
                )
                if self.metrics is not None:
                    self.metrics.errors.labels("challenger_failed").inc()
        explanations = self._explain(X, scores, errors, used) if self.options.explain else None
        return self._encode(
            points, payloads, scores, errors, used, challenger_scores, challenger, explanations
        )

    def _explain(
        self, X: np.ndarray, scores: np.ndarray, errors: list[str | None], used: Any
    ) -> dict[int, str] | None:
        """``top_features`` of the anomalous points only (so the cost stays small): the
        features that pushed each score up the most, signed."""
        threshold = self._threshold(used)
        rows = [i for i, e in enumerate(errors) if e is None and scores[i] >= threshold]
        if not rows:
            return None
        try:
            contributions = used.explain(X[rows])
        except NotImplementedError as exc:
            self._warn.warning(("explain", used.name, used.version), "no explanations: %s", exc)
            if self.metrics is not None:
                self.metrics.errors.labels("explain_unavailable").inc(len(rows))
            return None
        except Exception as exc:  # an explanation never costs the point its score
            self._warn.warning(
                ("explain_failed", used.name, used.version, type(exc)),
                "explaining %d point(s) failed model=%s version=%s: %s",
                len(rows),
                used.name,
                used.version,
                exc,
            )
            if self.metrics is not None:
                self.metrics.errors.labels("explain_failed").inc(len(rows))
            return None
        names = used.feature_names
        out = {}
        for i, row in zip(rows, np.asarray(contributions, dtype=np.float64), strict=True):
            out[i] = format_top_features(names, row, self.options.explain)
        return out

    def _score_with_fallback(self, X: np.ndarray) -> tuple[Any, np.ndarray, str | None, list[int]]:
        """(backend used, scores, error reason, indexes of scores that are not
        probabilities). A backend that fails scores nothing and the fallback is tried; one
        that returns some bad scores keeps the others."""
        m = self.metrics
        last_reason = "no backend"
        candidates = [self.primary_backend]
        if self.fallback is not None:
            candidates.append(self.fallback.backend)
        for backend in candidates:
            started = time.perf_counter()
            bad: list[int] = []
            try:
                s = backend.score(X)
            except InvalidScores as exc:
                if exc.scores is None:
                    s = None
                    reason = f"backend {backend.name} v{backend.version}: {exc}"
                else:
                    s, bad = exc.scores, exc.bad.tolist()
                    self._count_bad_scores(backend, exc)
            except Exception as exc:  # any backend failure turns into fallback/score_error
                s = None
                reason = f"backend {backend.name} v{backend.version}: {type(exc).__name__}: {exc}"
            if s is None:
                self._warn.warning(
                    (backend.name, backend.version, "failed"),
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
                m.points_scored.labels(backend.name, backend.version).inc(X.shape[0] - len(bad))
                if backend is not candidates[0]:
                    m.fallbacks.inc()
            return backend, s, None, bad
        return candidates[0], np.full(X.shape[0], np.nan), last_reason, []

    def _count_bad_scores(self, backend: Any, exc: InvalidScores) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels("bad_score").inc(len(exc.bad))
        self._warn.warning(
            ("bad_score", backend.name, backend.version),
            "backend returned %d score(s) that are not probabilities model=%s version=%s: %s",
            len(exc.bad),
            backend.name,
            backend.version,
            exc,
        )

    def close(self) -> None:
        """Release the models this node holds (the provider closes them once unused)."""
        for f in (self.primary, self.fallback, self.challenger):
            if f is not None:
                f.close()

    def _encode(
        self,
        points: Sequence[Any],
        payloads: Sequence[bytes | None],
        scores: np.ndarray,
        errors: list[str | None],
        used: Any,
        challenger_scores: np.ndarray | None,
        challenger: Any = None,
        explanations: dict[int, str] | None = None,
    ) -> list[bytes]:
        threshold = self._threshold(used)
        tags = _enc.tag(contract.MODEL_TAG, used.name) + _enc.tag(
            contract.MODEL_VERSION_TAG, used.version
        )
        if used is not self.primary_backend:
            tags += _enc.tag("fallback_for", self.primary.name)
        const = tags + _enc.double(contract.THRESHOLD, threshold)
        score_prefix = _enc.double_prefix(self.options.field)
        true_entry = _enc.boolean(contract.IS_ANOMALY, True)
        false_entry = _enc.boolean(contract.IS_ANOMALY, False)
        ch_prefix = _enc.double_prefix(contract.SCORE_CHALLENGER)
        if challenger_scores is not None and challenger is not None:
            # the challenger's own decision threshold, so dashboards compare like with like
            ch_prefix = (
                _enc.double(contract.THRESHOLD_CHALLENGER, self._threshold(challenger)) + ch_prefix
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
                if explanations is not None and explanations.get(i):
                    extra += _enc.string(contract.TOP_FEATURES, explanations[i])
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
        return self._encode(
            points, payloads, np.full(n, np.nan), [reason] * n, self.primary_backend, None
        )


_PACK = __import__("struct").Struct("<d").pack


def _extract(
    points: Sequence[Any],
    features: list[str],
    errors: list[str | None],
    metrics: AgentMetrics | None = None,
    kinds: Sequence[str] | None = None,
) -> np.ndarray:
    """Feature matrix in card order. ``kinds`` are the card's feature types: a float
    feature is read from fieldsDouble, an int one from fieldsInt (either map is accepted
    for a number), a categorical one from fieldsString. Rows with a missing, non-finite
    or mistyped value are marked with an error reason (and scored by no one)."""
    n = len(points)
    if not kinds or all(k == "float" for k in kinds):
        return _extract_floats(points, features, errors, metrics)
    if n == 0:
        return np.empty((0, len(features)), dtype=object)
    maps = [
        "fieldsString" if k == "categorical" else "fieldsInt" if k == "int" else "fieldsDouble"
        for k in kinds
    ]
    spec = list(zip(features, maps, kinds, strict=True))
    X = np.empty((n, len(features)), dtype=object)
    for i, p in enumerate(points):
        row = [getattr(p, m).get(f) for f, m, _ in spec]
        ok = True
        for j, (v, (_, _, kind)) in enumerate(zip(row, spec, strict=True)):
            if v is None or (kind == "float" and not math.isfinite(v)):
                ok = False
                break
            if kind == "int":
                row[j] = float(v)
        if ok:
            X[i, :] = row
        else:
            X[i, :] = _row_slow(p, spec, i, errors, metrics)
    return X


def _row_slow(
    p: Any,
    spec: list[tuple[str, str, str]],
    i: int,
    errors: list[str | None],
    metrics: AgentMetrics | None,
) -> list[Any]:
    """One row with a problem: look in the other maps, else name what is wrong."""
    fd, fi, fs = p.fieldsDouble, p.fieldsInt, p.fieldsString
    out: list[Any] = []
    missing: list[str] = []
    problems: list[str] = []
    reason = None
    for f, _, kind in spec:
        if kind == "categorical":
            if f in fs:
                out.append(fs[f])
            elif f in fi:  # a level written as an integer
                out.append(str(fi[f]))
            elif f in fd or f in p.fieldsBool:
                out.append(None)
                problems.append(f"{f} is not a category label")
                reason = reason or "non_categorical_feature"
            else:
                out.append(None)
                missing.append(f)
                reason = reason or "missing_feature"
            continue
        if f in fd:
            v = fd[f]
            out.append(v)
            if not math.isfinite(v):
                problems.append(f"{f} is {v}")
                reason = reason or "non_finite_feature"
        elif f in fi:
            out.append(float(fi[f]))
        elif f in fs or f in p.fieldsBool:
            out.append(None)
            problems.append(f"{f} is not numeric")
            reason = reason or "non_numeric_feature"
        else:
            out.append(None)
            missing.append(f)
            reason = reason or "missing_feature"
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        problems.insert(0, "missing " + ", ".join(missing[:3]) + more)
    if problems:
        if metrics is not None:
            metrics.errors.labels(reason).inc()
        errors[i] = "; ".join(problems[:4])
    return out


def _extract_floats(
    points: Sequence[Any],
    features: list[str],
    errors: list[str | None],
    metrics: AgentMetrics | None = None,
) -> np.ndarray:
    """All-float features (the credit-card models). Fast path: every feature in
    fieldsDouble. Rows with a missing or non-finite value are re-examined (fieldsInt,
    wrong types) and either fixed or marked with an error reason."""
    n = len(points)
    if n == 0:
        return np.empty((0, len(features)))
    # Map.get, not indexing: indexing a protobuf map inserts and returns a default 0.0
    # for a missing key, which would score a point with invented values.
    rows = [list(map(p.fieldsDouble.get, features)) for p in points]
    X = np.array(rows, dtype=np.float64).reshape(n, len(features))
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    spec = [(f, "fieldsDouble", "float") for f in features]
    for i in bad.tolist():
        row = _row_slow(points[i], spec, i, errors, metrics)
        if errors[i] is None:
            X[i, :] = row
    return X
