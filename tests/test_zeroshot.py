"""Zero-shot class scoring, checked against a causal LM sharing the backbone's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from core.model.backbone import Backbone
from core.model.tokens import encode
from core.errors import InputError
from core.learn.zeroshot import (ZeroShotUnsupported, class_log_probs, format_classes, zero_shot_predict)
from tests.helpers import make_tiny_model, make_tokenizer

TEXTS = ["a good movie", "the worst film i hate it", "great", "i love this film , it was very good !"]
PROMPT = "review : {text} sentiment {classes} :"
CLASSES = ["bad", "very good", "not very dull"]  # 1, 2 and 3 tokens


def _tied_lm(tok, softcap=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=True, attn_implementation="eager")
    if softcap:
        config.final_logit_softcapping = softcap
    lm = LlamaForCausalLM(config).eval()
    # a random init gives near-uniform logits; scale up so the check can tell classes apart
    with torch.no_grad():
        lm.model.embed_tokens.weight.mul_(20)
    return lm


@pytest.fixture(scope="module")
def tied():
    tok = make_tokenizer()
    lm = _tied_lm(tok)
    return lm, Backbone("tiny-tied", lm.model, tok, "tiny-tied-fp")


def _reference(lm, tok, texts, classes, prompt, softcap=None):
    """Score each (text, class) with the full causal LM, one unpadded sequence at a time."""
    template = prompt.replace("{classes}", format_classes(classes))
    out = np.zeros((len(texts), len(classes)))
    for i, enc in enumerate(encode(tok, texts, prompt=template)):
        for j, c in enumerate(classes):
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([list(enc.input_ids) + cont])
            with torch.no_grad():
                logits = lm(input_ids=ids).logits[0].double()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logp = torch.log_softmax(logits, -1)
            n = len(enc.input_ids)
            out[i, j] = sum(logp[n - 1 + k, t].item() for k, t in enumerate(cont))
    return out


def test_scores_equal_the_causal_lm_with_the_same_weights(tied):
    lm, bb = tied
    scores = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT, batch_size=3)
    assert_allclose(scores, _reference(lm, bb.tokenizer, TEXTS, CLASSES, PROMPT), rtol=1e-4, atol=1e-4)
    assert np.all(scores < 0)


def test_softcapping_is_applied_when_configured():
    tok = make_tokenizer()
    lm = _tied_lm(tok, softcap=2.0)
    bb = Backbone("tiny-capped", lm.model, tok, "fp")
    scores = class_log_probs(bb, TEXTS[:2], CLASSES, prompt=PROMPT)
    assert_allclose(scores, _reference(lm, tok, TEXTS[:2], CLASSES, PROMPT, softcap=2.0), rtol=1e-4, atol=1e-4)


def test_batching_and_padding_do_not_change_scores(tied):
    _, bb = tied
    one = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT, batch_size=1)
    many = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT, batch_size=16)
    assert_allclose(one, many, rtol=1e-5, atol=1e-5)


def test_mean_divides_by_the_class_token_count(tied):
    _, bb = tied
    total = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT)
    mean = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT, reduce="mean")
    assert_allclose(mean, total / np.array([1, 2, 3]), rtol=1e-6)


def test_predict_takes_the_best_scoring_class(tied):
    _, bb = tied
    scores = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT)
    assert zero_shot_predict(bb, TEXTS, CLASSES, prompt=PROMPT) == [CLASSES[j] for j in scores.argmax(1)]


def test_untied_decoder_is_refused():
    tok = make_tokenizer()
    bb = Backbone("untied", make_tiny_model(len(tok)), tok, "fp")  # LlamaConfig unties by default
    with pytest.raises(ZeroShotUnsupported, match="does not tie its output layer"):
        class_log_probs(bb, TEXTS, CLASSES)


def test_encoder_is_refused():
    from transformers import BertConfig, BertModel

    tok = make_tokenizer()
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64)).eval()
    assert model.config.tie_word_embeddings  # so the tie check alone would not catch it
    with pytest.raises(ZeroShotUnsupported, match="sentence encoder"):
        class_log_probs(Backbone("enc", model, tok, "fp"), TEXTS, CLASSES)


def test_bad_arguments_are_plain_errors(tied):
    _, bb = tied
    with pytest.raises(InputError, match="Unknown reduce"):
        class_log_probs(bb, TEXTS, CLASSES, reduce="max")
    with pytest.raises(InputError, match="at least 2 classes"):
        class_log_probs(bb, TEXTS, ["good"])


def test_format_classes():
    assert format_classes(["a", "b"]) == "a or b"
    assert format_classes(["World", "Sports", "Business"]) == "World, Sports or Business"


@pytest.mark.slow
def test_smollm2_scores_match_its_causal_lm():
    """The packaged model loaded without its LM head scores as AutoModelForCausalLM does."""
    from transformers import AutoModelForCausalLM

    from core.model.loading import load_backbone

    from core.model.device import tolerance

    bb = load_backbone("smollm2-135m")
    lm = AutoModelForCausalLM.from_pretrained(bb.info["path"], dtype=torch.float32).eval()
    tol = tolerance(bb).logprob  # the reference runs fp32 on the CPU; bb in its device's dtype
    texts = ["What a wonderful, moving film.", "Dull and far too long."]
    classes = ["negative", "positive"]
    prompt = "Review: {text}\nIs the sentiment {classes}?\nAnswer:"
    scores = class_log_probs(bb, texts, classes, prompt=prompt)
    assert_allclose(scores, _reference(lm, bb.tokenizer, texts, classes, prompt), rtol=tol, atol=tol)
    assert zero_shot_predict(bb, texts, classes, prompt=prompt) == ["positive", "negative"]


def test_calibration_subtracts_the_content_free_scores(tied):
    from core.learn.zeroshot import CONTENT_FREE

    _, bb = tied
    raw = class_log_probs(bb, TEXTS + [CONTENT_FREE], CLASSES, prompt=PROMPT)
    cal = class_log_probs(bb, TEXTS, CLASSES, prompt=PROMPT, calibrate=True)
    assert_allclose(cal, raw[:-1] - raw[-1], rtol=1e-6, atol=1e-9)
