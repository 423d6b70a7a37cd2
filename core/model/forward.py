"""The one forward loop: token sequences -> length-sorted padded batches -> the network.

Embedding, token states, explanations' corpus passes and the zero-shot baseline all
run through ``run_batches``; the network itself runs in ``Backbone`` (which owns the
out-of-memory rule) and the shared-prefix path of ``core.model.prefix`` packs its own
sequences but runs through ``Backbone.forward`` too.
"""

from __future__ import annotations

from typing import Iterator, Sequence

__all__ = ["TOKEN_BUDGET", "batches", "pad", "run_batches"]

# tokens per forward batch: bounds the memory of all-layer hidden states
TOKEN_BUDGET = 8192


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest-first so each batch pads little; capped by a token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, i = [], 0
    while i < len(order):
        size = max(1, min(batch_size, TOKEN_BUDGET // max(1, lengths[order[i]])))
        out.append(order[i:i + size])
        i += size
    return out


def pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """Right-padded (ids, mask) long tensors of shape (batch, longest)."""
    import torch

    ids = torch.full((len(sequences), max(map(len, sequences))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def run_batches(backbone, sequences: Sequence[Sequence[int]], *, batch_size: int,
                all_layers: bool = True) -> Iterator[tuple[list[int], object, tuple]]:
    """Run token sequences through the backbone in length-sorted padded batches.

    sequences: token ids of each sequence (position 0 is the sink).
    Yields (indices into ``sequences``, attention mask (batch, n_tokens), states) per
    batch; states is ``backbone.hidden_states`` (n_layers tensors of shape (batch,
    n_tokens, hidden)) or, with ``all_layers=False``, a 1-tuple with the last hidden state.
    """
    pad_id = backbone.tokenizer.pad_token_id or 0
    for idx in batches([len(s) for s in sequences], batch_size):
        ids, mask = pad([sequences[i] for i in idx], pad_id)
        states = (backbone.hidden_states(ids, mask) if all_layers
                  else (backbone.last_hidden_state(ids, mask),))
        yield idx, mask, states
