"""The TF Serving backend against the in-process TF Serving peer serving the real
exported SavedModels (gRPC and REST)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest
from conftest import free_port

from models.backends import BackendError, load_backend, serving_factory
from models.backends.tfserving import (
    CircuitBreaker,
    TFServingBackend,
    TFServingConfig,
)
from models.errors import BackendUnavailable, CircuitOpen, SignatureMismatch
from models.registry import ModelCard

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture
def bundle_and_peer(tf_served):
    bundle, peer = tf_served
    peer.reset()
    yield bundle, peer
    peer.reset()


def _backend(bundle, peer, ref="production", **config):
    """A TF Serving backend of ``ref`` built the way the agent builds it, with
    ``TFServingConfig(**config)`` (target: the peer's)."""
    if peer is not None:
        config.setdefault("target", peer.target)
    factory = serving_factory(TFServingConfig(**config))
    return load_backend(bundle.registry, bundle.name, ref, factory=factory)


def _card_with(card: ModelCard, **serving_changes) -> ModelCard:
    data = json.loads(json.dumps(dict(card.data)))
    for key, value in serving_changes.items():
        data["serving"][key] = value
    return dataclasses.replace(card, data=data)


# -- scoring -----------------------------------------------------------------------
@pytest.mark.parametrize("ref", ["1", "2", "production"])
def test_grpc_scores_equal_keras_predictions(bundle_and_peer, ref):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer, ref)
    try:
        scores = backend.score(bundle.X_test)
        version = bundle.registry.resolve(bundle.name, ref)
        np.testing.assert_allclose(scores, bundle.keras_scores(version, bundle.X_test), rtol=1e-5)
        assert scores.dtype == np.float64 and scores.shape == (len(bundle.X_test),)
        assert backend.stats()["metadata_verified"] is True
    finally:
        backend.close()


def test_versions_are_pinned_through_the_model_spec(bundle_and_peer):
    bundle, peer = bundle_and_peer
    b1, b2 = _backend(bundle, peer, "1"), _backend(bundle, peer, "2")
    try:
        s1, s2 = b1.score(bundle.X_test), b2.score(bundle.X_test)
        # The two versions were trained with different seeds; each pin gets its own.
        assert not np.allclose(s1, s2)
        np.testing.assert_allclose(s1, bundle.keras_scores("1", bundle.X_test), rtol=1e-5)
    finally:
        b1.close()
        b2.close()


def test_version_label_pin(bundle_and_peer):
    bundle, peer = bundle_and_peer
    peer.labels = {bundle.name: {"stable": 1}}
    card = bundle.cards["2"]
    data = json.loads(json.dumps(dict(card.data)))
    data["serving"].pop("version")
    data["serving"]["version_label"] = "stable"
    backend = TFServingBackend.from_card(
        bundle.registry,
        dataclasses.replace(card, data=data),
        config=TFServingConfig(target=peer.target),
    )
    try:
        np.testing.assert_allclose(
            backend.score(bundle.X_test), bundle.keras_scores("1", bundle.X_test), rtol=1e-5
        )
    finally:
        backend.close()


def test_one_request_per_batch(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer)
    try:
        rows = np.tile(bundle.X_test, (3, 1))[:512]
        before = peer.predict_requests
        backend.score(rows)
        assert peer.predict_requests - before == 1
        assert peer.rows >= 512
        # Per-point scoring would be one request per row.
        before = peer.predict_requests
        for row in rows[:5]:
            backend.score(row[None, :])
        assert peer.predict_requests - before == 5
    finally:
        backend.close()


def test_batches_above_the_request_size_limit_are_split(bundle_and_peer):
    bundle, peer = bundle_and_peer
    card = bundle.cards["2"]
    backend = TFServingBackend(
        card, config=TFServingConfig(target=peer.target, max_rows_per_request=100)
    )
    try:
        before = peer.predict_requests
        scores = backend.score(bundle.X_test)  # 240 rows -> 100 + 100 + 40
        assert peer.predict_requests - before == 3
        np.testing.assert_allclose(scores, bundle.keras_scores("2", bundle.X_test), rtol=1e-5)
    finally:
        backend.close()


def test_rest_transport_scores_equal_keras_predictions(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer, "1", rest_url=peer.rest_url, transport="rest")
    try:
        before = peer.predict_requests
        np.testing.assert_allclose(
            backend.score(bundle.X_test), bundle.keras_scores("1", bundle.X_test), rtol=1e-5
        )
        assert peer.predict_requests - before == 1
        assert backend.stats()["transport"] == "rest"
    finally:
        backend.close()


def test_bad_batch_shape_is_a_backend_error(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer)
    try:
        with pytest.raises(BackendError, match=r"takes a \(n, 30\) batch"):
            backend.score(np.zeros((3, 29)))
        assert backend.score(np.zeros((0, 30))).shape == (0,)
    finally:
        backend.close()


