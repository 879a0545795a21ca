"""A Keras MLP fraud classifier, registered in the model registry and exported for TF Serving.

The network is ``Normalization`` (adapted on the training split) → ``Dense`` layers →
one sigmoid unit. It is trained with class weights (the positive class is rare), stops
early on validation AUPRC, and takes its decision threshold from the validation split
(best F1). TensorFlow is the optional ``tf`` extra, so this module imports it lazily.

Export layout (docs/architecture.md)::

    models/registry/<name>/<version>/saved_model/   # artifact, sha256 over the directory
    models/registry/<name>/<version>/model.keras     # the Keras file, for notebooks
    models/serving/<name>/<version>/                 # the same SavedModel, for TF Serving

The SavedModel has one signature, ``serving_default``, taking ``features`` (float32,
``[-1, 30]``, columns in card feature order) and returning ``score`` (float32, ``[-1]``,
probability of class 1). The card's ``serving`` section records these names so the TF
Serving backend can check them against ``GetModelMetadata`` at start-up.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends.savedmodel import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME, SavedModelBackend
from .contract import FEATURES
from .registry import ModelCard, Registry, RegistryError

__all__ = [
    "ARTIFACT_DIR",
    "INPUT_NAME",
    "KERAS_FILE",
    "OUTPUT_NAME",
    "SIGNATURE_NAME",
    "KerasConfig",
    "SavedModelBackend",
    "best_f1_threshold",
    "build_model",
    "cli_train_tf",
    "export_saved_model",
    "register_keras_model",
    "serving_section",
    "train_keras",
]

log = logging.getLogger("models.tf_keras")

ARTIFACT_DIR = "saved_model"
KERAS_FILE = "model.keras"
FRAMEWORK = "tf"


@dataclass(frozen=True, kw_only=True)
class KerasConfig:
    """Network and training settings (times in epochs)."""

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    learning_rate: float = 1e-3
    epochs: int = 20
    batch_size: int = 512
    patience: int = 4
    seed: int = 42


def _tf():
    try:
        import tensorflow as tf
    except ImportError as exc:  # the optional extra
        raise RegistryError(
            "TensorFlow is not installed; install the tf extra: pip install -e '.[tf]'"
        ) from exc
    return tf


def build_model(X_train: np.ndarray, config: KerasConfig | None = None):
    """The MLP with its ``Normalization`` layer adapted on ``X_train``."""
    import keras

    config = config or KerasConfig()
    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(np.asarray(X_train, dtype=np.float32))
    inputs = keras.Input(shape=(X_train.shape[1],), dtype="float32", name=INPUT_NAME)
    x = norm(inputs)
    for i, units in enumerate(config.hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, out, name="fraud_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="auprc")],
    )
    return model


def _progress_callback(epochs: int, emit: Callable[[str], None]):
    import keras

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            logs = logs or {}
            parts = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items()))
            emit(f"epoch={epoch + 1}/{epochs} {parts}")

    return _Progress()


def _class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights ``n / (2 * n_c)``; a missing class keeps weight 1."""
    y = np.asarray(y).astype(int)
    n = len(y)
    weights = {}
    for c in (0, 1):
        n_c = int((y == c).sum())
        weights[c] = n / (2.0 * n_c) if n_c else 1.0
    return weights


