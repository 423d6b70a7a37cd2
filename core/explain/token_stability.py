"""Token-rank stability: how well each bootstrap refit reproduces the full model's token
attributions of one sentence.

Given a :class:`~core.explain.stability.Stability` (the refits' linear weights),
``token_rank_stability`` compares one sentence's token attributions on one backbone
under each refit with the full model's; ``merged_rank_stability`` does so over units,
e.g. words, that sum the tokens of one or several backbones (a fused model's parts each
read their own rows of the weights). The figures are Spearman correlation and top-k
overlap per refit, summed up in a badge (``STABLE``, ``MODERATE``, ``UNSTABLE``).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from core.errors import InputError
from core.explain.attributions import token_contributions
from core.explain.stability import Stability
from core.explain.words import spearman_rows
from core.model.group import Part

__all__ = ["TokenBlock", "merged_rank_stability", "token_rank_stability", "STABLE", "MODERATE", "UNSTABLE"]

STABLE, MODERATE, UNSTABLE = "stable", "moderately stable", "unstable"
# token-rank badge: (median Spearman, mean top-k overlap) a sentence must reach
_STABLE_AT = (0.8, 0.6)
_MODERATE_AT = (0.5, 0.4)


class TokenBlock(NamedTuple):
    """One backbone's tokens of a sentence, as ``merged_rank_stability`` compares them.

    hidden: float32 (n_states, n_tokens, hidden) that backbone's token states;
    pooled: bool (n_tokens,) the tokens its mean pooling averages over;
    merge: (n_units, n_tokens) sums its compared tokens' contributions into units that
    every block of the sentence shares (e.g. the user's word pieces); a zero column
    leaves a token out;
    part: where its states sit in a fused model's padded weights (``core.model.group.Part``),
    None for a model on one backbone.
    """

    hidden: np.ndarray
    pooled: np.ndarray
    merge: np.ndarray
    part: Part | None = None


def token_rank_stability(stability: Stability, hidden: np.ndarray, pooled_mask: np.ndarray,
                         class_index: int, *, user: np.ndarray | None = None, k: int = 5,
                         reference: np.ndarray | None = None, merge: np.ndarray | None = None) -> dict:
    """How well each refit reproduces the full model's token attributions of one sentence
    on one backbone (``merged_rank_stability`` with one block).

    hidden: float32 (n_layers + 1, n_tokens, hidden) from ``core.model.embed.token_states``;
    pooled_mask: bool (n_tokens,) the tokens mean pooling averages over (all but the sink);
    user: bool (n_tokens,) the tokens compared, normally the user's own (default: pooled).
    merge: (n_units, n_tokens) sums the compared tokens' contributions into units (word
    pieces, ``core.explain.sentence``); the figures are then over units, and
    "positions" index its rows. Without it every compared token is a unit and
    "positions" are token positions. Returns ``merged_rank_stability``'s dict.
    """
    pooled_mask = np.asarray(pooled_mask, dtype=bool)
    user = pooled_mask if user is None else np.asarray(user, dtype=bool) & pooled_mask
    if not user.any():
        raise InputError("No token to compare: the sentence has no pooled user tokens.")
    merge = np.eye(len(user)) if merge is None else np.asarray(merge, dtype=np.float64)
    return merged_rank_stability(stability, [TokenBlock(hidden, pooled_mask, merge * user)], class_index,
                                 k=k, reference=reference)


def merged_rank_stability(stability: Stability, blocks: Sequence[TokenBlock], class_index: int, *,
                          k: int = 5, reference: np.ndarray | None = None) -> dict:
    """How well each refit reproduces the full model's attributions of one sentence, over
    units that sum tokens of one or several backbones (a fused model's parts).

    blocks: one ``TokenBlock`` per backbone; a unit's contribution is the sum of its
    tokens' contributions in every block, each token's the exact mean-pooling term of its
    own backbone (``token_contributions`` on that part's rows of the weights).
    reference: (n_layers + 1, hidden) states to centre on, as the pages' attributions
    (``core.explain.attributions.reference_states``; a fused model's padded rows, each
    block centred on its part's); None compares the raw terms.
    Attributions are the units' contributions to the logit of ``class_index``. Per refit:
    Spearman correlation of the signed contributions with the full model's (1 when both are
    constant, 0 when only one is), and the share of the full model's top-k units by
    |contribution| among the refit's top-k (k capped at the number of units compared).
    badge: "stable" when median Spearman >= 0.8 and mean top-k overlap >= 0.6,
    "moderately stable" when >= 0.5 and >= 0.4, else "unstable".
    Returns {"spearman": (B,), "topk_overlap": (B,), "median_spearman", "mean_spearman",
    "mean_topk_overlap", "k", "badge", "positions": (u,) the units compared (rows of the
    merges that hold a pooled token), "full": (u,) full-model contributions, "refits": (B, u),
    "in_topk": (u,) share of refits with the unit in their top-k}.
    """
    if not 0 <= class_index < len(stability.classes):
        raise InputError(f"class_index must be 0..{len(stability.classes) - 1}; got {class_index}.")
    merges = [np.asarray(b.merge, dtype=np.float64) * np.asarray(b.pooled, dtype=bool) for b in blocks]
    positions = np.flatnonzero(sum(np.abs(m).sum(1) for m in merges) > 0)
    if not len(positions):
        raise InputError("No token to compare: the sentence has no pooled user tokens.")
    states = [_centred(b, reference) for b in blocks]

    def contributions(V):
        total = np.zeros(len(positions))
        for block, hidden, merge in zip(blocks, states, merges):
            V_part = V if block.part is None else V[block.part.rows, :block.part.width]
            total += merge[positions] @ token_contributions(hidden, block.pooled, V_part)[:, class_index]
        return total

    full = contributions(stability.full_weights()[0])
    refits = np.stack([contributions(stability.refit_weights(i)[0]) for i in range(stability.B)])
    return _rank_figures(full, refits, positions, k)


def _centred(block: TokenBlock, reference: np.ndarray | None) -> np.ndarray:
    """A block's hidden states minus its part's rows of ``reference`` (unchanged when None)."""
    if reference is None:
        return block.hidden
    part = block.part
    ref = reference if part is None else reference[part.rows, :part.width]
    return block.hidden.astype(np.float64) - ref[:, None, :]


def _rank_figures(full: np.ndarray, refits: np.ndarray, positions: np.ndarray, k: int) -> dict:
    """The figures of ``merged_rank_stability`` from the full model's (u,) and the refits'
    (B, u) contributions of the units at ``positions``."""
    k = int(min(max(1, k), len(positions)))
    spearman = spearman_rows(full, refits)
    top_full, top = _top_k(full[None], k)[0], _top_k(refits, k)
    overlap = np.array([len(np.intersect1d(top_full, t)) / k for t in top])
    in_topk = np.bincount(top.ravel(), minlength=len(positions)) / len(refits)
    median, mean_overlap = float(np.median(spearman)), float(overlap.mean())
    return {"spearman": spearman, "topk_overlap": overlap, "median_spearman": median,
            "mean_spearman": float(spearman.mean()), "mean_topk_overlap": mean_overlap, "k": k,
            "badge": _badge(median, mean_overlap), "positions": positions, "full": full,
            "refits": refits, "in_topk": in_topk}


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """(R, k) indices of the k largest |values| per row (R, u); ties go to the earlier token."""
    return np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]


def _badge(median_spearman: float, mean_overlap: float) -> str:
    if median_spearman >= _STABLE_AT[0] and mean_overlap >= _STABLE_AT[1]:
        return STABLE
    if median_spearman >= _MODERATE_AT[0] and mean_overlap >= _MODERATE_AT[1]:
        return MODERATE
    return UNSTABLE
