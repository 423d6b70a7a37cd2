"""Texts -> all hidden states -> pooled features per layer, through a feature cache.

Hidden-state index 0 is the embedding layer (``Backbone.hidden_states``); pooling
skips the sink token (``core.model.tokens.content_mask``). Pooled features are
cached through any ``FeatureCache`` (``core.model.cache``), so a sentence seen before
costs no forward pass. ``features`` is the entry point for any backbone, fused
groups included (their parts' features stacked and padded, see ``core.model.group``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError
from core.hashing import text_hash
from core.model.cache import FeatureCache, cache_key
from core.model.forward import run_batches
from core.model.group import BackboneGroup, is_fused, parts_of
from core.model.tokens import DEFAULT_MAX_LENGTH, Encoded, content_mask, encode

__all__ = ["POOLINGS", "TokenStates", "TruncationWarning", "embed", "embed_group", "embed_many",
           "features", "pool", "token_states", "truncated_count"]

POOLINGS = ("mean", "last", "max")


class TruncationWarning(UserWarning):
    """A text was longer than the maximum length and was cut."""


@dataclass(frozen=True)
class TokenStates:
    """Per-token hidden states of one text, for explanations.

    hidden: float32 array of shape (n_layers, n_tokens, hidden_size).
    tokens: the decoded string of each token.
    """

    hidden: np.ndarray
    encoded: Encoded
    tokens: list[str]


def pool(hidden_states: Sequence, attention_mask, poolings: Sequence[str]) -> dict[str, np.ndarray]:
    """Pool each layer over tokens.

    hidden_states: n_layers tensors of shape (batch, n_tokens, hidden).
    Returns {pooling: float32 array of shape (batch, n_layers, hidden)}.
    mean: average over content tokens; last: the last real token; max: per-dimension
    maximum over content tokens.
    """
    import torch

    mask = content_mask(attention_mask).to(hidden_states[0].device)
    counts = mask.sum(1, keepdim=True).clamp(min=1.0)
    last = attention_mask.sum(1).long().to(mask.device) - 1
    rows = torch.arange(mask.shape[0], device=mask.device)
    out: dict[str, list] = {p: [] for p in poolings}
    for h in hidden_states:
        h = h.float()
        if "mean" in out:
            out["mean"].append(torch.einsum("bth,bt->bh", h, mask) / counts)
        if "last" in out:
            out["last"].append(h[rows, last])
        if "max" in out:
            out["max"].append(h.masked_fill(mask[..., None] == 0, float("-inf")).amax(1))
    return {p: torch.stack(v, 1).cpu().numpy().astype(np.float32, copy=False) for p, v in out.items()}


def embed_many(backbone, texts: Sequence[str], *, prompt: str | None = None,
               poolings: Sequence[str] = ("mean",), batch_size: int = 32,
               max_length: int = DEFAULT_MAX_LENGTH, cache: FeatureCache | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Pooled features of every text for each pooling.

    Returns {pooling: float32 array of shape (n_texts, n_layers, hidden)}. Texts whose
    features are all cached cost no forward pass; duplicates are computed once. Each
    batch's features go into the cache as soon as the batch is done, so work that is
    interrupted (a killed job) resumes from what it had finished.
    progress(done, total) is called after each batch with counts of texts to compute.
    """
    for p in poolings:
        if p not in POOLINGS:
            raise InputError(f"Unknown pooling '{p}'; choose one of {', '.join(POOLINGS)}.")
    hashes = [text_hash(t) for t in texts]
    key = cache_key(backbone, max_length)
    found: dict[str, dict[str, np.ndarray]] = {p: {} for p in poolings}
    if cache is not None:
        for p in poolings:
            found[p] = cache.get_features(key, prompt, p, list(dict.fromkeys(hashes)))
    todo = {h: t for h, t in zip(hashes, texts) if any(h not in found[p] for p in poolings)}
    if todo:
        todo_hashes = list(todo)

        def keep(idx: list[int], pooled: dict[str, np.ndarray]) -> None:
            for p in poolings:
                new = {todo_hashes[i]: pooled[p][j] for j, i in enumerate(idx)}
                found[p].update(new)
                if cache is not None:
                    cache.put_features(key, prompt, p, new)

        _compute(backbone, list(todo.values()), prompt=prompt, poolings=poolings,
                 batch_size=batch_size, max_length=max_length, progress=progress, keep=keep)
    shape = (0, backbone.n_layers, backbone.hidden_size)
    return {p: np.stack([found[p][h] for h in hashes]) if hashes else np.zeros(shape, np.float32)
            for p in poolings}


