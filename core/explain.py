"""Why the classifier decides what it does: token attributions, SHAP, and global views.

Under mean pooling every class logit is linear in the per-token hidden states
(DESIGN.md, "Exact token attributions"). With X[l] the mean of h[l, t] over the
pooled tokens S, the feature spec and the head compose to one linear map
V (n_layers, hidden, K) and a constant b, so

    logit[k] = b[k] + sum_{t in S} (1/|S|) sum_{l, j} h[l, t, j] V[l, j, k].

Each token's term is its exact contribution; the prompt's tokens contribute too and
are reported apart from the user's words. Under max or last pooling the same linear
terms are only an approximation (``Attribution.exact`` is False).

SHAP (core.explain_shap, re-exported here) masks the user's text only. Both views are
mapped onto the same word pieces of the user's text so they can be compared.

Shortcut admitted: word pieces come from a regular expression, not a linguistic
tokeniser.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .embed import TokenStates, _batches, _pad, encode, token_states
from .errors import InputError
from .explain_shap import SHAP_BATCH_SIZE, SHAP_MAX_EVALS, ShapResult, shap_attributions

__all__ = ["Attribution", "Piece", "ShapResult", "Agreement", "Phrase", "LayerWeight",
           "SHAP_MAX_EVALS", "SHAP_BATCH_SIZE", "linear_weights", "token_contributions",
           "coefficient_attributions", "word_scores", "word_attributions", "text_segments",
           "shap_attributions", "rank_agreement", "view_agreement", "class_phrases",
           "layer_weights", "layer_weights_by_backbone"]

# word pieces: runs of word characters (with inner apostrophes/hyphens), or of punctuation
_PIECE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]+")


@dataclass(frozen=True)
class Attribution:
    """Per-token contributions of one text to every class logit.

    tokens: decoded string of every token (sink and prompt tokens included).
    spans: per token, the (start, end) characters it covers in the user's text, or None.
    values: float64 (n_tokens, K); zero for tokens that are not pooled (the sink).
    constant: (K,) the logit with no token at all; logits: (K,) the model's logits.
    exact: True when values.sum(0) + constant == logits (mean pooling). Under max or
        last pooling the values are the same linear terms, an approximation only.
    """

    tokens: list[str]
    spans: list[tuple[int, int] | None]
    values: np.ndarray
    constant: np.ndarray
    logits: np.ndarray
    exact: bool

    @property
    def user(self) -> np.ndarray:
        """Boolean mask of the tokens that belong to the user's text."""
        return np.array([s is not None for s in self.spans], dtype=bool)

    @property
    def prompt_total(self) -> np.ndarray:
        """(K,) summed contribution of the prompt's tokens."""
        return self.values[~self.user].sum(0)


def linear_weights(clf) -> tuple[np.ndarray, np.ndarray]:
    """(V, b): V (n_layers, hidden, K) and b (K,) with logits == einsum('lh,lhk', X, V) + b."""
    W, b = clf.head.linear_map()
    return clf.spec.back_project(W), np.asarray(b, dtype=np.float64)


