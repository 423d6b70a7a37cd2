"""Texts -> hidden states -> pooled features per layer, through a feature cache.

Hidden-state index 0 is the embedding layer (``Backbone.hidden_states``); pooling
skips the sink token (``core.model.tokens.content_mask``). Pooled features are
cached through any ``FeatureCache`` (``core.model.cache``), so a sentence seen before
costs no forward pass. ``features`` is the entry point for any backbone, fused
groups included (their parts' features stacked and padded, see ``core.model.group``).

Echo embeddings (``echo=True``, ``core.model.tokens.echo_template``) wrap each text
twice and pool the second copy only. They apply to causal decoders alone
(``uses_echo``): an encoder's tokens already see the whole sentence, so encoders (and
an encoder part of a group) ignore ``echo``. Echo features are cached under the echo
template, which no plain prompt can equal, so the two never mix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from core.errors import InputError
from core.hashing import text_hash
from core.model.cache import FeatureCache, cache_key
from core.model.forward import run_batches
from core.model.group import BackboneGroup, Part, is_fused, parts_of
from core.model.registry import is_encoder
from core.model.tokens import DEFAULT_MAX_LENGTH, Encoded, content_mask, echo_template, encode

__all__ = ["POOLINGS", "PartStates", "TokenStates", "TruncationWarning", "embed", "embed_group", "embed_many",
           "features", "is_causal", "part_token_states", "pool", "pool_on_device", "token_states",
           "truncated_count", "uses_echo"]

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


def uses_echo(backbone, echo: bool) -> bool:
    """Whether ``backbone`` (one backbone, not a group) embeds with echo under ``echo``:
    only a causal decoder does (``is_causal``); sentence encoders ignore echo."""
    return bool(echo) and is_causal(backbone)


def is_causal(backbone) -> bool:
    """Whether ``backbone`` (one backbone, not a group) is a causal decoder, whose token
    states have read only the tokens before them: a model type with a causal-LM head and
    no masked-LM head (as in ``core.model.prefix.supports``), never a sentence encoder."""
    if is_encoder(getattr(backbone, "name", "")):
        return False
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = getattr(getattr(getattr(backbone, "model", None), "config", None), "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def pool(hidden_states: Sequence, attention_mask, poolings: Sequence[str], *,
         pooled=None) -> dict[str, np.ndarray]:
    """Pool each layer over tokens.

    hidden_states: n_layers tensors of shape (batch, n_tokens, hidden).
    Returns {pooling: float32 array of shape (batch, n_layers, hidden)}.
    mean: average over content tokens; last: the last real token; max: per-dimension
    maximum over content tokens. pooled: see ``pool_on_device``.
    """
    return _unpack(_to_host(pool_on_device(hidden_states, attention_mask, poolings, pooled=pooled)),
                   poolings)


def pool_on_device(hidden_states: Sequence, attention_mask, poolings: Sequence[str], *, pooled=None):
    """Every pooling of every layer at once, where the states are.

    Stacks the layers into one float32 tensor (batch, n_layers, n_tokens, hidden) and
    reduces it once per pooling. Returns a float32 tensor (n_poolings, batch, n_layers,
    hidden) on the states' device, in the order of ``poolings``.
    pooled: None pools the content tokens (``content_mask``); else a 0/1 tensor (batch,
    n_tokens) of the tokens to pool (echo: the second copy), "last" then being the last
    of them (``Encoded.pool_mask``).
    """
    import torch

    device = hidden_states[0].device
    h = torch.stack(hidden_states, 1).float()
    mask = (content_mask(attention_mask) if pooled is None else pooled.float()).to(device)
    out = []
    for p in poolings:
        if p == "mean":
            # one batched matmul over all layers, (b, L, 1, T) @ (b, L, T, H), reading h in
            # place (einsum permuted h into a copy first: 8x slower on the CPU)
            total = (mask[:, None, None, :] @ h).squeeze(2)
            out.append(total / mask.sum(1).clamp(min=1.0)[:, None, None])
        elif p == "last" and pooled is not None:
            last = (mask * torch.arange(1, mask.shape[1] + 1, device=device)).argmax(1)
            out.append(h[torch.arange(h.shape[0], device=device), :, last])
        elif p == "last":
            last = attention_mask.sum(1).long().to(device) - 1
            out.append(h[torch.arange(h.shape[0], device=device), :, last])
        else:
            out.append(h.masked_fill(mask[:, None, :, None] == 0, float("-inf")).amax(2))
    return torch.stack(out)


def _to_host(pooled):
    """Start the one device->host copy of a batch's pooled tensor; returns (tensor, event).

    On CUDA the copy goes to pinned memory without blocking, so the next batch can be
    launched before this one is read; ``_unpack`` waits for the event first.
    """
    import torch

    if pooled.device.type != "cuda":
        return pooled, None
    host = pooled.to("cpu", non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _unpack(copied, poolings: Sequence[str]) -> dict[str, np.ndarray]:
    """{pooling: float32 (batch, n_layers, hidden)} once the copy started by _to_host is done."""
    host, event = copied
    arr = host.numpy()
    if event is not None:
        event.synchronize()
        arr = arr.copy()  # out of pinned memory, which the caches would otherwise hold on to
    return {p: arr[i] for i, p in enumerate(poolings)}


def embed_many(backbone, texts: Sequence[str], *, prompt: str | None = None,
               poolings: Sequence[str] = ("mean",), batch_size: int | None = None,
               max_length: int = DEFAULT_MAX_LENGTH, cache: FeatureCache | None = None,
               progress: Callable[[int, int], None] | None = None,
               echo: bool = False, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Pooled features of every text for each pooling.

    Returns {pooling: float32 array of shape (n_texts, n_layers, hidden)}. Texts whose
    features are all cached cost no forward pass; duplicates are computed once. Each
    batch's features go into the cache as soon as the batch is done, so work that is
    interrupted (a killed job) resumes from what it had finished.
    progress(done, total) is called after each batch with counts of texts to compute.
    batch_size: texts per forward batch; None takes the device's (``core.model.device``).
    echo: echo embeddings if the backbone is a causal decoder (``uses_echo``).
    rows: the hidden-state rows the caller reads; None reads every row. With rows, a
    cached entry is a hit only when it holds all of them (a compact entry has NaN in the
    rows it lacks), texts are run only up to the deepest (``Backbone.hidden_states``'s
    depth), and the rows above it are NaN in the result and left out of the cache.
    """
    echo = uses_echo(backbone, echo)
    need = _checked_rows(backbone, rows)
    for p in poolings:
        if p not in POOLINGS:
            raise InputError(f"Unknown pooling '{p}'; choose one of {', '.join(POOLINGS)}.")
    hashes = [text_hash(t) for t in texts]
    key = cache_key(backbone, max_length)
    # echo features are kept under the echo template, which holds {text} twice and so
    # never equals a plain prompt
    cached_as = echo_template(prompt) if echo else prompt
    found: dict[str, dict[str, np.ndarray]] = {p: {} for p in poolings}
    if cache is not None:
        for p in poolings:
            found[p] = cache.get_features(key, cached_as, p, list(dict.fromkeys(hashes)))
    todo = {h: t for h, t in zip(hashes, texts) if any(_missing(found[p].get(h), need) for p in poolings)}
    if todo:
        todo_hashes = list(todo)

        def keep(idx: list[int], pooled: dict[str, np.ndarray]) -> None:
            for p in poolings:
                new = {todo_hashes[i]: _merged(pooled[p][j], found[p].get(todo_hashes[i]))
                       for j, i in enumerate(idx)}
                found[p].update(new)
                if cache is not None:
                    cache.put_features(key, cached_as, p, new)

        _compute(backbone, list(todo.values()), prompt=prompt, poolings=poolings,
                 batch_size=batch_size, max_length=max_length, progress=progress, keep=keep, echo=echo,
                 depth=None if need is None else need[-1])
    shape = (0, backbone.n_layers, backbone.hidden_size)
    return {p: np.stack([found[p][h] for h in hashes]) if hashes else np.zeros(shape, np.float32)
            for p in poolings}