def train_keras(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    config: KerasConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
):
    """Train with class weights and early stopping on validation AUPRC; returns the model
    (best weights restored) and the Keras history."""
    import keras

    config = config or KerasConfig()
    keras.utils.set_random_seed(config.seed)
    X_train = np.asarray(X_train, dtype=np.float32)
    X_val = np.asarray(X_val, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.float32)
    y_val = np.asarray(y_val, dtype=np.float32)
    model = build_model(X_train, config)
    # AUPRC is undefined without positives in validation; fall back to the loss then.
    monitor, mode = ("val_auprc", "max") if y_val.sum() > 0 else ("val_loss", "min")
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.patience, restore_best_weights=True
        )
    ]
    if progress is not None:
        callbacks.append(_progress_callback(config.epochs, progress))
    history = model.fit(
        X_train,
        y_train,
        validation_data=(X_val, y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        class_weight=_class_weights(y_train),
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    return model, history


def predict_proba(model, X: np.ndarray) -> np.ndarray:
    """The model's class-1 probability per row, as float64 ``(n,)``."""
    out = model.predict(np.asarray(X, dtype=np.float32), batch_size=4096, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising F1 on validation (``models.evaluation.choose_threshold``);
    0.5 when the split has no positives to choose from."""
    from .evaluation import choose_threshold

    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        return 0.5
    return choose_threshold(y_true, scores, strategy="f1").threshold


def _metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    X: np.ndarray,
    *,
    value_index: int | None = -1,
):
    """The same metrics as the scikit-learn model cards (money columns from the value
    feature: Amount for credit cards; ``value_index=None``: no money columns)."""
    from .evaluation import evaluate_scores

    if value_index == -1:  # credit cards
        value_index = FEATURES.index("Amount") if X.shape[1] == len(FEATURES) else None
    amounts = X[:, value_index] if value_index is not None else None
    return evaluate_scores(y_true, scores, threshold=threshold, amounts=amounts)


def export_saved_model(model, export_dir: Path, n_features: int = len(FEATURES)) -> Path:
    """Write a TF Serving SavedModel with one ``serving_default`` signature:
    ``features`` float32 ``[-1, n_features]`` → ``{"score": float32 [-1]}``."""
    tf = _tf()
    export_dir = Path(export_dir)
    module = tf.Module()
    module.model = model  # tracked, so its variables are saved

    @tf.function(input_signature=[tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)])
    def serve(features):
        prob = model(features, training=False)
        return {OUTPUT_NAME: tf.reshape(prob, [-1])}

    module.serve = serve
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE_NAME: serve})
    return export_dir


def serving_section(
    model_name: str, version: str | int, n_features: int = len(FEATURES)
) -> dict[str, Any]:
    """The card's ``serving`` section: what TF Serving's metadata must report."""
    return {
        "model_name": model_name,
        "version": int(version),
        "signature_name": SIGNATURE_NAME,
        "inputs": {INPUT_NAME: {"dtype": "DT_FLOAT", "shape": [-1, int(n_features)]}},
        "outputs": {OUTPUT_NAME: {"dtype": "DT_FLOAT", "shape": [-1]}},
    }


def _next_version(registry: Registry, name: str) -> str:
    d = registry.root / name
    existing = (
        [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()] if d.is_dir() else []
    )
    return str(max(existing, default=0) + 1)


def register_keras_model(
    registry: Registry,
    name: str,
    model,
    *,
    threshold: float,
    features: Sequence[str] = FEATURES,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    serving_dir: Path | None = Path("models/serving"),
    extra: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Register the model (framework ``tf``, artifact = SavedModel directory) and copy the
    SavedModel to ``serving_dir/<name>/<version>/`` for TF Serving."""
    version = _next_version(registry, name)
    with tempfile.TemporaryDirectory(prefix="tf-export-") as tmp:
        bundle = Path(tmp) / "bundle"
        bundle.mkdir()
        export_saved_model(model, bundle / ARTIFACT_DIR, len(features))
        # Keep the Keras file beside the SavedModel, outside the checksummed artifact.
        model.save(str(Path(tmp) / KERAS_FILE))
        card = registry.register(
            name,
            bundle / ARTIFACT_DIR,
            features=list(features),
            threshold=threshold,
            framework=FRAMEWORK,
            artifact_name=ARTIFACT_DIR,
            metrics=metrics,
            training={"resampling": "class_weight", **dict(training or {})},
            extra={
                **dict(extra or {}),
                "serving": serving_section(name, version, len(features)),
                "keras_file": KERAS_FILE,
            },
        )
        if card.version != version:  # another writer took the number in between
            raise RegistryError(
                f"{name}: registered as version {card.version} while the card's serving "
                f"section names version {version}; register again"
            )
        shutil.copy2(Path(tmp) / KERAS_FILE, registry.root / name / card.version / KERAS_FILE)
    if serving_dir is not None:
        copy_to_serving(registry, card, serving_dir)
    return card


def copy_to_serving(registry: Registry, card: ModelCard, serving_dir: Path) -> Path:
    """Copy a verified SavedModel to ``serving_dir/<name>/<version>/`` (atomic rename)."""
    src = registry.verify(card)
    target = Path(serving_dir) / card.name / str(int(card.version))
    target.parent.mkdir(parents=True, exist_ok=True)
    # TF Serving polls the base path: build under a hidden name, then rename into place,
    # so it never loads a half-copied version.
    staging = Path(tempfile.mkdtemp(prefix=f".{card.version}-", dir=target.parent))
    try:
        shutil.copytree(src, staging / "m")
        if target.exists():
            shutil.rmtree(target)
        (staging / "m").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported model=%s version=%s serving_dir=%s", card.name, card.version, target)
    return target


# -- data ------------------------------------------------------------------
def _splits(args: argparse.Namespace, seed: int):
    """(X_train, y_train, X_val, y_val, X_test, y_test, source) from --csv or synthetic rows;
    the split CSVs are written under ``--data-dir`` (default ``data``) like ``models split``."""
    from . import data as mdata

    csv = getattr(args, "csv", None)
    rows = getattr(args, "synthetic_rows", None)
    profile = getattr(args, "profile", None)
    splits = mdata.prepare_splits(
        getattr(args, "data_dir", None) or "data",
        csv=csv,
        synthetic_rows=int(rows) if rows else None,
        seed=seed,
        profile=profile,
    )
    out: list[np.ndarray] = []
    for df in (splits.train, splits.validation, splits.test):
        X, y = mdata.X_y(df, profile=profile, as_frame=False if profile is not None else None)
        out += [X, y]
    return (*out, str(getattr(splits, "source", csv or f"synthetic:{rows}")))


# -- CLI ---------------------------------------------------------------------
def cli_train_tf(args: argparse.Namespace) -> int:
    """``python -m models train-tf``: train, register, export for TF Serving, optionally promote."""

    def emit(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    registry = Registry(getattr(args, "registry", None))
    name = getattr(args, "name", None) or "creditcard_tf"
    seed = getattr(args, "seed", None)
    seed = 42 if seed is None else int(seed)  # --seed 0 is a seed like any other
    epochs = int(getattr(args, "epochs", None) or KerasConfig().epochs)
    serving_dir = Path(getattr(args, "serving_dir", None) or "models/serving")
    profile = getattr(args, "profile", None)  # a Profile with numeric features, or None
    features = profile.feature_names if profile is not None else FEATURES
    value_index: int | None = -1
    if profile is not None:
        value_index = features.index(profile.value) if profile.value in features else None
    X_tr, y_tr, X_va, y_va, X_te, y_te, source = _splits(args, seed)
    emit(
        f"train-tf name={name} source={source} train_rows={len(y_tr)} "
        f"val_rows={len(y_va)} test_rows={len(y_te)} positive_rate={y_tr.mean():.4f} epochs={epochs}"
    )
    config = KerasConfig(epochs=epochs, seed=seed)
    model, history = train_keras(X_tr, y_tr, X_va, y_va, config, progress=emit)
    val_scores = predict_proba(model, X_va)
    threshold = best_f1_threshold(y_va, val_scores)
    # Same card layout as `models train`: `metrics` holds the test figures (validation
    # when there is no test split) and `validation_metrics` the validation ones.
    validation = _metrics(y_va, val_scores, threshold, X_va, value_index=value_index)
    if len(y_te):
        metrics = _metrics(
            y_te, predict_proba(model, X_te), threshold, X_te, value_index=value_index
        )
        evaluated_on = "test split (threshold chosen on validation)"
    else:
        metrics, evaluated_on = validation, "validation split (no test split)"
    # reference distributions for live drift monitoring (@drift()) and the medians that
    # explanations by occlusion compare with, as `models train` records them: the features
    # over the training rows, the scores of the held-out split live traffic resembles
    from .drift import reference_profile

    held_out = predict_proba(model, X_te) if len(y_te) else val_scores
    kinds = {f.name: f.type for f in profile.features} if profile is not None else {}
    reference = reference_profile(
        X_tr, features, [kinds.get(f, "float") for f in features], held_out
    )
    training = {
        "rows": int(len(y_tr)),
        "positive_rate": float(y_tr.mean()),
        "resampling": "class_weight",
        "class_weight": {str(k): v for k, v in _class_weights(y_tr).items()},
        "epochs_run": len(history.history.get("loss", [])),
        "epochs_max": epochs,
        "early_stopping": "val_auprc",
        "source": source,
        "seed": seed,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    card = register_keras_model(
        registry,
        name,
        model,
        threshold=threshold,
        features=features,
        metrics=metrics,
        training=training,
        serving_dir=serving_dir,
        extra={
            "validation_metrics": validation,
            "evaluated_on": evaluated_on,
            "reference": reference,
            **({"profile": profile.card_section()} if profile is not None else {}),
        },
    )
    promote = getattr(args, "promote", None)
    if promote:
        registry.promote(name, card.version, promote)
    emit(
        f"registered name={name} version={card.version} threshold={threshold:.4f} "
        f"val_auprc={validation.get('auprc', float('nan')):.4f} "
        f"serving={serving_dir / name / card.version}" + (f" alias={promote}" if promote else "")
    )
    print(f"{name} {card.version}")
    return 0
