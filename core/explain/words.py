"""Word pieces of the user's text, and how two explanations of it agree.

Token attributions (exact or SHAP) are summed into word pieces of the user's own
text, so the two views can be drawn on the same words and compared by rank.

Shortcut admitted: word pieces come from a regular expression, not a linguistic
tokeniser.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np

from core.errors import InputError

__all__ = ["Agreement", "Piece", "piece_totals", "pieces_of", "probability_effects", "rank_agreement",
           "spearman_rows", "text_segments", "view_agreement", "word_attributions", "word_scores"]

# word pieces: runs of word characters (with inner apostrophes/hyphens), or of punctuation
_PIECE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]+")


class Piece(NamedTuple):
    """A stretch text[start:end] of the user's text and its score."""

    start: int
    end: int
    text: str
    score: float


def pieces_of(text: str) -> list[tuple[int, int, str]]:
    """(start, end, piece) of every word piece of ``text``, in order.

    >>> pieces_of("not good!")
    [(0, 3, 'not'), (4, 8, 'good'), (8, 9, '!')]
    """
    return [(m.start(), m.end(), m.group()) for m in _PIECE.finditer(text)]


def word_scores(text: str, spans: Sequence[tuple[int, int] | None], scores: Sequence[float]) -> list[Piece]:
    """Sum token scores into the word pieces of ``text`` (words and punctuation runs).

    spans: per token, its (start, end) in ``text`` or None (prompt/sink: ignored);
    scores: (n_tokens,). A token covering several pieces splits its score by overlap;
    a whitespace-only token goes to the next piece (the last one at the end), so the
    total is kept.
    Example: text "not good!", tokens "not", " good", "!" -> pieces not, good, !.
    """
    bounds, totals = piece_totals(text, spans, np.asarray(scores, dtype=float))
    return [Piece(a, b, text[a:b], float(v)) for (a, b), v in zip(bounds, totals)]


def piece_totals(text: str, spans, values: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Piece bounds and the token values summed per piece: (n_tokens, ...) -> (n_pieces, ...)."""
    bounds = [(m.start(), m.end()) for m in _PIECE.finditer(text)]
    totals = np.zeros((len(bounds),) + values.shape[1:])
    starts = np.array([a for a, _ in bounds])
    for span, value in zip(spans, values):
        if span is None or not bounds or span[1] <= span[0]:
            continue
        a, b = span
        overlap = np.array([max(0, min(b, e) - max(a, s)) for s, e in bounds], dtype=float)
        if overlap.sum() == 0:  # whitespace: it leads the next word, as in BPE's " word"
            overlap[min(int(np.searchsorted(starts, b)), len(bounds) - 1)] = 1.0
        totals += np.multiply.outer(overlap / overlap.sum(), value)
    return bounds, totals


def probability_effects(attribution, text: str, class_index: int, *, temperature: float = 1.0) -> list[Piece]:
    """Word pieces of ``text`` scored by how much each raises the probability of one class.

    A piece's score is p_k(z) - p_k(z - c): z the (K,) logits, c the piece's summed
    contribution to every class logit, so the score says how much lower (negative: higher)
    the class's probability would be without the piece. Its sign is the direction of
    the word's effect on that probability: a word that lowers every logit, but the
    other classes' more, raises the class, though its own logit contribution is negative.
    attribution: an ``Attribution`` of ``text`` (``spans``, ``values`` (n_tokens, K), ``logits`` (K,)).
    temperature: the model's calibration (probabilities are softmax(logits / temperature)).
    """
    bounds, totals = piece_totals(text, attribution.spans, np.asarray(attribution.values, dtype=float))
    logits = np.asarray(attribution.logits, dtype=float)
    p_k = _softmax(logits / temperature)[class_index]
    return [Piece(a, b, text[a:b], float(p_k - _softmax((logits - c) / temperature)[class_index]))
            for (a, b), c in zip(bounds, totals)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def word_attributions(result, text: str, class_index: int) -> list[Piece]:
    """Word pieces of ``text`` with their summed score for one class.

    result: an ``Attribution`` or a ``ShapResult`` of this text (anything with
    ``spans`` and ``values`` (n_tokens, K)).
    """
    return word_scores(text, result.spans, np.asarray(result.values)[:, class_index])


def text_segments(text: str, pieces: Sequence[Piece]) -> list[Piece]:
    """The whole text as consecutive segments: the pieces, and score-0 gaps between them.

    "".join(p.text for p in text_segments(text, pieces)) == text, so a heatmap drawn
    from the segments never drops a character.
    """
    out, pos = [], 0
    for p in sorted(pieces, key=lambda p: p.start):
        if p.start > pos:
            out.append(Piece(pos, p.start, text[pos:p.start], 0.0))
        out.append(p)
        pos = max(pos, p.end)
    if pos < len(text):
        out.append(Piece(pos, len(text), text[pos:], 0.0))
    return out


class Agreement(NamedTuple):
    """Spearman rho between two views' word scores; nan with a reason when undefined."""

    rho: float
    n_pieces: int
    reason: str | None


def rank_agreement(a_scores: Sequence[float], b_scores: Sequence[float]) -> float:
    """Spearman correlation of two score vectors of the same pieces; nan when undefined.

    Undefined means fewer than 2 pieces or a constant vector (no ranking to compare).
    Example: [1, 2, 3] vs [10, 20, 30] -> 1.0; vs [3, 2, 1] -> -1.0.
    """
    a, b = np.asarray(a_scores, float), np.asarray(b_scores, float)
    if a.shape != b.shape:
        raise InputError(f"Both views must score the same pieces; got {a.shape} and {b.shape}.")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearman_rows(a, b[None])[0])


def view_agreement(a, b, text: str, class_index: int) -> Agreement:
    """Rank agreement of two explanations of ``text`` (Attribution/ShapResult) on its words."""
    wa = [p.score for p in word_attributions(a, text, class_index)]
    wb = [p.score for p in word_attributions(b, text, class_index)]
    rho = rank_agreement(wa, wb)
    if not np.isnan(rho):
        return Agreement(rho, len(wa), None)
    reason = ("the text has fewer than 2 words" if len(wa) < 2
              else "one view gives every word the same score")
    return Agreement(rho, len(wa), reason)


def spearman_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spearman correlation of a (u,) with each row of rows (B, u); average ranks for ties.

    A constant row against a varying ``a`` (or the reverse) scores 0; two constant
    vectors score 1 (they rank alike). Example: a=[1, 2, 3], rows=[[10, 20, 30], [3, 2, 1]]
    -> [1.0, -1.0].
    """
    from scipy.stats import rankdata

    ra = rankdata(a) - (len(a) + 1) / 2
    rr = rankdata(rows, axis=1) - (len(a) + 1) / 2
    norm = np.sqrt((ra ** 2).sum() * (rr ** 2).sum(1))
    both_flat = (ra ** 2).sum() == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, rr @ ra / norm, 0.0)
    return np.where(both_flat & ((rr ** 2).sum(1) == 0), 1.0, rho)
