"""Registry trust: artifacts confined to their version directory, signed cards.

Loading a pickle runs code. These tests register a "model" whose unpickling creates a
marker file, point a card at it in every way an attacker with write access to one card
could, and check that no loader (registry, backends, the UDF agent, the REST API,
``models evaluate``) opens it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from agent_helpers import Client, close_clients, register_tiny
from sklearn.linear_model import LogisticRegression

from models import contract
from models.backends import load_backend
from models.registry import (
    CARD_FILE,
    Registry,
    RegistryError,
    SignatureError,
    UnsafeArtifact,
    card_signature,
    sha256_path,
)
from udf_agent.server import AgentConfig, AgentServer

KEY = b"k" * 32


class Evil:
    """Unpickling this creates ``marker``: proof that a loader ran the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture
def evil(tmp_path):
    """An evil pickle outside the registry and the marker its loading would create."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil" / "model.joblib"
    path.parent.mkdir()
    joblib.dump(Evil(marker), path)
    return path, marker


def _rewrite_card(reg: Registry, model: str, version: str, **changes) -> dict:
    path = reg.root / model / version / CARD_FILE
    data = json.loads(path.read_text())
    for key, value in changes.items():
        data[key] = value
    path.write_text(json.dumps(data))
    return data


def _point_card_at(reg: Registry, name: str, version: str, file: str, target: Path) -> None:
    """What an attacker who can edit one card does: name another file, fix the sha256."""
    _rewrite_card(reg, name, version, artifact={"file": file, "sha256": sha256_path(target)})


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_an_artifact_outside_its_version_directory_is_never_opened(tmp_path, evil, how):
    evil_path, marker = evil
    reg = Registry(tmp_path / "registry", signing_key=None)
    register_tiny(reg)
    vdir = reg.root / "creditcard" / "1"
    if how == "dotdot":
        file = os.path.relpath(evil_path, vdir)
        assert file.startswith("..")
    elif how == "absolute":
        file = str(evil_path)
    else:
        (vdir / "model.joblib").unlink()
        (vdir / "model.joblib").symlink_to(evil_path)
        file = "model.joblib"
    _point_card_at(reg, "creditcard", "1", file, evil_path)
    card = reg.card("creditcard", "1")
    with pytest.raises(UnsafeArtifact, match="outside"):
        reg.verify(card)
    with pytest.raises(RegistryError):
        load_backend(reg, "creditcard", "production")
    assert not marker.exists()


def test_a_savedmodel_directory_with_a_symlink_leading_out_is_refused(tmp_path):
    reg = Registry(tmp_path / "registry", signing_key=None)
    src = tmp_path / "sm"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    card = reg.register(
        "m", src, features=["a"], threshold=0.5, framework="tf", artifact_name="savedmodel"
    )
    assert reg.verify(card).name == "savedmodel"
    (tmp_path / "secret").write_text("x")
    (reg.artifact_path(card) / "variables" / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeArtifact, match="links outside"):
        reg.verify(reg.card("m", card.version))


def test_a_card_that_names_another_model_or_version_is_refused(tmp_path):
    reg = Registry(tmp_path / "registry", signing_key=None)
    register_tiny(reg)
    _rewrite_card(reg, "creditcard", "1", name="../../elsewhere")
    with pytest.raises(RegistryError, match="refusing it"):
        reg.card("creditcard", "1")


def test_signed_cards_verify_and_an_altered_card_is_refused(tmp_path):
    reg = Registry(tmp_path / "registry", signing_key=KEY)
    card, _ = register_tiny(reg)
    assert card.data["signature"]["alg"] == "HMAC-SHA256"
    assert card.data["signature"] == card_signature(card.data, KEY)
    assert load_backend(reg, "creditcard").threshold == 0.5
    # The attacker changes the threshold (or the artifact and its checksum): refused.
    _rewrite_card(reg, "creditcard", "1", threshold=0.99)
    with pytest.raises(SignatureError, match="does not match"):
        reg.card("creditcard", "1")
    # Signed with another key: refused too.
    other = Registry(reg.root, signing_key=b"o" * 32)
    with pytest.raises(SignatureError, match="key_id"):
        other.card("creditcard", "1")


def test_with_a_key_an_unsigned_card_is_refused_until_signed(tmp_path):
    root = tmp_path / "registry"
    register_tiny(Registry(root, signing_key=None))
    keyed = Registry(root, signing_key=KEY)
    with pytest.raises(SignatureError, match="not signed"):
        keyed.card("creditcard", "production")
    signed = keyed.sign("creditcard", "1")
    assert signed.data["signature"]["value"]
    assert keyed.card("creditcard", "production").version == "1"


def test_signing_key_comes_from_the_environment(tmp_path, monkeypatch):
    root = tmp_path / "registry"
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv("MODELS_SIGNING_KEY_FILE", str(key_file))
    assert Registry(root).signing_key == KEY
    monkeypatch.delenv("MODELS_SIGNING_KEY_FILE")
    monkeypatch.setenv("MODELS_SIGNING_KEY", "short")
    with pytest.raises(RegistryError, match="at least 16 bytes"):
        Registry(root)
    monkeypatch.delenv("MODELS_SIGNING_KEY")
    assert Registry(root).signing_key is None


def test_the_agent_refuses_an_unsigned_card_at_init(tmp_path):
    root = tmp_path / "registry"
    register_tiny(Registry(root, signing_key=None))
    keyed = Registry(root, signing_key=KEY)
    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "udf.sock", registry=root), registry=keyed
    ).start()
    try:
        resp = Client(tmp_path / "udf.sock").init({"model": "creditcard"})
        assert not resp.success
        assert "not signed" in resp.error
    finally:
        srv.stop()


@pytest.mark.slow
def test_the_api_and_evaluate_refuse_an_escaping_artifact(tmp_path, evil, monkeypatch):
    from api.app import create_app
    from api.config import ApiConfig

    evil_path, marker = evil
    root = tmp_path / "registry"
    reg = Registry(root, signing_key=None)
    register_tiny(reg)
    _point_card_at(
        reg, "creditcard", "1", os.path.relpath(evil_path, root / "creditcard" / "1"), evil_path
    )
    app = create_app(ApiConfig(registry=root, model="creditcard", reload_interval=0))
    client = app.test_client()
    r = client.post("/v1/predict", json={f: 0.0 for f in contract.FEATURES})
    assert r.status_code == 503, r.get_data(as_text=True)
    assert "outside" in r.get_json()["message"]
    # models evaluate, as a user runs it
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "test.csv").write_text(
        ",".join([*contract.FEATURES, "Class", "txn_id"]) + "\n" + "0," * 31 + "t1\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "evaluate",
            "creditcard",
            "--registry",
            str(root),
            "--data-dir",
            str(data_dir),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "outside" in out.stderr
    assert not marker.exists()


def test_models_sign_cli_signs_every_version(tmp_path):
    root = tmp_path / "registry"
    reg = Registry(root, signing_key=None)
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    for _ in range(2):
        reg.register("m", model, features=["a"], threshold=0.5)
    env = dict(os.environ, MODELS_SIGNING_KEY=KEY.decode())
    run = subprocess.run(
        [sys.executable, "-m", "models", "sign", "m", "--registry", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("signed m v") == 2
    keyed = Registry(root, signing_key=KEY)
    assert [keyed.card("m", v).version for v in ("1", "2")] == ["1", "2"]
