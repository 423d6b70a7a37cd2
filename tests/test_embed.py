"""Embedding conventions, pinned on a tiny real transformer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from core.model.backbone import Backbone
from core.model.embed import TruncationWarning, embed, embed_many, token_states
from core.model import forward
from core.model.tokens import content_mask, encode, wrap
from core.errors import InputError
from tests.helpers import DictCache

TEXTS = ["a good movie", "the worst film i hate it", "great", "boring and dull plot .",
         "i love this film , it was very good !", "awful"]


class CountingBackbone(Backbone):
    """Counts forward passes: the seam for 'no forward pass on a cache hit'."""

    calls = 0

    def hidden_states(self, input_ids, attention_mask, depth=None):
        type(self).calls += input_ids.shape[0]
        return super().hidden_states(input_ids, attention_mask, depth=depth)



def test_position_zero_is_a_sink_token_even_when_the_tokenizer_adds_none(tiny_backbone):
    tok = tiny_backbone.tokenizer
    (enc,) = encode(tok, ["good movie"])
    assert enc.input_ids[0] == tok.bos_token_id
    assert enc.user_spans[0] is None
    assert enc.user_spans[1:] == ((0, 4), (5, 10))


def test_hidden_state_index_zero_is_the_embedding_layer(tiny_backbone):
    (enc,) = encode(tiny_backbone.tokenizer, ["good movie"])
    X = embed(tiny_backbone, ["good movie"])
    ids = torch.tensor(enc.input_ids)
    emb = tiny_backbone.model.embed_tokens(ids).detach().numpy()
    # mean over content tokens = positions 1.. (position 0 excluded)
    assert_allclose(X[0, 0], emb[1:].mean(0), rtol=1e-5, atol=1e-6)
    assert X.shape == (1, tiny_backbone.n_layers, tiny_backbone.hidden_size)
    assert tiny_backbone.n_layers == 3


def test_mean_pooling_excludes_position_zero_and_padding(tiny_backbone):
    states = token_states(tiny_backbone, "the film was very good")
    X = embed(tiny_backbone, ["the film was very good", "a"], pooling="mean")
    assert_allclose(X[0], states.hidden[:, 1:].mean(1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(X[0], states.hidden.mean(1), atol=1e-3)


def test_last_and_max_pooling(tiny_backbone):
    states = token_states(tiny_backbone, "i hate this boring film")
    out = embed_many(tiny_backbone, ["i hate this boring film", "good"], poolings=("last", "max"))
    assert_allclose(out["last"][0], states.hidden[:, -1], rtol=1e-4, atol=1e-5)
    assert_allclose(out["max"][0], states.hidden[:, 1:].max(1), rtol=1e-4, atol=1e-5)


def test_content_mask_drops_position_zero():
    mask = content_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]))
    assert mask.tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]


def test_batches_are_sorted_by_length_and_results_do_not_depend_on_batching(tiny_backbone):
    lengths = [3, 9, 1, 7, 7, 2]
    batches = forward.batches(lengths, batch_size=2)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    together = embed(tiny_backbone, TEXTS, batch_size=4)
    alone = np.concatenate([embed(tiny_backbone, [t]) for t in TEXTS])
    assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_second_embed_of_the_same_text_makes_no_forward_pass(tiny_backbone):
    bb = CountingBackbone("tiny", tiny_backbone.model, tiny_backbone.tokenizer, "fp")
    cache = DictCache()
    CountingBackbone.calls = 0
    first = embed(bb, TEXTS, cache=cache)
    assert CountingBackbone.calls == len(TEXTS)
    second = embed(bb, TEXTS + [TEXTS[0]], cache=cache)
    assert CountingBackbone.calls == len(TEXTS)
    assert_allclose(second[: len(TEXTS)], first)
    embed(bb, ["a new sentence"], cache=cache)
    assert CountingBackbone.calls == len(TEXTS) + 1


def test_cache_is_keyed_by_prompt(tiny_backbone):
    cache = DictCache()
    plain = embed(tiny_backbone, ["good"], cache=cache)
    prompted = embed(tiny_backbone, ["good"], cache=cache, prompt="review : {text} sentiment :")
    assert not np.allclose(plain, prompted)


def test_prompt_marks_only_the_users_tokens(tiny_backbone):
    prompt = "review : {text} sentiment :"
    full, start, end = wrap("a good film", prompt)
    assert full[start:end] == "a good film"
    (enc,) = encode(tiny_backbone.tokenizer, ["a good film"], prompt=prompt)
    tokens = tiny_backbone.tokenizer.convert_ids_to_tokens(list(enc.input_ids))
    user = [t for t, s in zip(tokens, enc.user_spans) if s is not None]
    assert user == ["a", "good", "film"]
    assert [s for s in enc.user_spans if s] == [(0, 1), (2, 6), (7, 11)]


def test_prompt_template_needs_exactly_one_placeholder():
    with pytest.raises(InputError, match=r"\{text\} exactly once"):
        wrap("x", "Review: no placeholder")


def test_truncation_warns_and_keeps_the_prompt_suffix(tiny_backbone):
    prompt = "review : {text} sentiment :"
    long = " ".join(["good"] * 50)
    (enc,) = encode(tiny_backbone.tokenizer, [long], prompt=prompt, max_length=12)
    assert enc.truncated and len(enc.input_ids) == 12
    tail = tiny_backbone.tokenizer.convert_ids_to_tokens(list(enc.input_ids[-2:]))
    assert tail == ["sentiment", ":"]
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        embed(tiny_backbone, [long, "good"], prompt=prompt, max_length=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed(tiny_backbone, ["good"], prompt=prompt, max_length=12)


def test_unknown_pooling_is_refused(tiny_backbone):
    with pytest.raises(InputError, match="Unknown pooling 'median'"):
        embed(tiny_backbone, ["good"], pooling="median")


def test_unknown_words_keep_their_span_in_the_users_text():
    from tests.helpers import make_tokenizer

    tok = make_tokenizer()
    (enc,) = encode(tok, ["good zzyzx movie"], prompt="review : {text}")
    user = [s for s in enc.user_spans if s is not None]
    assert (5, 10) in user and len(user) == 3  # "zzyzx" is <unk> but still the user's word


def _pool_each_layer(hidden_states, attention_mask, pooling):
    """The per-layer float32 loop that pooled before all layers went at once (the reference)."""
    mask = content_mask(attention_mask)
    last = attention_mask.sum(1).long() - 1
    out = []
    for h in hidden_states:
        h = h.float()
        if pooling == "mean":
            out.append((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0))
        elif pooling == "last":
            out.append(h[torch.arange(h.shape[0]), last])
        else:
            out.append(h.masked_fill(mask[..., None] == 0, float("-inf")).amax(1))
    return torch.stack(out, 1).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooling_all_layers_at_once_equals_pooling_each_layer(dtype):
    # issue 13: pooling was a Python loop over layers with a host copy per pooling
    from core.model.embed import POOLINGS, pool

    gen = torch.Generator().manual_seed(0)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    # padded positions hold huge values: a pooling that reads them would show it
    states = tuple((torch.randn(3, 5, 8, generator=gen) * 3).masked_fill(attention_mask[..., None] == 0, 1e4)
                   .to(dtype) for _ in range(4))
    states[0][:, 0] = 500.0  # the sink, never pooled (last-token pooling of a 1-token text aside)
    got = pool(states, attention_mask, POOLINGS)
    for p in POOLINGS:
        assert got[p].dtype == np.float32 and got[p].shape == (3, 4, 8)
        assert_allclose(got[p], _pool_each_layer(states, attention_mask, p), rtol=1e-6, atol=1e-6)
    assert np.abs(got["mean"]).max() < 100 and np.abs(got["max"]).max() < 100


def test_pad_right_pads_with_the_pad_id_and_masks_the_padding():
    ids, mask = forward.pad([(5, 6, 7), (8,), (9, 10)], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and ids.dtype == torch.long
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]] and mask.dtype == torch.long


def test_batches_respect_the_token_budget_given():
    lengths = [30, 10, 30, 10, 10]
    assert forward.batches(lengths, 8, token_budget=60) == [[0, 2], [1, 3, 4]]
    assert forward.batches(lengths, 8, token_budget=8192) == [[0, 2, 1, 3, 4]]


def test_batch_plan_comes_from_the_device_and_its_free_memory(tiny_backbone):
    # issue 13: batch size and token budget were CPU constants on every device
    from core.model.device import CPU_PLAN, batch_plan

    shape = dict(n_layers=31, hidden=576, intermediate=1536)
    assert batch_plan("cpu", **shape, free_bytes=80 << 30) == CPU_PLAN == forward.backbone_plan(tiny_backbone)
    assert CPU_PLAN.batch_size == 32 and CPU_PLAN.token_budget == forward.TOKEN_BUDGET == 8192
    small = batch_plan("cuda", **shape, dtype="float32", free_bytes=2 << 30)
    mid = batch_plan("cuda", **shape, dtype="float32", free_bytes=8 << 30)
    big = batch_plan("cuda", **shape, dtype="float32", free_bytes=80 << 30)
    assert small.token_budget < mid.token_budget < big.token_budget == 65536
    assert big.batch_size == 1024 and big.batch_size > CPU_PLAN.batch_size
    # a batch's states fit in the share of memory it may take
    per_token = 31 * 576 * 12
    assert mid.token_budget * per_token <= 0.4 * (8 << 30)
    # half the bytes per state in bf16: a larger budget from the same memory
    assert batch_plan("cuda", **shape, dtype="bfloat16", free_bytes=8 << 30).token_budget > mid.token_budget
    assert batch_plan("cuda", **shape, free_bytes=0).token_budget == 2048  # never below a floor


def test_progress_and_keep_run_once_per_batch_in_order(tiny_backbone):
    seen = []
    embed_many(tiny_backbone, TEXTS, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 6), (4, 6), (6, 6)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_equal_the_cpu_features_within_the_dtypes_tolerance(tiny_backbone):
    import copy

    from core.model.device import tolerance

    expected = embed_many(tiny_backbone, TEXTS, poolings=("mean", "last", "max"), batch_size=2)
    for dtype in (torch.float32, torch.bfloat16):
        gpu = copy.deepcopy(tiny_backbone)
        gpu.model = gpu.model.to("cuda", dtype)
        gpu.device, gpu.info = "cuda", {"dtype": str(dtype).replace("torch.", "")}
        got = embed_many(gpu, TEXTS, poolings=("mean", "last", "max"), batch_size=2)
        tol = tolerance(gpu)
        for p, X in expected.items():
            assert np.abs(got[p] - X).max() <= tol.atol * np.abs(X).max() + tol.rtol * np.abs(X).max()


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_the_cpu_and_prints_its_table():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root.parent / "shared" / "data" / "sst2").exists():
        pytest.skip("needs ../shared/data/sst2")
    out = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--n", "16", "--batches", "8,plan",
                          "--shap-n", "1", "--repeats", "1"], cwd=root, capture_output=True, text=True,
                         check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| float32 |")]
    assert len(rows) == 3 and "| 32 (plan) |" in rows[1]


def _wrapper_encodings(tokenizer, strings):
    batch = tokenizer(strings, add_special_tokens=True, return_offsets_mapping=True, truncation=False)
    return [list(ids) for ids in batch["input_ids"]], [[tuple(o) for o in offs] for offs in batch["offset_mapping"]]


def _same_as_the_wrapper(tokenizer, strings) -> None:
    from core.model.tokens import _encodings

    ids, offsets = _encodings(tokenizer, strings)
    assert ([list(i) for i in ids], [[tuple(o) for o in offs] for offs in offsets]) == \
        _wrapper_encodings(tokenizer, strings)


def test_encoding_straight_from_the_rust_tokenizer_equals_the_wrapper(tiny_backbone):
    # the GPU check's profile: the wrapper's per-text conversion was most of embed's host
    # work; encode now reads the Rust tokenizer's ids and offsets directly
    tok = tiny_backbone.tokenizer
    strings = ["the film was very good , not bad !", "", "a b c", "zzz unknownword film"]
    _same_as_the_wrapper(tok, strings)
    # a padded call through the wrapper leaves padding set on the Rust tokenizer: encode
    # must then go through the wrapper, never hand back padded ids
    tok(["good", "a much longer sentence"], padding=True)
    if tok.backend_tokenizer.padding is not None:
        enc = encode(tok, ["good", "a much longer sentence"])
        assert len(enc[0].input_ids) < len(enc[1].input_ids)
    _same_as_the_wrapper(tok, strings)


@pytest.mark.slow
def test_the_packaged_tokenizers_encode_as_their_wrappers_do():
    from bench.common import DATA
    from core.evaluate import load_split
    from core.model.loading import load_backbone

    if not (DATA / "sst2").exists():
        pytest.skip("../shared/data/sst2 is not beside this checkout")
    texts, _ = load_split(DATA / "sst2", "test")
    for name in ("smollm2-135m", "mpnet"):
        tok = load_backbone(name).tokenizer
        assert tok.is_fast
        _same_as_the_wrapper(tok, [f"Review: {t}\nSentiment:" for t in texts[:300]] + ["", "  ", "é ☃ 🙂"])


def test_encoding_without_spans_gives_the_same_ids_and_truncation(tiny_backbone):
    prompt = "review : {text} sentiment :"
    texts = ["a good film", "", " ".join(["good"] * 50), "not bad at all"]
    with_spans = encode(tiny_backbone.tokenizer, texts, prompt=prompt, max_length=20)
    ids_only = encode(tiny_backbone.tokenizer, texts, prompt=prompt, max_length=20, spans=False)
    assert [(e.input_ids, e.truncated) for e in ids_only] == [(e.input_ids, e.truncated) for e in with_spans]
    assert [e.truncated for e in with_spans] == [False, False, True, False]
    # spans only where the truncation needed them to keep the prompt's suffix
    assert [e.user_spans for e in ids_only] == [(), (), with_spans[2].user_spans, ()]
