"""Multi-backbone fusion: two tiny real transformers under one head, through the store."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import core.model.group as multi
from core.explain.attributions import group_attributions
from core.model import registry
from core.model.backbone import Backbone
from core.model.registry import PackagedModel
from core.learn.bundle import bundle_bytes, load_bundle
from core.learn.classifier import Settings, features_for, train
from core.errors import InputError
from core.learn.features import FeatureSpec
from core.project import load_classifier, retrain
from core.store import Store
from tests.helpers import (NEG, POS, DictCache, make_tiny_model, make_tokenizer,
                           PLAIN_UNLABELLED as UNLABELLED)


@pytest.fixture
def group(monkeypatch):
    """A group of two tiny backbones of different depth and width, registered by name."""
    tok = make_tokenizer()
    a = Backbone("tiny-a", make_tiny_model(len(tok), seed=1, layers=2, hidden=32), tok, "fp-a")
    b = Backbone("tiny-b", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    for bb in (a, b):
        entry = PackagedModel(bb.name, bb.name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-")
        monkeypatch.setitem(registry.REGISTRY, bb.name, entry)
    parts = tuple(multi.group_parts("tiny-a+tiny-b"))
    return multi.BackboneGroup("tiny-a+tiny-b", (a, b), parts)


def test_group_features_stack_each_part_with_its_own_prompt(group):
    texts = ["good movie", "awful film"]
    registry.ENCODERS  # tiny-b is not an encoder: both parts see the prompt
    X = features_for(group, texts, Settings(backbone=group.name, prompt="review : {text}"))
    a, b = group.backbones
    pa, pb = group.parts
    assert X.shape == (2, 3 + 4, 32)
    assert_allclose(X[:, pa.rows], features_for(a, texts, Settings(prompt="review : {text}")), atol=1e-6)
    assert_allclose(X[:, pb.rows, :16], features_for(b, texts, Settings(prompt="review : {text}")), atol=1e-6)
    assert not X[:, pb.rows, 16:].any()  # padding stays zero


def test_encoder_parts_get_the_bare_text(group, monkeypatch):
    monkeypatch.setattr(registry, "ENCODERS", frozenset({"tiny-b"}))
    texts = ["good movie"]
    X = features_for(group, texts, Settings(backbone=group.name, prompt="review : {text}"))
    b = group.backbones[1]
    assert_allclose(X[:, group.parts[1].rows, :16], features_for(b, texts, Settings(prompt=None)), atol=1e-6)


@pytest.mark.parametrize("mode", ["layer", "fusion", "stc"])
def test_one_head_over_both_parts_and_exact_back_projection(group, mode):
    texts, labels = POS + NEG, ["pos"] * len(POS) + ["neg"] * len(NEG)
    s = Settings(backbone=group.name, prompt=None, mode=mode, penalty="l2")
    X = features_for(group, texts, s)
    clf = train(X, labels, ["neg", "pos"], s)
    spec = clf.spec
    assert spec.mode == "multi" and [p.name for p, _ in spec.parts] == ["tiny-a", "tiny-b"]
    assert all(part_spec.mode == mode for _, part_spec in spec.parts)
    assert spec.n_features == sum(ps.n_features for _, ps in spec.parts)
    W, b = clf.head.linear_map()
    V = spec.back_project(W)
    assert_allclose(np.einsum("nlh,lhk->nk", X.astype(np.float64), V) + b, clf.decision_features(X), atol=1e-4)
    assert not V[:, :, :][group.parts[1].rows, 16:].any()  # no weight on padding
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert "tiny-a:" in spec.describe() and "tiny-b:" in spec.describe()


def test_group_model_round_trips_through_store_and_bundle(group, tmp_path):
    store = Store.open(tmp_path / "w.db")
    p = store.create_project("p", ["neg", "pos"], settings={"backbone": group.name, "prompt": None,
                                                            "mode": "layer"})
    ids = store.add_texts(p.id, POS + NEG + UNLABELLED).text_ids
    for i in range(len(POS)):
        store.set_label(p.id, ids[i], "pos")
        store.set_label(p.id, ids[len(POS) + i], "neg")
    outcome = retrain(store, p, group)
    clf = load_classifier(store.latest_model(p.id))
    assert clf.spec.mode == "multi"
    X = features_for(group, UNLABELLED, clf.settings, cache=DictCache())
    again = load_bundle(bundle_bytes(clf))
    assert_allclose(again.predict_proba_features(X), clf.predict_proba_features(X), atol=1e-7)
    assert outcome.n_predicted == len(UNLABELLED)
    store.close()


def test_bad_group_specs_are_refused_plainly():
    with pytest.raises(InputError, match="unknown names"):
        multi.group_parts("smollm2-135m+nope")
    with pytest.raises(InputError, match="repeated"):
        multi.group_parts("minilm-l6+minilm-l6")
    assert multi.is_fused("smollm2-135m+minilm-l6") and not multi.is_fused("smollm2-135m")


@pytest.mark.slow
def test_packaged_llm_and_encoder_fuse_under_one_head():
    from core.model.loading import load_backbone

    group = load_backbone("smollm2-135m+minilm-l6")
    assert [p.name for p in group.parts] == ["smollm2-135m", "minilm-l6"]
    assert (group.n_layers, group.hidden_size) == (31 + 7, 576)
    pos = ["I loved this film, it was wonderful.", "What a great, joyful experience!",
           "A delightful and charming story.", "Brilliant acting and a beautiful score."]
    neg = ["I hated this film, it was awful.", "What a terrible, miserable experience!",
           "A boring and tedious story.", "Dreadful acting and an ugly score."]
    s = Settings(backbone=group.name, prompt="Review: {text}\nSentiment:", mode="layer", penalty="l2")
    X = features_for(group, pos + neg, s)
    clf = train(X, ["pos"] * 4 + ["neg"] * 4, ["neg", "pos"], s)
    assert clf.spec.mode == "multi"
    assert list(clf.predict(group, ["An awful, dreadful mess.", "A wonderful, joyful film."])) == ["neg", "pos"]


def test_smollm2_and_mpnet_fuse_by_name_and_mpnet_gets_the_bare_text():
    parts = multi.group_parts("smollm2-135m+mpnet")
    assert [(p.name, p.offset, p.n_states, p.width) for p in parts] == [
        ("smollm2-135m", 0, 31, 576), ("mpnet", 31, 13, 768)]
    assert multi.part_prompt("mpnet", "Text: {text}") is None
    assert multi.part_prompt("smollm2-135m", "Text: {text}") == "Text: {text}"


@pytest.mark.slow
def test_packaged_smollm2_and_mpnet_fuse_with_exact_attributions_and_a_faithful_bundle():
    from core.model.loading import load_backbone

    group = load_backbone("smollm2-135m+mpnet")
    assert (group.n_layers, group.hidden_size) == (31 + 13, 768)
    pos = ["I loved this film, it was wonderful.", "What a great, joyful experience!",
           "A delightful and charming story.", "Brilliant acting and a beautiful score."]
    neg = ["I hated this film, it was awful.", "What a terrible, miserable experience!",
           "A boring and tedious story.", "Dreadful acting and an ugly score."]
    s = Settings(backbone=group.name, prompt="Review: {text}\nSentiment:", mode="layer", penalty="l2")
    X = features_for(group, pos + neg, s)
    clf = train(X, ["pos"] * 4 + ["neg"] * 4, ["neg", "pos"], s)
    new = ["An awful, dreadful mess.", "A wonderful, joyful film."]
    assert list(clf.predict(group, new)) == ["neg", "pos"]
    parts = group_attributions(group, clf, new[1])
    assert [name for name, _ in parts] == ["smollm2-135m", "mpnet"]
    total = sum(a.values.sum(0) for _, a in parts) + parts[0][1].constant
    assert_allclose(total, parts[0][1].logits, rtol=1e-4, atol=1e-4)
    again = load_bundle(bundle_bytes(clf))
    X_new = features_for(group, new, s)
    assert_allclose(again.predict_proba_features(X_new), clf.predict_proba_features(X_new), atol=1e-7)


@pytest.mark.parametrize("mode", ["layer", "stc"])
def test_group_attributions_are_exact_per_backbone(group, mode):
    texts, labels = POS + NEG, ["pos"] * len(POS) + ["neg"] * len(NEG)
    s = Settings(backbone=group.name, prompt="review : {text}", mode=mode, penalty="l2")
    clf = train(features_for(group, texts, s), labels, ["neg", "pos"], s)
    parts = group_attributions(group, clf, "good film i hate it")
    assert [name for name, _ in parts] == ["tiny-a", "tiny-b"]
    total = sum(a.values.sum(0) for _, a in parts) + parts[0][1].constant
    assert_allclose(total, parts[0][1].logits, atol=1e-4)
    assert_allclose(parts[0][1].logits, clf.decision_features(features_for(group, ["good film i hate it"], s))[0],
                    atol=1e-5)
    assert all(abs(a.values).sum() > 0 for _, a in parts)  # both backbones carry weight
    # centred on the head's mean feature: the constant is the logit of that average text
    assert_allclose(parts[0][1].constant, clf.head.intercept_, atol=1e-6)
    raw = group_attributions(group, clf, "good film i hate it", centre=False)
    raw_total = sum(a.values.sum(0) for _, a in raw) + raw[0][1].constant
    assert_allclose(raw_total, parts[0][1].logits, atol=1e-4)


def test_global_view_of_a_fused_model_adds_up_its_backbones(group):
    from core.explain.attributions import class_phrases, layer_weights_by_backbone
    from core.explain.words import word_attributions

    texts, labels = POS + NEG, ["pos"] * len(POS) + ["neg"] * len(NEG)
    s = Settings(backbone=group.name, prompt="review : {text}", mode="layer", penalty="l2")
    clf = train(features_for(group, texts, s), labels, ["neg", "pos"], s)
    text = "good film i hate it"
    seen = []
    phrases = class_phrases(group, clf, [text], min_count=1, progress=lambda d, t: seen.append((d, t)))
    words = {}
    for _, a in group_attributions(group, clf, text):
        for k in (0, 1):
            for p in word_attributions(a, text, k):
                words[(p.text, k)] = words.get((p.text, k), 0.0) + p.score
    for p in phrases["pos"]:  # centred over the two classes
        assert p.score == pytest.approx((words[(p.text, 1)] - words[(p.text, 0)]) / 2, abs=1e-6)
    assert {p.text for p in phrases["pos"]} == set(text.split())
    assert seen[-1] == (2, 2)  # one text, read once by each backbone

    by_backbone = layer_weights_by_backbone(clf)
    assert [name for name, _ in by_backbone] == ["tiny-a", "tiny-b"]
    assert [len(rows) for _, rows in by_backbone] == [3, 4]  # embeddings + 2 and + 3 layers
    assert [r.layer for r in by_backbone[1][1]] == [0, 1, 2, 3]
    assert sum(r.share for _, rows in by_backbone for r in rows) == pytest.approx(1.0)


@pytest.mark.parametrize("prefix_parts", [("tiny-a", "tiny-b"), ("tiny-a",)])
def test_shap_on_a_fused_model_runs_causal_parts_on_the_prefix_path(group, monkeypatch, prefix_parts):
    # the fused default's SHAP went through features_for for all 144 masked strings; a
    # causal part now shares prefixes (core.model.prefix) and an encoder part (here
    # tiny-b when it is not in prefix_parts) keeps the plain path: the same features on
    # the layers the head reads, and values + base == the logits
    from core.explain import shapley
    from core.model import prefix

    texts, labels = POS + NEG, ["pos"] * len(POS) + ["neg"] * len(NEG)
    s = Settings(backbone=group.name, prompt="review : {text}", mode="layer", penalty="l2")
    clf = train(features_for(group, texts, s), labels, ["neg", "pos"], s)
    supports, built = prefix.supports, []
    monkeypatch.setattr(prefix, "supports", lambda bb, *a: bb.name in prefix_parts and supports(bb, *a))
    real = prefix.PrefixEmbedder
    monkeypatch.setattr(prefix, "PrefixEmbedder", lambda bb, *a, **k: built.append(bb.name) or real(bb, *a, **k))

    text = "good film i hate it"
    masked = ["good film ... hate it", "... film i ... it", text]
    X = shapley._masked_embedder(group, clf, text)(masked)
    assert built == list(prefix_parts)
    expected = features_for(group, masked, s)
    assert_allclose(clf.decision_features(X), clf.decision_features(expected), atol=1e-4)
    for part, spec in clf.spec.parts:
        rows = [part.offset + layer for layer in spec.layers]
        assert_allclose(X[:, rows], expected[:, rows], atol=1e-5)
    r = shapley.shap_attributions(group, clf, text, max_evals=20)
    assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-6)
    assert_allclose(r.logits, clf.decision_features(features_for(group, [text], s))[0], atol=1e-4)
