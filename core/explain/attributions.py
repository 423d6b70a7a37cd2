"""Exact linear token attributions, and the global views built from them.

Under mean pooling every class logit is linear in the per-token hidden states
(DESIGN.md, "Exact token attributions"). With X[l] the mean of h[l, t] over the
pooled tokens S, the feature spec and the head compose to one linear map
V (n_layers, hidden, K) and a constant b, so

    logit[k] = b[k] + sum_{t in S} (1/|S|) sum_{l, j} h[l, t, j] V[l, j, k].

Each token's term is its exact contribution; the prompt's tokens contribute too and
are reported apart from the user's words.

Token states share a large common part (every token's state is far from zero, and the
standardised head reads it), so raw terms give every token, "the" and "in" included, a
share of ``m·V``. The terms are therefore centred: each pooled token gives
(1/|S|)(h[l, t] - m[l])·V, where m is the hidden-state point whose features are the
training texts' mean feature (the head's standardisation centre, ``reference_states``),
and m·V moves into the constant, which becomes the logit of the average training text.
The sum stays exact: anything constant across tokens may move into the constant.

In a causal decoder a token's state has read every token before it, so "the" after
"great" carries "great". An alternative exact split for causal decoders, **causal
increments** (``increment_contributions``, opt-in with ``increments=None``): with
s_t = (h[t] - m)·V the running score at pooled position t (of n), the pooled mean is
(1/n) sum_t s_t = s_0 + sum_k d_k (n - k + 1)/n, where d_k = s_k - s_{k-1} and s_0 is
the score of the position before the first pooled one. Token k gets d_k (n - k + 1)/n:
what reading it changed in the running score, times the share of pooled positions that
carry the change; the sum telescopes, and s_0 (the sink's score, the same for every
text) moves into the constant. bench/plausibility.py measured both on the default fused
model (bench/BENCHMARKS.md, "Plausibility of the new default, and causal increments"):
increments did not beat the per-token terms on the held-out set, so the pages keep the
per-token terms. Under max or last pooling the same linear terms are only an approximation
(``Attribution.exact`` is False). Under echo embeddings S is the second copy of the
text (``Encoded.pool_mask``): the prompt and the first copy get zero, and the sum
stays exact.

A fused model (``core.model.group``) gets one attribution per backbone
(``group_attributions``); their sums plus the one constant give the logit. SHAP is in
``core.explain.shapley``; word pieces and the agreement of two views in
``core.explain.words``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from core.explain.words import piece_totals, pieces_of
from core.learn.classifier import features_for
from core.model.embed import PartStates, TokenStates, is_causal, part_token_states, token_states, uses_echo
from core.model.forward import run_batches
from core.model.group import parts_of
from core.model.tokens import encode

__all__ = ["Attribution", "LayerWeight", "Phrase", "centred_contributions", "class_phrases", "coefficient_attributions",
           "group_attributions", "increment_contributions", "layer_weights", "layer_weights_by_backbone",
           "linear_weights", "reference_states", "token_contributions", "token_terms"]


@dataclass(frozen=True)
class Attribution:
    """Per-token contributions of one text to every class logit.

    tokens: decoded string of every token (sink and prompt tokens included).
    spans: per token, the (start, end) characters it covers in the user's text, or None.
    values: float64 (n_tokens, K); zero for tokens that are not pooled (the sink).
    constant: (K,) the logit of the average training text (the head's centre; raw
        terms, ``centre=False``, give the logit with no token at all); logits: (K,).
    exact: True when values.sum(0) + constant == logits (mean pooling). Under max or
        last pooling the values are the same linear terms, an approximation only.
    increments: True when (some of) the values are causal increments (module docstring)
        rather than per-token terms, so the page can say what the numbers mean.
    """

    tokens: list[str]
    spans: list[tuple[int, int] | None]
    values: np.ndarray
    constant: np.ndarray
    logits: np.ndarray
    exact: bool
    increments: bool = False

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


def reference_states(clf) -> np.ndarray:
    """m: float64 (n_layers + 1, hidden), the hidden-state point whose features are the
    head's standardisation centre (the training texts' mean feature); token states are
    centred on it before they are projected (module docstring)."""
    return clf.spec.lift(clf.head.mean_)


def centred_contributions(hidden: np.ndarray, pooled: np.ndarray, V: np.ndarray,
                          reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(values (n_tokens, K), shift (K,)): ``token_contributions`` of hidden - reference;
    the values plus ``shift`` (reference·V, what moves into the constant) sum as before.
    reference None: the raw terms, shift 0."""
    if reference is None:
        return token_contributions(hidden, pooled, V), np.zeros(V.shape[2])
    values = token_contributions(hidden.astype(np.float64) - reference[:, None, :], pooled, V)
    return values, np.einsum("lh,lhk->k", reference, V)


