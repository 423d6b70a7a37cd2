"""One sentence explained by the model's weights, on one backbone or a fused group, and
how stable that explanation is under a stored bootstrap run.

The Explain page and the stakeholder report both start from ``sentence_attribution``;
the Explain and Stability pages both badge a sentence with ``sentence_stability``.
Shortcut admitted: a fused model has no single token-state array, so it gets no
stability badge (``sentence_attribution`` returns states None for it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.explain.attributions import Attribution, coefficient_attributions, group_attributions
from core.explain.stability import Stability, token_rank_stability
from core.explain.words import piece_totals
from core.model.embed import TokenStates, token_states
from core.model.group import is_fused
from core.model.tokens import pooled_positions

__all__ = ["merged_attribution", "sentence_attribution", "sentence_stability"]


def merged_attribution(parts: Sequence[tuple[str, Attribution]]) -> Attribution:
    """One attribution holding every backbone's tokens, part after part: a word's score
    then sums all of them. parts: ``group_attributions`` output, (name, Attribution)
    pairs sharing one constant (K,) and logits (K,); values stack to (sum n_tokens, K)."""
    first = parts[0][1]
    return Attribution([t for _, a in parts for t in a.tokens], [sp for _, a in parts for sp in a.spans],
                       np.concatenate([a.values for _, a in parts]), first.constant, first.logits,
                       first.exact, increments=any(a.increments for _, a in parts))


def sentence_attribution(backbone, clf, text: str) -> tuple[TokenStates | None, Attribution]:
    """(token states, attribution) of ``text`` under ``clf`` on ``backbone``.

    On a single backbone the states (hidden: (n_layers + 1, n_tokens, hidden)) are the
    ones the attribution was computed from; a fused model's attribution merges its
    backbones' tokens (``merged_attribution``) and its states are None.
    """
    if is_fused(backbone):
        return None, merged_attribution(group_attributions(backbone, clf, text))
    s = clf.settings
    states = token_states(backbone, text, prompt=s.prompt, max_length=s.max_length, echo=s.echo)
    return states, coefficient_attributions(backbone, clf, text, states=states)


def sentence_stability(stability: Stability, hidden: np.ndarray,
                       spans: Sequence[tuple[int, int] | None], class_index: int, *,
                       text: str | None = None, reference: np.ndarray | None = None) -> dict | None:
    """``token_rank_stability`` of one sentence over its user tokens; None when it has none.

    hidden: float32 (n_layers + 1, n_tokens, hidden) token states; spans: per token its
    characters in the user's text, or None for the sink and prompt tokens.
    text: the user's text; given, the comparison is over its word pieces (as the pages
    show words, not sub-word tokens) and the result's "labels" name them.
    reference: the centre the pages' attributions use (``reference_states``).
    """
    pooled = pooled_positions(hidden.shape[1])
    user = np.array([sp is not None for sp in spans], dtype=bool)
    if not (user & pooled).any():
        return None
    merge = None
    if text is not None:
        bounds, merge = piece_totals(text, spans, np.eye(len(spans)))
        if not len(bounds):
            return None
    result = token_rank_stability(stability, hidden, pooled, class_index, user=user,
                                  reference=reference, merge=merge)
    if text is not None:
        result["labels"] = [text[bounds[i][0]:bounds[i][1]] for i in result["positions"]]
    return result
