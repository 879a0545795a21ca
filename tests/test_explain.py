"""Explanations: which features pushed a score up. Exact for a linear model, by occlusion
against the training medians otherwise; carried by the agent on anomalous points only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agent_helpers import Client, close_clients, req, row_point
from conftest import WAIT
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.backends import load_backend
from models.drift import reference_profile
from models.registry import Registry
from udf_agent.scoring import format_top_features, parse_top_features
from udf_agent.server import AgentConfig, AgentServer

FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = ((2.5 * X[:, 1] - 1.5 * X[:, 2] + rng.normal(scale=0.5, size=n)) > 3).astype(int)
    return X, y


def _register(reg, name, model, X, with_reference=True):
    extra = {}
    if with_reference:
        extra["reference"] = reference_profile(
            X, FEATURES, ["float"] * 4, model.predict_proba(X)[:, 1]
        )
    card = reg.register(name, model, features=FEATURES, threshold=0.5, extra=extra)
    reg.promote(name, card.version, "production")
    return card


def test_linear_contributions_are_exact(tmp_path):
    X, y = _data()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    reg = Registry(tmp_path / "r")
    _register(reg, "lin", model, X, with_reference=False)  # exact needs no reference
    backend = load_backend(reg, "lin")
    rows = X[:5]
    got = backend.explain(rows)
    scaler, lr = model[0], model[1]
    expected = scaler.transform(rows) * lr.coef_[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # with the intercept they add up to the model's own log-odds
    logit = np.log(model.predict_proba(rows)[:, 1] / model.predict_proba(rows)[:, 0])
    np.testing.assert_allclose(got.sum(axis=1) + lr.intercept_[0], logit, rtol=1e-9)
    assert backend.explain_method == "linear"


def test_linear_contributions_of_one_hot_columns_add_up_to_their_feature(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"kind": rng.choice(["x", "y", "z"], 3000), "v": rng.normal(size=3000)})
    y = ((frame["kind"] == "z") & (frame["v"] > 0)).astype(int)
    model = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["kind"]),
                ("n", StandardScaler(), ["v"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, y)
    reg = Registry(tmp_path / "r")
    profile = {"features": [{"name": "kind", "type": "categorical", "levels": ["x", "y", "z"]},
                            {"name": "v", "type": "float"}]}  # fmt: skip
    card = reg.register(
        "mix", model, features=["kind", "v"], threshold=0.5, extra={"profile": profile}
    )
    backend = load_backend(reg, "mix", card.version)
    rows = np.array([["z", 1.0], ["x", -1.0], ["new", 0.5]], dtype=object)
    got = backend.explain(rows)
    Z = model[0].transform(pd.DataFrame(rows, columns=["kind", "v"]).astype({"v": float}))
    per_col = Z * model[1].coef_[0]
    np.testing.assert_allclose(got[:, 0], per_col[:, :3].sum(axis=1))
    np.testing.assert_allclose(got[:, 1], per_col[:, 3])
    assert got[2, 0] == 0.0  # an unseen level: no one-hot column, no contribution


def test_a_tree_model_names_the_feature_that_made_the_point_anomalous_first(tmp_path):
    X, y = _data(6000, seed=1)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X, y)
    reg = Registry(tmp_path / "r")
    _register(reg, "hgb", model, X)
    backend = load_backend(reg, "hgb")
    typical = np.median(X, axis=0)
    point = typical.copy()
    point[1] = 4.0  # anomalous through b only
    assert backend.score(point[None, :])[0] > 0.5
    contrib = backend.explain(point[None, :])[0]
    assert int(np.argmax(contrib)) == 1 and contrib[1] > 0.3
    assert backend.explain_method in ("occlusion", "shap")


def test_without_reference_values_a_non_linear_model_cannot_be_explained(tmp_path):
    X, y = _data(2000)
    model = HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    reg = Registry(tmp_path / "r")
    _register(reg, "bare", model, X, with_reference=False)
    with pytest.raises(NotImplementedError, match="no typical value"):
        load_backend(reg, "bare").explain(X[:2])


def test_top_features_format_round_trips_awkward_names():
    names = ["Air temperature [K]", "a,b", "x:y", "100%"]
    text = format_top_features(names, np.array([0.5, 0.25, -0.1, 0.125]), 3)
    assert text == "Air temperature [K]:+0.5,a%2Cb:+0.25,100%25:+0.125"
    assert parse_top_features(text) == [
        ("Air temperature [K]", 0.5),
        ("a,b", 0.25),
        ("100%", 0.125),
    ]
    assert format_top_features(names, np.array([-1.0, -2.0, 0.0, np.nan]), 3) == ""


def test_the_agent_explains_anomalous_points_only(tmp_path):
    X, y = _data(6000, seed=1)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X, y)
    reg = Registry(tmp_path / "r")
    _register(reg, "hgb", model, X)
    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "u.sock", registry=reg.root), registry=reg
    ).start()
    try:
        c = Client(tmp_path / "u.sock", timeout=WAIT)
        assert c.init({"model": "hgb", "maxDelay": ("duration", 0), "explain": 2}).success
        normal = np.median(X, axis=0)
        odd = normal.copy()
        odd[1] = 4.0

        def point(row, t):
            p = row_point(np.zeros(30), t=t, txn=f"p{t}")
            p.fieldsDouble.clear()
            for f, v in zip(FEATURES, row, strict=True):
                p.fieldsDouble[f] = float(v)
            return p

        c.send(req(point=point(normal, 1)))
        c.send(req(point=point(odd, 2)))
        a, b = c.recv_points(2)
        assert a.fieldsBool["is_anomaly"] is False and "top_features" not in a.fieldsString
        assert b.fieldsBool["is_anomaly"] is True
        top = parse_top_features(b.fieldsString["top_features"])
        assert top[0][0] == "b" and top[0][1] > 0 and len(top) <= 2
        # .explain(0): no explanations at all
        c2 = Client(tmp_path / "u.sock", timeout=WAIT)
        assert c2.init({"model": "hgb", "maxDelay": ("duration", 0), "explain": 0}).success
        c2.send(req(point=point(odd, 3)))
        (p,) = c2.recv_points(1)
        assert "top_features" not in p.fieldsString
    finally:
        srv.stop()
