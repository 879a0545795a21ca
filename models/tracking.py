"""Optional MLflow experiment tracking (extra ``mlflow``), imported only when enabled.

Enabled by ``train --mlflow`` or by the ``MLFLOW_TRACKING_URI`` environment variable.
Without a URI, runs go to a local store under ``runs/mlruns``: an SQLite database
(``mlflow.db``, MLflow's recommended local backend) and an ``artifacts`` folder; browse it
with ``mlflow ui --backend-store-uri sqlite:///runs/mlruns/mlflow.db``. One MLflow run per
training job: configuration and best parameters, validation (or out-of-fold) and test
metrics of every candidate, the report folder (plots, tables) and the best model,
registered in MLflow's model registry under the same name.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelsError

if TYPE_CHECKING:
    from .train import TrainResult

__all__ = ["default_tracking_uri", "log_training_run"]

log = logging.getLogger("models.tracking")


def default_tracking_uri(runs_dir: str | os.PathLike[str] = "runs") -> str:
    """``$MLFLOW_TRACKING_URI`` or an SQLite store at ``<runs_dir>/mlruns/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = Path(runs_dir).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _experiment(mlflow, name: str, uri: str) -> str:
    """Experiment id; a new one keeps its artifacts next to a local SQLite store."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_training_run(result: TrainResult, *, tracking_uri: str | None = None) -> str:
    """Log a finished training job; returns the MLflow run id."""
    try:
        import mlflow
        import mlflow.sklearn
    except ImportError as exc:
        raise ModelsError(
            "MLflow tracking was requested but mlflow is not installed; "
            "install the extra: pip install 'tick-anomaly[mlflow]'"
        ) from exc

    config = result.config
    uri = tracking_uri or default_tracking_uri(config.runs_dir)
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment(mlflow, config.name, uri)
    best = result.best
    with mlflow.start_run(experiment_id=experiment_id, run_name=result.run_dir.name) as run:
        params: dict[str, Any] = {
            "candidates": ",".join(r.name for r in result.results),
            "best_candidate": best.name,
            "trials": config.trials,
            "cv": config.cv,
            "seed": config.seed,
            "threshold_strategy": config.threshold_strategy,
            "review_cost": config.review_cost,
            "split": "time" if config.time_split else "stratified",
            "selection": config.selection,
            "profile": result.profile.name if result.profile is not None else "creditcard",
            "train_rows": result.training_rows or result.splits_summary["train"]["rows"],
            "threshold": best.threshold,
        }
        params |= {f"best.{k}": v for k, v in best.params.items()}
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        metrics: dict[str, float] = {}
        for r in result.results:
            chosen = "val" if r.selection == "validation" else "oof"
            for part, values in ((chosen, r.validation), ("test", r.test)):
                for k in ("auprc", "roc_auc", "precision", "recall", "f1", "expected_cost"):
                    v = values.get(k)
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        metrics[f"{r.name}.{part}_{k}"] = float(v)
        for k, v in best.test.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                metrics[f"test_{k}"] = float(v)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(result.run_dir), artifact_path="reports")
        registered = None
        if result.card is not None:
            from .mlflow_registry import REGISTRY_ARTIFACTS, VERSION_TAG
            from .registry import Registry

            mlflow.set_tags({VERSION_TAG: result.card.version, "model": config.name})
            # the version's card and artifact, as the registry wrote them, so that
            # MlflowRegistry can serve this MLflow version with every file check
            version_dir = Registry(config.registry).root / config.name / result.card.version
            mlflow.log_artifacts(str(version_dir), artifact_path=REGISTRY_ARTIFACTS)
            registered = config.name
        mlflow.sklearn.log_model(
            best.estimator,
            name="model",
            registered_model_name=registered,
            **_serialization(best.estimator),
        )
        log.info("mlflow run=%s uri=%s registered=%s", run.info.run_id, uri, registered)
        return run.info.run_id


def _serialization(estimator: Any) -> dict[str, Any]:
    """skops (MLflow's default) with our own imbalanced-learn/ensemble types trusted."""
    try:
        import skops.io
    except ImportError:
        import mlflow.sklearn

        return {"serialization_format": mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE}
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))
    return {"skops_trusted_types": trusted}
