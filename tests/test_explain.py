"""Explanations: exact coefficient attributions, SHAP, word pieces, agreement, global views."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.learn.classifier import Settings, features_for, train
from core.errors import InputError
from core.explain.words import (Piece, rank_agreement, text_segments, view_agreement, word_attributions, word_scores)
from core.explain.attributions import class_phrases, coefficient_attributions, layer_weights
from core.explain.shapley import shap_attributions
from core.store import Store
from core.hashing import text_hash
from tests.helpers import make_tiny_model

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy",
       "the best film", "superb movie", "a delight", "a very good film", "it was superb !"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad",
       "the worst film", "poor movie", "dull and ugly", "a very bad film", "it was awful !"]
PROMPT = "review : {text} sentiment :"
TEXT = "the film was very good , not bad !"


def _classifier(backbone, mode, *, pooling="mean", prompt=PROMPT):
    settings = Settings(backbone="tiny", prompt=prompt, mode=mode, pooling=pooling)
    X = features_for(backbone, POS + NEG, settings)
    return train(X, ["pos"] * len(POS) + ["neg"] * len(NEG), ["neg", "pos"], settings)


@pytest.fixture(scope="module")
def classifiers(tiny_backbone):
    return {mode: _classifier(tiny_backbone, mode) for mode in ("layer", "fusion", "stc")}


class CountingBackbone:
    """The tiny backbone, counting its forward passes."""

    def __init__(self, backbone):
        self.backbone, self.calls = backbone, 0

    def __getattr__(self, name):
        return getattr(self.backbone, name)

    def hidden_states(self, input_ids, attention_mask, depth=None):
        self.calls += 1
        return self.backbone.hidden_states(input_ids, attention_mask, depth=depth)

    def forward(self, **inputs):
        self.calls += 1
        return self.backbone.forward(**inputs)


@pytest.mark.parametrize("mode", ["layer", "fusion", "stc"])
def test_token_attributions_plus_constant_equal_the_logit(tiny_backbone, classifiers, mode):
    clf = classifiers[mode]
    assert clf.spec.mode == mode
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    assert a.exact
    assert_allclose(a.values.sum(0) + a.constant, a.logits, atol=1e-4)
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert_allclose(a.logits, expected, atol=1e-4)
    assert np.abs(a.values).sum() > 0.01  # a model that reads nothing would pass trivially


@pytest.mark.parametrize("mode", ["layer", "fusion", "stc"])
def test_centred_attributions_move_the_common_part_into_the_constant(tiny_backbone, classifiers, mode):
    """Centring on the training texts' mean feature shifts every pooled token equally,
    keeps the sum exact, and makes the constant the logit of that average text."""
    clf = classifiers[mode]
    raw = coefficient_attributions(tiny_backbone, clf, TEXT, centre=False)
    centred = coefficient_attributions(tiny_backbone, clf, TEXT)
    pooled = np.abs(raw.values).sum(1) > 0
    shift = centred.values[pooled] - raw.values[pooled]
    assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-6)
    assert np.abs(shift[0]).max() > 1e-6  # the tiny model's states do share a common part
    assert_allclose(centred.values.sum(0) + centred.constant, centred.logits, atol=1e-4)
    assert_allclose(centred.constant, clf.head.intercept_, atol=1e-6)
    assert_allclose(centred.constant, clf.head.decision_function(clf.head.mean_[None])[0], atol=1e-6)


def test_the_sink_gets_nothing_and_user_tokens_cover_the_users_words(tiny_backbone, classifiers):
    a = coefficient_attributions(tiny_backbone, classifiers["layer"], TEXT)
    assert a.spans[0] is None and not a.values[0].any()
    user = [(tok, span) for tok, span in zip(a.tokens, a.spans) if span is not None]
    assert [TEXT[s:e] for _, (s, e) in user] == [tok for tok, _ in user] == TEXT.split()
    assert a.user.sum() == len(TEXT.split()) < len(a.tokens)  # the prompt's tokens are apart
    assert_allclose(a.prompt_total + a.values[a.user].sum(0), a.values.sum(0))


def test_max_pooling_attributions_are_flagged_as_approximate(tiny_backbone):
    clf = _classifier(tiny_backbone, "layer", pooling="max")
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    assert not a.exact
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert_allclose(a.logits, expected, atol=1e-4)


@pytest.mark.parametrize("text", [TEXT, "  good,movie!\n\nnot  bad  ", "x", ""])
def test_segments_cover_the_text_exactly_and_keep_the_total(text):
    spans = [(m, m + 1) for m in range(len(text))]  # one token per character
    scores = np.arange(len(text), dtype=float)
    pieces = word_scores(text, spans, scores)
    segments = text_segments(text, pieces)
    assert "".join(p.text for p in segments) == text
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert all(text[p.start:p.end] == p.text for p in segments)
    assert math.isclose(sum(p.score for p in pieces), scores.sum() if pieces else 0.0)


def test_word_pieces_merge_subwords_and_split_shared_tokens():
    text = "unhappy, not good"
    # "un" + "happy" make one word; "t g" straddles two words and is split by overlap;
    # the whitespace token goes to the word it leads; prompt tokens (None) are ignored
    spans = [(0, 2), (2, 7), (7, 8), (8, 9), (9, 11), (11, 14), (14, 17), None]
    pieces = word_scores(text, spans, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0])
    assert [(p.text, p.score) for p in pieces] == [("unhappy", 3.0), (",", 4.0), ("not", 40.0),
                                                    ("good", 80.0)]


def test_shap_values_plus_base_equal_the_logits(tiny_backbone, classifiers):
    clf = classifiers["fusion"]
    seen = []
    r = shap_attributions(tiny_backbone, clf, TEXT, max_evals=200,
                          progress=lambda done, total: seen.append((done, total)))
    assert r.values.shape == (len(TEXT.split()), 2) and r.base_values.shape == (2,)
    assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-3)
    expected = clf.decision_features(features_for(tiny_backbone, [TEXT], clf.settings))[0]
    assert_allclose(r.logits, expected, atol=1e-5)
    assert [TEXT[a:b] for a, b in r.spans] == r.tokens and "".join(r.tokens) == TEXT
    assert np.abs(r.values).max() > 1e-3 and r.n_evals <= 200
    assert seen[-1] == (200, 200) and all(d <= t for d, t in seen)


@pytest.fixture(scope="module")
def bpe_backbone():
    """A tiny model behind a byte-level BPE tokenizer, like SmolLM2's: spaces and
    newlines are parts of tokens, so whitespace changes the logits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from core.model.backbone import Backbone

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(POS + NEG + [PROMPT, TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")
    return Backbone("tiny-bpe", make_tiny_model(len(fast), seed=1), fast, "tiny-bpe-fingerprint")


def test_shap_stays_efficient_at_a_tiny_budget_and_with_odd_whitespace(bpe_backbone):
    # regression: the masker collapses whitespace, which made f(all tokens unmasked)
    # differ from the logits of the text the user typed
    clf = _classifier(bpe_backbone, "layer")
    text = "the  film was\nvery good, not   bad!"
    plain = " ".join(text.split())
    X = features_for(bpe_backbone, [text, plain], clf.settings)
    assert np.abs(np.diff(clf.decision_features(X), axis=0)).max() > 1e-3
    for budget in (10, 300):
        r = shap_attributions(bpe_backbone, clf, text, max_evals=budget)
        assert r.n_evals <= budget and "".join(r.tokens) == text
        assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-3)
    pieces = word_attributions(r, text, 1)
    assert [p.text for p in pieces] == ["the", "film", "was", "very", "good", ",", "not", "bad", "!"]
    assert math.isclose(sum(p.score for p in pieces), r.values[:, 1].sum(), abs_tol=1e-9)
    a = coefficient_attributions(bpe_backbone, clf, text)
    assert_allclose(a.values.sum(0) + a.constant, a.logits, atol=1e-4)
    user = "".join(text[sp[0]:sp[1]] for sp in a.spans if sp is not None)
    assert user.replace(" ", "") == text.replace(" ", "")  # spans may drop a leading space


def test_shap_results_are_kept_in_the_store_and_read_back_without_a_forward_pass(
        tiny_backbone, classifiers, tmp_path):
    clf = classifiers["layer"]
    store = Store.open(tmp_path / "w.db")
    p = store.create_project("p", ["neg", "pos"])
    params, arrays = clf.to_state()
    store.save_model(p.id, params=params, metrics={}, state=arrays, n_labels=20)
    model_id = store.models(p.id)[0].id
    counting = CountingBackbone(tiny_backbone)
    first = shap_attributions(counting, clf, TEXT, max_evals=50, store=store, model_id=model_id)
    assert counting.calls > 0 and not first.cached
    assert [k.split("|")[0] for k in store.explanation_keys(model_id, "shap")] == [text_hash(TEXT)]
    counting.calls = 0
    again = shap_attributions(counting, clf, TEXT, max_evals=50, store=store, model_id=model_id)
    assert counting.calls == 0 and again.cached
    assert again.tokens == first.tokens and again.spans == first.spans
    for name in ("values", "base_values", "logits"):
        assert_allclose(getattr(again, name), getattr(first, name), rtol=0, atol=0)
    other = shap_attributions(counting, clf, TEXT, max_evals=60, store=store, model_id=model_id)
    assert counting.calls > 0 and not other.cached  # another budget is another result
    store.close()


def test_shap_refuses_empty_text_and_half_a_store(tiny_backbone, classifiers):
    with pytest.raises(InputError, match="no text to explain"):
        shap_attributions(tiny_backbone, classifiers["layer"], "   ")
    with pytest.raises(InputError, match="both store and model_id"):
        shap_attributions(tiny_backbone, classifiers["layer"], TEXT, model_id=3)


def test_a_words_colour_has_the_sign_of_its_effect_on_the_class_probability():
    # issue 15 bug 4: the what-if sandbox coloured a new word "away from tech" (its own
    # logit contribution was negative) while tech's probability went up: the word lowered
    # the other classes' logits more. An edit that removes the word must move the class's
    # probability against the sign of the word's colour.
    from core.explain.attributions import Attribution
    from core.explain.words import probability_effects
    from scipy.special import softmax

    text = "shares of chips rally"
    spans = [None, (0, 6), (7, 9), (10, 15), (16, 21)]  # the sink, then one token a word
    values = np.array([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 0.1],
                       [1.5, -0.5, 0.3], [-0.4, -2.0, -1.8]])  # "rally": -0.4 for class 0
    constant = np.array([0.1, 0.3, 0.2])
    attr = Attribution(["<s>", "shares", " of", " chips", " rally"], spans, values, constant,
                       values.sum(0) + constant, True)
    for k in range(3):
        effects = probability_effects(attr, text, k)
        assert [p.text for p in effects] == ["shares", "of", "chips", "rally"]
        for i, piece in enumerate(effects):
            kept = np.ones(len(spans), bool)
            kept[i + 1] = False  # the sandbox edit: remove this word
            edited = softmax(values[kept].sum(0) + constant)[k]
            change = softmax(attr.logits)[k] - edited  # what the word adds to p_k
            assert np.sign(piece.score) == np.sign(change) and piece.score == pytest.approx(change)
    rally = word_attributions(attr, text, 0)[-1]
    assert rally.score < 0 < probability_effects(attr, text, 0)[-1].score