# -- start-up checks ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"signature_name": "predict_v2"},
            r"no signature 'predict_v2' \(served: serving_default\)",
        ),
        (
            {"inputs": {"features": {"dtype": "DT_DOUBLE", "shape": [-1, 30]}}},
            r"input 'features' dtype DT_FLOAT, card says DT_DOUBLE",
        ),
        (
            {"inputs": {"x": {"dtype": "DT_FLOAT", "shape": [-1, 30]}}},
            r"no input 'x' \(inputs: features\)",
        ),
        ({"outputs": {"prob": {"dtype": "DT_FLOAT"}}}, r"no output 'prob' \(outputs: score\)"),
        (
            {"outputs": {"score": {"dtype": "DT_FLOAT", "shape": [-1, 1]}}},
            r"output 'score' shape \[-1\], card says \[-1, 1\]",
        ),
    ],
)
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_signature_mismatch_fails_init_with_a_clear_message(
    bundle_and_peer, changes, message, transport
):
    bundle, peer = bundle_and_peer
    card = _card_with(bundle.cards["2"], **changes)
    with pytest.raises(SignatureMismatch, match=message) as info:
        TFServingBackend.from_card(
            bundle.registry,
            card,
            config=TFServingConfig(target=peer.target, rest_url=peer.rest_url, transport=transport),
        )
    assert "does not match model card creditcard_tf v2" in str(info.value)


def test_input_width_differing_from_the_card_features_is_refused(bundle_and_peer):
    bundle, peer = bundle_and_peer
    card = _card_with(
        bundle.cards["2"], inputs={"features": {"dtype": "DT_FLOAT", "shape": [-1, 29]}}
    )
    with pytest.raises(BackendError, match=r"shape \[-1, 29\] does not fit 30 features"):
        TFServingBackend.from_card(
            bundle.registry, card, config=TFServingConfig(target=peer.target)
        )


def test_unknown_version_fails_init(bundle_and_peer):
    bundle, peer = bundle_and_peer
    card = _card_with(bundle.cards["2"], version=7)
    with pytest.raises(BackendError, match=r"does not serve creditcard_tf v7.*NOT_FOUND"):
        TFServingBackend.from_card(
            bundle.registry, card, config=TFServingConfig(target=peer.target)
        )


def test_bad_transport_option_is_refused(bundle_and_peer):
    bundle, peer = bundle_and_peer
    with pytest.raises(BackendError, match="needs a REST URL"):
        _backend(bundle, peer, transport="rest")
    with pytest.raises(BackendError, match="'grpc' or 'rest'"):
        _backend(bundle, peer, transport="http2")


# -- failures, retry and the breaker -----------------------------------------------
def test_stalled_server_hits_the_deadline(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer, timeout=0.2)
    try:
        peer.stall = 60.0
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="DEADLINE_EXCEEDED") as info:
            backend.score(bundle.X_test)
        # The deadline (0.2 s) cut the call: it did not wait for the 60 s stall.
        assert time.monotonic() - t0 < 30.0
        assert info.value.code == "DEADLINE_EXCEEDED"
        stats = backend.stats()
        assert stats["failures"] == 1 and stats["retries"] == 0  # no budget left to retry
    finally:
        peer.stall = 0.0
        backend.close()


def test_unavailable_is_retried_once_then_fails(bundle_and_peer):
    import grpc

    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer)
    try:
        peer.fail_code = grpc.StatusCode.UNAVAILABLE
        before = peer.predict_requests
        with pytest.raises(BackendUnavailable, match="UNAVAILABLE: injected failure"):
            backend.score(bundle.X_test)
        assert peer.predict_requests - before == 2
        assert backend.stats()["retries"] == 1
        # Not retried: a code that a second try cannot fix.
        peer.fail_code = grpc.StatusCode.INVALID_ARGUMENT
        before = peer.predict_requests
        with pytest.raises(BackendUnavailable, match="INVALID_ARGUMENT"):
            backend.score(bundle.X_test)
        assert peer.predict_requests - before == 1
    finally:
        peer.fail_code = None
        backend.close()


def test_breaker_opens_fails_fast_and_closes_after_a_probe(bundle_and_peer):
    import grpc

    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer, breaker_failures=3, breaker_cooldown=0.3)
    try:
        peer.fail_code = grpc.StatusCode.UNAVAILABLE
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                backend.score(bundle.X_test)
        assert backend.stats()["breaker_state"] == "open"
        before = peer.predict_requests
        for _ in range(5):
            with pytest.raises(CircuitOpen, match="circuit open"):
                backend.score(bundle.X_test)
        assert peer.predict_requests == before  # failed fast, nothing sent
        assert backend.stats()["rejected"] == 5
        # Still failing at the probe: re-opens.
        time.sleep(0.35)
        with pytest.raises(BackendUnavailable):
            backend.score(bundle.X_test)
        assert backend.breaker.state == "open"
        # Server back: the next probe closes the breaker.
        peer.fail_code = None
        time.sleep(0.35)
        np.testing.assert_allclose(
            backend.score(bundle.X_test), bundle.keras_scores("2", bundle.X_test), rtol=1e-5
        )
        stats = backend.stats()
        assert stats["breaker_state"] == "closed" and stats["breaker_opened"] == 2
    finally:
        peer.fail_code = None
        backend.close()


