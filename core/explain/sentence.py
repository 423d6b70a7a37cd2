"""One sentence explained by the model's weights, on one backbone or a fused group, and
how stable that explanation is under a stored bootstrap run.

The Explain page and the stakeholder report both start from ``sentence_attribution``;
the Explain and Stability pages both badge a sentence with ``sentence_stability``, from
the token states ``sentence_states`` reads (one backbone's, or each part's of a fused
model, under the model's prompt, length and echo settings). A fused model's tokens are
merged the same way in both: each part's tokens map onto the user's characters through
their spans, and a word's score sums its pieces over every part.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.explain.attributions import Attribution, coefficient_attributions, group_attributions
from core.explain.stability import Stability
from core.explain.token_stability import TokenBlock, merged_rank_stability
from core.explain.words import piece_totals, pieces_of
from core.model.embed import PartStates, part_token_states
from core.model.group import is_fused

__all__ = ["merged_attribution", "sentence_attribution", "sentence_states", "sentence_stability"]


def merged_attribution(parts: Sequence[tuple[str, Attribution]]) -> Attribution:
    """One attribution holding every backbone's tokens, part after part: a word's score
    then sums all of them. parts: ``group_attributions`` output, (name, Attribution)
    pairs sharing one constant (K,) and logits (K,); values stack to (sum n_tokens, K)."""
    first = parts[0][1]
    return Attribution([t for _, a in parts for t in a.tokens], [sp for _, a in parts for sp in a.spans],
                       np.concatenate([a.values for _, a in parts]), first.constant, first.logits,
                       first.exact, increments=any(a.increments for _, a in parts))


def sentence_states(backbone, settings, text: str) -> list[PartStates]:
    """The token states of ``text`` that the explanations of a model with ``settings`` read
    (its prompt, longest sentence and echo): one ``PartStates`` on a single backbone, one
    per part of a fused model (each part's hidden: (n_states, n_tokens, hidden))."""
    return part_token_states(backbone, text, prompt=settings.prompt, max_length=settings.max_length,
                             echo=settings.echo)


def sentence_attribution(backbone, clf, text: str) -> tuple[list[PartStates], Attribution]:
    """(token states, attribution) of ``text`` under ``clf`` on ``backbone``.

    The states (``sentence_states``) are the ones the attribution was computed from; a
    fused model's attribution merges its backbones' tokens (``merged_attribution``).
    """
    states = sentence_states(backbone, clf.settings, text)
    if is_fused(backbone):
        return states, merged_attribution(group_attributions(backbone, clf, text, states=states))
    return states, coefficient_attributions(backbone, clf, text, states=states[0].states)


def sentence_stability(stability: Stability, states: Sequence[PartStates], class_index: int, *,
                       text: str | None = None, reference: np.ndarray | None = None) -> dict | None:
    """The token-rank stability of one sentence over its user tokens; None when it has none.

    states: ``sentence_states`` of the sentence (every token's characters in the user's
    text are its ``encoded.user_spans``; None for the sink and the prompt).
    text: the user's text; given, the comparison is over its word pieces (as the pages
    show words, not sub-word tokens), a piece summing its tokens of every backbone, and
    the result's "labels" name them. Without it the units are the tokens, part after part.
    reference: the centre the pages' attributions use (``reference_states``).
    Returns ``merged_rank_stability``'s dict.
    """
    spans = [list(one.states.encoded.user_spans) for one in states]
    if not any(sp is not None and pooled for one, part_spans in zip(states, spans)
               for sp, pooled in zip(part_spans, one.states.encoded.pool_mask())):
        return None
    if text is None:
        offsets = np.cumsum([0] + [len(s) for s in spans])
        merges = [np.eye(offsets[-1])[:, offsets[i]:offsets[i + 1]] for i in range(len(spans))]
    else:
        merges = [piece_totals(text, part_spans, np.eye(len(part_spans)))[1] for part_spans in spans]
        bounds = [(a, b) for a, b, _ in pieces_of(text)]
        if not len(bounds):
            return None
    blocks = [TokenBlock(one.states.hidden, one.states.encoded.pool_mask(),
                         merge * np.array([sp is not None for sp in part_spans]), one.part)
              for one, merge, part_spans in zip(states, merges, spans)]
    result = merged_rank_stability(stability, blocks, class_index, reference=reference)
    if text is not None:
        result["labels"] = [text[bounds[i][0]:bounds[i][1]] for i in result["positions"]]
    return result