def test_rank_agreement_is_spearman_and_undefined_for_constant_scores():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_agreement([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(rank_agreement([1, 1, 1], [1, 2, 3]))
    assert math.isnan(rank_agreement([1], [2]))
    with pytest.raises(InputError, match="same pieces"):
        rank_agreement([1, 2], [1, 2, 3])


def test_view_agreement_aligns_two_tokenisations_on_words(tiny_backbone, classifiers):
    clf = classifiers["layer"]
    a = coefficient_attributions(tiny_backbone, clf, TEXT)
    assert view_agreement(a, a, TEXT, 1).rho == pytest.approx(1.0)
    r = shap_attributions(tiny_backbone, clf, TEXT, max_evals=200)
    agreement = view_agreement(a, r, TEXT, 1)
    assert agreement.n_pieces == len(TEXT.split()) and -1 <= agreement.rho <= 1
    flat = type(r)(r.tokens, r.spans, np.zeros_like(r.values), r.base_values, r.logits, 1, 1, 0.0)
    assert math.isnan(view_agreement(a, flat, TEXT, 1).rho)
    assert "same score" in view_agreement(a, flat, TEXT, 1).reason


@pytest.mark.parametrize("mode", ["layer", "fusion", "stc"])
def test_layer_weight_shares_sum_to_one_and_skip_unused_layers(classifiers, mode):
    clf = classifiers[mode]
    rows = layer_weights(clf)
    assert [r.layer for r in rows] == list(range(clf.spec.shape[0]))
    assert math.isclose(sum(r.share for r in rows), 1.0)
    assert all(r.share == r.n_features == 0 for r in rows if r.layer not in clf.spec.layers)
    assert all((r.share > 0) == (r.n_features > 0) for r in rows)
    if mode != "fusion":  # a fused feature reads every fused layer at once
        assert sum(r.n_features for r in rows) == len(clf.head.selected_features())


def test_class_phrases_average_the_exact_word_contributions(tiny_backbone, classifiers):
    clf = classifiers["layer"]
    texts = POS + NEG
    phrases = class_phrases(tiny_backbone, clf, texts, top=100, min_count=2, batch_size=3)
    by_word = {p.text: p for p in phrases["pos"]}
    counts = Counter(w for t in texts for w in t.split())
    assert set(by_word) == {w for w, n in counts.items() if n >= 2}
    with_movie = [t for t in texts if "movie" in t.split()]
    centred = []
    for t in with_movie:
        pieces = [word_attributions(coefficient_attributions(tiny_backbone, clf, t), t, k)
                  for k in (0, 1)]
        (s0,), (s1,) = ([p.score for p in ps if p.text == "movie"] for ps in pieces)
        centred.append(s1 - (s0 + s1) / 2)
    movie = by_word["movie"]
    assert movie.count == len(with_movie) and len(movie.examples) == 3
    assert movie.score == pytest.approx(np.mean(centred), abs=1e-5)
    assert set(movie.examples) <= set(with_movie)
    scores = [p.score for p in phrases["pos"]]
    assert scores == sorted(scores, reverse=True)
    neg = {p.text: p.score for p in phrases["neg"]}
    assert neg["movie"] == pytest.approx(-movie.score)  # binary: the classes mirror


@pytest.mark.slow
def test_packaged_smollm2_attributions_are_exact_and_shap_runs():
    from core.model.loading import load_backbone

    bb = load_backbone("smollm2-135m")
    pos = ["I loved this film, it was wonderful.", "What a great, joyful experience!",
           "Absolutely fantastic, the best meal ever.", "A delightful and charming story."]
    neg = ["I hated this film, it was awful.", "What a terrible, miserable experience!",
           "Absolutely disgusting, the worst meal ever.", "A boring and tedious story."]
    settings = Settings(backbone="smollm2-135m", mode="layer")
    X = features_for(bb, pos + neg, settings)
    clf = train(X, ["pos"] * 4 + ["neg"] * 4, ["neg", "pos"], settings)
    text = "The acting was superb, but the plot dragged on far too long and bored me to tears."
    assert 18 <= len(bb.tokenizer(text)["input_ids"]) <= 22
    a = coefficient_attributions(bb, clf, text)
    assert_allclose(a.values.sum(0) + a.constant, a.logits, atol=1e-3)
    assert_allclose(a.logits, clf.decision_features(features_for(bb, [text], settings))[0], atol=1e-3)
    r = shap_attributions(bb, clf, text, max_evals=40)
    assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-3)
    assert "".join(r.tokens) == text and isinstance(word_attributions(r, text, 1)[0], Piece)


def test_shap_warm_up_compiles_once_and_concurrent_callers_wait(monkeypatch):
    # regression: shap was imported and compiled by two threads at once and the Explain page hung
    import threading

    import shap

    from core.explain import shapley

    real, built, compiled = shap.Explainer, [], threading.Event()

    def counting_explainer(*args, **kwargs):
        built.append(threading.current_thread().name)
        explainer = real(*args, **kwargs)

        def run(*a, **k):
            out = explainer(*a, **k)  # the Partition explainer's numba compilation
            compiled.set()
            return out

        return run

    callers, returned_after_compile = 4, []
    start = threading.Barrier(callers)

    def call():
        start.wait()
        shapley.warm_up()  # raises if shap's Partition explainer or Text masker API changed
        returned_after_compile.append(compiled.is_set())

    monkeypatch.setattr(shapley, "_warmed", False)  # as in a fresh process
    monkeypatch.setattr(shap, "Explainer", counting_explainer)
    threads = [threading.Thread(target=call, name=f"caller-{i}") for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a warm-up caller hung"
    assert len(built) == 1, built  # compiled by one thread only
    assert returned_after_compile == [True] * callers  # the others waited for it
    shapley.warm_up()  # a later call, as shap_attributions makes before each explanation
    assert len(built) == 1, "a later call compiled the explainer again"


# --- causal increments (issue 15 item 13) --------------------------------------------

def test_causal_increments_follow_the_worked_example_and_telescope():
    from core.explain.attributions import increment_contributions, token_contributions

    # one layer, one hidden unit, V = 1: the scores are the states themselves
    hidden = np.array([5.0, 1.0, 3.0, 2.0])[None, :, None]
    V = np.ones((1, 1, 1))
    values, rest = increment_contributions(hidden, np.arange(4) > 0, V)
    assert_allclose(values[:, 0], [0, -4, 4 / 3, -1 / 3])
    assert_allclose(rest, [5.0])  # the sink's score
    assert_allclose(values.sum(0) + rest, [2.0])  # the pooled mean (1 + 3 + 2) / 3
    rng = np.random.default_rng(0)
    hidden, V = rng.normal(size=(3, 9, 4)), rng.normal(size=(3, 4, 2))
    pooled, reference = np.arange(9) >= 3, rng.normal(size=(3, 4))  # echo-like: a gap after the sink
    values, rest = increment_contributions(hidden, pooled, V, reference)
    assert_allclose(values.sum(0) + rest, token_contributions(hidden, pooled, V).sum(0), atol=1e-12)
    assert values[2].any() and not values[:2].any()  # the score before the pooled ones is a token's


def test_causal_increments_of_a_causal_backbone_add_up_to_the_same_logit(tiny_backbone, classifiers):
    # issue 15 item 13: the alternative split bench/plausibility.py measures (opt-in; the
    # pages keep per-token terms, which did as well on the held-out set)
    from core.explain.attributions import increment_contributions, linear_weights
    from core.model.embed import token_states

    clf = classifiers["layer"]
    assert not coefficient_attributions(tiny_backbone, clf, TEXT).increments  # the pages' default
    a = coefficient_attributions(tiny_backbone, clf, TEXT, increments=None)  # the tiny Llama is causal
    assert a.increments and a.exact
    assert_allclose(a.values.sum(0) + a.constant, a.logits, atol=1e-4)
    states = token_states(tiny_backbone, TEXT, prompt=PROMPT)
    expected, _ = increment_contributions(states.hidden, states.encoded.pool_mask(), linear_weights(clf)[0])
    assert_allclose(a.values, expected, atol=1e-6)
    per_token = coefficient_attributions(tiny_backbone, clf, TEXT)
    assert np.abs(per_token.values - a.values).max() > 1e-3  # a different decomposition...
    assert_allclose(per_token.values.sum(0) + per_token.constant, a.logits, atol=1e-4)  # ...of the same logit


def test_increments_on_a_fused_model_go_to_its_decoder_and_not_its_encoder(monkeypatch):
    import core.model.group as multi
    from core.explain.attributions import group_attributions
    from core.explain.sentence import merged_attribution
    from core.model import registry
    from core.model.backbone import Backbone
    from tests.helpers import make_tokenizer

    tok = make_tokenizer()
    a = Backbone("tiny-a", make_tiny_model(len(tok), seed=1, layers=2, hidden=32), tok, "fp-a")
    b = Backbone("tiny-enc", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    for bb in (a, b):
        monkeypatch.setitem(registry.REGISTRY, bb.name, registry.PackagedModel(
            bb.name, bb.name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-"))
    monkeypatch.setattr(registry, "ENCODERS", frozenset({"tiny-enc"}))
    group = multi.BackboneGroup("tiny-a+tiny-enc", (a, b), tuple(multi.group_parts("tiny-a+tiny-enc")))
    s = Settings(backbone=group.name, prompt=PROMPT, mode="layer", penalty="l2")
    clf = train(features_for(group, POS + NEG, s), ["pos"] * len(POS) + ["neg"] * len(NEG), ["neg", "pos"], s)
    parts = dict(group_attributions(group, clf, TEXT, increments=None))
    assert parts["tiny-a"].increments and not parts["tiny-enc"].increments
    merged = merged_attribution(list(parts.items()))
    assert merged.increments
    assert_allclose(merged.values.sum(0) + merged.constant, merged.logits, atol=1e-4)
    expected = clf.decision_features(features_for(group, [TEXT], s))[0]
    assert_allclose(merged.logits, expected, atol=1e-4)
    per_token = merged_attribution(group_attributions(group, clf, TEXT))
    assert not per_token.increments
    assert_allclose(per_token.values.sum(0) + per_token.constant, expected, atol=1e-4)
    encoder = parts["tiny-enc"].values  # the encoder's terms are the same under both splits
    assert_allclose(per_token.values[-len(encoder):], encoder, atol=1e-9)
    assert np.abs(per_token.values - merged.values).max() > 1e-4
