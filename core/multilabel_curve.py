"""Learning curve of a multi-label model: held-out macro-F1 against labelled sentences.

The single-label curve (``core.learn.curves.learning_curve``) counts labels per class;
a sentence of a multi-label project may carry several classes or none, so this curve
counts labelled sentences instead. For each seed a shuffled k-fold split holds out a
fold; from the rest, the first ``size`` shuffled sentences train a one-vs-rest head at
the model's own C and thresholds per class (no inner CV), scored by macro-F1 on the
held-out fold. A size is kept only when every run's subset has at least 2 sentences
with and 2 without each class (the heads need both).

Shortcut admitted: the refits keep the model's features, C and thresholds, which were
chosen on all labels, so the curve is slightly optimistic (as the single-label one).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import KFold

from core.errors import NotEnoughLabels
from core.learn.curves import LearningCurve
from core.learn.head import MIN_LABELS_PER_CLASS
from core.learn.multilabel import OneVsRestHead, label_matrix
from core.learn.multilabel_metrics import multilabel_scores

__all__ = ["multilabel_curve_figure", "multilabel_learning_curve"]


def _usable(Y: np.ndarray) -> bool:
    pos = Y.sum(0)
    return bool((pos >= MIN_LABELS_PER_CLASS).all() and (len(Y) - pos >= MIN_LABELS_PER_CLASS).all())


def multilabel_learning_curve(clf, X: np.ndarray, label_sets: Sequence[Sequence[str]], *,
                              n_sizes: int = 6, seeds: int = 2, n_splits: int = 5,
                              random_state: int = 0,
                              progress: Callable[[int, int], None] | None = None) -> LearningCurve:
    """Macro-F1 of held-out folds at growing numbers of labelled sentences.

    clf: a MultiLabelClassifier; X: float32 (n, n_layers, hidden) pooled features of the
    n labelled sentences; label_sets: their n sets (``()``: none of these). Returns a
    LearningCurve whose ``sizes`` are labelled sentences (not per class), ``scores``
    (k, runs) macro-F1, ``counts`` the sentences carrying each class now. Raises
    NotEnoughLabels when no size can be trained.
    """
    Y = label_matrix(label_sets, clf.classes)
    Z = clf.spec.transform(X)
    k = max(2, min(n_splits, len(Y) // 4))
    top = len(Y) * (k - 1) // k
    sizes = np.unique(np.round(np.geomspace(max(4, top // 8), max(top, 4), n_sizes)).astype(int))
    scores = np.full((len(sizes), seeds * k), np.nan)
    total, done = seeds * k, 0
    for s in range(seeds):
        rng = np.random.default_rng(random_state + s)
        for f, (train, test) in enumerate(KFold(k, shuffle=True, random_state=random_state + s).split(Z)):
            order = rng.permutation(train)
            for i, size in enumerate(sizes):
                sub = order[:size]
                if not _usable(Y[sub]):
                    continue
                head = OneVsRestHead(clf.settings.penalty, random_state=random_state + s, n_jobs=1)
                head.fit(Z[sub], Y[sub], Cs=clf.head.C_, thresholds=clf.thresholds)
                scores[i, s * k + f] = multilabel_scores(Y[test], head.predict(Z[test]),
                                                         clf.classes)["macro_f1"]
            done += 1
            if progress:
                progress(done, total)
    kept = ~np.isnan(scores).any(1)
    if not kept.any():
        raise NotEnoughLabels("The learning curve needs more labelled sentences: every class "
                              f"needs at least {MIN_LABELS_PER_CLASS} sentences with it and "
                              f"{MIN_LABELS_PER_CLASS} without in each training subset.", {})
    return LearningCurve(sizes[kept], scores[kept], tuple(int(c) for c in Y.sum(0)))


def multilabel_curve_figure(curve: LearningCurve, current: float | None = None):
    """Held-out macro-F1 (mean ± std over runs) against labelled sentences; the model's own
    CV macro-F1 on all its labels as a dashed line when given."""
    import plotly.graph_objects as go

    x, mean, std = curve.sizes, curve.mean, curve.std
    fig = go.Figure([
        go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[mean + std, (mean - std)[::-1]], fill="toself",
                   mode="lines", line=dict(width=0), opacity=0.2, name="± 1 std", hoverinfo="skip"),
        go.Scatter(x=x, y=mean, mode="lines+markers", name="held-out macro-F1",
                   hovertemplate="%{x} sentences: %{y:.0%}<extra></extra>")])
    if current is not None:
        fig.add_hline(y=current, line=dict(dash="dash", color="gray"),
                      annotation_text="model (all labels)", annotation_position="bottom right")
    fig.update_layout(title="Learning curve (macro-F1)", height=380, margin=dict(t=40, b=40),
                      xaxis=dict(title="labelled sentences", tickvals=[int(v) for v in x]),
                      yaxis=dict(title="macro-F1", tickformat=".0%", range=[0, 1.02]),
                      legend=dict(orientation="h", y=-0.25))
    return fig
