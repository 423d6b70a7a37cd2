"""PrefixEmbedder: SHAP's masked strings share work, and the features do not change."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose

import core.model.prefix
from core.model.backbone import Backbone
from core.learn.classifier import Settings, features_for, train
from core.model.embed import embed
from core.model.group import BackboneGroup
from core.model.tokens import encode
from core.explain.shapley import shap_attributions
from core.model.prefix import PrefixEmbedder, supports
from tests.helpers import make_tokenizer

PROMPT = "review : {text} sentiment :"
TEXT = "the film was very good , not bad ! i love it and the plot is fine"


def _variants(text: str, n: int, seed: int = 0) -> list[str]:
    """Strings like the Text masker's: runs of words replaced by one '...'."""
    rng, words = np.random.default_rng(seed), text.split()
    out = []
    for _ in range(n):
        keep = rng.random(len(words)) < rng.uniform(0.2, 0.9)
        pieces, masked = [], False
        for w, k in zip(words, keep):
            if k:
                pieces.append(w)
            elif not masked:
                pieces.append("...")
            masked = not k
        out.append(" ".join(pieces))
    return out


def _model(arch: str, vocab: int, layers: int = 5):
    import torch
    from transformers import (Gemma3TextConfig, Gemma3TextModel, LlamaConfig, LlamaModel,
                              Qwen2Config, Qwen2Model)

    torch.manual_seed(3)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  attn_implementation="eager")
    if arch == "llama":
        return LlamaModel(LlamaConfig(**common)).eval()
    if arch == "qwen2":
        return Qwen2Model(Qwen2Config(**common)).eval()
    # sliding and full layers, softcapping and the query scaling Gemma 3 uses
    return Gemma3TextModel(Gemma3TextConfig(**common, head_dim=8, sliding_window=512,
                                            layer_types=["sliding_attention", "full_attention"] * 2
                                            + ["sliding_attention"] * (layers - 4))).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def decoder(request):
    tok = make_tokenizer()
    return Backbone(f"tiny-{request.param}", _model(request.param, len(tok)), tok, f"fp-{request.param}")


@pytest.mark.parametrize("pooling", ["mean", "last", "max"])
@pytest.mark.parametrize("layers", [[0], [2], [1, 3], [5], [0, 4, 5]])
def test_features_equal_the_plain_embedding_path(decoder, layers, pooling):
    strings = _variants(TEXT, 40)
    expected = embed(decoder, strings, pooling=pooling, prompt=PROMPT)
    pe = PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling=pooling, layers=layers)
    got = np.concatenate([pe(strings[i:i + 8]) for i in range(0, len(strings), 8)])
    assert_allclose(got[:, layers], expected[:, layers], rtol=1e-4, atol=1e-5)
    assert not np.delete(got, layers, axis=1).any()  # layers the head does not read stay 0
    total = sum(len(e.input_ids) for e in encode(decoder.tokenizer, list(dict.fromkeys(strings)),
                                                   prompt=PROMPT))
    assert 0 < pe.tokens_run < 0.8 * total  # shared prefixes really were reused


def test_layers_above_the_deepest_read_never_run(decoder):
    ran = []
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
               for i, layer in enumerate(decoder.model.layers)]
    try:
        PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[2])(_variants(TEXT, 5))
        assert ran and set(ran) == {0, 1}  # hidden state 2 is the output of layer index 1
        ran.clear()
        embed(decoder, ["the film was good"], prompt=PROMPT)  # idle hooks stop nothing else
        assert set(ran) == set(range(len(decoder.model.layers)))
    finally:
        for h in handles:
            h.remove()


