"""Pooled features of many variants of one text, sharing work between them (for SHAP).

SHAP's masked strings are the same text with some words replaced by "...". In a
causal decoder a token's hidden states depend only on the tokens before it, so the
tokens a variant shares at its start with a text already run have exactly the hidden
states and key/value cache of that text. ``PrefixEmbedder`` keeps, for every variant it
has run, its per-layer key/value cache and the hidden states the head reads; a new
variant runs only the tokens after its longest common prefix with any of them, on top
of that cache. The new tokens of a whole batch of variants run as one packed sequence
(no padding), under a 4D mask that lets each variant see only its own prefix and,
causally, its own tokens.

It also stops the network after the deepest layer the head reads: layers above it
cannot change the features (the last hidden state is post-norm, so reading it needs
every layer).

Both shortcuts change which numbers are multiplied, not the function: the features
equal ``core.model.embed.embed``'s to float32 rounding (tests/test_prefix.py checks it on
tiny Llama, Qwen2 and Gemma 3 models and on the packaged SmolLM2; bench/explain.py
compares the SHAP values of both paths). Encoders (bidirectional
attention) and backbone groups fall back to the plain path: ``supports(backbone)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.model.capture import Job, capturing
from core.model.device import apply_threads
from core.model.embed import pool
from core.model.group import is_fused
from core.model.tokens import DEFAULT_MAX_LENGTH, encode

__all__ = ["PrefixEmbedder", "supports"]

# new tokens per packed forward pass; its mask holds (tokens x (prefixes + tokens)) floats
_PACKED_TOKENS = 1024
# memory for the runs kept to share prefixes with (their new tokens' key/value caches
# and hidden states). SHAP's 144 variants on SmolLM2-135M kept 61 MB for a sentence of
# 20 tokens and 147 MB for 81 tokens; past the cap new runs are not kept (the earlier
# ones, the whole text first, still are)
_KEEP_BYTES = 256 << 20


def supports(backbone, max_length: int = DEFAULT_MAX_LENGTH) -> bool:
    """True for a single causal decoder whose decoder layers we can find (model.layers).

    A model type with a causal-LM head and no masked-LM head is decoder-only; encoders
    such as BERT have both (its causal-LM head is for encoder-decoder use). The packed
    mask has no sliding window, so texts must fit inside the model's window.
    """
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model = getattr(backbone, "model", None)
    if is_fused(backbone) or model is None:
        return False
    kind = getattr(model.config, "model_type", None)
    layers = getattr(model, "layers", None)
    window = getattr(model.config, "sliding_window", None)
    return (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and layers is not None and len(layers) == backbone.n_layers - 1
            and (not isinstance(window, int) or max_length <= window))


@dataclass
class _Run:
    """One variant already run: its token ids and, per token, its slot in the embedder's
    banks (``_Bank``), where its hidden states and key/value cache lie. A variant that
    reused a prefix shares that prefix's slots, so nothing is copied per variant."""

    ids: tuple
    slots: np.ndarray  # int64 (n_tokens,)


class _Bank:
    """Rows of one shape in one growing tensor, on the model's device.

    Tokens are rows: ``append`` adds a pass's new tokens (capacity doubles, so growing
    costs one copy on average), ``take`` gathers any tokens in one ``index_select``.
    The hidden-state bank holds (tokens, layers read, hidden); the key/value bank
    (tokens, 2 x layers run, kv_heads, head_dim): keys of layer l at 2l, values at 2l + 1.
    """

    def __init__(self):
        self.data, self.size = None, 0

    def append(self, rows) -> None:
        n = rows.shape[0]
        if self.data is None or self.size + n > self.data.shape[0]:
            grown = rows.new_empty((max(256, 2 * (self.size + n)), *rows.shape[1:]))
            if self.size:
                grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:self.size + n] = rows
        self.size += n

    def take(self, slots):
        return self.data.index_select(0, slots)

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else self.size * self.data[0].nbytes


