"""The one forward loop: token sequences -> length-sorted padded batches -> the network.

Embedding, token states, explanations' corpus passes and the zero-shot baseline all
run through ``run_batches``; the network itself runs in ``Backbone`` (which owns the
out-of-memory rule) and the shared-prefix path of ``core.model.prefix`` packs its own
sequences but runs through ``Backbone.forward`` too. Batch size and token budget come
from the device (``core.model.device.batch_plan``) unless a caller fixes them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from core.model.device import CPU_PLAN, BatchPlan, apply_threads, batch_plan

__all__ = ["TOKEN_BUDGET", "backbone_plan", "batches", "pad", "run_batches"]

# tokens per forward batch on a CPU: bounds the memory of all-layer hidden states
TOKEN_BUDGET = CPU_PLAN.token_budget


def batches(lengths: list[int], batch_size: int, token_budget: int = TOKEN_BUDGET) -> list[list[int]]:
    """Indices grouped longest-first so each batch pads little; capped by a token budget.

    >>> batches([3, 9, 5, 9], 2, token_budget=18)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, i = [], 0
    while i < len(order):
        size = max(1, min(batch_size, token_budget // max(1, lengths[order[i]])))
        out.append(order[i:i + size])
        i += size
    return out


def pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """Right-padded (ids, mask) long tensors of shape (batch, longest)."""
    import numpy as np
    import torch

    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    mask = np.arange(lengths.max()) < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.fromiter((t for seq in sequences for t in seq), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


def backbone_plan(backbone) -> BatchPlan:
    """The batch plan for this backbone on its device (``core.model.device.batch_plan``)."""
    config = backbone.model.config
    return batch_plan(getattr(backbone, "device", "cpu"), n_layers=backbone.n_layers,
                      hidden=backbone.hidden_size, dtype=getattr(backbone, "info", {}).get("dtype", "float32"),
                      intermediate=getattr(config, "intermediate_size", None))


def run_batches(backbone, sequences: Sequence[Sequence[int]], *, batch_size: int | None = None,
                token_budget: int | None = None, all_layers: bool = True,
                depth: int | None = None) -> Iterator[tuple[list[int], object, tuple]]:
    """Run token sequences through the backbone in length-sorted padded batches.

    sequences: token ids of each sequence (position 0 is the sink).
    batch_size, token_budget: None takes the device's (``backbone_plan``).
    Yields (indices into ``sequences``, attention mask (batch, n_tokens), states) per
    batch; states is ``backbone.hidden_states`` (n_layers tensors of shape (batch,
    n_tokens, hidden)) or, with ``all_layers=False``, a 1-tuple with the last hidden state.
    depth: the deepest hidden state needed; states then holds indices 0..depth only
    and the layers above them do not run (``Backbone.hidden_states``).
    """
    if batch_size is None or token_budget is None:
        plan = backbone_plan(backbone)
        batch_size = batch_size or plan.batch_size
        token_budget = token_budget or plan.token_budget
    if not str(getattr(backbone, "device", "cpu")).startswith("cuda"):
        apply_threads()  # only the cores other work leaves free (core.model.device)
    pad_id = backbone.tokenizer.pad_token_id or 0
    for idx in batches([len(s) for s in sequences], batch_size, token_budget):
        ids, mask = pad([sequences[i] for i in idx], pad_id)
        if not all_layers:
            states = (backbone.last_hidden_state(ids, mask),)
        else:
            states = (backbone.hidden_states(ids, mask) if depth is None
                      else backbone.hidden_states(ids, mask, depth=depth))
        yield idx, mask, states