def test_a_pass_hooks_only_the_layers_it_reads_and_threads_are_chosen_once(decoder, monkeypatch):
    # regression (issue 13, SHAP's cost outside the network): every packed pass hooked
    # every layer, and every call sampled /proc/stat for the thread count
    hooked, plans = [], []
    spy = decoder.model.layers[0].register_forward_pre_hook(
        lambda m, a: hooked.append([len(layer._forward_hooks) for layer in decoder.model.layers]))
    monkeypatch.setattr(core.model.prefix, "apply_threads", lambda: plans.append(1))
    try:
        pe = PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[2])
        for i in range(3):
            pe(_variants(TEXT, 4, seed=i))
    finally:
        spy.remove()
    # transformers may keep hooks of its own on every layer (it records hidden states that
    # way once a model was run with output_hidden_states): count only what a pass adds
    base = [len(layer._forward_hooks) for layer in decoder.model.layers]
    added = [[c - b for c, b in zip(counts, base)] for counts in hooked]
    assert hooked and all(a[:2] == [0, 1] and not any(a[2:]) for a in added), (hooked, base)
    assert len(plans) == (0 if str(decoder.device).startswith("cuda") else 1)


def test_repeats_and_packing_limits_do_not_change_the_features(decoder, monkeypatch):
    strings = _variants(TEXT, 30, seed=1)
    expected = embed(decoder, strings, prompt=PROMPT)
    monkeypatch.setattr(core.model.prefix, "_PACKED_TOKENS", 7)  # many small packed passes
    pe = PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[3])
    got = pe(strings + strings[:5])
    before = pe.tokens_run
    again = pe(strings[:10])
    assert pe.tokens_run == before  # strings seen before cost no forward pass
    assert_allclose(got[:30, 3], expected[:, 3], rtol=1e-4, atol=1e-5)
    assert_allclose(got[30:], got[:5]) and assert_allclose(again, got[:10])


def test_a_memory_cap_keeps_only_the_whole_text_to_share_prefixes_with(decoder, monkeypatch):
    strings = _variants(TEXT, 20, seed=2)
    expected = embed(decoder, strings, prompt=PROMPT)
    monkeypatch.setattr(core.model.prefix, "_KEEP_BYTES", 0)
    pe = PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[0, 2])
    got = np.concatenate([pe(strings[i:i + 5]) for i in range(0, len(strings), 5)])
    assert list(pe.runs) == [tuple(encode(decoder.tokenizer, [TEXT], prompt=PROMPT)[0].input_ids)]
    assert_allclose(got[:, [0, 2]], expected[:, [0, 2]], rtol=1e-4, atol=1e-5)


def test_another_thread_using_the_model_is_not_captured_or_stopped(decoder):
    """The hooks act only for the thread whose embedder is running."""
    plain = embed(decoder, [TEXT], prompt=PROMPT)
    seen, stop = [], threading.Event()

    def other():
        while not stop.is_set():
            seen.append(embed(decoder, [TEXT], prompt=PROMPT))

    worker = threading.Thread(target=other)
    worker.start()
    try:
        pe = PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[1])
        for i in range(10):
            pe(_variants(TEXT, 6, seed=i))
    finally:
        stop.set()
        worker.join()
    assert seen and all(np.allclose(x, plain, atol=1e-5) for x in seen)


def test_shap_values_do_not_change_with_the_shared_prefix_path(decoder, monkeypatch):
    pos = ["good great film", "i love it , wonderful", "the best plot", "very fine and happy"]
    neg = ["bad awful film", "i hate it , terrible", "the worst plot", "very dull and sad"]
    settings = Settings(backbone="tiny", prompt=PROMPT, mode="fusion")
    clf = train(features_for(decoder, pos + neg, settings), ["pos"] * 4 + ["neg"] * 4,
                ["neg", "pos"], settings)
    fast = shap_attributions(decoder, clf, TEXT, max_evals=80)
    monkeypatch.setattr(core.model.prefix, "supports", lambda *a, **k: False)
    slow = shap_attributions(decoder, clf, TEXT, max_evals=80)
    assert_allclose(fast.values, slow.values, atol=1e-5)
    assert_allclose(fast.base_values, slow.base_values, atol=1e-5)
    assert_allclose(fast.values.sum(0) + fast.base_values, fast.logits, atol=1e-4)


