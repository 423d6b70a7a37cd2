"""Multi-label heads: one sparse logistic head per class (one-vs-rest) on shared features.

A multi-label project lets a text carry zero, one or many classes. Each class k gets
its own binary :class:`core.learn.head.Head` (standardise, balanced penalised LR, C
chosen by CV) on the same head input Z = spec.transform(X); class balance is handled
per class by the head's balanced weights. A class's probability is the sigmoid of its
log-odds, and it is predicted when the probability reaches the class's threshold.

Thresholds: 0.5 until a class has :data:`THRESHOLD_MIN_LABELS` positives and as many
negatives; from then on the threshold of best out-of-fold F1 on a grid (ties go to the
one nearest 0.5). Users may override a class's threshold (``core.multilabel``).

Cost: CV per class is what makes a submit slow (28 classes x a 5-fold C path). A
submit therefore refits each class at the C its last CV chose (``fit(..., Cs=...)``,
one solve per class), and the caller reruns the CV when the labels have grown (see
``core.multilabel``), as the feature spec is re-selected.

The feature spec is chosen once, on the union of the classes (``select_union_features``):
feature selection per class would cost K times the selection of a single-label project.
Shortcut admitted: the selection sees a single-label stand-in for the label sets (each
text's rarest class, or "none"), so it favours features that separate classes the way
a single-label problem would.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError, NotEnoughLabels
from core.learn.classifier import Classifier, Settings, features_for, jsonable
from core.learn.features import OOF_KEY, FeatureSpec, select_features
from core.learn.head import MIN_LABELS_PER_CLASS, Head
from core.learn.multilabel_metrics import multilabel_scores
from core.learn.solver import BLAS

__all__ = ["FORMAT", "THRESHOLD_MIN_LABELS", "MultiLabelClassifier", "OneVsRestHead",
           "classifier_from_state", "choose_threshold", "is_multi_label_state", "label_matrix",
           "missing_per_class", "not_enough_multilabel", "select_union_features", "sets_from_proba",
           "train_multilabel"]

FORMAT = "tenshot.ovr/1"
#: positives and negatives a class needs before its threshold is chosen by CV (else 0.5)
THRESHOLD_MIN_LABELS = 5
_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def label_matrix(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Y: bool (n, K), Y[i, k] when text i carries class k; an empty set is a row of False.

    Example: [("a",), (), ("a", "b")] with classes ["a", "b"] -> [[1, 0], [0, 0], [1, 1]].
    """
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({c for s in label_sets for c in s if c not in index})
    if unknown:
        raise InputError(f"Labels {unknown} are not classes of this project ({', '.join(classes)}).")
    Y = np.zeros((len(label_sets), len(classes)), dtype=bool)
    for i, labels in enumerate(label_sets):
        Y[i, [index[c] for c in labels]] = True
    return Y


def missing_per_class(Y: np.ndarray, classes: Sequence[str],
                      per_side: int = MIN_LABELS_PER_CLASS) -> dict[str, tuple[int, int]]:
    """{class: (more texts with it, more texts without it)} for classes short of either.

    Example: 10 texts, "food" on 1 of them, "staff" on 9 -> {"food": (1, 0), "staff": (0, 1)}.
    """
    pos = np.asarray(Y, dtype=bool).sum(0)
    neg = len(Y) - pos
    return {c: (max(0, per_side - int(p)), max(0, per_side - int(q)))
            for c, p, q in zip(classes, pos, neg) if p < per_side or q < per_side}


def not_enough_multilabel(missing: dict[str, tuple[int, int]],
                          per_side: int = MIN_LABELS_PER_CLASS) -> NotEnoughLabels:
    """The refusal naming, per class, how many more texts with and without it are needed.

    Example: {"food": (2, 0), "staff": (0, 1)} -> 'Label 2 more sentences with “food” and
    1 more without “staff” to train a first model (every class needs at least 2
    sentences with it and 2 without).' ``missing`` of the error maps each class to the
    total it needs (here {"food": 2, "staff": 1}).
    """
    parts = []
    for c, (pos, neg) in missing.items():
        if pos:
            parts.append(f"{pos} more {'sentence' if pos == 1 else 'sentences'} with “{c}”")
        if neg:
            parts.append(f"{neg} more without “{c}”")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return NotEnoughLabels(
        f"Label {listed} to train a first model (every class needs at least {per_side} "
        f"sentences with it and {per_side} without; “none of these” counts as without for "
        "every class).", missing={c: pos + neg for c, (pos, neg) in missing.items()})


