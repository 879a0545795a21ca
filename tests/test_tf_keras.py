"""The Keras model: training, registration, the TF Serving export layout and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import require_module
from http_serving import serve_in_thread

from models.registry import ChecksumMismatch, Registry, sha256_path

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    require_module("tensorflow")
    from tfserving_peer import tiny_bundle

    return tiny_bundle(tmp_path_factory.getbasetemp() / "tf-bundle")


def test_card_records_the_serving_signature(bundle):
    card = bundle.registry.card(bundle.name, "2")
    assert card.framework == "tf"
    assert card.artifact_file == "saved_model"
    assert card.serving == {
        "model_name": bundle.name,
        "version": 2,
        "signature_name": "serving_default",
        "inputs": {"features": {"dtype": "DT_FLOAT", "shape": [-1, 30]}},
        "outputs": {"score": {"dtype": "DT_FLOAT", "shape": [-1]}},
    }
    assert card.data["training"]["resampling"] == "class_weight"


def test_saved_model_signature_matches_the_card(bundle):
    import tensorflow as tf

    card = bundle.registry.card(bundle.name, "1")
    loaded = tf.saved_model.load(str(bundle.serving_dir / bundle.name / "1"))
    fn = loaded.signatures[card.serving["signature_name"]]
    (spec,) = fn.structured_input_signature[1].values()
    assert list(fn.structured_input_signature[1]) == ["features"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 30]
    assert list(fn.structured_outputs) == ["score"]
    out = fn(features=tf.constant(bundle.X_test, dtype=tf.float32))["score"].numpy()
    np.testing.assert_allclose(out, bundle.keras_scores("1", bundle.X_test), rtol=1e-5)


def test_serving_copy_is_the_registered_artifact(bundle):
    for version in ("1", "2"):
        card = bundle.registry.card(bundle.name, version)
        path = bundle.registry.verify(card)  # sha256 over the directory
        assert sha256_path(bundle.serving_dir / bundle.name / version) == card.artifact_sha256
        assert (path / "saved_model.pb").is_file()
        assert (path.parent / "model.keras").is_file()
    # no half-copied or hidden staging directories left behind for TF Serving to trip on
    assert sorted(p.name for p in (bundle.serving_dir / bundle.name).iterdir()) == ["1", "2"]


def test_keras_file_reloads_to_the_same_predictions(bundle):
    import keras

    model = keras.models.load_model(bundle.registry.root / bundle.name / "1" / "model.keras")
    out = model.predict(bundle.X_test.astype(np.float32), verbose=0).reshape(-1)
    np.testing.assert_allclose(out, bundle.keras_scores("1", bundle.X_test), rtol=1e-5)


def test_tampered_artifact_is_refused(bundle, tmp_path):
    import shutil

    reg = Registry(tmp_path / "reg")
    shutil.copytree(bundle.registry.root / bundle.name, reg.root / bundle.name)
    card = reg.card(bundle.name, "1")
    (reg.artifact_path(card) / "variables" / "variables.index").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match="does not match"):
        reg.verify(card)


def test_best_f1_threshold():
    from models.tf_keras import best_f1_threshold

    y = np.array([0, 0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.35, 0.7])
    assert best_f1_threshold(y, s) == pytest.approx(0.7)
    assert best_f1_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5


def test_cli_train_tf_registers_exports_and_promotes(tmp_path, capsys):
    require_module("tensorflow")
    from models.__main__ import main

    registry, serving, data = tmp_path / "reg", tmp_path / "serving", tmp_path / "data"
    argv = [
        "train-tf",
        "--name", "cc_tf",
        "--synthetic-rows", "3000",
        "--epochs", "2",
        "--seed", "3",
        "--serving-dir", str(serving),
        "--data-dir", str(data),
        "--promote", "production",
        "--registry", str(registry),
    ]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "cc_tf 1"
    assert "epoch=1/2 " in err and "epoch=2/2 " in err  # per-epoch progress
    reg = Registry(registry)
    card = reg.card("cc_tf", "production")
    assert card.version == "1" and card.serving["version"] == 1
    assert (serving / "cc_tf" / "1" / "saved_model.pb").is_file()
    assert 0.0 < card.threshold < 1.0
    # the same card layout as `models train`: test figures, validation ones beside them
    assert {"auprc", "precision", "recall", "f1"} <= set(card.metrics)
    assert {"auprc", "precision", "recall", "f1"} <= set(card.data["validation_metrics"])
    assert card.data["evaluated_on"].startswith("test split")
    # the reference distributions the drift UDF compares live windows with
    from models.contract import FEATURES

    reference = card.data["reference"]
    assert set(reference["features"]) == set(FEATURES) == set(card.features)
    assert reference["rows"] == card.data["training"]["rows"]
    assert abs(sum(reference["score"]["freq"]) - 1.0) < 1e-9
    capsys.readouterr()
    assert main(["list", "--registry", str(registry)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cc_tf"))
    assert row.split()[5] == format(card.metrics["auprc"], ".4f")  # not "None"
    assert (
        card.data["training"]["rows"] == len(pd.read_csv(data / "train.csv"))
        and card.data["training"]["epochs_run"] <= 2
    )
    assert json.loads((registry / "cc_tf" / "aliases.json").read_text()) == {"production": "1"}
    assert (data / "train.csv").is_file()

    # `models evaluate` scores the TF model in-process from its SavedModel, on the same
    # test split, so it reproduces the card's test figures (Keras predict vs signature).
    argv = ["evaluate", "cc_tf", "--registry", str(registry), "--data-dir", str(data),
            "--runs-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    assert main(argv) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["version"] == "1"
    assert evaluated["rows"] == card.metrics["rows"]
    for key in ("auprc", "roc_auc", "precision", "recall"):
        assert evaluated[key] == pytest.approx(card.metrics[key], abs=1e-3), key
    assert list((tmp_path / "runs").glob("evaluate-cc_tf-v1-*/pr_curve.png"))


def test_api_serves_a_tf_production_model_from_its_saved_model(bundle):
    # The REST API scores a TF model in-process (tf extra), with the same numbers as Keras.
    import requests
    from werkzeug.serving import make_server

    from api import create_app
    from api.config import ApiConfig
    from models.contract import FEATURES

    app = create_app(ApiConfig(registry=bundle.registry.root, model=bundle.name))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serve_in_thread(server)
    X = bundle.X_test[:25]
    body = [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]
    try:
        r = requests.post(
            f"http://127.0.0.1:{server.server_port}/v1/predict", json=body, timeout=30
        )
        assert r.status_code == 200, r.text
        data = r.json()
        v1 = requests.post(
            f"http://127.0.0.1:{server.server_port}/v1/predict",
            params={"version": "1"},
            json=body[:3],
            timeout=30,
        ).json()
    finally:
        server.shutdown()
        server.server_close()
    assert (data["model"], data["model_version"]) == (bundle.name, "2")
    scores = [p["score"] for p in data["predictions"]]
    np.testing.assert_allclose(scores, bundle.keras_scores("2", X), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        [p["score"] for p in v1["predictions"]], bundle.keras_scores("1", X[:3]), rtol=1e-5
    )