def test_only_single_causal_decoders_within_their_window_are_supported(tiny_backbone):
    from transformers import BertConfig, BertModel

    assert supports(tiny_backbone)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32)).eval()
    assert not supports(Backbone("bert", bert, tiny_backbone.tokenizer, "fp-bert"))
    group = BackboneGroup("a+b", (tiny_backbone, tiny_backbone), ())
    assert not supports(group)
    gemma = Backbone("g", _model("gemma3", 50), tiny_backbone.tokenizer, "fp-g")
    assert supports(gemma, max_length=512) and not supports(gemma, max_length=513)
    with pytest.raises(ValueError, match="not a single causal decoder"):
        PrefixEmbedder(gemma, TEXT, prompt=PROMPT, pooling="mean", layers=[1], max_length=600)


@pytest.mark.slow
def test_packaged_smollm2_features_equal_the_plain_path():
    from core.model.loading import load_backbone

    from core.model.device import tolerance

    bb = load_backbone("smollm2-135m")
    tol = tolerance(bb)  # fp32 on CPU and (135M parameters) on CUDA; the table says why
    text = "The acting was superb, but the plot dragged on far too long and bored me to tears."
    strings = _variants(text, 24, seed=4)
    prompt = "Text: {text}\nCategory:"
    expected = embed(bb, strings, prompt=prompt)
    for layers in ([15, 22], [bb.n_layers - 1]):
        pe = PrefixEmbedder(bb, text, prompt=prompt, pooling="mean", layers=layers)
        got = np.concatenate([pe(strings[i:i + 8]) for i in range(0, len(strings), 8)])
        scale = np.abs(expected[:, layers]).max()
        assert np.abs(got[:, layers] - expected[:, layers]).max() <= tol.atol * scale


def test_running_out_of_memory_gives_a_plain_message(decoder, monkeypatch):
    import torch

    from core.errors import BackboneError

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(decoder.model, "forward", oom)
    with pytest.raises(BackboneError, match="ran out of memory.*smaller backbone"):
        PrefixEmbedder(decoder, TEXT, prompt=PROMPT, pooling="mean", layers=[1])


def _on_cuda(decoder, dtype: str) -> Backbone:
    import copy

    import torch

    gpu = copy.deepcopy(decoder)
    gpu.model = gpu.model.to("cuda", getattr(torch, dtype))
    gpu.device, gpu.info = "cuda", {"dtype": dtype}
    return gpu


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_prefix_path_equals_the_plain_path_within_the_dtypes_tolerance(decoder, dtype):
    from core.model.device import tolerance

    gpu = _on_cuda(decoder, dtype)
    tol, layers = tolerance(dtype), [1, 3, 5]
    strings = _variants(TEXT, 40)
    expected = embed(gpu, strings, prompt=PROMPT)
    pe = PrefixEmbedder(gpu, TEXT, prompt=PROMPT, pooling="mean", layers=layers)
    got = np.concatenate([pe(strings[i:i + 8]) for i in range(0, len(strings), 8)])
    scale = np.abs(expected[:, layers]).max()
    assert np.abs(got[:, layers] - expected[:, layers]).max() <= tol.atol * scale + tol.rtol * scale


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_shap_is_exactly_efficient_in_every_dtype(decoder, dtype):
    # efficiency is exact arithmetic on the logits shap was given, whatever the dtype
    gpu = _on_cuda(decoder, dtype)
    pos = ["good great film", "i love it , wonderful", "the best plot", "very fine and happy"]
    neg = ["bad awful film", "i hate it , terrible", "the worst plot", "very dull and sad"]
    settings = Settings(backbone="tiny", prompt=PROMPT, mode="fusion")
    clf = train(features_for(gpu, pos + neg, settings), ["pos"] * 4 + ["neg"] * 4, ["neg", "pos"], settings)
    r = shap_attributions(gpu, clf, TEXT, max_evals=80)
    assert_allclose(r.values.sum(0) + r.base_values, r.logits, atol=1e-4 * max(1.0, np.abs(r.logits).max()))
