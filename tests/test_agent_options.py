"""``@score()`` options: InfoResponse declaration and InitRequest parsing."""

from __future__ import annotations

import pytest
from agent_helpers import init_req, unframe

from udf_agent.errors import OptionError
from udf_agent.options import (
    CARD_THRESHOLD,
    OPTION_SPECS,
    ScoreOptions,
    info_response,
    parse_init_options,
)
from udf_agent.protocol import messages as pb
from udf_agent.scoring import parse_model_ref


def _parse(options: dict) -> ScoreOptions:
    return parse_init_options(pb.Request.FromString(unframe(init_req(options))).init.options)


def test_defaults():
    o = _parse({"model": "creditcard"})
    assert o == ScoreOptions(model="creditcard")
    assert (o.version, o.field, o.threshold, o.max_batch, o.max_delay) == (
        "production",
        "score",
        None,
        512,
        0.005,
    )


def test_all_options():
    o = _parse(
        {
            "model": "m",
            "version": "3",
            "field": "p",
            "threshold": 0.25,
            "challenger": "challenger",
            "maxBatch": 64,
            "maxDelay": ("duration", 20_000_000),
            "backend": "tfserving",
            "fallback": "creditcard@production",
        }
    )
    assert (
        o.version == "3" and o.field == "p" and o.threshold == 0.25 and o.challenger == "challenger"
    )
    assert o.max_batch == 64 and o.max_delay == pytest.approx(0.02)
    assert o.backend == "tfserving" and o.fallback == "creditcard@production"


@pytest.mark.parametrize("value", [CARD_THRESHOLD, -1.0])
def test_threshold_minus_one_means_the_cards(value):
    # the score_transactions template's default: Kapacitor always sends .threshold()
    assert _parse({"model": "m", "threshold": value}).threshold is None


@pytest.mark.parametrize("value", [0.0, 0.224, 1.0])
def test_a_threshold_between_0_and_1_overrides_the_card(value):
    assert _parse({"model": "m", "threshold": value}).threshold == value


@pytest.mark.parametrize("value", [-0.999, -2.0, 1.0001])
def test_other_thresholds_are_refused(value):
    with pytest.raises(OptionError, match="between 0 and 1, or -1"):
        _parse({"model": "m", "threshold": value})


def test_every_problem_is_reported_at_once():
    with pytest.raises(OptionError) as e:
        _parse({"maxBatch": 0, "threshold": -0.5, "bogus": 1, "field": "is_anomaly"})
    msg = str(e.value)
    for part in (
        "missing .model(name)",
        ".maxBatch(0)",
        ".threshold(-0.5) must be between 0 and 1, or -1 for the model card's threshold",
        "unknown option .bogus()",
        ".field('is_anomaly')",
    ):
        assert part in msg


def test_types_are_exact():
    with pytest.raises(OptionError, match=r"\.threshold\(\) takes \(DOUBLE\), got \(INT\)"):
        _parse({"model": "m", "threshold": 1})
    with pytest.raises(OptionError, match=r"\.version\(\) takes \(STRING\), got \(INT\)"):
        _parse({"model": "m", "version": 3})


def test_snapshot_json_roundtrip():
    o = _parse({"model": "m", "maxBatch": 7})
    assert ScoreOptions.from_json(o.to_json()) == o


def test_info_response_lists_every_option_with_its_types():
    info = info_response(pb.BATCH).info
    assert info.wants == info.provides == pb.BATCH
    assert {k: tuple(v.valueTypes) for k, v in info.options.items()} == OPTION_SPECS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("challenger", ("m", "challenger")),
        ("3", ("m", "3")),
        ("other@2", ("other", "2")),
        ("other@", ("other", "production")),
    ],
)
def test_model_refs(text, expected):
    assert parse_model_ref(text, "m") == expected


@pytest.mark.parametrize(
    "name", ["is_anomaly", "threshold", "score_error", "score_challenger", "threshold_challenger"]
)
def test_the_score_field_cannot_take_another_outputs_name(name):
    with pytest.raises(OptionError, match=rf"\.field\('{name}'\)"):
        _parse({"model": "m", "field": name})