def choose_threshold(proba: np.ndarray, y: np.ndarray, *,
                     min_labels: int = THRESHOLD_MIN_LABELS) -> float:
    """The decision threshold of best F1 for out-of-fold probabilities of one class.

    proba: float (R, n) or (n,), out-of-fold probabilities (R repeats of the CV); y: bool
    (n,). 0.5 while the class has fewer than ``min_labels`` positives or negatives.
    F1 is averaged over repeats; ties go to the threshold nearest 0.5.
    """
    y = np.asarray(y, dtype=bool)
    proba = np.atleast_2d(proba)
    if y.sum() < min_labels or (~y).sum() < min_labels:
        return 0.5
    pred = proba[:, None, :] >= _GRID[None, :, None]  # (R, grid, n)
    tp = (pred & y).sum(-1)
    fp = (pred & ~y).sum(-1)
    fn = (~pred & y).sum(-1)
    f1 = (2 * tp / np.maximum(2 * tp + fp + fn, 1)).mean(0)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(_GRID[best[np.argmin(np.abs(_GRID[best] - 0.5))]])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


class OneVsRestHead:
    """K binary Heads on one Z (n, d); fitted Y is bool (n, K), one class per thread
    (``n_jobs``, default up to 4), each head's CV on that one thread.

    After ``fit``: ``heads_`` (K Heads), ``coef_`` (K, d) and ``intercept_`` (K,) give
    each class's log-odds on standardised Z; ``mean_``, ``scale_`` (d,) (shared: every
    head standardises the same Z); ``C_`` (K,); ``thresholds_`` (K,) chosen by CV
    (0.5 for a class refitted at a given C, or with few labels); ``oof_proba_``
    (n, K) out-of-fold probabilities (None when C was given or after ``from_state``).
    """

    def __init__(self, penalty="l1", *, l1_ratio=0.5, n_splits=5, n_repeats=1, random_state=0,
                 n_jobs=None):
        self.penalty, self.l1_ratio = penalty, l1_ratio
        self.n_splits, self.n_repeats = n_splits, n_repeats
        self.random_state, self.n_jobs = random_state, n_jobs

    def fit(self, Z, Y, *, Cs=None, thresholds=None):
        """Fit every class; Cs (K,): refit at these C (no CV), keeping ``thresholds``."""
        Z = np.asarray(Z, dtype=np.float64)
        Y = np.asarray(Y, dtype=bool)
        if Y.ndim != 2 or len(Y) != len(Z):
            raise InputError(f"Expected Y of shape (n, K) for Z of shape (n, d), got {Y.shape} "
                             f"and {Z.shape}.")
        K = Y.shape[1]

        def one(k):  # one thread per class: the solver releases the GIL
            return Head(self.penalty, l1_ratio=self.l1_ratio, n_splits=self.n_splits,
                        n_repeats=self.n_repeats, random_state=self.random_state,
                        n_jobs=1).fit(Z, Y[:, k].astype(np.int64), C=None if Cs is None else Cs[k])

        n_jobs = min(K, self.n_jobs or min(os.cpu_count() or 1, 4))
        # one BLAS thread around the whole pool: each Head.fit's own limit then nests inside it
        with BLAS.limit(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=n_jobs) as pool:
            self.heads_ = list(pool.map(one, range(K)))
        if Cs is None:
            self.oof_proba_ = np.stack([_sigmoid(h.oof_logits_[..., 1] - h.oof_logits_[..., 0]).mean(0)
                                        for h in self.heads_], 1)
            self.thresholds_ = np.array([choose_threshold(
                _sigmoid(h.oof_logits_[..., 1] - h.oof_logits_[..., 0]), Y[:, k])
                for k, h in enumerate(self.heads_)])
        else:
            self.oof_proba_ = None
            self.thresholds_ = (np.full(K, 0.5) if thresholds is None
                                else np.asarray(thresholds, dtype=np.float64).copy())
        self._collect()
        return self

    def _collect(self):
        heads = self.heads_
        self.mean_, self.scale_ = heads[0].mean_, heads[0].scale_
        self.coef_ = np.stack([h.coef_[1] - h.coef_[0] for h in heads])
        self.intercept_ = np.array([h.intercept_[1] - h.intercept_[0] for h in heads])
        self.C_ = np.array([h.C_ for h in heads])
        self.n_features_in_, self.n_classes_ = heads[0].n_features_in_, len(heads)

    def decision_function(self, Z):
        """Log-odds, shape (n, K), for Z of shape (n, d)."""
        if not hasattr(self, "heads_"):
            raise InputError("This head is not trained yet: call fit() first.")
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_features_in_:
            raise InputError(f"Expected features of shape (n, {self.n_features_in_}), got {Z.shape}. "
                             "Were they made with the same feature spec?")
        return ((Z - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def predict_proba(self, Z):
        """Per-class probabilities, shape (n, K); rows need not sum to 1."""
        return _sigmoid(self.decision_function(Z))

    def predict(self, Z, thresholds=None):
        """bool (n, K): the predicted sets at ``thresholds`` (default: ``thresholds_``)."""
        t = self.thresholds_ if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        return self.predict_proba(Z) >= t

    def linear_map(self):
        """(W, b) with W (d, K), b (K,) such that log-odds == Z @ W + b on raw Z."""
        scaled = self.coef_ / self.scale_
        return scaled.T.copy(), self.intercept_ - scaled @ self.mean_

    def selected_features(self):
        """Indices (ascending) of the columns of Z with a non-zero weight for any class."""
        return np.flatnonzero((self.coef_ != 0).any(0))

    def to_state(self):
        """(params, arrays): JSON-able params and named float64 arrays; no pickle."""
        params = {"format": FORMAT, "penalty": self.penalty, "l1_ratio": self.l1_ratio,
                  "n_splits": self.n_splits, "n_repeats": self.n_repeats,
                  "random_state": self.random_state, "thresholds_": self.thresholds_.tolist(),
                  "heads": []}
        arrays = {}
        for k, head in enumerate(self.heads_):
            head_params, head_arrays = head.to_state()
            params["heads"].append(head_params)
            arrays.update({f"class{k}.{name}": a for name, a in head_arrays.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        """Rebuild a fitted OneVsRestHead from ``to_state()`` output."""
        if params.get("format") != FORMAT:
            raise InputError(f"Not a saved tenshot one-vs-rest head (format {params.get('format')!r}).")
        head = cls(params["penalty"], l1_ratio=params["l1_ratio"], n_splits=params["n_splits"],
                   n_repeats=params["n_repeats"], random_state=params["random_state"])
        head.heads_ = [Head.from_state(p, {name.split(".", 1)[1]: a for name, a in arrays.items()
                                           if name.startswith(f"class{k}.")})
                       for k, p in enumerate(params["heads"])]
        head.thresholds_ = np.asarray(params["thresholds_"], dtype=np.float64)
        head.oof_proba_ = None
        head._collect()
        return head


@dataclass
class MultiLabelClassifier:
    """Everything needed to predict label sets from pooled features.

    classes: class names in the order of the head's outputs; ``head.thresholds_`` the
    thresholds chosen in training (``thresholds`` arguments override them).
    Probabilities are the sigmoid of each class's log-odds (no temperature).
    """

    classes: list[str]
    settings: Settings
    spec: FeatureSpec
    head: OneVsRestHead
    metrics: dict = field(default_factory=dict)
    multi_label = True  # a class attribute: lets callers tell the two classifier kinds apart

    @property
    def thresholds(self) -> np.ndarray:
        """(K,) the decision thresholds chosen in training."""
        return self.head.thresholds_

    @property
    def calibration(self):
        """None: multi-label probabilities are not temperature-scaled."""
        return None

    def decision_features(self, X: np.ndarray) -> np.ndarray:
        """Log-odds (n, K) from X: float32 (n, n_layers, hidden) pooled features."""
        return self.head.decision_function(self.spec.transform(X))

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """Per-class probabilities (n, K) from pooled features."""
        return _sigmoid(self.decision_features(X))

    def predict_proba(self, backbone, texts: Sequence[str], *, cache=None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Per-class probabilities (n, K) of texts, read up to the deepest row the spec reads."""
        return self.predict_proba_features(features_for(backbone, texts, self.settings, cache=cache,
                                                        progress=progress, rows=self.spec.layers))

    def predict(self, backbone, texts: Sequence[str], *, thresholds=None, **kwargs) -> list[tuple[str, ...]]:
        """The predicted set of each text (a tuple of class names, ``()`` for none)."""
        return sets_from_proba(self.predict_proba(backbone, texts, **kwargs), self.classes,
                               self.thresholds if thresholds is None else thresholds)

    def class_classifier(self, name: str) -> Classifier:
        """A single-label view of one class: classes ``["not <name>", name]`` and that class's
        binary head, for the per-class explanation, stability and report code paths."""
        if name not in self.classes:
            raise InputError(f"There is no class {name!r}; the classes are {', '.join(self.classes)}.")
        k = self.classes.index(name)
        head = self.head.heads_[k]
        return Classifier([f"not {name}", name], self.settings, self.spec, head,
                          {"C": float(head.C_), "n_labels": self.metrics.get("n_labels"),
                           "per_class": self.metrics.get("per_class", {}).get(name, {})})

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able params and named arrays; the inverse is ``classifier_from_state``."""
        head_params, arrays = self.head.to_state()
        params = {"task_type": "multi_label", "classes": self.classes,
                  "settings": self.settings.to_dict(), "spec": self.spec.to_json(),
                  "head": head_params, "metrics": self.metrics}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "MultiLabelClassifier":
        return cls(list(params["classes"]), Settings.from_dict(params["settings"]),
                   FeatureSpec.from_json(params["spec"]), OneVsRestHead.from_state(params["head"], arrays),
                   dict(params.get("metrics", {})))


def is_multi_label_state(params: dict) -> bool:
    """Whether saved classifier params (a model version's, a bundle's) are multi-label."""
    return isinstance(params, dict) and params.get("task_type") == "multi_label"


def classifier_from_state(params: dict, arrays: dict[str, np.ndarray]):
    """A ``Classifier`` or a ``MultiLabelClassifier``, whichever the params describe."""
    if is_multi_label_state(params):
        return MultiLabelClassifier.from_state(params, arrays)
    return Classifier.from_state(params, arrays)


def sets_from_proba(proba: np.ndarray, classes: Sequence[str], thresholds) -> list[tuple[str, ...]]:
    """Predicted sets: for each row of proba (n, K) the classes at or above their threshold."""
    hits = np.asarray(proba) >= np.asarray(thresholds, dtype=np.float64)
    return [tuple(c for c, hit in zip(classes, row) if hit) for row in hits]


def select_union_features(X: np.ndarray, Y: np.ndarray, *, mode: str, penalty: str,
                          random_state: int = 0) -> tuple[FeatureSpec, dict]:
    """One feature spec for every class (module docstring), and the selection's report.

    The stand-in label of a text is its rarest class (K for "none of these"); stand-in
    classes with fewer than 2 texts sit out the selection. With fewer than two left the
    middle layer is used.
    """
    counts = Y.sum(0)
    order = np.argsort(counts, kind="stable")
    rarest = np.full(len(Y), Y.shape[1])
    for k in order[::-1]:  # the rarest class written last wins
        rarest[Y[:, k]] = k
    kept_classes = [k for k in np.unique(rarest) if (rarest == k).sum() >= 2]
    keep = np.isin(rarest, kept_classes)
    if len(kept_classes) < 2:
        middle = X.shape[1] // 2
        return FeatureSpec("layer", (middle,), "single", tuple(X.shape[1:])), {"mode": "layer",
                                                                               "fallback": True}
    y = np.searchsorted(np.array(kept_classes), rarest[keep])
    spec, report = select_features(X[keep], y, mode=mode, penalty=penalty, random_state=random_state)
    report.pop(OOF_KEY, None)
    return spec, report


def train_multilabel(X: np.ndarray, label_sets: Sequence[Sequence[str]], classes: Sequence[str],
                     settings: Settings, *, spec: FeatureSpec | None = None, Cs=None, thresholds=None,
                     random_state: int = 0) -> MultiLabelClassifier:
    """Fit a one-vs-rest classifier on pooled features X (n, n_layers, hidden).

    label_sets: n sets of class names (``()``: none of these). spec: reuse this feature
    spec (else selected on the union); Cs (K,) and thresholds (K,): refit at these C with
    these thresholds, skipping the CV (a fast submit). Raises NotEnoughLabels naming,
    per class, how many more texts with and without it are needed.
    """
    settings.check()
    classes = list(classes)
    Y = label_matrix(label_sets, classes)
    missing = missing_per_class(Y, classes)
    if missing:
        raise not_enough_multilabel(missing)
    report: dict = {}
    if spec is None:
        spec, report = select_union_features(X, Y, mode=settings.mode, penalty=settings.penalty,
                                             random_state=random_state)
    Z = spec.transform(X)
    head = OneVsRestHead(settings.penalty, random_state=random_state).fit(Z, Y, Cs=Cs,
                                                                          thresholds=thresholds)
    metrics = {"n_labels": int(len(Y)), "n_none": int((~Y.any(1)).sum()),
               "n_features": int(Z.shape[1]), "n_selected": int(len(head.selected_features())),
               "C": head.C_.tolist(), "thresholds": head.thresholds_.tolist(),
               "selection": jsonable(report), "cv_at_labels": None}
    if head.oof_proba_ is not None:
        cv = multilabel_scores(Y, head.oof_proba_ >= head.thresholds_, classes)
        metrics.update({f"cv_{k}": v for k, v in cv.items() if k != "per_class"},
                       per_class=cv["per_class"], cv_at_labels=int(len(Y)),
                       cv_accuracy=cv["subset_accuracy"])
    return MultiLabelClassifier(classes, settings, spec, head, metrics)
