"""Population stability: reference distributions in the card, PSI of live windows, and the
agent's ``@drift()`` UDF on Kapacitor's batch edge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agent_helpers import Client, close_clients, register_tiny, req, row_point, train_tiny
from conftest import WAIT
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models import contract
from models.drift import DriftAccumulator, drift_level, psi, reference_profile
from models.profile import load_profile
from models.registry import Registry
from models.synthetic import make_machine_failure
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame
from udf_agent.server import AgentConfig, AgentServer

WINDOW = 600


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


def test_psi_is_zero_for_the_same_shares_and_grows_with_a_shift():
    assert psi([0.25, 0.25, 0.5], [25, 25, 50]) == pytest.approx(0.0)
    assert psi([0.5, 0.5], [90, 10]) > 0.25
    assert np.isnan(psi([0.5, 0.5], [0, 0]))
    assert [drift_level(v) for v in (0.05, 0.2, 0.3, float("nan"))] == [
        "ok",
        "warning",
        "critical",
        "unknown",
    ]


def test_reference_bins_cover_the_training_data_and_categories_keep_an_other_bucket():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=5000), "kind": rng.choice(["a", "b"], 5000)})
    ref = reference_profile(frame, ["x", "kind"], ["float", "categorical"], rng.random(5000))
    assert len(ref["features"]["x"]["edges"]) == 9 and sum(
        ref["features"]["x"]["freq"]
    ) == pytest.approx(1)
    assert ref["features"]["kind"]["levels"] == ["a", "b"]
    assert ref["features"]["kind"]["freq"][-1] == 0.0  # no unseen level in training
    acc = DriftAccumulator(ref, ["x", "kind"])
    acc.add(np.array([[0.0, "c"]] * 300, dtype=object))  # a level never seen
    assert acc.result()["kind"] > 1.0


# -- the agent's @drift() UDF ---------------------------------------------------------------
def _register_with_reference(reg: Registry, name: str = "creditcard"):
    model, X, y = train_tiny(0, n=6000)
    ref = reference_profile(
        X, contract.FEATURES, ["float"] * len(contract.FEATURES), model.predict_proba(X)[:, 1]
    )
    card = reg.register(
        name, model, features=contract.FEATURES, threshold=0.5, extra={"reference": ref}
    )
    reg.promote(name, card.version, "production")
    return model, X


@pytest.fixture
def agent(tmp_path):
    reg = Registry(tmp_path / "registry")
    model, X = _register_with_reference(reg)
    register_tiny(reg, "noref")  # a card without reference distributions
    cfg = AgentConfig(
        socket_path=tmp_path / "udf.sock",
        drift_socket_path=tmp_path / "drift.sock",
        registry=reg.root,
    )
    srv = AgentServer(cfg, registry=reg).start()
    yield srv, reg, model, X
    srv.stop()


def _window(c: Client, points, t0: int, *, name="transactions", tags=None) -> pb.Point:
    begin = pb.Request()
    begin.begin.name = name
    begin.begin.size = len(points)
    for k, v in (tags or {}).items():
        begin.begin.tags[k] = v
    c.send(encode_frame(begin.SerializeToString()))
    for i, p in enumerate(points):
        p.time = t0 + i
        c.send(req(point=p))
    end = pb.Request()
    end.end.name = name
    end.end.tmax = t0 + len(points) - 1
    for k, v in (tags or {}).items():
        end.end.tags[k] = v
    c.send(encode_frame(end.SerializeToString()))
    resp = c.recv()
    assert resp.WhichOneof("message") == "point", resp
    return resp.point


@pytest.mark.slow
def test_drift_stays_quiet_on_in_distribution_windows_and_fires_on_a_shift(agent):
    srv, _, _, _ = agent
    c = Client(srv.config.drift_socket_path, timeout=WAIT)
    info = pb.Request()
    info.info.SetInParent()
    c.send(encode_frame(info.SerializeToString()))
    got = c.recv_kind("info").info
    assert got.wants == pb.BATCH and got.provides == pb.STREAM
    assert c.init({"model": "creditcard"}).success
    rng = np.random.default_rng(7)  # the distribution train_tiny draws from
    levels = []
    for w in range(20):
        rows = rng.normal(size=(WINDOW, len(contract.FEATURES)))
        p = _window(c, [row_point(r, t=0, txn=f"w{w}-{i}") for i, r in enumerate(rows)], w * 10_000)
        assert p.name == "model_drift" and p.time == w * 10_000 + WINDOW - 1
        assert p.fieldsInt["count"] == WINDOW and p.tags["model"] == "creditcard"
        assert p.tags["model_version"] == "1"
        levels.append(p.fieldsString["drift_level"])
        assert p.fieldsDouble["psi_max"] < 0.1, (w, p.fieldsString["drift_feature"])
        assert "psi_score" in p.fieldsDouble and "psi_V3" in p.fieldsDouble
    assert set(levels) == {"ok"}
    shifted = rng.normal(size=(WINDOW, len(contract.FEATURES)))
    shifted[:, contract.FEATURES.index("V3")] += 2.0  # two standard deviations
    p = _window(c, [row_point(r, t=0, txn=f"s{i}") for i, r in enumerate(shifted)], 10**9)
    assert p.fieldsString["drift_level"] == "critical"
    assert p.fieldsString["drift_feature"] == "V3" and p.fieldsDouble["psi_V3"] > 0.25


def test_a_window_with_a_missing_feature_or_too_few_rows(agent):
    srv, _, _, _ = agent
    c = Client(srv.config.drift_socket_path, timeout=WAIT)
    assert c.init({"model": "creditcard", "minCount": 300, "measurement": "drift_cc"}).success
    rows = np.random.default_rng(8).normal(size=(400, len(contract.FEATURES)))
    points = [row_point(r, t=0, txn=f"m{i}") for i, r in enumerate(rows)]
    for p in points[:150]:
        del p.fieldsDouble["Amount"]
    out = _window(c, points, 1, tags={"source": "pub-1"})
    assert out.name == "drift_cc" and out.tags["source"] == "pub-1"
    assert out.fieldsInt["count"] == 250 and out.fieldsInt["unscored"] == 150
    assert out.fieldsString["drift_level"] == "insufficient"  # 250 < minCount 300
    assert "psi_max" not in out.fieldsDouble
    empty = _window(c, [], 5)
    assert empty.fieldsInt["count"] == 0 and empty.fieldsString["drift_level"] == "insufficient"


def test_a_model_without_reference_distributions_is_refused_at_init(agent):
    srv, _, _, _ = agent
    c = Client(srv.config.drift_socket_path, timeout=WAIT)
    resp = c.init({"model": "noref"})
    assert not resp.success and "no reference distributions" in resp.error
    resp = c.init({"model": "creditcard", "warn": 0.5, "crit": 0.2})
    assert not resp.success and "warn" in resp.error


def test_categorical_drift_on_the_machine_failure_profile(tmp_path):
    profile = load_profile("machine_failure")
    # one run of the machine: training rows and live windows drawn from it at random
    # (its temperatures are random walks: consecutive rows are one moment of the walk)
    run = make_machine_failure(26000, seed=3)
    data = run.sample(6000, random_state=0)
    live = run.drop(data.index)
    feats = profile.feature_names
    cats = [f.name for f in profile.categorical]
    model = make_pipeline(
        ColumnTransformer(
            [("c", OneHotEncoder(handle_unknown="ignore"), cats),
             ("n", StandardScaler(), [f for f in feats if f not in cats])]
        ),
        LogisticRegression(max_iter=2000),
    ).fit(data[feats], data[profile.label])  # fmt: skip
    types = [f.type for f in profile.features]
    ref = reference_profile(
        data[feats], feats, types, model.predict_proba(data[feats])[:, 1],
        levels={"Type": ["H", "L", "M"]},
    )  # fmt: skip
    reg = Registry(tmp_path / "registry")
    card = reg.register(
        profile.name, model, features=feats, threshold=0.5,
        extra={"reference": ref, "profile": profile.card_section()},
    )  # fmt: skip
    reg.promote(profile.name, card.version, "production")
    from udf_agent.replay import build_payloads

    srv = AgentServer(
        AgentConfig(
            socket_path=tmp_path / "s.sock",
            drift_socket_path=tmp_path / "d.sock",
            registry=reg.root,
        ),
        registry=reg,
    ).start()
    try:
        c = Client(tmp_path / "d.sock", timeout=WAIT)
        assert c.init({"model": profile.name}).success
        same = live.sample(WINDOW, random_state=1)
        pts = [
            pb.Point.FromString(b) for b in build_payloads(same.to_dict("records"), profile=profile)
        ]
        quiet = _window(c, pts, 1, name=profile.measurement)
        assert quiet.fieldsString["drift_level"] == "ok", quiet.fieldsDouble
        assert "psi_Air temperature [K]" in quiet.fieldsDouble  # names kept as they are
        only_h = same.assign(Type="H")  # the product mix changes: all high quality
        pts = [
            pb.Point.FromString(b)
            for b in build_payloads(only_h.to_dict("records"), profile=profile)
        ]
        moved = _window(c, pts, 10**6, name=profile.measurement)
        assert moved.fieldsString["drift_feature"] == "Type"
        assert moved.fieldsString["drift_level"] == "critical"
    finally:
        srv.stop()


@pytest.mark.slow
def test_training_records_the_reference_and_held_out_rows_do_not_drift(tmp_path):
    """``models train --profile`` stores each feature's bins (categoricals: the levels the
    encoder learnt) and the test split's score distribution; the test split, scored by the
    registered model, stays under the warning level, and a shifted copy does not."""
    from models.backends import load_backend
    from models.train import TrainConfig, _backend_batch, train

    config = TrainConfig(
        name="machine_failure",
        profile="machine_failure",
        synthetic_rows=6000,
        candidates=["lr_balanced"],
        trials=1,
        seed=7,
        registry=str(tmp_path / "registry"),
        data_dir=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
        promote="production",
    )
    import io

    result = train(config, progress=io.StringIO())
    card = result.card
    ref = card.data["reference"]
    profile = load_profile("machine_failure")
    assert set(ref["features"]) == set(profile.feature_names) == set(card.features)
    assert ref["rows"] == result.training_rows
    kind = ref["features"]["Type"]
    assert kind["type"] == "categorical" and kind["levels"] == ["H", "L", "M"]
    assert sum(kind["freq"]) == pytest.approx(1.0)
    assert ref["score"]["type"] != "categorical" and sum(ref["score"]["freq"]) == pytest.approx(1)

    backend = load_backend(Registry(tmp_path / "registry"), "machine_failure", "production")
    test = pd.read_csv(tmp_path / "data" / "test.csv")
    X = _backend_batch(test, card)
    acc = DriftAccumulator(ref, card.features)
    acc.add(X, backend.score(X))
    quiet = acc.result()
    assert max(quiet.values()) < 0.1, quiet

    hot = test.copy()
    col = "Torque [Nm]"
    hot[col] = hot[col] + 2 * hot[col].std()
    Xh = _backend_batch(hot, card)
    acc = DriftAccumulator(ref, card.features)
    acc.add(Xh, backend.score(Xh))
    shifted = acc.result()
    assert (
        shifted[col] > 0.25 and max(v for f, v in shifted.items() if f not in (col, "score")) < 0.1
    )
