"""What to call on TF Serving and what its signature must look like, from the card."""

from __future__ import annotations

from dataclasses import dataclass

from ...card import ModelCard
from ...errors import BackendError

__all__ = ["ServingSpec"]


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """What to call and what the signature must look like (from the card's ``serving``)."""

    model_name: str
    version: int | None
    version_label: str | None
    signature_name: str
    input_name: str
    input_dtype: str
    input_shape: tuple[int, ...]
    output_name: str
    output_dtype: str | None
    output_shape: tuple[int, ...] | None

    @classmethod
    def from_card(cls, card: ModelCard) -> ServingSpec:
        s = card.serving
        inputs = dict(s.get("inputs") or {})
        outputs = dict(s.get("outputs") or {})
        where = f"model card {card.name} v{card.version}"
        if not s:
            raise BackendError(
                f"{where} (framework {card.framework}) has no serving section, so TF Serving "
                "cannot score it; train it with `python -m models train-tf`"
            )
        if len(inputs) != 1:
            raise BackendError(
                f"{where}: serving.inputs must name exactly one tensor, got {list(inputs)}"
            )
        if not outputs:
            raise BackendError(f"{where}: serving.outputs names no output tensor")
        if len(outputs) > 1 and "score" not in outputs:
            raise BackendError(f"{where}: serving.outputs has several tensors and none is 'score'")
        ((in_name, in_info),) = inputs.items()
        out_name = "score" if "score" in outputs else next(iter(outputs))
        out_info = outputs[out_name] or {}
        label = s.get("version_label")
        version = s.get("version")
        if label is None and version is None:
            version = card.version  # the registry version is the TF Serving version
        shape = tuple(int(d) for d in in_info.get("shape", [-1, len(card.features)]))
        if len(shape) != 2 or shape[1] != len(card.features):
            raise BackendError(
                f"{where}: serving input {in_name!r} shape {list(shape)} does not fit "
                f"{len(card.features)} features"
            )
        return cls(
            model_name=str(s.get("model_name") or card.name),
            version=None if label is not None else int(version),
            version_label=str(label) if label is not None else None,
            signature_name=str(s.get("signature_name") or "serving_default"),
            input_name=str(in_name),
            input_dtype=str(in_info.get("dtype", "DT_FLOAT")),
            input_shape=shape,
            output_name=str(out_name),
            output_dtype=out_info.get("dtype"),
            output_shape=tuple(int(d) for d in out_info["shape"]) if "shape" in out_info else None,
        )

    @property
    def describe(self) -> str:
        pin = f"label {self.version_label}" if self.version_label else f"v{self.version}"
        return f"{self.model_name} {pin} signature {self.signature_name!r}"