class PrefixEmbedder:
    """Features of variants of ``text`` under one prompt and pooling, for one feature spec.

    layers: the hidden-state indices the head reads (``FeatureSpec.layers``). Calling
    the embedder on strings returns float32 (n, n_layers, hidden) like ``embed``, with
    zeros in the layers not read. Not thread-safe: one embedder per explanation.
    """

    def __init__(self, backbone, text: str, *, prompt: str | None, pooling: str,
                 layers: Sequence[int], max_length: int = DEFAULT_MAX_LENGTH):
        if not supports(backbone, max_length):
            raise ValueError(f"{backbone.name} is not a single causal decoder (or its sliding "
                             f"window is shorter than {max_length} tokens)")
        self.backbone, self.prompt, self.pooling = backbone, prompt, pooling
        self.max_length = max_length
        self.layers = sorted({int(r) for r in layers})
        last = backbone.n_layers - 1
        if not self.layers or self.layers[0] < 0 or self.layers[-1] > last:
            raise ValueError(f"layers must lie in 0..{last}; got {list(layers)}")
        # decoder layers to run: hidden state r (1 <= r < last) is the output of layer r - 1
        self.depth = len(backbone.model.layers) if self.layers[-1] == last else max(1, self.layers[-1])
        self.runs: dict[tuple, _Run] = {}
        # token trie over the runs kept: {token: [first run through this node, children]},
        # so finding a variant's longest shared prefix walks its tokens once instead of
        # comparing it with every run (that was 144 x 144 Python comparisons per text)
        self._trie: dict = {}
        self._hidden, self._kv = _Bank(), _Bank()
        self.features: dict[tuple, np.ndarray] = {}
        self.tokens_run = 0
        if not str(backbone.device).startswith("cuda"):
            # once per explanation: sampling the other processes' threads on every call
            # cost more than a small call's own Python on a loaded box
            apply_threads()  # only the cores other work leaves free (core.model.device)
        self(text)  # the whole text: every variant shares at least its prompt prefix with it

    def __call__(self, strings: Sequence[str] | str) -> np.ndarray:
        strings = [strings] if isinstance(strings, str) else list(strings)
        ids = [tuple(e.input_ids) for e in encode(self.backbone.tokenizer, strings,
                                                  prompt=self.prompt, max_length=self.max_length)]
        todo = list(dict.fromkeys(i for i in ids if i not in self.features))
        chunk, packed = [], 0
        for tokens in todo:
            plan = self._plan(tokens)
            if chunk and packed + len(tokens) - plan[1] > _PACKED_TOKENS:
                self._run_packed(chunk)
                chunk, packed = [], 0
            chunk.append((tokens, *plan))
            packed += len(tokens) - plan[1]
        if chunk:
            self._run_packed(chunk)
        out = np.zeros((len(strings), self.backbone.n_layers, self.backbone.hidden_size), np.float32)
        out[:, self.layers] = np.stack([self.features[key] for key in ids])
        return out

    def _plan(self, ids: tuple) -> tuple[_Run | None, int]:
        """The run sharing the longest prefix with ids, and how many tokens to reuse
        (at least one token is always run, so its hidden states are new)."""
        best, shared, node = None, 0, self._trie
        for token in ids:
            entry = node.get(token)
            if entry is None:
                break
            best, shared, node = entry[0], shared + 1, entry[1]
        return best, min(shared, len(ids) - 1)

    def _keep(self, run: _Run) -> None:
        """Keep a run to share prefixes with; earlier runs keep their trie nodes."""
        self.runs[run.ids] = run
        node = self._trie
        for token in run.ids:
            node = node.setdefault(token, [run, {}])[1]

    def _run_packed(self, chunk: list[tuple[tuple, _Run | None, int]]) -> None:
        """Run the new tokens of every variant in chunk as one packed sequence.

        Each reused prefix enters the key/value cache once (the longest any variant
        needs); a 4D mask lets each variant's tokens see its own prefix and, causally,
        its own new tokens, with positions continuing after its prefix. The index
        bookkeeping is numpy on the host and crosses to the device in one copy; the
        mask, the cache, the padded states and the pooling are whole-tensor operations
        there, and the pooled features come back in one copy.
        """
        bb = self.backbone
        plan = _pack(chunk, self._hidden.size)
        dev = self._to_device(plan)
        hidden, cache = self._forward(dev["ids"][None], self._mask(dev, plan), dev["positions"][None],
                                      self._past(dev["past"]) if plan.past_len else None)
        self.tokens_run += plan.n
        keep = self._kept_bytes() < _KEEP_BYTES or not self.runs
        if keep:  # the new tokens' keys/values only: reused prefixes are in the bank already
            self._kv.append(_new_kv(cache, self.depth, plan.past_len))
        self._hidden.append(_token_major(hidden, self.layers))
        seqs = self._hidden.take(dev["gather"]).view(len(chunk), plan.width, len(self.layers), bb.hidden_size)
        pooled = pool(list(seqs.unbind(2)), dev["rows"], (self.pooling,))[self.pooling]
        for row, (tokens, _, _) in enumerate(chunk):
            self.features[tokens] = pooled[row]
            if keep:
                self._keep(_Run(tokens, plan.slots[row]))
        if not keep:  # past the memory cap: this pass's states are dropped again
            self._hidden.size -= plan.n

    def _kept_bytes(self) -> int:
        return self._hidden.nbytes + self._kv.nbytes

    def _to_device(self, plan: "_Packing") -> dict:
        """Every index array of a pass in one host->device copy, split there by name."""
        import torch

        parts = plan.arrays()
        flat = torch.from_numpy(np.concatenate([a.ravel() for a in parts.values()])).to(self.backbone.device)
        out, at = {}, 0
        for name, arr in parts.items():
            out[name], at = flat[at:at + arr.size].view(arr.shape), at + arr.size
        return out

    def _mask(self, dev: dict, plan: "_Packing"):
        """(1, 1, n, past + n) additive mask: token i sees its variant's prefix (columns
        [lo, hi) of the reused cache) and its own variant's tokens up to itself."""
        import torch

        param = next(self.backbone.model.parameters())
        seg, n = dev["seg"], plan.n
        col = torch.arange(plan.past_len, device=seg.device)
        sees_prefix = (col >= dev["lo"][seg, None]) & (col < dev["hi"][seg, None])
        own = (seg[:, None] == seg[None, :]) & torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
        allowed = torch.cat([sees_prefix, own], 1)
        mask = torch.zeros(allowed.shape, dtype=param.dtype, device=param.device)
        return mask.masked_fill_(~allowed.to(param.device), torch.finfo(param.dtype).min)[None, None]

    def _past(self, slots):
        """The reused prefixes' keys/values from the bank, as a cache for every layer."""
        from transformers import DynamicCache

        # (past, 2 x layers, kv_heads, head_dim) -> (2 x layers, 1, kv_heads, past, head_dim)
        both = self._kv.take(slots).permute(1, 2, 0, 3).unsqueeze(1)
        kv = [(both[2 * layer], both[2 * layer + 1]) for layer in range(self.depth)]
        # layers above the stop never run, but the cache must have an entry for each
        kv += [kv[-1]] * (len(self.backbone.model.layers) - self.depth)
        return DynamicCache(kv)  # plain layers: a sliding-window layer would crop the packed keys

    def _forward(self, ids, mask, positions, cache):
        """Run the decoder layers up to self.depth; ({index: (1, n, hidden)} on the device, cache)."""
        from transformers import DynamicCache

        model, last = self.backbone.model, self.backbone.n_layers - 1
        cache = cache if cache is not None else DynamicCache()
        job = Job({r for r in self.layers if r < last},
                  self.depth if self.depth < len(model.layers) else None, {})
        with capturing(model, job):
            out = self.backbone.forward(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        cache=cache, use_cache=True)
            if last in self.layers:  # post-norm, so not a layer's output
                job.captured[last] = out.last_hidden_state
        return job.captured, cache