def _checked_rows(backbone, rows: Sequence[int] | None) -> list[int] | None:
    """rows sorted and unique (None stays None); raises InputError outside 0..n_layers - 1."""
    if rows is None:
        return None
    need = sorted({int(r) for r in rows})
    if not need or need[0] < 0 or need[-1] >= backbone.n_layers:
        raise InputError(f"Hidden-state rows must lie in 0..{backbone.n_layers - 1}; got {list(rows)}.")
    return need


def _missing(entry: np.ndarray | None, need: list[int] | None) -> bool:
    """Whether a cached entry (n_layers, hidden) cannot serve the rows ``need`` (None: any)."""
    return entry is None or (need is not None and bool(np.isnan(entry[need]).any()))


def _merged(computed: np.ndarray, cached: np.ndarray | None) -> np.ndarray:
    """A computed entry with the rows it lacks (NaN, above its depth) taken from the
    entry it replaces, so recomputing a few rows never drops the others from the cache."""
    if cached is None:
        return computed
    return np.where(np.isnan(computed), cached, computed)


def embed(backbone, texts: Sequence[str], *, pooling: str = "mean", **kwargs) -> np.ndarray:
    """Pooled features of shape (n_texts, n_layers, hidden) for one pooling (see embed_many)."""
    return embed_many(backbone, texts, poolings=(pooling,), **kwargs)[pooling]


