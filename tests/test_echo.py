"""Echo embeddings (issue 12 item 3): the text twice, pooling over the second copy only."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import core.model.group as multi
from core.errors import InputError
from core.explain import shapley
from core.explain.attributions import class_phrases, coefficient_attributions, group_attributions
from core.explain.sentence import sentence_attribution
from core.explain.words import word_attributions
from core.learn.bundle import bundle_bytes, load_bundle
from core.learn.classifier import Settings, features_for, n_truncated, train
from core.model import registry
from core.model.backbone import Backbone
from core.model.embed import features, token_states, uses_echo
from core.model.registry import PackagedModel
from core.model.tokens import echo_template, encode
from tests.helpers import NEG, POS, DictCache, make_tiny_model, make_tokenizer

PROMPT = "review : {text}"
TEXT = "the film was very good , not bad !"
LABELS = ["pos"] * len(POS) + ["neg"] * len(NEG)


def _classifier(backbone, *, mode="layer", pooling="mean", echo=True):
    s = Settings(backbone="tiny", prompt=PROMPT, mode=mode, pooling=pooling, penalty="l2", echo=echo)
    return train(features_for(backbone, POS + NEG, s), LABELS, ["neg", "pos"], s)


def test_only_the_second_copy_is_pooled_and_marked_as_the_users_words(tiny_backbone):
    tok = tiny_backbone.tokenizer
    (e,) = encode(tok, ["good movie"], prompt=PROMPT, echo=True)
    words = [tok.decode([i]) for i in e.input_ids]
    assert words.count("good") == 2 and words.count("movie") == 2  # the text twice
    pooled = e.pool_mask()
    assert [words[i] for i in np.flatnonzero(pooled)] == ["good", "movie"]
    assert np.flatnonzero(pooled)[0] > words.index("movie")  # the second copy
    assert [i for i, sp in enumerate(e.user_spans) if sp is not None] == list(np.flatnonzero(pooled))
    assert echo_template(PROMPT) == "Rewrite the sentence: {text}\nRewritten sentence: review : {text}"
    assert echo_template(None).count("{text}") == 2
    with pytest.raises(InputError, match="exactly once"):
        echo_template("no placeholder")


def test_truncation_keeps_the_two_copies_equal(tiny_backbone):
    tok = tiny_backbone.tokenizer
    text = "good movie i love it very good and the best film superb movie"
    (full,) = encode(tok, [text], prompt=PROMPT, echo=True)
    for max_length in (30, 24, 17):
        (e,) = encode(tok, [text], prompt=PROMPT, echo=True, max_length=max_length)
        assert e.truncated and len(e.input_ids) <= max_length < len(full.input_ids)
        kept = text[:[sp for sp in e.user_spans if sp is not None][-1][1]]
        assert len(kept) < len(text)
        # the same prefix of the text in both copies: exactly the echo encoding of that prefix
        assert encode(tok, [kept], prompt=PROMPT, echo=True)[0].input_ids == e.input_ids
        second = [e.input_ids[i] for i in np.flatnonzero(e.pool_mask())]
        assert len(second) == len(kept.split())
    assert n_truncated(tiny_backbone, [text], Settings(prompt=PROMPT, max_length=24, echo=True)) == 1
    assert n_truncated(tiny_backbone, [text], Settings(prompt=PROMPT, max_length=24)) == 0


@pytest.mark.parametrize("pooling", ["mean", "last", "max"])
def test_echo_features_pool_the_second_copy_of_the_token_states(tiny_backbone, pooling):
    texts = ["good movie", "i hate it", "bad"]
    X = features(tiny_backbone, texts, pooling=pooling, prompt=PROMPT, echo=True)
    for x, text in zip(X, texts):
        states = token_states(tiny_backbone, text, prompt=PROMPT, echo=True)
        h = states.hidden[:, states.encoded.pool_mask()]
        expected = {"mean": h.mean(1), "last": h[:, -1], "max": h.max(1)}[pooling]
        assert_allclose(x, expected, rtol=1e-4, atol=1e-5)


def test_echo_features_differ_from_plain_and_are_cached_under_another_key(tiny_backbone):
    cache = DictCache()
    texts = ["good movie", "awful film"]
    plain = features(tiny_backbone, texts, pooling="mean", prompt=PROMPT, cache=cache)
    echo = features(tiny_backbone, texts, pooling="mean", prompt=PROMPT, cache=cache, echo=True)
    assert np.abs(plain - echo).max() > 1e-2
    prompts = {key[1] for key in cache.data}
    assert prompts == {PROMPT, echo_template(PROMPT)}
    # each is read back from its own entries, never the other's
    assert_allclose(features(tiny_backbone, texts, pooling="mean", prompt=PROMPT, cache=cache, echo=True), echo)
    assert_allclose(features(tiny_backbone, texts, pooling="mean", prompt=PROMPT, cache=cache), plain)
    assert len(cache.data) == 4


def test_sentence_encoders_ignore_echo(tiny_backbone):
    encoder = Backbone("minilm-l6", tiny_backbone.model, tiny_backbone.tokenizer, "fp-enc")
    assert uses_echo(tiny_backbone, True) and not uses_echo(tiny_backbone, False)
    assert not uses_echo(encoder, True)
    texts = ["good movie"]
    assert_allclose(features(encoder, texts, pooling="mean", prompt=None, echo=True),
                    features(encoder, texts, pooling="mean", prompt=None))


@pytest.mark.parametrize("mode", ["layer", "stc"])
def test_echo_attributions_sum_to_the_logit_over_the_second_copy(tiny_backbone, mode):
    clf = _classifier(tiny_backbone, mode=mode)
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    assert a.exact
    assert_allclose(a.values.sum(0) + a.constant, a.logits, atol=1e-4)
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert_allclose(a.logits, expected, atol=1e-4)
    assert not a.values[~a.user].any()  # the sink, the prompt and the first copy: unpooled
    assert abs(a.values[a.user]).sum() > 0
    # the words are shown once
    assert [p.text for p in word_attributions(a, TEXT, 1)] == TEXT.split()
    (one,), again = sentence_attribution(tiny_backbone, clf, TEXT)  # one backbone: one part's states
    assert_allclose(again.values, a.values)
    assert one.part is None and one.states.encoded.pooled is not None  # was `and`-ed, never asserted


@pytest.mark.parametrize("pooling", ["last", "max"])
def test_approximate_echo_attributions_explain_the_predicted_logits(tiny_backbone, pooling):
    clf = _classifier(tiny_backbone, pooling=pooling)
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert not a.exact and a.logits == pytest.approx(expected, abs=1e-4)


def test_class_phrases_under_echo_add_up_the_exact_word_contributions(tiny_backbone):
    clf = _classifier(tiny_backbone)
    phrases = class_phrases(tiny_backbone, clf, [TEXT], min_count=1)
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    words = {(p.text, k): p.score for k in (0, 1) for p in word_attributions(a, TEXT, k)}
    assert {p.text for p in phrases["pos"]} == set(TEXT.split())
    for p in phrases["pos"]:
        assert p.score == pytest.approx((words[(p.text, 1)] - words[(p.text, 0)]) / 2, abs=1e-6)


def test_shap_under_echo_masks_both_copies_through_the_training_path(tiny_backbone):
    clf = _classifier(tiny_backbone)
    masked = ["the film was", "very good , not bad !", ""]
    embed_masked = shapley._masked_embedder(tiny_backbone, clf, TEXT)
    assert_allclose(embed_masked(masked), features_for(tiny_backbone, masked, clf.settings), atol=1e-6)
    r = shapley.shap_attributions(tiny_backbone, clf, TEXT, max_evals=60)
    assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-3)
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert_allclose(r.logits, expected, atol=1e-5)
    assert "".join(r.tokens) == TEXT  # the words once


def test_echo_is_checked_stored_with_the_model_and_survives_a_bundle(tiny_backbone):
    with pytest.raises(InputError, match="on \\(true\\) or off"):
        Settings(echo="yes").check()
    assert Settings.from_dict({"backbone": "tiny"}).echo is False  # a model saved before echo
    clf = _classifier(tiny_backbone)
    again = load_bundle(bundle_bytes(clf))
    assert again.settings.echo is True
    X = features_for(tiny_backbone, ["very good", "very bad"], again.settings)
    assert_allclose(again.predict_proba_features(X), clf.predict_proba_features(X), atol=1e-7)


def test_a_fused_model_echoes_its_llm_and_not_its_encoder(monkeypatch):
    tok = make_tokenizer()
    a = Backbone("tiny-a", make_tiny_model(len(tok), seed=1, layers=2, hidden=32), tok, "fp-a")
    b = Backbone("tiny-enc", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    for bb in (a, b):
        monkeypatch.setitem(registry.REGISTRY, bb.name, PackagedModel(
            bb.name, bb.name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-"))
    monkeypatch.setattr(registry, "ENCODERS", frozenset({"tiny-enc"}))
    group = multi.BackboneGroup("tiny-a+tiny-enc", (a, b), tuple(multi.group_parts("tiny-a+tiny-enc")))
    s = Settings(backbone=group.name, prompt=PROMPT, mode="layer", penalty="l2", echo=True)
    X = features_for(group, POS + NEG, s)
    pa, pb = group.parts
    assert_allclose(X[:, pa.rows], features(a, POS + NEG, pooling="mean", prompt=PROMPT, echo=True), atol=1e-6)
    assert_allclose(X[:, pb.rows, :16], features(b, POS + NEG, pooling="mean", prompt=None), atol=1e-6)
    clf = train(X, LABELS, ["neg", "pos"], s)
    parts = group_attributions(group, clf, TEXT)
    total = sum(att.values.sum(0) for _, att in parts) + parts[0][1].constant
    assert_allclose(total, parts[0][1].logits, atol=1e-4)


def test_a_model_saved_before_echo_keeps_settings_equal_to_todays():
    # regression: adding the field made every older model's stored settings differ from the
    # project's, so the Model page called each one out of date and retrain reselected
    old = {"backbone": "smollm2-135m", "prompt": "Text: {text}\nCategory:", "pooling": "mean",
           "mode": "auto", "penalty": "elasticnet", "max_length": 256}
    assert Settings.from_dict(old).to_dict() == old
    assert Settings.from_dict({**old, "echo": True}).to_dict() == {**old, "echo": True}