def increment_contributions(hidden: np.ndarray, pooled: np.ndarray, V: np.ndarray,
                            reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values (n_tokens, K), rest (K,)): causal increments of one text (module docstring).

    hidden: (n_layers, n_tokens, hidden_size); pooled: boolean (n_tokens,) mask of the
    positions mean pooling averages over; V: (n_layers, hidden, K); reference:
    (n_layers, hidden) centre or None. The pooled position j (0-based, of n) gets
    (s_j - s_{j-1}) (n - j)/n; the score before the first pooled position goes to the
    token there, or into ``rest`` when that is the sink (position 0). values.sum(0) +
    rest equals ``token_contributions(hidden, pooled, V).sum(0)``.
    Example: scores s = [5, 1, 3, 2] at positions 0..3, positions 1..3 pooled (n = 3):
    values [0, (1-5)·3/3, (3-1)·2/3, (2-3)·1/3], rest 5; they sum to (1+3+2)/3 = 2.
    """
    pooled = np.asarray(pooled, dtype=bool)
    positions = np.flatnonzero(pooled)
    values, rest = np.zeros((hidden.shape[1], V.shape[2])), np.zeros(V.shape[2])
    if reference is not None:
        rest = np.einsum("lh,lhk->k", reference, V)
    layers = np.flatnonzero(np.abs(V).sum((1, 2)) > 0)  # skip layers the head never reads
    if not len(positions) or not len(layers):
        return values, rest
    before = positions[0] - 1
    h = hidden[layers][:, np.r_[max(before, 0), positions]].astype(np.float64)
    if reference is not None:
        h = h - reference[layers][:, None, :]
    scores = np.einsum("lth,lhk->tk", h, V[layers])
    if before < 0:  # nothing before the first pooled position: it starts from zero
        scores[0] = 0.0
    n = len(positions)
    values[positions] = np.diff(scores, axis=0) * ((n - np.arange(n)) / n)[:, None]
    if before > 0:
        values[before] += scores[0]
    else:
        rest = rest + scores[0]
    return values, rest


def token_terms(hidden: np.ndarray, pooled: np.ndarray, V: np.ndarray, reference: np.ndarray | None, *,
                increments: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values (n_tokens, K), rest (K,)) of one text: causal increments, or the per-token
    terms centred on ``reference`` (``centred_contributions``). values.sum(0) + rest is
    the text's pooled features times V either way."""
    if increments:
        return increment_contributions(hidden, pooled, V, reference)
    return centred_contributions(hidden, pooled, V, reference)


def coefficient_attributions(backbone, clf, text: str, *, states: TokenStates | None = None,
                             centre: bool = True, increments: bool | None = False) -> Attribution:
    """Exact (mean pooling) or approximate (max/last pooling) token attributions of ``text``.

    Under max or last pooling a logit is not a sum over tokens; the values are then the
    mean-pooling terms of the same head, ``exact`` is False and the page must say so.
    centre: centre the terms on the training texts' mean feature (module docstring);
    False gives the raw terms (the constant is then the logit with no token at all).
    increments: causal increments (module docstring) when True; None uses them on causal
    decoders (``is_causal``) and per-token terms on sentence encoders; False (the
    pages' choice) per-token terms.
    """
    s = clf.settings
    if states is None:
        states = token_states(backbone, text, prompt=s.prompt, max_length=s.max_length, echo=s.echo)
    V, b = linear_weights(clf)
    pooled = states.encoded.pool_mask()
    increments = is_causal(backbone) if increments is None else increments
    values, shift = token_terms(states.hidden, pooled, V, reference_states(clf) if centre else None,
                                increments=increments)
    X = _pooled(states.hidden, pooled, s.pooling)
    logits = clf.decision_features(X[None])[0].astype(np.float64)
    return Attribution(list(states.tokens), list(states.encoded.user_spans), values, b + shift, logits,
                       exact=s.pooling == "mean", increments=increments)


