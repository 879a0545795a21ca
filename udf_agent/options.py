"""The ``@score()`` options: what InfoResponse declares and how InitRequest is parsed.

Kapacitor checks a TICKscript call's argument count and types against ``valueTypes``
exactly, with no coercion, so each option has one fixed signature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models import contract

from .errors import OptionError
from .protocol import messages as pb

__all__ = [
    "CARD_THRESHOLD",
    "OPTION_SPECS",
    "ScoreOptions",
    "info_response",
    "parse_init_options",
    "read_options",
]

#: option name -> positional argument types (``valueTypes`` of InfoResponse)
OPTION_SPECS: dict[str, tuple[int, ...]] = {
    "model": (pb.STRING,),
    "version": (pb.STRING,),
    "field": (pb.STRING,),
    "threshold": (pb.DOUBLE,),
    "challenger": (pb.STRING,),
    "maxBatch": (pb.INT,),
    "maxDelay": (pb.DURATION,),
    "backend": (pb.STRING,),
    "fallback": (pb.STRING,),
    "explain": (pb.INT,),
}

OPTION_HELP = {
    "model": "registered model name (required), e.g. .model('creditcard')",
    "version": "alias or version number as a string, default 'production', e.g. .version('3')",
    "field": "name of the output score field, default 'score'",
    "threshold": "decision threshold for is_anomaly between 0 and 1; -1 or not given: the "
    "model card's threshold",
    "challenger": "alias or version of the same model to shadow-score into score_challenger "
    "(skipped until the alias exists)",
    "maxBatch": "flush a micro-batch at this many points (1-100000), default 512",
    "maxDelay": "flush a micro-batch after this long, default 5ms",
    "backend": "override the card's backend: 'sklearn' or 'tfserving'",
    "fallback": "alias or version of a local model scoring when the backend fails",
    "explain": "features named in top_features of an anomalous point (0-10), default 3; "
    "0 = no explanations",
}

#: ``.threshold(-1.0)`` means "the model card's threshold". A TICKscript template var needs
#: a typed default, and Kapacitor cannot leave a call out, so templates declare
#: ``var threshold = -1.0`` and a task sets a value between 0 and 1 only on purpose.
CARD_THRESHOLD = -1.0

MAX_BATCH_LIMIT = 100_000
MAX_EXPLAIN = 10
MAX_DELAY_LIMIT_NS = 60 * 1_000_000_000


@dataclass(frozen=True)
class ScoreOptions:
    """Parsed options of one ``@score()`` node (times in seconds)."""

    model: str
    version: str = "production"
    field: str = "score"
    threshold: float | None = None
    challenger: str | None = None
    max_batch: int = 512
    max_delay: float = 0.005
    backend: str | None = None
    fallback: str | None = None
    explain: int = 3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def info_response(edge: int = pb.STREAM) -> Any:
    """The InfoResponse for a stream->stream (or batch->batch) scoring UDF."""
    resp = pb.Response()
    resp.info.wants = edge
    resp.info.provides = edge
    for name, types in OPTION_SPECS.items():
        resp.info.options[name].valueTypes.extend(types)
    return resp


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def read_options(
    options: Any, specs: dict[str, tuple[int, ...]], help_text: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """The values of InitRequest.options by name, checked against ``specs`` (types and
    count, each option once), and every problem found."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for opt in options:
        spec = specs.get(opt.name)
        if spec is None:
            problems.append(
                f"unknown option .{opt.name}(); known options: "
                + ", ".join(f".{n}()" for n in specs)
            )
            continue
        if len(opt.values) != len(spec) or any(v.type != t for v, t in zip(opt.values, spec)):
            got = ", ".join(pb.VALUE_TYPE_NAMES.get(v.type, "?") for v in opt.values)
            want = ", ".join(pb.VALUE_TYPE_NAMES[t] for t in spec)
            problems.append(f".{opt.name}() takes ({want}), got ({got}): {help_text[opt.name]}")
            continue
        if opt.name in values:
            problems.append(f".{opt.name}() given more than once")
            continue
        values[opt.name] = _value(opt.values[0])
    return values, problems


def parse_init_options(options: Any) -> ScoreOptions:
    """Turn InitRequest.options into ScoreOptions; every problem found is reported at once."""
    values, problems = read_options(options, OPTION_SPECS, OPTION_HELP)

    model = values.get("model")
    if not model:
        problems.append("missing .model(name): " + OPTION_HELP["model"])
    version = str(values.get("version", "production")).strip()
    if not version:
        problems.append(".version() must not be empty")
    out_field = values.get("field", "score")
    reserved = (
        contract.IS_ANOMALY,
        contract.THRESHOLD,
        contract.SCORE_ERROR,
        contract.SCORE_CHALLENGER,
        contract.THRESHOLD_CHALLENGER,
        contract.TOP_FEATURES,
    )
    if not out_field or out_field in reserved:
        problems.append(f".field({out_field!r}) must be a non-empty name not used by other outputs")
    threshold = values.get("threshold")
    if threshold == CARD_THRESHOLD:
        threshold = None  # the card's
    elif threshold is not None and not (0.0 <= threshold <= 1.0):
        problems.append(
            f".threshold({threshold}) must be between 0 and 1, or {CARD_THRESHOLD:g} for the "
            "model card's threshold"
        )
    max_batch = values.get("maxBatch", 512)
    if not (1 <= max_batch <= MAX_BATCH_LIMIT):
        problems.append(f".maxBatch({max_batch}) must be between 1 and {MAX_BATCH_LIMIT}")
    max_delay_ns = values.get("maxDelay", 5_000_000)
    if not (0 <= max_delay_ns <= MAX_DELAY_LIMIT_NS):
        problems.append(f".maxDelay() must be between 0s and 60s, got {max_delay_ns / 1e9:g}s")
    backend = values.get("backend")
    if backend is not None and backend not in ("sklearn", "tfserving", "tf"):
        problems.append(f".backend({backend!r}): expected 'sklearn' or 'tfserving'")
    explain = values.get("explain", 3)
    if not (0 <= explain <= MAX_EXPLAIN):
        problems.append(f".explain({explain}) must be between 0 and {MAX_EXPLAIN}")
    if problems:
        raise OptionError("; ".join(problems))
    return ScoreOptions(
        explain=int(explain),
        model=model,
        version=version,
        field=out_field,
        threshold=threshold,
        challenger=values.get("challenger") or None,
        max_batch=int(max_batch),
        max_delay=max_delay_ns / 1e9,
        backend=backend,
        fallback=values.get("fallback") or None,
    )