def _compute(backbone, texts: list[str], *, prompt, poolings, batch_size, max_length,
             progress, keep, echo: bool = False, depth: int | None = None) -> None:
    """Run every text through the network; keep(indices, {pooling: (batch, n_layers,
    hidden)}) gets each batch's features, before ``progress``. Nothing else holds them
    (a second copy of every text's 31 x 576 floats was measurable on a GPU). echo: as
    given (already resolved by ``uses_echo``). depth: run layers only up to this hidden
    state (``run_batches``); the rows above it are NaN."""
    encoded = encode(backbone.tokenizer, texts, prompt=prompt, max_length=max_length, echo=echo,
                     spans=False)
    n_cut = sum(e.truncated for e in encoded)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(texts)} texts were longer than {max_length} tokens "
                      "and were truncated.", TruncationWarning, stacklevel=3)
    done, pending = 0, None

    def finish(idx, copied) -> None:
        nonlocal done
        keep(idx, _all_rows(_unpack(copied, poolings), backbone.n_layers))
        done += len(idx)
        if progress:
            progress(done, len(texts))

    # on a GPU one batch stays in flight: its copy to the host is read after the next
    # batch is launched, so the GPU does not wait for Python between batches
    for idx, mask, states in run_batches(backbone, [e.input_ids for e in encoded], batch_size=batch_size,
                                         depth=depth):
        pooled = _pool_masks([encoded[i] for i in idx], mask.shape[1]) if echo else None
        copied = _to_host(pool_on_device(states, mask, poolings, pooled=pooled))
        if pending is not None:
            finish(*pending)
        pending = (idx, copied)
        if copied[1] is None:  # on the CPU it is done already
            finish(*pending)
            pending = None
    if pending is not None:
        finish(*pending)


def _all_rows(pooled: dict[str, np.ndarray], n_layers: int) -> dict[str, np.ndarray]:
    """{pooling: (batch, n_layers, hidden)} from a depth-limited batch's (batch, depth + 1,
    hidden), NaN in the rows above its depth; a full batch's as it is."""
    out = {}
    for p, arr in pooled.items():
        if arr.shape[1] < n_layers:
            full = np.full((arr.shape[0], n_layers, arr.shape[2]), np.nan, np.float32)
            full[:, :arr.shape[1]] = arr
            arr = full
        out[p] = arr
    return out


def _pool_masks(encoded: list[Encoded], width: int):
    """0/1 long tensor (batch, width) of each sequence's ``pool_mask``, zero-padded."""
    import torch

    out = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, enc in enumerate(encoded):
        mask = enc.pool_mask()
        out[row, :len(mask)] = torch.from_numpy(mask.astype(np.int64))
    return out


