"""Stages 1 and 2 for a data set other than credit cards: its splits and a production model.

The rows come from ``--csv`` (the profile's columns) or from the profile's seeded synthetic
generator; they are split 60/20/20, stratified on the label, into
``DATA_DIR/<profile>/{train,validation,test}.csv`` and reused while their source is
unchanged. :func:`train_profile_model` is the one training call of the demo: a quick
scikit-learn Pipeline that encodes the categorical features itself (one-hot, unseen levels
ignored), so the registered artifact takes the raw values the agent reads from the points.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from models.profile import Profile
from models.registry import ModelCard, ModelNotFound, Registry

from .errors import DemoError

__all__ = [
    "GENERATORS",
    "ProfileSplits",
    "frame_of",
    "load_or_prepare_profile_splits",
    "train_profile_model",
]

log = logging.getLogger("demo.profile_data")

MANIFEST = ".splits-manifest.json"
PARTS = ("train", "validation", "test")


def _machine_failure(rows: int, seed: int) -> pd.DataFrame:
    from models.synthetic import make_machine_failure

    return make_machine_failure(rows, seed=seed)


#: profile name -> seeded generator of a data set in its schema (rows, seed)
GENERATORS: dict[str, Callable[[int, int], pd.DataFrame]] = {
    "machine_failure": _machine_failure,
}


@dataclass
class ProfileSplits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    source: str

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            part: {"rows": len(df), "positives": int(df.attrs.get("positives", 0))}
            for part, df in (("train", self.train), ("validation", self.validation),
                             ("test", self.test))
        }  # fmt: skip


def _read(path: Path, profile: Profile) -> pd.DataFrame:
    dtypes = {c: str for c in (profile.id, *profile.tags) if c}
    dtypes.update({f.name: str for f in profile.categorical})
    df = pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    if profile.label is not None:
        df.attrs["positives"] = int(df[profile.label].sum())
    return df


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_or_prepare_profile_splits(
    profile: Profile, data_dir: Path, *, csv: Path | None, rows: int, seed: int
) -> tuple[ProfileSplits, bool]:
    """(splits, reused). A CSV must have the profile's columns; without one the profile
    needs a generator in :data:`GENERATORS`."""
    folder = Path(data_dir) / profile.name
    if csv is not None:
        csv = Path(csv)
        if not csv.is_file():
            raise FileNotFoundError(f"dataset CSV {csv} does not exist")
        source = {"csv": str(csv.resolve()), **_stat(csv), "seed": seed}
        label = f"{csv.name}"
    else:
        if profile.name not in GENERATORS:
            raise DemoError(
                f"profile {profile.name!r} has no synthetic generator: pass --csv FILE with "
                f"its columns ({', '.join(profile.csv_columns)})"
            )
        source = {"synthetic_rows": int(rows), "seed": seed, "profile": profile.name}
        label = f"synthetic {profile.name} ({rows:,} rows, seed {seed})"
    paths = {part: folder / f"{part}.csv" for part in PARTS}
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if (
        manifest is not None
        and manifest.get("source") == source
        and all(p.is_file() for p in paths.values())
        and manifest.get("files") == {part: _stat(p) for part, p in paths.items()}
    ):
        parts = [_read(paths[part], profile) for part in PARTS]
        return ProfileSplits(*parts, source=manifest.get("label", label)), True

    df = _read(csv, profile) if csv is not None else GENERATORS[profile.name](rows, seed)
    missing = [c for c in profile.csv_columns if c not in df.columns]
    if missing:
        raise DemoError(f"{label} lacks the profile's column(s) {', '.join(missing)}")
    if profile.label is None:
        raise DemoError(f"profile {profile.name!r} has no label: the demo measures against it")
    from sklearn.model_selection import train_test_split

    y = df[profile.label].to_numpy()
    if len(np.unique(y)) < 2 or np.bincount(y.astype(int)).min() < 5:
        raise DemoError(f"{label}: too few rows of one class to split and train on")
    rest, test = train_test_split(df, test_size=0.2, stratify=y, random_state=seed)
    train, validation = train_test_split(
        rest, test_size=0.25, stratify=rest[profile.label], random_state=seed
    )
    folder.mkdir(parents=True, exist_ok=True)
    for part, frame in zip(PARTS, (train, validation, test), strict=True):
        frame.to_csv(paths[part], index=False)
    record = {"source": source, "label": label, "files": {p: _stat(x) for p, x in paths.items()}}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    parts = [_read(paths[part], profile) for part in PARTS]
    return ProfileSplits(*parts, source=label), False


def frame_of(df: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """The model input: the profile's features in order, categoricals as strings."""
    X = df[profile.feature_names].copy()
    for f in profile.features:
        if f.categorical:
            X[f.name] = X[f.name].astype(str)
        else:
            X[f.name] = pd.to_numeric(X[f.name]).astype(
                np.float64 if f.type == "float" else np.int64
            )
    return X


