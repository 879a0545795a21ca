"""Stages 1 and 2: the split files and a production model."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.data import SPLIT_FILES, Splits, X_y, load_split, prepare_splits
from models.registry import ModelCard, ModelNotFound, Registry

__all__ = ["MANIFEST", "QUICK_CANDIDATE", "ensure_model", "load_or_prepare_splits"]

log = logging.getLogger("demo.prepare")

#: records where the split files came from, so a later run can reuse them
MANIFEST = ".splits-manifest.json"
#: the quick default model: gradient boosting with library defaults, no tuning
QUICK_CANDIDATE = "hgb"


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _source_descriptor(
    data_dir: Path, csv: Path | None, synthetic_rows: int, seed: int, use_default_csv: bool
) -> dict:
    default_csv = data_dir / "creditcard.csv"
    chosen = csv
    if chosen is None and use_default_csv and default_csv.is_file():
        chosen = default_csv
    if chosen is not None:
        return {"csv": str(Path(chosen).resolve()), **_stat(Path(chosen)), "seed": seed}
    return {"synthetic_rows": int(synthetic_rows), "seed": seed}


def load_or_prepare_splits(
    data_dir: Path,
    *,
    csv: Path | None,
    synthetic_rows: int,
    seed: int,
    use_default_csv: bool = True,
) -> tuple[Splits, bool]:
    """Source: ``csv``, else ``data_dir/creditcard.csv`` when present and
    ``use_default_csv``, else the seeded synthetic generator.

    Reuse the split files when the manifest says they came from the same source and
    they are unchanged; otherwise (re)write them. Returns (splits, reused)."""
    data_dir = Path(data_dir)
    if csv is not None and not Path(csv).is_file():
        raise FileNotFoundError(f"dataset CSV {csv} does not exist")
    source = _source_descriptor(data_dir, csv, synthetic_rows, seed, use_default_csv)
    manifest_path = data_dir / MANIFEST
    paths = {part: data_dir / name for part, name in SPLIT_FILES.items()}
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if (
        manifest is not None
        and manifest.get("source") == source
        and all(p.is_file() for p in paths.values())
        and manifest.get("files") == {part: _stat(p) for part, p in paths.items()}
    ):
        parts = [load_split(paths[part]) for part in SPLIT_FILES]
        log.info("event=splits_reused dir=%s source=%s", data_dir, manifest.get("label"))
        return Splits(*parts, source=manifest.get("label", "")), True
    use_csv = source.get("csv")
    splits = prepare_splits(
        data_dir,
        csv=use_csv,
        synthetic_rows=None if use_csv else synthetic_rows,
        seed=seed,
    )
    record = {
        "source": source,
        "label": splits.source,
        "files": {part: _stat(p) for part, p in paths.items()},
    }
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return splits, False


def production_card(registry: Registry, name: str, ref: str) -> ModelCard | None:
    try:
        return registry.card(name, ref)
    except ModelNotFound:
        return None


def ensure_model(
    registry: Registry,
    splits: Splits,
    *,
    name: str,
    ref: str,
    seed: int,
    progress: TextIO | None = None,
) -> tuple[ModelCard, dict[str, Any] | None]:
    """The model card for ``name@ref``; trains, registers and promotes a quick default
    model first when there is none. Returns (card, training summary or None)."""
    card = production_card(registry, name, ref)
    if card is not None:
        return card, None
    if ref.isdigit() or ref == "latest":
        raise ModelNotFound(f"model {name!r} has no version {ref!r} in {registry.root}")
    import sklearn

    from models.contract import FEATURES
    from models.evaluation import choose_threshold, evaluate_scores
    from models.pipelines import fit_estimator, get_candidate

    cand = get_candidate(QUICK_CANDIDATE)
    X_tr, y_tr = X_y(splits.train)
    X_va, y_va = X_y(splits.validation)
    X_te, y_te = X_y(splits.test)
    if progress is not None:
        print(
            f"training {QUICK_CANDIDATE} ({cand.description}) on {len(y_tr):,} rows "
            f"({int(y_tr.sum())} fraud) ...",
            file=progress,
            flush=True,
        )
    t0 = time.perf_counter()
    est = fit_estimator(cand.make({}, seed=seed), X_tr, y_tr, name=QUICK_CANDIDATE)
    fit_s = time.perf_counter() - t0
    s_va = est.predict_proba(X_va)[:, 1]
    s_te = est.predict_proba(X_te)[:, 1]
    choice = choose_threshold(y_va, s_va, strategy="f1")
    a_va = splits.validation["Amount"].to_numpy(dtype=np.float64)
    a_te = splits.test["Amount"].to_numpy(dtype=np.float64)
    val = evaluate_scores(y_va, s_va, threshold=choice.threshold, amounts=a_va)
    test = evaluate_scores(y_te, s_te, threshold=choice.threshold, amounts=a_te)
    tr = splits.train
    card = registry.register(
        name,
        est,
        features=FEATURES,
        threshold=choice.threshold,
        framework="sklearn",
        metrics={k: v for k, v in test.items() if isinstance(v, (int, float))},
        training={
            "rows": len(tr),
            "positives": int(tr["Class"].sum()),
            "positive_rate": float(tr["Class"].mean()),
            "resampling": cand.resampling,
            "validation_rows": len(splits.validation),
            "test_rows": len(splits.test),
            "split": "stratified",
            "seed": seed,
            "source": splits.source,
            "cv_folds": 0,
            "trials": 0,
        },
        extra={
            "description": cand.description,
            "candidate": cand.name,
            "params": {},
            "threshold_strategy": "f1",
            "validation_metrics": {k: v for k, v in val.items() if isinstance(v, (int, float))},
            "evaluated_on": "test split (threshold chosen on validation)",
            "library": {"scikit-learn": sklearn.__version__},
            "trained_by": "python -m demo (quick default, no tuning)",
        },
    )
    registry.promote(name, card.version, ref)
    summary = {
        "candidate": cand.name,
        "version": card.version,
        "fit_seconds": round(fit_s, 2),
        "threshold": choice.threshold,
        "validation_auprc": val["auprc"],
        "test_auprc": test["auprc"],
    }
    log.info(
        "event=model_trained model=%s version=%s candidate=%s fit_s=%.1f threshold=%.4f",
        name,
        card.version,
        cand.name,
        fit_s,
        choice.threshold,
    )
    return registry.card(name, ref), summary
