"""Text -> tokens -> all hidden states -> pooled features per layer.

Conventions owned here (each by one function, each pinned by a test):
- hidden-state index 0 is the embedding layer (``Backbone.hidden_states``);
- position 0 of every sequence is a sink token (BOS/CLS, prepended when the
  tokenizer adds none) and is excluded from pooling and explanations
  (``content_mask``), because its mid-layer norm is 50-140x the others';
- a prompt template holds ``{text}`` once; the tokens that overlap the user's
  text are marked so explanations can show only the user's words (``encode``).

Pooled features are cached through any object with ``get_features`` /
``put_features`` (``core.store.Store``), so a sentence seen before costs no
forward pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from .errors import InputError
from .store_codec import text_hash

__all__ = [
    "POOLINGS",
    "DEFAULT_MAX_LENGTH",
    "Encoded",
    "FeatureCache",
    "TokenStates",
    "TruncationWarning",
    "cache_key",
    "content_mask",
    "embed",
    "embed_many",
    "encode",
    "pool",
    "token_states",
    "wrap",
]

POOLINGS = ("mean", "last", "max")
DEFAULT_MAX_LENGTH = 256
# tokens per forward batch: bounds the memory of all-layer hidden states
_TOKEN_BUDGET = 8192


class TruncationWarning(UserWarning):
    """A text was longer than the maximum length and was cut."""


class FeatureCache(Protocol):
    def get_features(self, fingerprint: str, prompt: str | None, pooling: str,
                     text_hashes: list[str]) -> dict[str, np.ndarray]: ...

    def put_features(self, fingerprint: str, prompt: str | None, pooling: str,
                     items: dict[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class Encoded:
    """One tokenised, prompt-wrapped text.

    input_ids: token ids, position 0 is the sink token.
    user_spans: per token, the (start, end) character span it covers in the
        user's own text, or None for sink/prompt tokens.
    truncated: whether user tokens were dropped to fit the maximum length.
    """

    input_ids: tuple[int, ...]
    user_spans: tuple[tuple[int, int] | None, ...]
    truncated: bool


@dataclass(frozen=True)
class TokenStates:
    """Per-token hidden states of one text, for explanations.

    hidden: float32 array of shape (n_layers, n_tokens, hidden_size).
    tokens: the decoded string of each token.
    """

    hidden: np.ndarray
    encoded: Encoded
    tokens: list[str]


def wrap(text: str, prompt: str | None) -> tuple[str, int, int]:
    """Place ``text`` into the prompt template; return (full, start, end) of the text.

    >>> wrap("great", "Review: {text}\\nSentiment:")
    ('Review: great\\nSentiment:', 8, 13)
    """
    if not prompt:
        return text, 0, len(text)
    if prompt.count("{text}") != 1:
        raise InputError(
            f"A prompt template must contain {{text}} exactly once, where the sentence goes; "
            f"got: {prompt!r}"
        )
    before, after = prompt.split("{text}")
    return before + text + after, len(before), len(before) + len(text)


def _sink_id(tokenizer) -> int:
    for tok_id in (tokenizer.bos_token_id, tokenizer.cls_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise InputError("This tokenizer has no BOS, CLS or EOS token to use as the sink token.")


def encode(tokenizer, texts: Sequence[str], *, prompt: str | None = None,
           max_length: int = DEFAULT_MAX_LENGTH) -> list[Encoded]:
    """Tokenise texts (wrapped in the prompt) so that position 0 is always a sink token.

    Over-long texts lose user tokens from their end, never the prompt's tokens, so a
    suffix such as ``"\\nSentiment:"`` still closes the sequence.
    """
    wrapped = [wrap(t, prompt) for t in texts]
    batch = tokenizer([w[0] for w in wrapped], add_special_tokens=True,
                      return_offsets_mapping=True, truncation=False)
    # an unknown-word token stands for the user's text, so it keeps its span
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    sink = _sink_id(tokenizer)
    out = []
    for (_, start, end), ids, offsets in zip(wrapped, batch["input_ids"], batch["offset_mapping"]):
        ids, offsets = list(ids), [tuple(o) for o in offsets]
        if not ids or ids[0] not in special:
            ids, offsets = [sink] + ids, [(0, 0)] + offsets
        spans = [_user_span(a, b, start, end) if i and ids[i] not in special else None
                 for i, (a, b) in enumerate(offsets)]
        out.append(_truncate(ids, spans, max_length))
    return out


def _user_span(a: int, b: int, start: int, end: int) -> tuple[int, int] | None:
    if b <= a or b <= start or a >= end:
        return None
    return max(a, start) - start, min(b, end) - start


def _truncate(ids: list[int], spans: list, max_length: int) -> Encoded:
    excess = len(ids) - max_length
    if excess <= 0:
        return Encoded(tuple(ids), tuple(spans), False)
    user = [i for i, s in enumerate(spans) if s is not None]
    drop = set(user[-excess:]) if len(user) > excess else set(range(max_length, len(ids)))
    keep = [i for i in range(len(ids)) if i not in drop]
    return Encoded(tuple(ids[i] for i in keep), tuple(spans[i] for i in keep), True)


def content_mask(attention_mask):
    """Tokens that count for pooling: real (unpadded) tokens except position 0.

    attention_mask: int tensor (batch, n_tokens). Returns a float tensor of the same shape.
    """
    mask = attention_mask.clone().float()
    mask[:, 0] = 0.0
    return mask


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


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest-first so each batch pads little; capped by a token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, i = [], 0
    while i < len(order):
        size = max(1, min(batch_size, _TOKEN_BUDGET // max(1, lengths[order[i]])))
        batches.append(order[i:i + size])
        i += size
    return batches


def _pad(encoded: list[Encoded], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
    return ids, mask


def cache_key(backbone, max_length: int) -> str:
    """The feature-cache key part for the backbone: weights and truncation length."""
    return f"{backbone.fingerprint}|max{max_length}"


def embed_many(backbone, texts: Sequence[str], *, prompt: str | None = None,
               poolings: Sequence[str] = ("mean",), batch_size: int = 32,
               max_length: int = DEFAULT_MAX_LENGTH, cache: FeatureCache | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Pooled features of every text for each pooling.

    Returns {pooling: float32 array of shape (n_texts, n_layers, hidden)}. Texts whose
    features are all cached cost no forward pass; duplicates are computed once.
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
        fresh = _compute(backbone, list(todo.values()), prompt=prompt, poolings=poolings,
                         batch_size=batch_size, max_length=max_length, progress=progress)
        for p in poolings:
            new = dict(zip(todo, fresh[p]))
            found[p].update(new)
            if cache is not None:
                cache.put_features(key, prompt, p, new)
    shape = (0, backbone.n_layers, backbone.hidden_size)
    return {p: np.stack([found[p][h] for h in hashes]) if hashes else np.zeros(shape, np.float32)
            for p in poolings}


def embed(backbone, texts: Sequence[str], *, pooling: str = "mean", **kwargs) -> np.ndarray:
    """Pooled features of shape (n_texts, n_layers, hidden) for one pooling (see embed_many)."""
    return embed_many(backbone, texts, poolings=(pooling,), **kwargs)[pooling]


def _compute(backbone, texts: list[str], *, prompt, poolings, batch_size, max_length,
             progress) -> dict[str, np.ndarray]:
    encoded = encode(backbone.tokenizer, texts, prompt=prompt, max_length=max_length)
    n_cut = sum(e.truncated for e in encoded)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(texts)} texts were longer than {max_length} tokens "
                      "and were truncated.", TruncationWarning, stacklevel=3)
    out = {p: np.empty((len(texts), backbone.n_layers, backbone.hidden_size), np.float32)
           for p in poolings}
    pad_id = backbone.tokenizer.pad_token_id or 0
    done = 0
    for idx in _batches([len(e.input_ids) for e in encoded], batch_size):
        ids, mask = _pad([encoded[i] for i in idx], pad_id)
        pooled = pool(backbone.hidden_states(ids, mask), mask, poolings)
        for p in poolings:
            out[p][idx] = pooled[p]
        done += len(idx)
        if progress:
            progress(done, len(texts))
    return out


def token_states(backbone, text: str, *, prompt: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH) -> TokenStates:
    """All hidden states of every token of one text (for exact attributions)."""
    (enc,) = encode(backbone.tokenizer, [text], prompt=prompt, max_length=max_length)
    ids, mask = _pad([enc], backbone.tokenizer.pad_token_id or 0)
    hs = backbone.hidden_states(ids, mask)
    hidden = np.stack([h[0].float().cpu().numpy() for h in hs]).astype(np.float32)
    tokens = [backbone.tokenizer.decode([i]) for i in enc.input_ids]
    return TokenStates(hidden, enc, tokens)
