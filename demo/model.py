"""Stage 2, ``train model``: the registered model the task scores with.

A model already registered as ``NAME@REF`` is used as it is. Otherwise the demo runs the
training job of ``python -m models train --profile P`` (:func:`models.train.train`) on
the rows the split files came from, with a quick candidate set: gradient boosting with
the library's defaults, no tuning, the threshold with the best F1 on the validation split.
The job registers the model with its card (the profile's features, types and levels, the
reference distributions for drift) and points ``REF`` at it; its reports (comparison,
curves) go to the run folder.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from models.profile import Profile
from models.registry import ModelCard, ModelNotFound, Registry, default_registry_root
from models.train import TrainConfig, TrainResult, train

from .prepare import PreparedData
from .stage import Workspace

__all__ = ["QUICK_CANDIDATES", "ReadyModel", "ensure_model", "train_command", "train_config"]

log = logging.getLogger("demo.model")

#: the demo's quick candidate set: one model, no tuning (``python -m models train`` tunes
#: and compares more)
QUICK_CANDIDATES = ("hgb",)


@dataclass
class ReadyModel:
    registry: Registry
    card: ModelCard
    #: the threshold the task passes (``--threshold``) or the card's
    threshold: float
    #: what training did (None: the model was registered already)
    trained: dict[str, Any] | None


class _Indented:
    """A text stream that indents every line written to it (the training job's
    progress under the stage header)."""

    def __init__(self, out: TextIO, prefix: str = "    ") -> None:
        self.out = out
        self.prefix = prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self._at_line_start and piece.strip():
                self.out.write(self.prefix)
            self.out.write(piece)
            self._at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def train_config(
    data: PreparedData,
    *,
    profile: Profile,
    name: str,
    ref: str,
    registry: Path,
    work_dir: Path,
    runs_dir: Path,
) -> TrainConfig:
    """The training job on the rows of ``data``'s source; it writes its own split files
    under ``work_dir`` (the same rows, split the same way) and its reports under
    ``runs_dir``."""
    source = data.source
    return TrainConfig(
        name=name,
        profile=profile,
        csv=str(source.csv) if source.csv is not None else None,
        synthetic_rows=source.synthetic_rows,
        candidates=QUICK_CANDIDATES,
        trials=0,
        selection="validation",
        threshold_strategy="f1",
        seed=source.seed,
        promote=ref,
        registry=str(registry),
        data_dir=str(work_dir),
        runs_dir=str(runs_dir),
    )


def train_command(config: TrainConfig, profile_ref: str) -> str:
    """The ``python -m models train`` command line that runs the same job."""
    args = ["python", "-m", "models", "train", "--profile", profile_ref, "--name", config.name]
    if config.csv is not None:
        args += ["--csv", config.csv]
    else:
        args += ["--synthetic-rows", str(config.synthetic_rows)]
    args += ["--candidates", *config.candidate_names(), "--trials", str(config.trials),
             "--selection", config.selection, "--threshold-strategy", config.threshold_strategy,
             "--seed", str(config.seed), "--promote", str(config.promote),
             "--registry", str(config.registry)]  # fmt: skip
    return shlex.join(args)


def _summary(result: TrainResult, seconds: float, command: str) -> dict[str, Any]:
    best, card = result.best, result.card
    assert card is not None  # the demo's job always registers
    return {
        "candidate": best.name,
        "version": card.version,
        "fit_seconds": round(best.fit_seconds, 2),
        "threshold": best.threshold,
        "validation_auprc": best.validation["auprc"],
        "test_auprc": best.test["auprc"],
        "seconds": round(seconds, 2),
        "reports": str(result.run_dir),
        "command": command,
    }


def ensure_model(ws: Workspace, data: PreparedData) -> ReadyModel:
    """The ``train model`` stage: the card of ``--model@--version``, trained first when
    the registry has none."""
    config, dataset = ws.config, ws.dataset
    root = config.registry or (ws.tmp / "registry" if config.small else default_registry_root())
    registry = Registry(root)
    name, ref = dataset.model_name(config.model), config.version
    trained = None
    try:
        card = registry.card(name, ref)
    except ModelNotFound:
        if ref.isdigit() or ref == "latest":
            raise ModelNotFound(
                f"model {name!r} has no version {ref!r} in {registry.root}"
            ) from None
        job = train_config(
            data,
            profile=dataset.profile,
            name=name,
            ref=ref,
            registry=registry.root,
            work_dir=ws.tmp / "train-data",
            runs_dir=ws.run_dir,
        )
        command = train_command(job, dataset.ref)
        train_rows = data.splits.summary()["train"]
        ws.say(
            f"training {', '.join(job.candidate_names())} on {train_rows['rows']:,} rows "
            f"({train_rows['positives']} {dataset.positives}): {command}"
        )
        t0 = time.perf_counter()
        result = train(job, progress=_Indented(ws.out, "      "))
        trained = _summary(result, time.perf_counter() - t0, command)
        card = registry.card(name, ref)
        log.info(
            "event=model_trained model=%s version=%s profile=%s seconds=%.1f threshold=%.4f",
            name, card.version, dataset.profile.name, trained["seconds"], card.threshold,
        )  # fmt: skip
    threshold = config.threshold if config.threshold is not None else card.threshold
    ws.say(
        f"{'trained and promoted' if trained else 'using registered'} {card.name} "
        f"v{card.version} ({card.data.get('candidate', card.framework)}), threshold "
        f"{threshold:.4g}, registry {registry.root}"
    )
    return ReadyModel(registry, card, threshold, trained)
