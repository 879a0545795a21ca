"""Registry: model cards, checksum refusal, atomic alias updates."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.backends import load_backend
from models.contract import FEATURES
from models.registry import (
    CARD_MARKDOWN_FILE,
    ChecksumMismatch,
    ModelNotFound,
    Registry,
    RegistryError,
    sha256_path,
)


@pytest.fixture
def model(rng):
    X = rng.normal(size=(300, len(FEATURES)))
    y = (X[:, 14] + rng.normal(0, 0.5, 300) > 1).astype(int)
    return LogisticRegression(max_iter=500).fit(X, y), X


@pytest.fixture
def reg(tmp_path, model):
    r = Registry(tmp_path / "registry")
    for _ in range(2):
        r.register(
            "creditcard",
            model[0],
            features=FEATURES,
            threshold=0.42,
            metrics={"auprc": 0.8},
            training={"rows": 300, "positive_rate": 0.1, "resampling": "smote"},
            extra={"candidate": "lr_smote"},
        )
    return r


def test_register_writes_card_and_markdown(reg):
    card = reg.card("creditcard", "2")
    assert card.version == "2" and card.features == FEATURES and card.threshold == 0.42
    assert card.artifact_sha256 == sha256_path(reg.artifact_path(card))
    md = (reg.root / "creditcard" / "2" / CARD_MARKDOWN_FILE).read_text()
    assert md.startswith("# creditcard v2")
    for needle in ("framework: sklearn", "decision threshold: 0.42", card.artifact_sha256,
                   "`Time`, `V1`", "| auprc | 0.8 |", "| resampling | smote |", "| rows | 300 |"):  # fmt: skip
        assert needle in md
    assert [r["version"] for r in reg.list()] == ["1", "2"]


def test_list_skips_an_unreadable_card_and_keeps_the_others(reg, caplog):
    (reg.root / "creditcard" / "1" / "model.json").write_text("{truncated")
    with caplog.at_level("WARNING", logger="models.registry"):
        rows = reg.list()
    assert [r["version"] for r in rows] == ["2"]
    assert "version=1" in caplog.text and "cannot read model card" in caplog.text


def test_loader_refuses_modified_artifact(reg, model):
    backend = load_backend(reg, "creditcard", "1")
    np.testing.assert_allclose(
        backend.score(model[1][:5]), model[0].predict_proba(model[1][:5])[:, 1]
    )
    path = reg.artifact_path(reg.card("creditcard", "1"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="does not match the card"):
        load_backend(reg, "creditcard", "1")
    with pytest.raises(ChecksumMismatch):
        reg.load_artifact(reg.card("creditcard", "1"))
    load_backend(reg, "creditcard", "2")  # the other version is untouched


def test_promote_and_resolve(reg):
    assert reg.promote("creditcard", "1", "production") == {"production": "1"}
    reg.promote("creditcard", 2, "challenger")
    assert reg.resolve("creditcard", "production") == "1"
    assert reg.resolve("creditcard", "challenger") == "2"
    reg.promote("creditcard", "2", "production")
    assert json.loads(reg.aliases_path("creditcard").read_text()) == {
        "production": "2",
        "challenger": "2",
    }
    with pytest.raises(ModelNotFound, match="no version 9"):
        reg.promote("creditcard", "9")
    with pytest.raises(RegistryError, match="invalid alias"):
        reg.promote("creditcard", "1", "bad alias")
    # "latest" is reserved: an alias of that name would never be resolved
    with pytest.raises(RegistryError, match="invalid alias 'latest'"):
        reg.promote("creditcard", "1", "latest")
    assert reg.resolve("creditcard", "latest") == "2"


@pytest.mark.slow
def test_alias_rewrite_is_atomic_under_concurrent_readers(reg):
    reg.promote("creditcard", "1", "production")
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(reg.aliases("creditcard")["production"])
            except BaseException as exc:  # a torn read would raise here
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(300):
        reg.promote("creditcard", "1" if i % 2 else "2", "production")
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen <= {"1", "2"}
    assert not [p for p in (reg.root / "creditcard").iterdir() if p.name.startswith(".aliases")]


@pytest.mark.slow
def test_concurrent_promotions_of_different_aliases_keep_each_other(reg):
    aliases = ("production", "challenger", "staging")

    def promoter(alias):
        for i in range(150):
            reg.promote("creditcard", "1" if i % 2 else "2", alias)

    for _ in range(8):
        threads = [threading.Thread(target=promoter, args=(a,)) for a in aliases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # each alias ends at its own last write: no promotion overwrote another's alias
        assert reg.aliases("creditcard") == dict.fromkeys(aliases, "1")
        reg.promote("creditcard", "2", "production")
    assert not [p for p in (reg.root / "creditcard").iterdir() if p.name.startswith(".")]


def test_failed_alias_write_keeps_previous_file(reg, monkeypatch):
    reg.promote("creditcard", "1", "production")
    before = reg.aliases_path("creditcard").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("models.registry.json.dump", boom)
    with pytest.raises(OSError, match="disk full"):
        reg.promote("creditcard", "2", "production")
    assert reg.aliases_path("creditcard").read_bytes() == before
    assert not [p for p in (reg.root / "creditcard").iterdir() if p.name.startswith(".")]


def test_unknown_alias_message_tells_how_to_promote(reg):
    with pytest.raises(
        ModelNotFound, match="python -m models promote creditcard VERSION --alias production"
    ):
        reg.resolve("creditcard", "production")


@pytest.mark.parametrize("name", ["..", "../registry", "a/b", ".hidden", "a\0b", "m" * 256, ""])
def test_names_that_are_not_one_directory_are_refused(reg, tmp_path, model, name):
    # Reads come from TICKscripts and URLs: an outside path is "not found", never a
    # look at (or an OSError from) the filesystem beyond the registry.
    (tmp_path / "creditcard").mkdir()  # a sibling of the registry that ".." would reach
    with pytest.raises(ModelNotFound, match="invalid model name"):
        reg.card(name)
    with pytest.raises(ModelNotFound, match="invalid model name"):
        reg.aliases(name)
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register(name, model[0], features=FEATURES, threshold=0.5)
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.promote(name, 1)
    assert reg.models() == ["creditcard"]


def test_a_name_of_255_bytes_is_a_valid_directory(reg, model):
    name = "é" * 127 + "m"  # 255 bytes in UTF-8
    card = reg.register(name, model[0], features=FEATURES, threshold=0.5)
    assert reg.card(name, card.version).name == name
