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

import functools
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

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


class _Stop(Exception):
    """Raised by the hook after the deepest needed layer, to skip the layers above it."""


@dataclass
class _Run:
    """One variant already run: its token ids and {hidden-state index: (n_tokens, hidden)}.

    Its key/value cache is not copied out: tokens [0, shared) are parent's, tokens
    [shared, n) sit in the packed pass's cache ``packed`` from position ``start`` on;
    ``packed`` holds every layer's keys and values in one tensor of shape
    (2 * layers run, 1, kv_heads, length, head_dim): keys of layer l at 2l, values at 2l + 1.
    """

    ids: tuple
    hidden: dict
    parent: "_Run | None"
    shared: int
    packed: object
    start: int


def _segments(run: _Run, p: int) -> list[tuple[object, int, int]]:
    """(packed cache, start, end) pieces that hold the keys/values of run's first p tokens."""
    out = []
    while p > 0:
        if p > run.shared:
            out.append((run.packed, run.start, run.start + p - run.shared))
            p = run.shared
        run = run.parent
    return out[::-1]


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
        self.features: dict[tuple, np.ndarray] = {}
        self.tokens_run, self._kept_bytes = 0, 0
        self(text)  # the whole text: every variant shares at least its prompt prefix with it

    def __call__(self, strings: Sequence[str] | str) -> np.ndarray:
        strings = [strings] if isinstance(strings, str) else list(strings)
        if not str(self.backbone.device).startswith("cuda"):
            apply_threads()  # only the cores other work leaves free (core.model.device)
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
        for row, key in enumerate(ids):
            out[row, self.layers] = self.features[key]
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
        its own new tokens, with positions continuing after its prefix.
        """
        import torch

        from transformers import DynamicCache

        bb = self.backbone
        reach: dict[tuple, tuple[_Run, int]] = {}
        for _, run, p in chunk:
            if p:
                reach[run.ids] = (run, max(p, reach.get(run.ids, (run, 0))[1]))
        start, past_len = {}, 0
        for key, (_, p) in reach.items():
            start[key], past_len = past_len, past_len + p
        sizes = [len(tokens) - p for tokens, _, p in chunk]
        n = sum(sizes)
        ids = torch.tensor([[t for tokens, _, p in chunk for t in tokens[p:]]])
        positions = torch.tensor([[p + j for (_, _, p), size in zip(chunk, sizes) for j in range(size)]])
        allowed = torch.zeros((n, past_len + n), dtype=torch.bool)
        q = 0
        for (_, run, p), size in zip(chunk, sizes):
            if p:
                allowed[q:q + size, start[run.ids]:start[run.ids] + p] = True
            allowed[q:q + size, past_len + q:past_len + q + size] = torch.ones(size, size).tril().bool()
            q += size
        param = next(bb.model.parameters())
        allowed = allowed.to(param.device)
        mask = torch.zeros((1, 1, n, past_len + n), dtype=param.dtype, device=param.device).masked_fill(
            ~allowed, torch.finfo(param.dtype).min)
        cache = None
        if past_len:
            # every layer's reused keys and values in one copy (not one per layer and side)
            pieces = [seg for run, p in reach.values() for seg in _segments(run, p)]
            both = torch.cat([packed[:, :, :, a:b] for packed, a, b in pieces], 3)
            kv = [(both[2 * layer], both[2 * layer + 1]) for layer in range(self.depth)]
            # layers above the stop never run, but the cache must have an entry for each
            kv += [kv[-1]] * (len(bb.model.layers) - self.depth)
            cache = DynamicCache(kv)  # plain layers: a sliding-window layer would crop the packed keys
        hidden, cache = self._forward(ids, mask, positions, cache)
        # the new tokens' keys/values only: the reused prefixes are kept where they came from
        packed = torch.stack([t[:, :, past_len:] for layer in range(self.depth)
                              for t in (cache.layers[layer].keys, cache.layers[layer].values)])
        self.tokens_run += n
        rows = torch.zeros((len(chunk), max(len(tokens) for tokens, _, _ in chunk)), dtype=torch.long)
        seqs = {r: torch.zeros((*rows.shape, bb.hidden_size)) for r in self.layers}
        keep = self._kept_bytes < _KEEP_BYTES or not self.runs
        if keep:
            self._kept_bytes += packed.nbytes
        q = 0
        for row, ((tokens, run, p), size) in enumerate(zip(chunk, sizes)):
            rows[row, :len(tokens)] = 1
            # prefix + new tokens; copies, not views, which would keep the whole pass alive
            states = {}
            for r in self.layers:
                new = hidden[r][0, q:q + size].float()
                states[r] = torch.cat([run.hidden[r][:p], new]) if p else new.clone()
                seqs[r][row, :len(tokens)] = states[r]
            if keep:
                self._keep(_Run(tokens, states, run, p, packed, q))
                self._kept_bytes += sum(t.nbytes for t in states.values())
            q += size
        pooled = pool([seqs[r] for r in self.layers], rows, (self.pooling,))[self.pooling]
        for row, (tokens, _, _) in enumerate(chunk):
            self.features[tokens] = pooled[row]

    def _forward(self, ids, mask, positions, cache):
        """Run the decoder layers up to self.depth; ({index: (1, n, hidden)}, cache)."""
        from transformers import DynamicCache

        model, last = self.backbone.model, self.backbone.n_layers - 1
        hooks = _capture_hooks(model)
        cache = cache if cache is not None else DynamicCache()
        job = _Job({r for r in self.layers if r < last},
                   self.depth if self.depth < len(model.layers) else None, {})
        _local.job = job
        try:
            out = self.backbone.forward(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        cache=cache, use_cache=True)
            if last in self.layers:  # post-norm, so not a layer's output
                job.captured[last] = out.last_hidden_state
        except _Stop:
            pass
        finally:
            _local.job = None
            for hook in hooks:
                hook.remove()
        return {r: t.detach().cpu() for r, t in job.captured.items()}, cache


# --- capture hooks ----------------------------------------------------------------------
# Registered for each packed pass and idle unless this thread has a job, so other
# threads running the same model (a retrain while SHAP runs) are not affected.

_local = threading.local()


@dataclass
class _Job:
    wanted: set  # hidden-state indices: 0 is the first layer's input, r the output of layer r - 1
    stop_after: int | None  # raise _Stop once this many layers have run
    captured: dict


def _capture_hooks(model) -> list:
    """Register the capture hooks for one forward pass; the caller removes them.

    Nothing is left on the model between passes. While registered they act only for
    the thread whose ``_local.job`` is set, so a retrain running the same model in
    another thread meanwhile is neither captured nor stopped.
    """
    hooks = [model.layers[0].register_forward_pre_hook(_before_first_layer, with_kwargs=True)]
    hooks += [layer.register_forward_hook(functools.partial(_after_layer, i + 1))
              for i, layer in enumerate(model.layers)]
    return hooks


def _before_first_layer(module, args, kwargs):
    job = getattr(_local, "job", None)
    if job is not None and 0 in job.wanted:
        job.captured[0] = args[0] if args else kwargs["hidden_states"]


def _after_layer(index, module, args, output):
    job = getattr(_local, "job", None)
    if job is None:
        return
    if index in job.wanted:
        job.captured[index] = output[0] if isinstance(output, tuple) else output
    if index == job.stop_after:
        raise _Stop
