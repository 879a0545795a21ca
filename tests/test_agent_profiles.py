"""The UDF agent and the REST API on a data set other than credit cards: the
machine_failure profile (AI4I 2020 names with spaces and brackets, an integer id, a
categorical product type, integer and float readings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agent_helpers import Client, close_clients
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.profile import load_profile
from models.registry import Registry
from models.synthetic import make_machine_failure
from udf_agent.replay import build_payloads, run_replay
from udf_agent.server import AgentConfig, AgentServer

PROFILE = load_profile("machine_failure")


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return make_machine_failure(3000, seed=11)


@pytest.fixture(scope="module")
def trained(data):
    """A pipeline that takes raw values (the category as text), fitted on a frame whose
    columns are the profile's features, as training by profile registers it."""
    feats = PROFILE.feature_names
    cats = [f.name for f in PROFILE.categorical]
    nums = [f for f in feats if f not in cats]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                ("num", StandardScaler(), nums),
            ]
        ),
        LogisticRegression(max_iter=2000),
    ).fit(data[feats], data[PROFILE.label])
    return model


@pytest.fixture
def registry(tmp_path, trained, data) -> Registry:
    reg = Registry(tmp_path / "registry")
    levels = {f.name: data[f.name].unique() for f in PROFILE.categorical}
    card = reg.register(
        PROFILE.name,
        trained,
        features=PROFILE.feature_names,
        threshold=0.3,
        extra={"profile": PROFILE.with_levels(levels).card_section()},
    )
    reg.promote(PROFILE.name, card.version, "production")
    return reg


@pytest.fixture
def server(tmp_path, registry):
    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "udf.sock", registry=registry.root), registry=registry
    ).start()
    yield srv
    srv.stop()


def test_points_of_the_profile_are_scored_like_the_model_with_names_intact(server, data, trained):
    rows = data.head(400).to_dict("records")
    payloads = build_payloads(rows, profile=PROFILE)
    report = run_replay(
        server.config.socket_path,
        payloads,
        {"model": PROFILE.name},
        collect=True,
        profile=PROFILE,
    )
    assert not report.violations, report.violations
    assert report.received == 400 and report.score_errors == 0
    by_id = {p.txn_id: p for p in report.points}
    expected = trained.predict_proba(data.head(400)[PROFILE.feature_names])[:, 1]
    got = np.array([by_id[str(u)].score for u in data.head(400)["UDI"]])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert {p.threshold for p in report.points} == {0.3}
    labels = [by_id[str(u)].label for u in data.head(400)["UDI"]]
    assert labels == data.head(400)["Machine failure"].tolist()


def test_an_unseen_category_is_scored_and_a_missing_feature_is_a_score_error(server, data, trained):
    rows = data.head(3).to_dict("records")
    rows[0]["Type"] = "X"  # a product type the model never saw
    del rows[1]["Torque [Nm]"]
    rows[2]["Rotational speed [rpm]"] = float("nan")
    report = run_replay(
        server.config.socket_path,
        build_payloads(rows, profile=PROFILE),
        {"model": PROFILE.name},
        collect=True,
        profile=PROFILE,
    )
    assert not report.violations
    pts = {p.txn_id: p for p in report.points}
    first = pts[str(rows[0]["UDI"])]
    assert first.score_error is None
    frame = pd.DataFrame([rows[0]])[PROFILE.feature_names]
    assert first.score == pytest.approx(trained.predict_proba(frame)[0, 1])
    assert pts[str(rows[1]["UDI"])].score_error == "missing Torque [Nm]"
    assert pts[str(rows[2]["UDI"])].score_error == "missing Rotational speed [rpm]"


def test_a_category_sent_as_a_number_is_refused_for_that_point_only(server, data):
    from agent_helpers import req

    from udf_agent.protocol import messages as pb

    c = Client(server.config.socket_path)
    assert c.init({"model": PROFILE.name, "maxDelay": ("duration", 0)}).success
    good, bad = (
        pb.Point.FromString(b)
        for b in build_payloads(data.head(2).to_dict("records"), profile=PROFILE)
    )
    del bad.fieldsString["Type"]
    bad.fieldsDouble["Type"] = 1.0
    for t, p in enumerate((good, bad), start=1):
        p.time = t
        c.send(req(point=p))
    a, b = c.recv_points(2)
    assert "score" in a.fieldsDouble
    assert b.fieldsString["score_error"] == "Type is not a category label"


def test_outputs_may_not_overwrite_the_profiles_id_label_or_features(server):
    c = Client(server.config.socket_path)
    for field, what in (
        ("UDI", "a field of the input measurement"),
        ("label", "a field of the input measurement"),
        ("Torque [Nm]", "a feature of machine_failure v1"),
    ):
        resp = c.init({"model": PROFILE.name, "field": field})
        assert not resp.success and what in resp.error, resp.error
    # the credit-card contract's own fields are free names for this data set
    assert c.init({"model": PROFILE.name, "field": "txn_id"}).success


def test_the_api_scores_records_with_category_labels(registry, trained, data):
    from api.app import create_app
    from api.config import ApiConfig

    app = create_app(ApiConfig(registry=registry.root, model=PROFILE.name, reload_interval=0))
    client = app.test_client()
    records = data.head(5)[PROFILE.feature_names].to_dict("records")
    records[0]["Type"] = "X"
    records[1]["UDI"] = "part-7"
    r = client.post("/v1/predict", json=records)
    assert r.status_code == 200, r.get_data(as_text=True)
    scores = [p["score"] for p in r.get_json()["predictions"]]
    frame = pd.DataFrame(records)[PROFILE.feature_names]
    np.testing.assert_allclose(scores, trained.predict_proba(frame)[:, 1], rtol=1e-9)
    assert r.get_json()["predictions"][1]["UDI"] == "part-7"
    bad = dict(records[2], Type=3)
    bad.pop("Torque [Nm]")
    r = client.post("/v1/predict", json=bad)
    assert r.status_code == 422
    problems = {(p["field"], p["message"]) for p in r.get_json()["problems"]}
    assert ("Torque [Nm]", "missing feature") in problems
    assert any(f == "Type" and "category label" in m for f, m in problems)
    spec = client.get("/openapi.json").get_json()
    record = spec["components"]["schemas"]["PredictRecord"]["properties"]
    assert record["Type"]["type"] == "string" and record["Torque [Nm]"]["type"] == "number"
    assert "UDI" in record
    app.extensions["tick_anomaly_api"].service.close()
