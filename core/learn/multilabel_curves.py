"""The multi-label learning curve: held-out macro-F1 against the number of labelled texts.

Like ``core.learn.curves.learning_curve`` (same shortcut: each class's head is refitted at
the C the model chose on all labels, with the model's feature spec and thresholds), but
folds are plain k-fold over texts (a text carries several classes, so there is no
stratum) and sizes count labelled texts. A class with fewer than 2 texts with it, or
without it, in a training subset is predicted absent there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.model_selection import KFold

from core.errors import NotEnoughLabels
from core.learn.curves import LearningCurve
from core.learn.head import Head
from core.learn.multilabel_metrics import multilabel_scores

__all__ = ["fixed_sets", "multilabel_learning_curve"]


def fixed_sets(Z_train: np.ndarray, Y_train: np.ndarray, Z_test: np.ndarray, Cs, thresholds,
               penalty: str, random_state: int = 0) -> np.ndarray:
    """bool (m, K): predicted sets of Z_test from heads refitted on Z_train at fixed C."""
    out = np.zeros((len(Z_test), Y_train.shape[1]), dtype=bool)
    for k in range(Y_train.shape[1]):
        y = Y_train[:, k].astype(np.int64)
        if min(y.sum(), len(y) - y.sum()) < 2:
            continue
        head = Head(penalty, random_state=random_state).fit(Z_train, y, C=float(Cs[k]))
        out[:, k] = head.predict_proba(Z_test)[:, 1] >= thresholds[k]
    return out


def multilabel_learning_curve(clf, X: np.ndarray, Y: np.ndarray, *, n_sizes: int = 5, seeds: int = 1,
                              n_splits: int = 3, random_state: int = 0,
                              progress: Callable[[int, int], None] | None = None) -> LearningCurve:
    """Held-out macro-F1 at several training sizes; ``sizes`` are labelled texts.

    clf: a trained MultiLabelClassifier; X: (n, n_layers, hidden) features of its labelled
    texts; Y: bool (n, K) their sets. ``counts`` of the result: texts carrying each class.
    """
    Y = np.asarray(Y, dtype=bool)
    if len(Y) < 3 * n_splits:
        raise NotEnoughLabels(f"The learning curve needs at least {3 * n_splits} labelled "
                              f"sentences; there are {len(Y)}. Label a few more first.", {})
    Z = clf.spec.transform(X)
    largest = len(Y) * (n_splits - 1) // n_splits
    sizes = np.unique(np.round(np.geomspace(min(10, largest), largest, n_sizes)).astype(int))
    scores = np.zeros((len(sizes), seeds * n_splits))
    for s in range(seeds):
        rng = np.random.default_rng(random_state + s)
        folds = KFold(n_splits, shuffle=True, random_state=random_state + s).split(Z)
        for f, (train, test) in enumerate(folds):
            order = rng.permutation(train)
            for i, size in enumerate(sizes):
                sub = order[:size]
                pred = fixed_sets(Z[sub], Y[sub], Z[test], clf.head.C_, clf.thresholds,
                                  clf.settings.penalty, random_state + s)
                scores[i, s * n_splits + f] = multilabel_scores(Y[test], pred, clf.classes)["macro_f1"]
            if progress:
                progress(s * n_splits + f + 1, seeds * n_splits)
    return LearningCurve(sizes, scores, tuple(int(c) for c in Y.sum(0)))
