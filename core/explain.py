"""Why the classifier decides what it does: exact coefficient attributions per token.

Under mean pooling every class logit is linear in the per-token hidden states
(DESIGN.md, "Exact token attributions"). With X[l] the mean of h[l, t] over the
pooled tokens S, the feature spec and the head compose to one linear map
V (n_layers, hidden, K) and a constant b, so

    logit[k] = b[k] + sum_{t in S} (1/|S|) sum_{l, j} h[l, t, j] V[l, j, k].

Each token's term is its exact contribution; the prompt's tokens contribute too and
are reported apart from the user's words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embed import TokenStates, token_states

__all__ = ["Attribution", "linear_weights", "token_contributions", "coefficient_attributions"]


@dataclass(frozen=True)
class Attribution:
    """Per-token contributions of one text to every class logit.

    tokens: decoded string of every token (sink and prompt tokens included).
    spans: per token, the (start, end) characters it covers in the user's text, or None.
    values: float64 (n_tokens, K); zero for tokens that are not pooled (the sink).
    constant: (K,) the logit with no token at all; logits: (K,) the model's logits.
    exact: True when values.sum(0) + constant == logits (mean pooling).
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
    """Exact (mean pooling) or approximate (max/last pooling) token attributions of ``text``."""
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