def token_states(backbone, text: str, *, prompt: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, echo: bool = False) -> TokenStates:
    """All hidden states of every token of one text (for exact attributions); the pooled
    tokens are ``encoded.pool_mask()`` (an echo's second copy, ``uses_echo``)."""
    (enc,) = encode(backbone.tokenizer, [text], prompt=prompt, max_length=max_length,
                    echo=uses_echo(backbone, echo))
    import torch

    ((_, _, hs),) = run_batches(backbone, [enc.input_ids], batch_size=1)
    hidden = torch.stack([h[0] for h in hs]).float().cpu().numpy()  # one copy to the host
    tokens = [backbone.tokenizer.decode([i]) for i in enc.input_ids]
    return TokenStates(hidden, enc, tokens)


class PartStates(NamedTuple):
    """One backbone's token states of a text: ``part``, where its rows sit in a fused
    model's padded X (``core.model.group.Part``; None on a single backbone), and ``states``."""

    part: Part | None
    states: TokenStates


def part_token_states(backbone, text: str, *, prompt: str | None = None,
                      max_length: int = DEFAULT_MAX_LENGTH, echo: bool = False) -> list[PartStates]:
    """``token_states`` of ``text`` on every backbone a model on ``backbone`` runs
    (``parts_of``): one for a single backbone, one per part of a group, in the group's
    order, each with the prompt it gets (none for a sentence encoder)."""
    return [PartStates(part, token_states(bb, text, prompt=part_prompt, max_length=max_length, echo=echo))
            for part, bb, part_prompt in parts_of(backbone, prompt)]


def embed_group(group: BackboneGroup, texts, *, pooling: str, prompt: str | None, max_length: int,
                cache=None, progress=None, echo: bool = False,
                rows: Sequence[int] | None = None) -> np.ndarray:
    """Padded X (n, sum of n_states, widest hidden) of texts; each part cached on its own
    (echo applies to its causal parts, ``uses_echo``). rows: rows of X to read (None:
    all); each part runs only up to its own deepest (``embed_many``), and a part with
    none of them does not run (its rows are NaN)."""
    n = len(texts)
    X = np.zeros((n, group.n_layers, group.hidden_size), dtype=np.float32)
    for i, (part, bb, part_prompt) in enumerate(parts_of(group, prompt)):
        own = None if rows is None else [r - part.offset for r in rows if part.offset <= r < part.rows.stop]
        if own == []:
            X[:, part.rows, :part.width] = np.nan
            continue
        step = None
        if progress is not None:
            # in sentences, as for one backbone: part i of k has done i/k of the work, and
            # a caller's count (a job's "done >= 0") must never run past or below it
            k = len(group.parts)
            step = lambda done, total, i=i, k=k: progress((i * total + done) // k, total)
        X[:, part.rows, :part.width] = embed(bb, texts, pooling=pooling, prompt=part_prompt, max_length=max_length,
                                             cache=cache, progress=step, echo=echo, rows=own)
    return X


def features(backbone, texts: Sequence[str], *, pooling: str, prompt: str | None,
             max_length: int = DEFAULT_MAX_LENGTH, cache: FeatureCache | None = None,
             progress: Callable[[int, int], None] | None = None, echo: bool = False,
             rows: Sequence[int] | None = None) -> np.ndarray:
    """Pooled features (n, n_layers, hidden) of texts on any backbone.

    For a backbone group the parts' features are stacked and padded (``embed_group``).
    echo: echo embeddings on causal decoders (``uses_echo``). rows: the rows read
    (None: all); the layers above the deepest do not run (``embed_many``).
    """
    if is_fused(backbone):
        return embed_group(backbone, texts, pooling=pooling, prompt=prompt, max_length=max_length,
                           cache=cache, progress=progress, echo=echo, rows=rows)
    return embed(backbone, texts, pooling=pooling, prompt=prompt, max_length=max_length,
                 cache=cache, progress=progress, echo=echo, rows=rows)


def truncated_count(backbone, texts: Sequence[str], *, prompt: str | None, max_length: int,
                    echo: bool = False) -> int:
    """How many texts are longer than ``max_length`` tokens with the prompt (for any
    backbone of a group): they lose their end when embedded."""
    cut = set()
    for _, bb, part_prompt in parts_of(backbone, prompt):
        encoded = encode(bb.tokenizer, texts, prompt=part_prompt, max_length=max_length,
                         echo=uses_echo(bb, echo))
        cut.update(i for i, e in enumerate(encoded) if e.truncated)
    return len(cut)
