"""The model card, read into a validated object.

``model.json`` is the registry's record of one model version. :class:`ModelCard` checks
it when it is read, so a loader never meets a missing key or a wrong type later: a bad
card is an :class:`~models.errors.InvalidCard` naming the card and the key. Every key of
the file stays available in ``data`` (training summary, metrics, candidate, parameters…).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidCard

__all__ = ["ModelCard"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _problem(where: str, key: str, what: str) -> InvalidCard:
    return InvalidCard(f"{where}: {key!r} {what}")


_TYPES = ("float", "int", "categorical")


def _feature_types(
    profile: Mapping[str, Any] | None, features: list[str], where: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(type, levels) per feature, from the card's profile section (all float without)."""
    if not profile or "features" not in profile:
        return tuple(("float", ()) for _ in features)
    specs = profile["features"]
    if (
        not isinstance(specs, list)
        or [s.get("name") if isinstance(s, Mapping) else None for s in specs] != features
    ):
        raise _problem(where, "profile.features", "must list the card's features, in order")
    out = []
    for spec in specs:
        kind = spec.get("type", "float")
        if kind not in _TYPES:
            raise _problem(where, "profile.features", f"type {kind!r} is not one of {_TYPES}")
        levels = spec.get("levels") or []
        if kind == "categorical" and (
            not isinstance(levels, list) or not all(isinstance(v, str) for v in levels)
        ):
            raise _problem(where, "profile.features", f"{spec['name']!r} needs its levels")
        out.append((kind, tuple(levels) if kind == "categorical" else ()))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ModelCard:
    """A validated model card (``data`` keeps every key of ``model.json``)."""

    data: Mapping[str, Any] = field(repr=False)
    path: Path | None = None
    name: str = field(init=False)
    version: str = field(init=False)
    framework: str = field(init=False)
    threshold: float = field(init=False)
    artifact_file: str = field(init=False)
    artifact_sha256: str = field(init=False)
    _features: tuple[str, ...] = field(init=False, repr=False)
    _types: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        data = self.data
        where = f"model card {self.path}" if self.path is not None else "model card"
        if not isinstance(data, Mapping):
            raise InvalidCard(f"{where} is not a JSON object")
        set_ = object.__setattr__
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _problem(where, "name", "must be a non-empty string")
        version = data.get("version")
        if isinstance(version, bool) or not (
            (isinstance(version, int) and version > 0)
            or (isinstance(version, str) and version.isdigit() and int(version) > 0)
        ):
            raise _problem(where, "version", "must be a positive integer (or its string)")
        framework = data.get("framework", "sklearn")
        if not isinstance(framework, str) or not framework:
            raise _problem(where, "framework", "must be a non-empty string")
        features = data.get("features")
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) and f for f in features)
        ):
            raise _problem(where, "features", "must be a non-empty list of feature names")
        if len(set(features)) != len(features):
            dupes = sorted({f for f in features if features.count(f) > 1})
            raise _problem(where, "features", f"names a feature twice: {dupes[:5]}")
        threshold = data.get("threshold")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
            or not 0.0 <= threshold <= 1.0
        ):
            raise _problem(where, "threshold", f"must be a number in [0, 1], got {threshold!r}")
        artifact = data.get("artifact")
        if not isinstance(artifact, Mapping):
            raise _problem(where, "artifact", "must be an object with 'file' and 'sha256'")
        file, sha = artifact.get("file"), artifact.get("sha256")
        if not isinstance(file, str) or not file:
            raise _problem(where, "artifact.file", "must be a non-empty string")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise _problem(where, "artifact.sha256", "must be 64 lowercase hex digits")
        for key in ("serving", "metrics", "profile"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise _problem(where, key, "must be an object")
        types = _feature_types(data.get("profile"), features, where)
        set_(self, "name", name)
        set_(self, "version", str(int(version)))
        set_(self, "framework", framework)
        set_(self, "threshold", float(threshold))
        set_(self, "artifact_file", file)
        set_(self, "artifact_sha256", sha)
        set_(self, "_features", tuple(features))
        set_(self, "_types", types)

    @property
    def features(self) -> list[str]:
        """Model inputs, in the order the model takes them."""
        return list(self._features)

    @property
    def feature_types(self) -> list[str]:
        """Type of each feature, in order: ``float``, ``int`` or ``categorical`` (cards
        without a ``profile`` section, the credit-card ones, are all ``float``)."""
        return [t for t, _ in self._types]

    @property
    def categorical(self) -> dict[str, tuple[str, ...]]:
        """Categorical features and their training levels (empty for numeric models)."""
        return {
            name: levels
            for name, (kind, levels) in zip(self._features, self._types, strict=True)
            if kind == "categorical"
        }

    @property
    def profile(self) -> Mapping[str, Any]:
        """The profile section: data set name, id and label fields, measurements."""
        return self.data.get("profile") or {}

    @property
    def serving(self) -> Mapping[str, Any]:
        return self.data.get("serving") or {}

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.data.get("metrics") or {}

    def __repr__(self) -> str:
        return (
            f"ModelCard({self.name} v{self.version}, {self.framework}, "
            f"{len(self._features)} features)"
        )
