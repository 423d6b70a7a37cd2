"""Text -> prompt-wrapped tokens, and the sink-token rule.

Conventions owned here (each by one function, each pinned by a test):
- position 0 of every sequence is a sink token (BOS/CLS, prepended when the
  tokenizer adds none) and is never pooled or explained, because its mid-layer norm
  is 50-140x the others' (``content_mask`` for padded batches, ``pooled_positions``
  for one sequence);
- a prompt template holds ``{text}`` once; the tokens that overlap the user's text
  are marked so explanations can show only the user's words (``encode``);
- an over-long text loses user tokens from its end, never the prompt's;
- echo embeddings (``encode(..., echo=True)``, after Springer et al. 2024, "Repetition
  improves language model embeddings"): the text appears twice, bare after "Rewrite
  the sentence:" and then inside the project's prompt (``echo_template``); only the
  second copy's user tokens are pooled (``Encoded.pool_mask``), so in a causal decoder
  every pooled token has seen the whole sentence. Only the second copy carries user
  spans, so explanations show the words once. An over-long text is cut to the same
  prefix in both copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import InputError

__all__ = ["DEFAULT_MAX_LENGTH", "ECHO_PREFIX", "Encoded", "content_mask", "echo_template", "encode",
           "pooled_positions", "wrap"]

DEFAULT_MAX_LENGTH = 256
# the first (bare) copy of an echo prompt; the project's prompt then wraps the second
ECHO_PREFIX = "Rewrite the sentence: {text}\nRewritten sentence: "


@dataclass(frozen=True)
class Encoded:
    """One tokenised, prompt-wrapped text.

    input_ids: token ids, position 0 is the sink token.
    user_spans: per token, the (start, end) character span it covers in the
        user's own text, or None for sink/prompt tokens (and an echo's first copy);
        empty, ``()``, for a text that ``encode(..., spans=False)`` did not truncate.
    truncated: whether user tokens were dropped to fit the maximum length.
    pooled: per token, whether pooling reads it (an echo's second copy); None means
        every token but the sink (``pooled_positions``).
    """

    input_ids: tuple[int, ...]
    user_spans: tuple[tuple[int, int] | None, ...]
    truncated: bool
    pooled: tuple[bool, ...] | None = None

    def pool_mask(self) -> np.ndarray:
        """Boolean (n_tokens,) mask of the positions pooling reads (mean, last and max).

        >>> Encoded((1, 5, 6), (None, (0, 2), (3, 4)), False).pool_mask()
        array([False,  True,  True])
        """
        if self.pooled is None:
            return pooled_positions(len(self.input_ids))
        return np.array(self.pooled, dtype=bool)


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


def echo_template(prompt: str | None) -> str:
    """The echo template for a project prompt: the text bare, then inside the prompt.

    Holds ``{text}`` twice, so it never equals a plain template (which holds it once):
    the feature cache, keyed by the template, keeps echo and plain features apart.

    >>> echo_template("Text: {text}\\nCategory:")
    'Rewrite the sentence: {text}\\nRewritten sentence: Text: {text}\\nCategory:'
    """
    wrap("", prompt)  # the same check of the project's template as without echo
    return ECHO_PREFIX + (prompt or "{text}")


def _sink_id(tokenizer) -> int:
    for tok_id in (tokenizer.bos_token_id, tokenizer.cls_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise InputError("This tokenizer has no BOS, CLS or EOS token to use as the sink token.")


def encode(tokenizer, texts: Sequence[str], *, prompt: str | None = None,
           max_length: int = DEFAULT_MAX_LENGTH, echo: bool = False,
           spans: bool = True) -> list[Encoded]:
    """Tokenise texts (wrapped in the prompt) so that position 0 is always a sink token.

    Over-long texts lose user tokens from their end, never the prompt's tokens, so a
    suffix such as ``"\\nSentiment:"`` still closes the sequence.
    echo: wrap each text twice (``echo_template``); pooling reads the second copy only.
    spans: False leaves ``user_spans`` empty (``()``) wherever no truncation needs them:
    embedding reads only the ids, and the spans were a third of its host work per text.
    """
    if echo:
        return [_encode_echo(tokenizer, t, prompt, max_length) for t in texts]
    wrapped = [wrap(t, prompt) for t in texts]
    return [_truncate(ids, user_spans, max_length)
            for ids, user_spans in _tokenize(tokenizer, [w[0] for w in wrapped], [w[1:] for w in wrapped],
                                             spans_beyond=0 if spans else max_length)]


def _tokenize(tokenizer, strings: list[str], users: list[tuple[int, int]], *,
              spans_beyond: int = 0) -> list[tuple[list, list | None]]:
    """(ids with the sink first, per-token span in the user's text or None) of each
    string, whose user text lies at ``users[i] = (start, end)``; the spans are None for
    a string of ``spans_beyond`` tokens or fewer."""
    all_ids, all_offsets = _encodings(tokenizer, strings)
    # an unknown-word token stands for the user's text, so it keeps its span
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    sink = _sink_id(tokenizer)
    out = []
    for (start, end), ids, offsets in zip(users, all_ids, all_offsets):
        ids = list(ids)
        prepend = not ids or ids[0] not in special
        if prepend:
            ids = [sink] + ids
        if len(ids) <= spans_beyond:
            out.append((ids, None))
            continue
        offsets = ([(0, 0)] if prepend else []) + [tuple(o) for o in offsets]
        out.append((ids, [_user_span(a, b, start, end) if i and ids[i] not in special else None
                          for i, (a, b) in enumerate(offsets)]))
    return out


def _encodings(tokenizer, strings: list[str]) -> tuple[list, list]:
    """(token ids, character offsets) of each string, special tokens added, untruncated.

    A fast tokenizer's own Rust tokenizer is called directly when no padding or
    truncation is set on it: the transformers wrapper gives the same ids and offsets but
    converts each text's result in Python, 0.25-0.3 s per 2,048 sentences on the H200
    check's host against 0.011 s for the tokenizing itself (bench/gpu.py --profile), time
    the GPU waited for. The wrapper sets padding and truncation on the Rust tokenizer for
    a call that asks for them and leaves them there, so with either set it is used instead.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.padding is None and backend.truncation is None:
        encodings = backend.encode_batch(strings, add_special_tokens=True)
        return [e.ids for e in encodings], [e.offsets for e in encodings]
    batch = tokenizer(strings, add_special_tokens=True, return_offsets_mapping=True, truncation=False)
    return batch["input_ids"], batch["offset_mapping"]


def _encode_echo(tokenizer, text: str, prompt: str | None, max_length: int) -> Encoded:
    """One text under the echo template; user spans (and pooling) on the second copy only.

    An over-long text is cut at a token boundary of its second copy and wrapped again,
    so both copies hold the same prefix of the text, until the whole fits.
    """
    before, middle, after = echo_template(prompt).split("{text}")
    cut, truncated = len(text), False
    while True:
        kept = text[:cut]
        start = len(before) + len(kept) + len(middle)
        ((ids, spans),) = _tokenize(tokenizer, [before + kept + middle + kept + after],
                                    [(start, start + len(kept))])
        excess = len(ids) - max_length
        if excess <= 0 or cut == 0:
            break
        truncated = True
        # each copy holds about half the excess; cut the second copy's tokens by that much
        ends = [sp[1] for sp in spans if sp is not None]
        keep = len(ends) - (excess + 1) // 2
        cut = min(cut - 1, ends[keep - 1]) if keep > 0 and ends else 0
    pooled = tuple(sp is not None for sp in spans)
    if excess > 0:  # the prompt alone is too long: cut its end as the plain path does
        ids, spans, pooled = ids[:max_length], spans[:max_length], pooled[:max_length]
    return Encoded(tuple(ids), tuple(spans), truncated, pooled if any(pooled) else None)


def _user_span(a: int, b: int, start: int, end: int) -> tuple[int, int] | None:
    if b <= a or b <= start or a >= end:
        return None
    return max(a, start) - start, min(b, end) - start


def _truncate(ids: list[int], spans: list | None, max_length: int) -> Encoded:
    excess = len(ids) - max_length
    if excess <= 0:
        return Encoded(tuple(ids), () if spans is None else tuple(spans), False)
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
