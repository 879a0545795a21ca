"""Client-side load balancing of the TF Serving gRPC channel.

On Kubernetes the agent reaches TF Serving as ``dns:///tfserving:8500`` through a headless
Service: the name resolves to every replica's address and the channel spreads calls over
them with round_robin. Here two in-process TF Serving peers listen on the same port of two
loopback addresses (127.0.0.1 and 127.0.0.2 both reach loopback on Linux), and one gRPC
target resolves to both — ``ipv4:127.0.0.1:P,127.0.0.2:P``, the address list a DNS answer
with two A records gives the channel.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.backends.tfserving import GrpcTransport, TFServingBackend, TFServingConfig

pytestmark = [pytest.mark.tf, pytest.mark.slow]

CALLS = 40


@pytest.fixture(scope="module")
def two_peers(tf_served):
    """Two peers serving the same bundle on one port of 127.0.0.1 and 127.0.0.2."""
    from tfserving_peer import TFServingPeer

    bundle, _ = tf_served
    first = TFServingPeer(bundle.serving_dir, host="127.0.0.1").start()
    second = None
    try:
        try:
            second = TFServingPeer(bundle.serving_dir, host="127.0.0.2", port=first.port)
        except RuntimeError as exc:  # gRPC raises when the address cannot be bound
            pytest.skip(f"cannot bind 127.0.0.2:{first.port}: {exc}")
        assert second.port == first.port
        second.start()
        yield bundle, first, second
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.fixture
def peers(two_peers):
    bundle, first, second = two_peers
    first.reset()
    second.reset()
    return bundle, first, second


def _target(first, second) -> str:
    return f"ipv4:{first.host}:{first.port},{second.host}:{second.port}"


def _backend(bundle, target: str, transport: GrpcTransport | None = None) -> TFServingBackend:
    card = bundle.cards["2"]
    backend = TFServingBackend(
        card, config=TFServingConfig(target=target, timeout=10.0), transport=transport
    )
    backend.check_metadata()  # waits for a connection, as the agent does at start-up
    return backend


def test_calls_are_spread_over_every_resolved_address(peers):
    bundle, first, second = peers
    backend = _backend(bundle, _target(first, second))
    try:
        expected = bundle.keras_scores("2", bundle.X_test)
        for _ in range(CALLS):
            np.testing.assert_allclose(backend.score(bundle.X_test), expected, rtol=1e-5)
    finally:
        backend.close()
    counts = (first.predict_requests, second.predict_requests)
    assert sum(counts) == CALLS
    # round_robin alternates over READY subchannels; allow for the second one connecting
    # a little later than the first on a busy machine
    assert min(counts) >= CALLS // 4, counts


def test_pick_first_would_send_every_call_to_one_peer(peers):
    # The contrast that makes the test above meaningful: gRPC's default policy with the
    # same two-address target uses only the first address.
    bundle, first, second = peers
    transport = GrpcTransport(
        _target(first, second),
        channel_options=[("grpc.service_config", '{"loadBalancingConfig": [{"pick_first": {}}]}')],
    )
    backend = _backend(bundle, _target(first, second), transport)
    try:
        for _ in range(CALLS // 2):
            backend.score(bundle.X_test)
    finally:
        backend.close()
    counts = sorted((first.predict_requests, second.predict_requests))
    assert counts == [0, CALLS // 2]


def test_a_replica_going_away_moves_calls_to_the_others(tf_served):
    # A TF Serving pod removed by a scale-down or a crash: the channel drops its address
    # and the remaining replica takes every call (a call caught in flight is retried once).
    from tfserving_peer import TFServingPeer

    bundle, _ = tf_served
    first = TFServingPeer(bundle.serving_dir, host="127.0.0.1").start()
    try:
        second = TFServingPeer(bundle.serving_dir, host="127.0.0.2", port=first.port)
    except RuntimeError as exc:
        first.stop()
        pytest.skip(f"cannot bind 127.0.0.2:{first.port}: {exc}")
    second.start()
    backend = _backend(bundle, _target(first, second))
    try:
        for _ in range(10):
            backend.score(bundle.X_test)
        assert second.predict_requests > 0
        second.stop()
        before = first.predict_requests
        for _ in range(10):
            backend.score(bundle.X_test)
        assert first.predict_requests - before >= 10
        assert backend.stats()["failures"] == 0
        assert backend.breaker.state == "closed"
    finally:
        backend.close()
        first.stop()
        second.stop()


def test_dns_scheme_targets_are_used_as_given(peers):
    # `dns:///host:port` (the form for a headless Service) reaches the server unchanged.
    bundle, first, _ = peers
    backend = _backend(bundle, f"dns:///localhost:{first.port}")
    try:
        backend.score(bundle.X_test)
    finally:
        backend.close()
    assert backend.transport.target == f"dns:///localhost:{first.port}"