def embed(backbone, texts: Sequence[str], *, pooling: str = "mean", **kwargs) -> np.ndarray:
    """Pooled features of shape (n_texts, n_layers, hidden) for one pooling (see embed_many)."""
    return embed_many(backbone, texts, poolings=(pooling,), **kwargs)[pooling]


def _compute(backbone, texts: list[str], *, prompt, poolings, batch_size, max_length,
             progress, keep=None) -> dict[str, np.ndarray]:
    """{pooling: (n_texts, n_layers, hidden)}; keep(indices, {pooling: (batch, n_layers,
    hidden)}) is called with each batch's features, before ``progress``."""
    encoded = encode(backbone.tokenizer, texts, prompt=prompt, max_length=max_length)
    n_cut = sum(e.truncated for e in encoded)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(texts)} texts were longer than {max_length} tokens "
                      "and were truncated.", TruncationWarning, stacklevel=3)
    out = {p: np.empty((len(texts), backbone.n_layers, backbone.hidden_size), np.float32)
           for p in poolings}
    done = 0
    for idx, mask, states in run_batches(backbone, [e.input_ids for e in encoded], batch_size=batch_size):
        pooled = pool(states, mask, poolings)
        for p in poolings:
            out[p][idx] = pooled[p]
        if keep is not None:
            keep(idx, pooled)
        done += len(idx)
        if progress:
            progress(done, len(texts))
    return out


def token_states(backbone, text: str, *, prompt: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH) -> TokenStates:
    """All hidden states of every token of one text (for exact attributions)."""
    (enc,) = encode(backbone.tokenizer, [text], prompt=prompt, max_length=max_length)
    ((_, _, hs),) = run_batches(backbone, [enc.input_ids], batch_size=1)
    hidden = np.stack([h[0].float().cpu().numpy() for h in hs]).astype(np.float32)
    tokens = [backbone.tokenizer.decode([i]) for i in enc.input_ids]
    return TokenStates(hidden, enc, tokens)


def embed_group(group: BackboneGroup, texts, *, pooling: str, prompt: str | None, max_length: int,
                cache=None, progress=None) -> np.ndarray:
    """Padded X (n, sum of n_states, widest hidden) of texts; each part cached on its own."""
    n = len(texts)
    X = np.zeros((n, group.n_layers, group.hidden_size), dtype=np.float32)
    for i, (part, bb, part_prompt) in enumerate(parts_of(group, prompt)):
        step = None
        if progress is not None:
            step = lambda done, total, i=i: progress(i * total + done, len(group.parts) * total)
        X[:, part.rows, :part.width] = embed(bb, texts, pooling=pooling, prompt=part_prompt,
                                             max_length=max_length, cache=cache, progress=step)
    return X


def features(backbone, texts: Sequence[str], *, pooling: str, prompt: str | None,
             max_length: int = DEFAULT_MAX_LENGTH, cache: FeatureCache | None = None,
             progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pooled features (n, n_layers, hidden) of texts on any backbone.

    For a backbone group the parts' features are stacked and padded (``embed_group``).
    """
    if is_fused(backbone):
        return embed_group(backbone, texts, pooling=pooling, prompt=prompt, max_length=max_length,
                           cache=cache, progress=progress)
    return embed(backbone, texts, pooling=pooling, prompt=prompt, max_length=max_length,
                 cache=cache, progress=progress)


def truncated_count(backbone, texts: Sequence[str], *, prompt: str | None, max_length: int) -> int:
    """How many texts are longer than ``max_length`` tokens with the prompt (for any
    backbone of a group): they lose their end when embedded."""
    cut = set()
    for _, bb, part_prompt in parts_of(backbone, prompt):
        encoded = encode(bb.tokenizer, texts, prompt=part_prompt, max_length=max_length)
        cut.update(i for i, e in enumerate(encoded) if e.truncated)
    return len(cut)