def train_profile_model(
    registry: Registry,
    profile: Profile,
    splits: ProfileSplits,
    *,
    name: str,
    ref: str,
    seed: int,
    progress: TextIO | None = None,
) -> tuple[ModelCard, dict[str, Any] | None]:
    """The card of ``name@ref``; when there is none, train a quick model of the data set,
    register it with the profile in its card and point ``ref`` at it.

    The one place the demo trains: gradient boosting behind a one-hot encoder of the
    categorical features, the threshold with the best F1 on validation."""
    try:
        return registry.card(name, ref), None
    except ModelNotFound:
        pass
    if ref.isdigit() or ref == "latest":
        raise ModelNotFound(f"model {name!r} has no version {ref!r} in {registry.root}")
    import sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from models.evaluation import choose_threshold, evaluate_scores

    label = profile.label
    X_tr, y_tr = frame_of(splits.train, profile), splits.train[label].to_numpy(np.int64)
    X_va, y_va = frame_of(splits.validation, profile), splits.validation[label].to_numpy(np.int64)
    X_te, y_te = frame_of(splits.test, profile), splits.test[label].to_numpy(np.int64)
    cats = [f.name for f in profile.categorical]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), cats)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    est = Pipeline(
        [("encode", encode), ("model", HistGradientBoostingClassifier(random_state=seed))]
    )
    if progress is not None:
        print(
            f"training gradient boosting (one-hot {', '.join(cats) or 'nothing'}) on "
            f"{len(y_tr):,} rows ({int(y_tr.sum())} positive) ...",
            file=progress,
            flush=True,
        )
    t0 = time.perf_counter()
    est.fit(X_tr, y_tr)
    fit_s = time.perf_counter() - t0
    s_va = est.predict_proba(X_va)[:, 1]
    s_te = est.predict_proba(X_te)[:, 1]
    choice = choose_threshold(y_va, s_va, strategy="f1")
    val = evaluate_scores(y_va, s_va, threshold=choice.threshold)
    test = evaluate_scores(y_te, s_te, threshold=choice.threshold)
    levels = {f.name: X_tr[f.name].unique().tolist() for f in profile.categorical}
    card = registry.register(
        name,
        est,
        features=profile.feature_names,
        threshold=choice.threshold,
        framework="sklearn",
        metrics={k: v for k, v in test.items() if isinstance(v, (int, float))},
        training={
            "rows": len(y_tr),
            "positives": int(y_tr.sum()),
            "positive_rate": float(y_tr.mean()),
            "resampling": "none",
            "validation_rows": len(y_va),
            "test_rows": len(y_te),
            "split": "stratified",
            "seed": seed,
            "source": splits.source,
            "cv_folds": 0,
            "trials": 0,
        },
        extra={
            "profile": profile.with_levels(levels).card_section(),
            "description": "gradient boosting with one-hot categories (demo quick default)",
            "candidate": "hgb",
            "params": {},
            "threshold_strategy": "f1",
            "validation_metrics": {k: v for k, v in val.items() if isinstance(v, (int, float))},
            "evaluated_on": "test split (threshold chosen on validation)",
            "library": {"scikit-learn": sklearn.__version__},
            "trained_by": "python -m demo --profile (quick default, no tuning)",
        },
    )
    registry.promote(name, card.version, ref)
    summary = {
        "candidate": "hgb",
        "version": card.version,
        "fit_seconds": round(fit_s, 2),
        "threshold": choice.threshold,
        "validation_auprc": val["auprc"],
        "test_auprc": test["auprc"],
    }
    log.info(
        "event=model_trained model=%s version=%s profile=%s fit_s=%.1f threshold=%.4f",
        name,
        card.version,
        profile.name,
        fit_s,
        choice.threshold,
    )
    return registry.card(name, ref), summary
