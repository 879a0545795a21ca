"""MLflow's model registry as the source of models: aliases and versions live in MLflow,
the files in a local cache laid out like the project's own registry.

The training job logs each registered version's directory (card and artifact) as the
``registry/`` artifacts of its MLflow run, tags the run with ``registry.version``, and
registers the model in MLflow's registry under the same name. :class:`MlflowRegistry`
then serves ``models:/NAME@ALIAS``:

- an alias (``champion``, ``production``…) is resolved by MLflow; the MLflow model version
  it points to is mapped to the project's version through its run's ``registry.version``;
- a version's files are downloaded once into ``<cache>/<name>/<version>/`` and loaded
  with every check of the file registry (path confinement, sha256, signature);
- MLflow is asked again at most every ``poll_interval`` seconds; the aliases it returns
  are mirrored to ``<cache>/<name>/aliases.json`` (rewritten only when they change), so
  the model provider notices a move by the file's signature as it does for the file
  registry, and keeps serving the last known versions while MLflow is unreachable.

The file registry stays the default; services use this one when given an MLflow tracking
URI (``--mlflow-tracking-uri``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ModelNotFound, RegistryError
from .registry import ALIASES_FILE, CARD_FILE, Registry, _write_json_atomic

__all__ = ["REGISTRY_ARTIFACTS", "VERSION_TAG", "MlflowRegistry"]

log = logging.getLogger("models.mlflow_registry")

#: run artifact path holding the registry version directory
REGISTRY_ARTIFACTS = "registry"
#: run tag naming the project's version of the registered model
VERSION_TAG = "registry.version"


class MlflowRegistry(Registry):
    """A read-only registry backed by an MLflow tracking server (see the module doc)."""

    def __init__(
        self,
        tracking_uri: str,
        cache_dir: str | os.PathLike[str],
        *,
        poll_interval: float = 5.0,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        self.tracking_uri = tracking_uri
        self.poll_interval = poll_interval
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._polled: dict[str, float] = {}
        # name -> {project version: MLflow version}
        self._versions: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.tracking_uri!r}, cache={str(self.root)!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from mlflow import MlflowClient
            except ImportError as exc:
                raise RegistryError(
                    "an MLflow tracking URI was given but mlflow is not installed; install "
                    "the extra: pip install 'tick-anomaly[mlflow]'"
                ) from exc
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- what MLflow knows ---------------------------------------------------------
    def _poll(self, name: str, *, force: bool = False) -> None:
        """Refresh the versions and the aliases mirror of ``name`` (rate-limited)."""
        now = self._clock()
        with self._lock:
            last = self._polled.get(name)
            if not force and last is not None and now - last < self.poll_interval:
                return
            self._polled[name] = now
        try:
            mapping, aliases = self._fetch(name)
        except ModelNotFound:
            raise
        except Exception as exc:  # MLflow unreachable: keep serving what is known
            if name in self._versions:
                log.warning("MLflow at %s did not answer for %s: %s", self.tracking_uri, name, exc)
                return
            raise RegistryError(f"cannot read model {name!r} from MLflow: {exc}") from exc
        self._versions[name] = mapping
        mirror = self._model_dir(name) / ALIASES_FILE
        try:
            current = json.loads(mirror.read_text())
        except (OSError, ValueError):
            current = None
        if current != aliases:
            _write_json_atomic(mirror, aliases)
            log.info("aliases of %s from MLflow: %s", name, aliases)

    def _fetch(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            model = client.get_registered_model(name)
            found = client.search_model_versions(f"name='{name}'")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
                "not found" in str(exc).lower()
            ):
                raise ModelNotFound(f"MLflow at {self.tracking_uri} has no model {name!r}") from exc
            raise
        mapping: dict[str, str] = {}
        by_mlflow: dict[str, str] = {}
        for mv in found:
            try:
                tag = client.get_run(mv.run_id).data.tags.get(VERSION_TAG)
            except MlflowException:
                tag = None
            if tag and str(tag).isdigit():
                mapping[str(tag)] = str(mv.version)
                by_mlflow[str(mv.version)] = str(tag)
        aliases = {
            alias: by_mlflow[str(v)]
            for alias, v in (getattr(model, "aliases", None) or {}).items()
            if str(v) in by_mlflow
        }
        return mapping, dict(sorted(aliases.items()))

    # -- the Registry interface ----------------------------------------------------------
    def models(self) -> list[str]:
        try:
            return sorted(m.name for m in self.client.search_registered_models())
        except Exception:  # unreachable: what the cache holds
            return super().models()

    def versions(self, name: str) -> list[str]:
        self._poll(name)
        return sorted(self._versions.get(name, {}), key=int)

    def aliases_path(self, name: str) -> Path:
        # the provider stats this file to notice a move: keep it current
        self._poll(name)
        return super().aliases_path(name)

    def card(self, name: str, ref: str | int = "production") -> Any:
        version = self.resolve(name, ref)
        self._download(name, version)
        return super().card(name, version)

    def _download(self, name: str, version: str) -> None:
        target = self._model_dir(name) / version
        if (target / CARD_FILE).is_file():
            return
        mlflow_version = self._versions.get(name, {}).get(version)
        if mlflow_version is None:
            raise ModelNotFound(f"MLflow has no version {version} of {name!r}")
        mv = self.client.get_model_version(name, mlflow_version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            try:
                path = self.client.download_artifacts(mv.run_id, REGISTRY_ARTIFACTS, str(staging))
            except Exception as exc:  # MLflow's errors: not this project's to leak
                raise RegistryError(
                    f"cannot download {name} v{version} (MLflow version {mlflow_version}) from "
                    f"MLflow run {mv.run_id}: {exc}"
                ) from exc
            src = Path(path)
            if not (src / CARD_FILE).is_file():
                raise RegistryError(
                    f"MLflow run {mv.run_id} of {name} v{version} holds no {REGISTRY_ARTIFACTS}/"
                    f"{CARD_FILE}; it was not logged by this project's training"
                )
            try:
                os.rename(src, target)
            except OSError:
                if not (target / CARD_FILE).is_file():  # not a concurrent download
                    raise
            log.info(
                "downloaded %s v%s (MLflow version %s) into %s",
                name,
                version,
                mlflow_version,
                target,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # writing goes through the training job, which logs to MLflow
    def register(self, *args: Any, **kwargs: Any) -> Any:
        raise RegistryError("models are registered in MLflow by the training job, not here")

    def promote(self, name: str, version: str | int, alias: str = "production") -> dict[str, str]:
        """Point an MLflow alias at the MLflow version of project version ``version``."""
        self._poll(name, force=True)
        mlflow_version = self._versions.get(name, {}).get(str(version))
        if mlflow_version is None:
            raise ModelNotFound(f"MLflow has no version {version} of {name!r}")
        self.client.set_registered_model_alias(name, alias, mlflow_version)
        self._poll(name, force=True)
        return self.aliases(name)