@dataclass
class _Packing:
    """The host-side plan of one packed pass (numpy int64 arrays).

    n: new tokens; past_len: reused prefix tokens; width: the longest variant.
    ids, positions, seg (n,): each new token's id, position and variant (row);
    lo, hi (rows,): the columns of the reused cache a variant's tokens see;
    past (past_len,): bank slots of the reused tokens; slots: per variant, the bank
    slots of all its tokens; gather (rows * width,), rows (rows, width): those slots
    padded (slot 0) and the mask of real tokens, for pooling.
    """

    n: int
    past_len: int
    width: int
    ids: np.ndarray
    positions: np.ndarray
    seg: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    past: np.ndarray
    slots: list
    gather: np.ndarray
    rows: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("ids", "positions", "seg", "lo", "hi", "past", "gather", "rows")}


def _pack(chunk: list[tuple[tuple, _Run | None, int]], base: int) -> _Packing:
    """Plan a packed pass whose new tokens go to bank slots ``base``, ``base + 1``, ...

    Example: a kept run of ids (5, 6, 7) in slots [0, 1, 2], and chunk
    [((5, 8), that run, 1), ((5, 6, 9), that run, 2)] with base 3: tokens [8, 6, 9] run
    at positions [1, 1, 2] (seg [0, 1, 1]); the cache reuses slots [0, 1] (the longest
    prefix needed), variant 0 sees column [0, 1) of it, variant 1 [0, 2); the variants'
    slots are [0, 3] and [0, 4, 5].
    """
    rows = len(chunk)
    p = np.array([q for _, _, q in chunk], np.int64)
    sizes = np.array([len(t) for t, _, _ in chunk], np.int64) - p
    first = np.cumsum(sizes) - sizes
    n = int(sizes.sum())
    seg = np.repeat(np.arange(rows), sizes)
    # each reused run's longest needed prefix enters the cache once
    reach: dict[tuple, list] = {}
    for _, run, q in chunk:
        if q:
            entry = reach.setdefault(run.ids, [run, 0])
            entry[1] = max(entry[1], q)
    start, at = {}, 0
    for key, (_, q) in reach.items():
        start[key], at = at, at + q
    lo = np.array([start[run.ids] if q else 0 for _, run, q in chunk], np.int64)
    past = (np.concatenate([run.slots[:q] for run, q in reach.values()]) if reach
            else np.zeros(0, np.int64))
    slots = [np.concatenate([run.slots[:q] if q else np.zeros(0, np.int64),
                             base + f + np.arange(size)])
             for (_, run, q), f, size in zip(chunk, first, sizes)]
    width = max(len(t) for t, _, _ in chunk)
    gather = np.zeros((rows, width), np.int64)
    real = np.zeros((rows, width), np.int64)
    for row, s in enumerate(slots):
        gather[row, :len(s)], real[row, :len(s)] = s, 1
    return _Packing(n, at, width, np.array([t for tokens, _, q in chunk for t in tokens[q:]], np.int64),
                    p[seg] + np.arange(n) - first[seg], seg, lo, lo + p, past, slots,
                    gather.ravel(), real)


def _new_kv(cache, depth: int, past_len: int):
    """The new tokens' keys and values of every layer run: (n, 2 x depth, kv_heads, head_dim)."""
    import torch

    both = torch.stack([t[0, :, past_len:] for layer in range(depth)
                        for t in (cache.layers[layer].keys, cache.layers[layer].values)])
    return both.permute(2, 0, 1, 3)


def _token_major(hidden: dict, layers: list[int]):
    """The captured states of the layers read, token-major: (n, len(layers), hidden)."""
    import torch

    return torch.stack([hidden[r][0] for r in layers], 1)