def token_contributions(hidden: np.ndarray, pooled: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Contribution of each token to each logit under mean pooling.

    hidden: (n_layers, n_tokens, hidden_size) states of one text; pooled: boolean
    (n_tokens,) mask of the tokens mean pooling averages over; V: (n_layers, hidden, K).
    Returns float64 (n_tokens, K), zero on tokens outside ``pooled``.
    """
    pooled = np.asarray(pooled, dtype=bool)
    layers = np.flatnonzero(np.abs(V).sum((1, 2)) > 0)  # skip layers the head never reads
    out = np.zeros((hidden.shape[1], V.shape[2]))
    if pooled.any() and len(layers):
        h = hidden[layers][:, pooled].astype(np.float64)
        out[pooled] = np.einsum("lth,lhk->tk", h, V[layers]) / pooled.sum()
    return out


def coefficient_attributions(backbone, clf, text: str, *, states: TokenStates | None = None) -> Attribution:
    """Exact (mean pooling) or approximate (max/last pooling) token attributions of ``text``.

    Under max or last pooling a logit is not a sum over tokens; the values are then the
    mean-pooling terms of the same head, ``exact`` is False and the page must say so.
    """
    s = clf.settings
    if states is None:
        states = token_states(backbone, text, prompt=s.prompt, max_length=s.max_length)
    V, b = linear_weights(clf)
    pooled = np.ones(len(states.tokens), dtype=bool)
    pooled[0] = False  # the attention sink is never pooled
    values = token_contributions(states.hidden, pooled, V)
    X = _pooled(states.hidden, pooled, s.pooling)
    logits = clf.decision_features(X[None])[0].astype(np.float64)
    return Attribution(list(states.tokens), list(states.encoded.user_spans), values, b, logits,
                       exact=s.pooling == "mean")


def _pooled(hidden: np.ndarray, pooled: np.ndarray, pooling: str) -> np.ndarray:
    """X (n_layers, hidden) of one text, pooled the way the classifier was trained."""
    if pooling == "last":
        return hidden[:, -1]
    if pooling == "max":
        return hidden[:, pooled].max(1)
    return hidden[:, pooled].mean(1)


# --- word pieces --------------------------------------------------------------------

class Piece(NamedTuple):
    """A stretch text[start:end] of the user's text and its score."""

    start: int
    end: int
    text: str
    score: float


def word_scores(text: str, spans: Sequence[tuple[int, int] | None], scores: Sequence[float]) -> list[Piece]:
    """Sum token scores into the word pieces of ``text`` (words and punctuation runs).

    spans: per token, its (start, end) in ``text`` or None (prompt/sink: ignored);
    scores: (n_tokens,). A token covering several pieces splits its score by overlap;
    a whitespace-only token goes to the next piece (the last one at the end), so the
    total is kept.
    Example: text "not good!", tokens "not", " good", "!" -> pieces not, good, !.
    """
    bounds, totals = _piece_totals(text, spans, np.asarray(scores, dtype=float))
    return [Piece(a, b, text[a:b], float(v)) for (a, b), v in zip(bounds, totals)]


def _piece_totals(text: str, spans, values: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
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


# --- agreement ----------------------------------------------------------------------

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
    from scipy.stats import rankdata

    a, b = np.asarray(a_scores, float), np.asarray(b_scores, float)
    if a.shape != b.shape:
        raise InputError(f"Both views must score the same pieces; got {a.shape} and {b.shape}.")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


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


# --- global views -------------------------------------------------------------------

class Phrase(NamedTuple):
    """A word piece's mean (class-centred) contribution over its occurrences in a corpus."""

    text: str
    score: float
    count: int
    examples: list[str]


class LayerWeight(NamedTuple):
    """How much of the head reads one hidden-state layer (index 0 = embeddings)."""

    layer: int
    n_features: int
    share: float


def class_phrases(backbone, clf, texts: Sequence[str], *, top: int = 15, max_texts: int = 300,
                  min_count: int = 2, batch_size: int = 16, random_state: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, list[Phrase]]:
    """The word pieces that push hardest towards each class across ``texts``.

    A piece's score for class k is its contribution to logit k minus its mean
    contribution over classes (softmax ignores a shift shared by all logits), averaged
    over its occurrences; pieces are lower-cased. Only pieces seen ``min_count`` times
    count. Up to ``max_texts`` texts are drawn (seeded); examples are the (up to 3)
    texts where the piece pushed hardest. Exact under mean pooling, approximate otherwise.
    Returns {class name: up to ``top`` phrases, strongest first}.
    """
    texts = list(dict.fromkeys(texts))
    if len(texts) > max_texts:
        pick = np.random.default_rng(random_state).choice(len(texts), max_texts, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    parts = _linear_parts(backbone, clf)
    per_text: dict[int, np.ndarray] = {}  # piece totals; a fused model's backbones add up
    for k, (bb, prompt, V) in enumerate(parts):
        step = None if progress is None else (
            lambda done, total, k=k: progress(k * total + done, len(parts) * total))
        for i, spans, values in _contributions_many(bb, V, prompt, clf.settings.max_length, texts,
                                                    batch_size, step):
            _, totals = _piece_totals(texts[i], spans, values - values.mean(1, keepdims=True))
            per_text[i] = per_text.get(i, 0) + totals
    seen: dict[str, list[tuple[np.ndarray, int]]] = defaultdict(list)
    for i, totals in sorted(per_text.items()):
        for m, row in zip(_PIECE.finditer(texts[i]), totals):
            seen[m.group().lower()].append((row, i))
    out = {}
    for k, name in enumerate(clf.classes):
        rows = []
        for word, occ in seen.items():
            if len(occ) >= min_count:
                scores = np.array([v[k] for v, _ in occ])
                best = list(dict.fromkeys(occ[j][1] for j in np.argsort(-scores, kind="stable")))
                rows.append(Phrase(word, float(scores.mean()), len(occ), [texts[j] for j in best[:3]]))
        out[name] = sorted(rows, key=lambda p: -p.score)[:top]
    return out


def _linear_parts(backbone, clf) -> list[tuple]:
    """(backbone, prompt, V) per backbone: V maps its hidden states to the logits."""
    V, _ = linear_weights(clf)
    if not hasattr(backbone, "parts"):
        return [(backbone, clf.settings.prompt, V)]
    from .multi import part_prompt

    return [(bb, part_prompt(part.name, clf.settings.prompt), V[part.rows, :part.width])
            for part, bb in zip(backbone.parts, backbone.backbones)]


def _contributions_many(backbone, V, prompt, max_length: int, texts: list[str], batch_size: int,
                        progress):
    """Yield (index, user spans, token contributions (n_tokens, K)) for each text.

    Runs the backbone on length-sorted padded batches and keeps only the layers the
    head reads, so memory stays at (batch, n_tokens, hidden) per such layer.
    """
    layers = np.flatnonzero(np.abs(V).sum((1, 2)) > 0)
    encoded = encode(backbone.tokenizer, texts, prompt=prompt, max_length=max_length)
    if not len(layers):  # a head that selected nothing: every token contributes 0
        yield from ((i, e.user_spans, np.zeros((len(e.input_ids), V.shape[2])))
                    for i, e in enumerate(encoded))
        return
    pad_id, done = backbone.tokenizer.pad_token_id or 0, 0
    for idx in _batches([len(e.input_ids) for e in encoded], batch_size):
        ids, mask = _pad([encoded[i] for i in idx], pad_id)
        states = backbone.hidden_states(ids, mask)
        hidden = np.stack([states[l].float().cpu().numpy() for l in layers])  # (L, B, T, H)
        for row, i in enumerate(idx):
            n = len(encoded[i].input_ids)
            pooled = np.arange(n) > 0  # the attention sink is never pooled
            yield i, encoded[i].user_spans, token_contributions(hidden[:, row, :n], pooled, V[layers])
        done += len(idx)
        if progress:
            progress(done, len(texts))


def layer_weights_by_backbone(clf) -> list[tuple[str | None, list[LayerWeight]]]:
    """``layer_weights`` per backbone of a fused model, its layers numbered from 0 (the
    shares still sum to 1 over all backbones); [(None, layer_weights(clf))] otherwise."""
    rows = layer_weights(clf)
    if clf.spec.mode != "multi":
        return [(None, rows)]
    return [(part.name, [r._replace(layer=r.layer - part.rows.start) for r in rows[part.rows]])
            for part, _ in clf.spec.parts]


def layer_weights(clf) -> list[LayerWeight]:
    """Per hidden-state layer: selected head features reading it and their |weight| share.

    Weights are the head's standardised coefficients (comparable across features),
    carried back onto layers by the feature spec; a fused ("mean") feature reads every
    fused layer and shares its weight equally among them. Shares sum to 1 over layers
    (all zero for a head that selected nothing); unused layers get 0.
    """
    mass = clf.spec.back_project(np.abs(clf.head.coef_).T).sum(-1)  # (n_layers, hidden)
    total = mass.sum()
    share = mass.sum(1) / total if total > 0 else np.zeros(len(mass))
    return [LayerWeight(layer, int((mass[layer] > 0).sum()), float(share[layer]))
            for layer in range(len(mass))]
