"""One contract, checked on every scoring backend: scikit-learn, SavedModel, and TF
Serving over gRPC and REST (against the in-process TF Serving peer).

In the manner of scikit-learn's ``check_estimator``: each check is run on each backend,
through the public ``score`` that :class:`models.backends.ScoringBackend` wraps around
the backend's own ``_score``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import register_tiny
from conftest import require_module

from models import contract
from models.backends import InvalidInput, InvalidScores, ScoringBackend, local_factory
from models.card import ModelCard
from models.errors import BackendError, ChecksumMismatch
from models.registry import Registry


@dataclass
class Case:
    """A backend under test, the card it was built from, how to build another one from
    a (copied) registry, and what the model itself predicts."""

    backend: ScoringBackend
    registry: Registry
    card: ModelCard
    build: Callable[[Registry, ModelCard], ScoringBackend]
    expected: Callable[[np.ndarray], np.ndarray]
    X: np.ndarray


def _sklearn_case(tmp_path: Path) -> Case:
    reg = Registry(tmp_path / "registry")
    card, model = register_tiny(reg, threshold=0.37)
    X = np.random.default_rng(4).normal(size=(40, len(contract.FEATURES)))
    build = local_factory().build
    return Case(build(reg, card), reg, card, build, lambda X: model.predict_proba(X)[:, 1], X)


def _tf_case(tf_served, kind: str) -> Case:
    from models.backends.savedmodel import SavedModelBackend
    from models.backends.tfserving import TFServingBackend, TFServingConfig

    bundle, peer = tf_served
    peer.reset()
    reg = bundle.registry
    card = reg.card(bundle.name, "production")
    if kind == "savedmodel":
        build = SavedModelBackend.from_card
    else:
        config = (
            TFServingConfig(target=peer.target)
            if kind == "grpc"
            else TFServingConfig(transport="rest", rest_url=peer.rest_url)
        )

        def build(registry: Registry, c: ModelCard) -> ScoringBackend:
            return TFServingBackend.from_card(registry, c, config=config)

    X = bundle.X_test[:40]
    return Case(
        build(reg, card), reg, card, build, lambda X: bundle.keras_scores(card.version, X), X
    )


#: the TF backends need TensorFlow and a trained Keras model (the module's tf_served)
KINDS = [
    "sklearn",
    *(
        pytest.param(k, marks=[pytest.mark.slow, pytest.mark.tf])
        for k in ("savedmodel", "tfserving-grpc", "tfserving-rest")
    ),
]


@pytest.fixture(params=KINDS)
def case(request, tmp_path) -> Any:
    if request.param == "sklearn":
        c = _sklearn_case(tmp_path)
    else:
        require_module("tensorflow")
        tf_served = request.getfixturevalue("tf_served")
        c = _tf_case(tf_served, request.param.removeprefix("tfserving-"))
    yield c
    c.backend.close()


def test_a_batch_scores_like_row_by_row_calls_and_like_the_model(case):
    batch = case.backend.score(case.X)
    assert batch.dtype == np.float64 and batch.shape == (len(case.X),)
    rows = np.concatenate([case.backend.score(case.X[i : i + 1]) for i in range(len(case.X))])
    np.testing.assert_allclose(batch, rows, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batch, case.expected(case.X), rtol=1e-5, atol=1e-6)


def test_an_empty_batch_gives_an_empty_result(case):
    out = case.backend.score(np.empty((0, len(case.card.features))))
    assert out.shape == (0,) and out.dtype == np.float64


@pytest.mark.parametrize("shape", [(3, -1), (3, +1), (3,), (2, 3, 30)])
def test_a_batch_of_the_wrong_shape_is_refused(case, shape):
    width = len(case.card.features)
    dims = [d if i else d for i, d in enumerate(shape)]
    if len(shape) == 2:
        dims = [shape[0], width + shape[1]]
    with pytest.raises(InvalidInput, match=f"\\(n, {width}\\)"):
        case.backend.score(np.zeros(dims))


def test_scores_that_are_not_probabilities_are_refused(case, monkeypatch):
    real = case.backend._score

    def corrupt(X):
        s = np.array(real(X), dtype=np.float64)
        s[1], s[3] = np.nan, 1.5
        return s

    monkeypatch.setattr(case.backend, "_score", corrupt)
    with pytest.raises(InvalidScores) as info:
        case.backend.score(case.X[:5])
    assert info.value.bad.tolist() == [1, 3]
    assert np.isfinite(info.value.scores[[0, 2, 4]]).all()  # the good rows stay usable
    monkeypatch.setattr(case.backend, "_score", lambda X: real(X)[:-1])
    with pytest.raises(InvalidScores, match="shape"):
        case.backend.score(case.X[:5])


def test_a_tampered_artifact_is_refused(case, tmp_path):
    copy = Registry(tmp_path / "copy")
    shutil.copytree(case.registry.root, copy.root)
    card = copy.card(case.card.name, case.card.version)
    artifact = copy.artifact_path(card)
    victim = artifact if artifact.is_file() else next(p for p in artifact.rglob("*") if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"tampered")
    with pytest.raises(ChecksumMismatch):
        case.build(copy, card)


def test_close_twice_and_no_scoring_after_close(case):
    case.backend.close()
    case.backend.close()
    assert case.backend.closed
    with pytest.raises(BackendError, match="closed"):
        case.backend.score(case.X[:1])


def test_feature_order_and_threshold_come_from_the_card(case):
    assert case.backend.feature_names == case.card.features
    assert case.backend.threshold == case.card.threshold
    assert (case.backend.name, case.backend.version) == (case.card.name, case.card.version)
    # Columns in another order are another input: the backend scores what it is given in
    # card order, so a permuted batch scores differently.
    permuted = case.X[:, ::-1]
    assert not np.allclose(case.backend.score(permuted), case.backend.score(case.X))
