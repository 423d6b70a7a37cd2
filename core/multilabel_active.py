"""What to label next in a multi-label project, and the rows of its labelling table.

Uncertainty of a text: how close its classes' probabilities sit to their thresholds.
Each class scores ``1 - |p - t| / max(t, 1 - t)`` (1 on the threshold, 0 at the far end
of the probability range), and the text scores the mean of its ``_TOP`` closest classes,
so a text with a few undecided classes outranks one with a single borderline class
among many clear ones. Class balance: a class with few texts carrying it "needs" more
(1 for the class with fewest positives, 0 for the one with most, as
``core.active.balance_need``), and a text's need is the largest ``p_k * need_k`` over
its classes, the chance it brings a positive of a scarce class. Diversity is
``core.active.pick``'s, on the same hashed trigram vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.active import pick, text_vectors
from core.multilabel import effective_thresholds

__all__ = ["SetSuggestion", "SetTableRow", "class_need", "next_for_multilabel", "suggest_sets",
           "table_rows_multilabel", "threshold_uncertainty"]

_TOP = 3
_POOL = 30
_RECENT = 20
_BALANCE = 0.7


@dataclass(frozen=True)
class SetSuggestion:
    """A text to label next with the latest model's guessed set (None without a model)."""

    text_id: int
    text: str
    uncertainty: float | None
    reason: str
    guess: tuple[str, ...] | None = None
    probs: dict[str, float] | None = None


@dataclass(frozen=True)
class SetTableRow:
    """A row of the table: the human set (None unlabelled, () none of these) and the guess."""

    text_id: int
    text: str
    labels: tuple[str, ...] | None
    predicted: tuple[str, ...] | None
    probs: dict[str, float] | None


def threshold_uncertainty(probs: np.ndarray, thresholds: np.ndarray, top: int = _TOP) -> np.ndarray:
    """(n,) in [0, 1]: mean closeness to the threshold of each row's ``top`` closest classes.

    probs: (n, K); thresholds: (K,). Example with thresholds 0.5: [[0.5, 0.9], [1.0, 0.0]],
    top=1 -> [1.0, 0.0].
    """
    probs = np.asarray(probs, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    closeness = 1.0 - np.abs(probs - t) / np.maximum(t, 1.0 - t)
    top = max(1, min(top, probs.shape[1]))
    return np.clip(-np.sort(-closeness, axis=1)[:, :top].mean(1), 0.0, 1.0)


def class_need(counts: dict[str, int]) -> dict[str, float]:
    """{class: need}: 1 for the class with fewest positives, 0 for the most, linear between.

    Example: {"a": 20, "b": 2, "c": 11} -> {"a": 0.0, "b": 1.0, "c": 0.5}.
    """
    if not counts:
        return {}
    most, fewest = max(counts.values()), min(counts.values())
    spread = max(most - fewest, 1)
    return {c: (most - n) / spread for c, n in counts.items()}


def suggest_sets(candidates: Sequence[tuple[int, str]], probs: dict[int, dict[str, float]] | None,
                 thresholds: dict[str, float] | None, recent_texts: Sequence[str] = (), *, n: int = 1,
                 counts: dict[str, int] | None = None, diversity: float = 0.5,
                 balance: float = _BALANCE, random_state: int = 0) -> list[SetSuggestion]:
    """The next n texts among ``candidates`` ((text_id, text) pairs).

    probs: {text_id: {class: p}} of the latest model (None: no model yet, a seeded random
    order); thresholds: {class: t}; counts: texts carrying each class. The score is
    ``(1 - w) * uncertainty + w * need`` with ``w = balance * (1 - fewest / most)``.
    """
    candidates = list(candidates)
    if not candidates:
        return []
    if probs is None or not thresholds:
        order = np.random.default_rng(random_state).permutation(len(candidates))[:n]
        return [SetSuggestion(*candidates[i], None, "random: no model yet") for i in order]
    classes = list(thresholds)
    P = np.array([[probs.get(tid, {}).get(c, np.nan) for c in classes] for tid, _ in candidates])
    known = ~np.isnan(P).any(1)
    scores = np.ones(len(candidates))  # a text added after the model is fully uncertain
    if known.any():
        scores[known] = threshold_uncertainty(P[known], np.array([thresholds[c] for c in classes]))
    if counts and max(counts.values()) > 0:
        need = np.array([class_need(counts).get(c, 0.0) for c in classes])
        weight = balance * (1.0 - min(counts.values()) / max(counts.values()))
        per_text = np.where(known, np.nan_to_num(P * need).max(1), need.mean())
        scores = (1 - weight) * scores + weight * per_text
    pool = np.argsort(-scores, kind="stable")[:max(_POOL, n)]
    vectors = text_vectors([candidates[i][1] for i in pool])
    recent = text_vectors(list(recent_texts)[-_RECENT:]) if recent_texts else None
    chosen = [pool[i] for i in pick(scores[pool], vectors, recent, n=n, diversity=diversity)]
    return [SetSuggestion(*candidates[i], float(scores[i]), "the model is unsure") for i in chosen]


def _latest(store, project_id: int):
    """(latest model or None, {text_id: Prediction}, {class: threshold} or None)."""
    model = store.latest_model(project_id)
    if model is None:
        return None, {}, None
    preds = {p.text_id: p for p in store.predictions(model.id)}
    return model, preds, effective_thresholds(store.project(project_id), model)


def next_for_multilabel(store, project_id: int, *, recent_texts: Sequence[str] = (),
                        skip: Sequence[int] = (), prefer: int | None = None, n: int = 1,
                        random_state: int = 0) -> list[SetSuggestion]:
    """``core.active.next_for_project`` for a multi-label project: the guesses are sets."""
    rows = [(r.id, r.text) for r in store.unlabelled(project_id)]
    model, preds, thresholds = _latest(store, project_id)
    probs = {tid: p.probs for tid, p in preds.items()} if model is not None else None
    first = [r for r in rows if r[0] == prefer]
    skipped = set(skip)
    fresh = [r for r in rows if r[0] not in skipped and r[0] != prefer]
    picked = [SetSuggestion(*first[0], None, "on screen")] if first else []
    if len(picked) < n:
        picked += suggest_sets(fresh or [r for r in rows if r[0] != prefer], probs, thresholds,
                               recent_texts, n=n - len(picked), counts=store.label_counts(project_id),
                               random_state=random_state)
    return [_with_guess(s, preds.get(s.text_id), thresholds) for s in picked]


def _with_guess(s: SetSuggestion, pred, thresholds) -> SetSuggestion:
    if pred is None or not thresholds:
        return s
    guess = tuple(c for c, t in thresholds.items() if pred.probs.get(c, 0.0) >= t)
    P = np.array([[pred.probs.get(c, 0.0) for c in thresholds]])
    return SetSuggestion(s.text_id, s.text, float(threshold_uncertainty(P, list(thresholds.values()))[0]),
                         s.reason, guess, dict(pred.probs))


def table_rows_multilabel(store, project_id: int) -> list[SetTableRow]:
    """Every text with its human set and the latest model's predicted set, by text id."""
    labels = {r.text_id: r.labels for r in store.label_sets(project_id)}
    _, preds, thresholds = _latest(store, project_id)
    rows = []
    for r in store.texts(project_id):
        pred = preds.get(r.id)
        guess = (tuple(c for c, t in thresholds.items() if pred.probs.get(c, 0.0) >= t)
                 if pred is not None else None)
        rows.append(SetTableRow(r.id, r.text, labels.get(r.id), guess,
                                dict(pred.probs) if pred is not None else None))
    return rows
