"""Text -> prompt-wrapped tokens, and the sink-token rule.

Conventions owned here (each by one function, each pinned by a test):
- position 0 of every sequence is a sink token (BOS/CLS, prepended when the
  tokenizer adds none) and is never pooled or explained, because its mid-layer norm
  is 50-140x the others' (``content_mask`` for padded batches, ``pooled_positions``
  for one sequence);
- a prompt template holds ``{text}`` once; the tokens that overlap the user's text
  are marked so explanations can show only the user's words (``encode``);
- an over-long text loses user tokens from its end, never the prompt's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import InputError

__all__ = ["DEFAULT_MAX_LENGTH", "Encoded", "content_mask", "encode", "pooled_positions", "wrap"]

DEFAULT_MAX_LENGTH = 256


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


def pooled_positions(n_tokens: int) -> np.ndarray:
    """Boolean (n_tokens,) mask of the positions pooling averages over: all but the sink.

    >>> pooled_positions(3)
    array([False,  True,  True])
    """
    return np.arange(n_tokens) > 0
