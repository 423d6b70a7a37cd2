"""Scores of predicted label sets: micro/macro F1, per-class precision/recall/F1 with a
confusion summary, subset accuracy and Hamming loss.

Conventions (as scikit-learn's ``zero_division=0``): a class never predicted has
precision 0, a class never present recall 0, and F1 0 when both are 0. Macro-F1 is the
unweighted mean over classes; micro-F1 pools every class's counts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.errors import InputError

__all__ = ["multilabel_scores", "per_class_counts"]


def per_class_counts(Y_true: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    """int (K, 4): true positives, false positives, false negatives, true negatives per class.

    Y_true, Y_pred: bool (n, K). Example: Y_true [[1, 0], [1, 1]], Y_pred [[1, 1], [0, 1]]
    -> [[1, 0, 1, 0], [1, 1, 0, 0]].
    """
    T, P = _checked(Y_true, Y_pred)
    return np.stack([(T & P).sum(0), (~T & P).sum(0), (T & ~P).sum(0), (~T & ~P).sum(0)], 1)


def multilabel_scores(Y_true: np.ndarray, Y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Every multi-label score as plain floats and ints (JSON-able).

    Returns {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "per_class":
    {class: {"precision", "recall", "f1", "support", "tp", "fp", "fn", "tn"}}};
    "support" is how many texts carry the class.
    """
    T, P = _checked(Y_true, Y_pred)
    if T.shape[1] != len(classes):
        raise InputError(f"Got {T.shape[1]} columns of labels for {len(classes)} classes.")
    counts = per_class_counts(T, P)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    all_tp, all_fp, all_fn = tp.sum(), fp.sum(), fn.sum()
    micro = 2 * all_tp / (2 * all_tp + all_fp + all_fn) if 2 * all_tp + all_fp + all_fn else 0.0
    per_class = {c: {"precision": float(precision[k]), "recall": float(recall[k]),
                     "f1": float(f1[k]), "support": int(tp[k] + fn[k]), "tp": int(tp[k]),
                     "fp": int(fp[k]), "fn": int(fn[k]), "tn": int(counts[k, 3])}
                 for k, c in enumerate(classes)}
    return {"micro_f1": float(micro), "macro_f1": float(f1.mean()) if len(f1) else 0.0,
            "subset_accuracy": float((T == P).all(1).mean()) if len(T) else 0.0,
            "hamming_loss": float((T != P).mean()) if T.size else 0.0, "per_class": per_class}


def _checked(Y_true, Y_pred) -> tuple[np.ndarray, np.ndarray]:
    T, P = np.asarray(Y_true, dtype=bool), np.asarray(Y_pred, dtype=bool)
    if T.ndim != 2 or T.shape != P.shape:
        raise InputError(f"Expected true and predicted label sets as two (n, K) arrays of one "
                         f"shape, got {T.shape} and {P.shape}.")
    return T, P