def test_unreachable_at_init_starts_open_and_checks_metadata_on_the_probe(bundle_and_peer):
    from tfserving_peer import TFServingPeer

    bundle, _ = bundle_and_peer
    port = free_port()
    backend = _backend(
        bundle,
        None,
        target=f"127.0.0.1:{port}",
        timeout=0.5,
        breaker_cooldown=0.2,
    )
    try:
        stats = backend.stats()
        assert stats["breaker_state"] == "open" and stats["metadata_verified"] is False
        with pytest.raises(CircuitOpen):
            backend.score(bundle.X_test)
        # The server comes up on that port; the probe verifies the signature, then scores.
        peer = TFServingPeer(bundle.serving_dir, port=port).start()
        try:
            time.sleep(0.25)
            scores = backend.score(bundle.X_test)
            np.testing.assert_allclose(scores, bundle.keras_scores("2", bundle.X_test), rtol=1e-5)
            assert peer.metadata_requests == 1 and backend.stats()["metadata_verified"] is True
        finally:
            peer.stop()
    finally:
        backend.close()


def test_rest_deadline_and_unavailable(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(
        bundle,
        peer,
        rest_url=peer.rest_url,
        transport="rest",
        timeout=0.2,
    )
    try:
        peer.stall = 3.0
        with pytest.raises(BackendUnavailable, match="DEADLINE_EXCEEDED"):
            backend.score(bundle.X_test)
    finally:
        peer.stall = 0.0
        backend.close()


# -- the breaker on its own ----------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_state_machine():
    clock = FakeClock()
    b = CircuitBreaker(failures=2, cooldown=10.0, clock=clock)
    assert b.allow() and b.state == "closed"
    b.record_failure()
    assert b.state == "closed"
    b.record_success()  # success resets the consecutive count
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and not b.allow()
    assert b.retry_in() == pytest.approx(10.0)
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # one probe at a time
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_breaker_lets_exactly_one_probe_through_under_contention():
    clock = FakeClock()
    b = CircuitBreaker(failures=1, cooldown=1.0, clock=clock)
    b.record_failure()
    clock.now += 1.0
    allowed = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        allowed.append(b.allow())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


def test_unexpected_errors_still_settle_the_breaker(bundle_and_peer):
    bundle, peer = bundle_and_peer
    backend = _backend(bundle, peer, breaker_failures=1, breaker_cooldown=0.0)
    real_predict = backend.transport.predict

    def broken(*args, **kwargs):
        raise RuntimeError("decoder bug")

    try:
        backend.transport.predict = broken
        with pytest.raises(BackendError, match="RuntimeError: decoder bug"):
            backend.score(bundle.X_test)
        assert backend.breaker.state == "open"
        # The half-open probe is not left hanging: the next call probes again and succeeds.
        backend.transport.predict = real_predict
        np.testing.assert_allclose(
            backend.score(bundle.X_test), bundle.keras_scores("2", bundle.X_test), rtol=1e-5
        )
        assert backend.breaker.state == "closed"
    finally:
        backend.close()


def test_card_without_a_serving_section_is_refused(bundle_and_peer, tmp_path):
    from agent_helpers import register_tiny

    from models.registry import Registry

    _, peer = bundle_and_peer
    reg = Registry(tmp_path / "reg")
    register_tiny(reg, "creditcard")
    with pytest.raises(BackendError, match="has no serving section"):
        load_backend(
            reg,
            "creditcard",
            kind="tfserving",
            factory=serving_factory(TFServingConfig(target=peer.target)),
        )


@pytest.mark.parametrize("status", [200, 503])
def test_rest_answers_that_are_json_but_not_an_object_are_backend_errors(status, http_peer):
    # A proxy or a misconfigured URL in front of TF Serving may answer any JSON; the
    # transport must raise a backend error (counted, points passed on with score_error),
    # never an AttributeError from the scorer.
    from models.backends.tfserving import RestTransport, ServingSpec

    port, handler = http_peer
    handler.routes["/v1/models/fraud:predict"] = (status, b'["not", "an", "object"]')
    spec = ServingSpec(
        model_name="fraud",
        version=None,
        version_label=None,
        signature_name="serving_default",
        input_name="x",
        input_dtype="DT_FLOAT",
        input_shape=(-1, 2),
        output_name="y",
        output_dtype=None,
        output_shape=None,
    )
    transport = RestTransport(f"http://127.0.0.1:{port}")
    try:
        expected = BackendError if status == 200 else BackendUnavailable
        match = "not an object" if status == 200 else r"UNAVAILABLE: HTTP 503: \[\"not\""
        with pytest.raises(expected, match=match):
            transport.predict(spec, np.zeros((1, 2), dtype=np.float32), 2.0)
    finally:
        transport.close()