def group_attributions(group, clf, text: str, *, centre: bool = True,
                       states: Sequence[PartStates] | None = None,
                       increments: bool | None = False) -> list[tuple[str, Attribution]]:
    """Exact token attributions of a fused model, one ``Attribution`` per backbone.

    Each part's ``values`` are its own tokens' contributions (its tokenizer, its prompt);
    every part carries the model's one ``constant`` and ``logits``, and under mean pooling
    the parts' summed values plus the constant equal the logits. Each part's states are
    centred on its rows of ``reference_states``; the constant takes every part's shift.
    states: the parts' token states of ``text`` (``part_token_states``), when already read.
    increments: as in ``coefficient_attributions``, decided per part (None: causal
    increments on the causal decoder, per-token terms on the sentence encoder).
    """
    s = clf.settings
    V, b = linear_weights(clf)
    logits = clf.decision_features(features_for(group, [text], s))[0].astype(np.float64)
    reference = reference_states(clf) if centre else None
    if states is None:
        states = part_token_states(group, text, prompt=s.prompt, max_length=s.max_length, echo=s.echo)
    parts = []
    for (part, one), bb in zip(states, group.backbones):
        steps = is_causal(bb) if increments is None else increments
        values, shift = token_terms(one.hidden, one.encoded.pool_mask(), V[part.rows, :part.width],
                                    None if reference is None else reference[part.rows, :part.width],
                                    increments=steps)
        parts.append((part.name, one, values, steps))
        b = b + shift
    return [(name, Attribution(list(one.tokens), list(one.encoded.user_spans), values, b, logits,
                               exact=s.pooling == "mean", increments=steps))
            for name, one, values, steps in parts]


def _pooled(hidden: np.ndarray, pooled: np.ndarray, pooling: str) -> np.ndarray:
    """X (n_layers, hidden) of one text, pooled the way the classifier was trained."""
    if pooling == "last":  # the last pooled token: the last token, or the echo's last word
        return hidden[:, np.flatnonzero(pooled)[-1] if pooled.any() else -1]
    if pooling == "max":
        return hidden[:, pooled].max(1)
    return hidden[:, pooled].mean(1)


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
    over its occurrences, centred as the pages' attributions are (``reference_states``);
    pieces are lower-cased. Only pieces seen ``min_count`` times
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
    for k, (bb, prompt, V, reference) in enumerate(parts):
        step = None if progress is None else (
            lambda done, total, k=k: progress(k * total + done, len(parts) * total))
        for i, spans, values in _contributions_many(bb, V, reference, prompt, clf.settings.max_length,
                                                    texts, batch_size, step, echo=clf.settings.echo):
            _, totals = piece_totals(texts[i], spans, values - values.mean(1, keepdims=True))
            per_text[i] = per_text.get(i, 0) + totals
    seen: dict[str, list[tuple[np.ndarray, int]]] = defaultdict(list)
    for i, totals in sorted(per_text.items()):
        for (_, _, piece), row in zip(pieces_of(texts[i]), totals):
            seen[piece.lower()].append((row, i))
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
    """(backbone, prompt, V, reference) per backbone: V maps its hidden states to the
    logits; reference is its part of ``reference_states``."""
    V, _ = linear_weights(clf)
    m = reference_states(clf)
    return [(bb, prompt, V, m) if part is None else
            (bb, prompt, V[part.rows, :part.width], m[part.rows, :part.width])
            for part, bb, prompt in parts_of(backbone, clf.settings.prompt)]


def _contributions_many(backbone, V, reference, prompt, max_length: int, texts: list[str],
                        batch_size: int, progress, *, echo: bool = False):
    """Yield (index, user spans, centred token contributions (n_tokens, K)) for each text.

    Runs the backbone on length-sorted padded batches and keeps only the layers the
    head reads, so memory stays at (batch, n_tokens, hidden) per such layer.
    """
    layers = np.flatnonzero(np.abs(V).sum((1, 2)) > 0)
    encoded = encode(backbone.tokenizer, texts, prompt=prompt, max_length=max_length,
                     echo=uses_echo(backbone, echo))
    if not len(layers):  # a head that selected nothing: every token contributes 0
        yield from ((i, e.user_spans, np.zeros((len(e.input_ids), V.shape[2])))
                    for i, e in enumerate(encoded))
        return
    done = 0
    for idx, _, states in run_batches(backbone, [e.input_ids for e in encoded], batch_size=batch_size):
        hidden = np.stack([states[l].float().cpu().numpy() for l in layers])  # (L, B, T, H)
        for row, i in enumerate(idx):
            n = len(encoded[i].input_ids)
            h = hidden[:, row, :n].astype(np.float64) - reference[layers][:, None, :]
            yield i, encoded[i].user_spans, token_contributions(h, encoded[i].pool_mask(), V[layers])
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
