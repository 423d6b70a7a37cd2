"""The classifier head: standardise, then penalised logistic regression, C chosen by CV.

Multinomial (softmax) logistic regression with an L1, elastic-net or L2 penalty on
standardised features and balanced class weights. It minimises scikit-learn's objective
``C * sum_i s_i * loss_i + l1_ratio * |W|_1 + (1 - l1_ratio) / 2 * |W|^2`` (intercept
unpenalised), so its probabilities match `LogisticRegression(class_weight="balanced")`
at the same C. Binary problems are fitted with one weight row, as sklearn does, and
stored as two rows ``[-w/2, w/2]``: every caller sees K logits whose softmax is the
probability.

Why not scikit-learn's solvers: in 1.9 only 'saga' fits multinomial L1 / elastic-net,
and it takes seconds per fit on few-shot LLM features (n << d, correlated columns);
'liblinear' is binary-only. ``core.learn.solver`` carries a small glmnet-style solver instead
(proximal Newton + coordinate descent, working sets, warm starts along the C path),
compiled with numba (a dependency of shap). L2 is solved exactly in the span of the
training rows, where the columns are orthogonal and coordinate descent is quick. The
first fit in a fresh install compiles the kernels (5-10 s); numba caches them on disk.

C is chosen by the lowest out-of-fold log-loss over a 6-point grid relative to C_min;
on SmolLM2 features of SST-2, CR, TREC and AG News (8-64 labels per class) this beat
choosing by accuracy by 0.3-0.5 points of test accuracy for L1 and L2.

Shortcut admitted: features are standardised once on all labelled rows, not per fold
(a label-free leak that does not move the choice of C noticeably).
"""

from concurrent.futures import ThreadPoolExecutor
import os

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold

from core.errors import InputError, NotEnoughLabels
from core.learn.solver import BLAS, c_min, fit_path, softmax, standardise

__all__ = ["MIN_LABELS_PER_CLASS", "Head", "check_labels", "labels_missing", "min_c",
           "not_enough_labels"]

_PENALTIES = ("l1", "elasticnet", "l2")
# C grids, as multiples of C_min: the smallest C at which an L1 model is non-empty
_SPARSE_RATIOS = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
_L2_RATIOS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_CV_TOL = 1e-4  # solver tolerance inside CV, where only the predictions matter
# from this many labels in the smallest class one CV repeat picks the same C as two
# (42 of 48 benchmark draws) at the same test accuracy, in half the time
_ONE_REPEAT_AT = 50
# the fewest labels per class a model is trained on (its CV needs 2 folds per class)
MIN_LABELS_PER_CLASS = 2


def labels_missing(counts: dict[str, int], per_class: int = MIN_LABELS_PER_CLASS) -> dict[str, int]:
    """How many more labels each class needs for a first model: {class: n}, zeros left out.

    Example: {"neg": 3, "pos": 1, "neutral": 0} -> {"pos": 1, "neutral": 2}.
    """
    return {c: per_class - n for c, n in counts.items() if n < per_class}


def not_enough_labels(missing: dict[str, int],
                      per_class: int = MIN_LABELS_PER_CLASS) -> NotEnoughLabels:
    """The one refusal for too few labels, naming what each short class needs.

    Example: {"positive": 2, "negative": 1} -> 'Label 2 more “positive” and 1 more
    “negative” sentence to train a first model (every class needs at least 2 labels).'
    """
    wanted = {c: n for c, n in missing.items() if n > 0}
    parts = [f"{n} more “{c}”" for c, n in wanted.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "sentence" if parts and list(wanted.values())[-1] == 1 else "sentences"
    return NotEnoughLabels(f"Label {listed} {noun} to train a first model (every class needs at "
                           f"least {per_class} labels).", missing=wanted)


def check_labels(y, classes, *, min_per_class=MIN_LABELS_PER_CLASS):
    """Refuse to train while some class has fewer than `min_per_class` labels.

    y: int array of shape (n,), class indices into `classes`.
    Raises NotEnoughLabels whose `missing` maps each short class to how many more
    labels it needs, e.g. ``{"positive": 2, "negative": 1}``.
    """
    classes, y = list(classes), np.asarray(y)
    if len(classes) < 2:
        raise InputError(f"A classifier needs at least 2 classes, got {len(classes)}: "
                         f"{classes}. Add another class first.")
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise InputError(f"Labels must be class indices 0..{len(classes) - 1}, "
                         f"got values from {y.min()} to {y.max()}.")
    counts = np.bincount(y.astype(np.int64), minlength=len(classes))
    missing = labels_missing(dict(zip(classes, counts.tolist())), min_per_class)
    if missing:
        raise not_enough_labels(missing, min_per_class)


def min_c(Z, y):
    """The smallest C at which `Head("l1")` on Z (n, d), y (n,) keeps any feature."""
    Z, y, K = _check_fit_input(Z, y, need_cv=False)
    return c_min(standardise(Z)[0], y, K)


def _macro_f1(y, pred, K):
    """Unweighted mean over classes of F1 (0 for a class never predicted nor present)."""
    tp = np.bincount(y[pred == y], minlength=K)
    denom = np.bincount(y, minlength=K) + np.bincount(pred, minlength=K)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def _cv_path(Z, y, Cs, l1_ratio, K, splits, n_splits, n_jobs):
    """Out-of-fold logits at every C.

    splits: list of (train, test) index arrays, `n_splits` consecutive ones per repeat.
    Returns an array of shape (n_repeats, len(Cs), n, K).
    """
    def one_fold(split):
        tr, te = split
        Ws, bs = fit_path(Z[tr], y[tr], Cs, l1_ratio, K, _CV_TOL)
        return np.stack([Z[te] @ W + b for W, b in zip(Ws, bs)])

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        fold_logits = list(pool.map(one_fold, splits))
    out = np.empty((len(splits) // n_splits, len(Cs), len(y), K))
    for i, ((_, te), logits) in enumerate(zip(splits, fold_logits)):
        out[i // n_splits][:, te] = logits
    return out


def _cv_scores(oof, y, K):
    """Accuracy, macro F1 and log-loss per C, averaged over repeats; oof (R, m, n, K)."""
    pred = oof.argmax(-1)
    acc = (pred == y).mean(-1).mean(0)
    f1 = np.array([[_macro_f1(y, p, K) for p in rep] for rep in pred]).mean(0)
    p_true = np.take_along_axis(softmax(oof), y[None, None, :, None], -1)
    loss = -np.log(np.maximum(p_true, 1e-300)).mean((0, 2, 3))
    return acc, f1, loss


class Head:
    """Standardise, then balanced penalised logistic regression with C chosen by CV.

    penalty: "l1" | "elasticnet" (mixing `l1_ratio`) | "l2". Cs: the C grid (default:
    6 multiples of the smallest C at which an L1 model is non-empty). CV: stratified
    `n_splits`-fold (capped by the smallest class, at least 2), repeated `n_repeats`
    times (once when every class has 50+ labels), on up to `n_jobs` threads.
    tol: the final fit's solver tolerance (relative decrease of the objective).

    Z is the head's input, float array of shape (n, d); y holds class indices 0..K-1,
    shape (n,). After `fit`: `coef_` (K, d) and `intercept_` (K,) act on standardised Z;
    `mean_`, `scale_` (d,); `C_`; and, when C was chosen by CV, `cv_accuracy_`,
    `cv_macro_f1_` (at C_), `cv_scores_` {C: accuracy} and `oof_logits_`, the out-of-fold
    logits at C_, shape (n_repeats, n, K) (None after `from_state`).
    """

    def __init__(self, penalty="l1", *, l1_ratio=0.5, Cs=None, n_splits=5, n_repeats=2,
                 random_state=0, tol=1e-6, n_jobs=None):
        self.penalty, self.l1_ratio, self.Cs = penalty, l1_ratio, Cs
        self.n_splits, self.n_repeats = n_splits, n_repeats
        self.random_state, self.tol, self.n_jobs = random_state, tol, n_jobs

    def _l1_ratio(self):
        if self.penalty not in _PENALTIES:
            raise InputError(f"penalty must be one of {_PENALTIES}, got {self.penalty!r}.")
        if self.penalty == "elasticnet" and not 0.0 < self.l1_ratio <= 1.0:
            raise InputError(f"l1_ratio must be in (0, 1] for elasticnet, got {self.l1_ratio}.")
        return {"l1": 1.0, "l2": 0.0, "elasticnet": float(self.l1_ratio)}[self.penalty]

    def _grid(self, Zs, y, K, l1_ratio):
        """Ascending C grid: the user's `Cs`, or multiples of C_min (module constants)."""
        if self.Cs is not None:
            return sorted(float(c) for c in self.Cs)
        low = c_min(Zs, y, K)
        if l1_ratio == 0.0:
            return [low * r for r in _L2_RATIOS]
        return [low / l1_ratio * r for r in _SPARSE_RATIOS]

    def _cv(self, Zs, y, K, Cs, l1_ratio):
        """(accuracy, macro F1, log-loss) per C from repeated stratified K-fold CV, and the
        out-of-fold logits, shape (n_repeats, len(Cs), n, K)."""
        smallest = int(np.bincount(y).min())
        n_splits = max(2, min(self.n_splits, smallest))
        n_repeats = 1 if smallest >= _ONE_REPEAT_AT else self.n_repeats
        cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats,
                                     random_state=self.random_state)
        splits = list(cv.split(Zs, y))
        n_jobs = min(len(splits), self.n_jobs or min(os.cpu_count() or 1, 4))
        oof = _cv_path(Zs, y, Cs, l1_ratio, K, splits, n_splits, n_jobs)
        return (*_cv_scores(oof, y, K), oof)

    def fit(self, Z, y, *, C=None):
        """Fit on Z (n, d) and y (n,); choose C by repeated stratified CV unless given.

        The CV picks the C of lowest out-of-fold log-loss (see the module docstring);
        `cv_scores_` reports accuracy per C, `cv_accuracy_` the accuracy at C_.
        """
        # multi-threaded OpenBLAS on these small matrices is 10x slower on a busy machine
        with BLAS.limit(limits=1, user_api="blas"):
            return self._fit(Z, y, C)

    def _fit(self, Z, y, C):
        l1_ratio = self._l1_ratio()
        Z, y, K = _check_fit_input(Z, y, need_cv=C is None)
        Zs, self.mean_, self.scale_ = standardise(Z)
        Cs, best = ([float(C)], 0) if C is not None else (self._grid(Zs, y, K, l1_ratio), None)
        if best is None:
            acc, f1, loss, oof = self._cv(Zs, y, K, Cs, l1_ratio)
            best = int(np.argmin(loss))
        Ws, bs = fit_path(Zs, y, Cs[:best + 1], l1_ratio, K, self.tol)
        # an L1 model that selected nothing predicts one class for all: take a larger C
        while not Ws[-1].any() and l1_ratio > 0 and best + 1 < len(Cs):
            best += 1
            Ws, bs = fit_path(Zs, y, Cs[:best + 1], l1_ratio, K, self.tol)
        self.C_, self.n_features_in_, self.n_classes_ = Cs[best], Z.shape[1], K
        self.cv_accuracy_ = None if C is not None else float(acc[best])
        self.cv_macro_f1_ = None if C is not None else float(f1[best])
        self.cv_scores_ = {} if C is not None else dict(zip(Cs, map(float, acc)))
        # kept for calibration (core.learn.coverage), not saved with the head
        self.oof_logits_ = None if C is not None else oof[:, best]
        W, b = Ws[-1], bs[-1]
        if K == 2:
            self.coef_ = np.stack([-W[:, 1] / 2, W[:, 1] / 2])
            self.intercept_ = np.array([-b[1] / 2, b[1] / 2])
        else:
            self.coef_, self.intercept_ = W.T.copy(), b - b.mean()
        return self

    def decision_function(self, Z):
        """Logits, shape (n, K), for Z of shape (n, d)."""
        Z = self._check_Z(Z)
        return ((Z - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def predict_proba(self, Z):
        """Class probabilities, shape (n, K): softmax of the logits."""
        return softmax(self.decision_function(Z))

    def predict(self, Z):
        """Class indices, shape (n,)."""
        return self.decision_function(Z).argmax(1)

    def linear_map(self):
        """(W, b) with W (d, K), b (K,) such that logits == Z @ W + b on raw Z."""
        scaled = self.coef_ / self.scale_
        return scaled.T.copy(), self.intercept_ - scaled @ self.mean_

    def selected_features(self):
        """Indices (ascending) of the columns of Z with a non-zero weight for any class."""
        return np.flatnonzero((self.coef_ != 0).any(0))

    def weight_counts(self):
        """(non-zero, all) weights on Z: K rows of d, or one row for a binary head (its two
        stored rows are the same weights, halved and negated)."""
        rows = self.coef_[1:] if self.coef_.shape[0] == 2 else self.coef_
        return int(np.count_nonzero(rows)), int(rows.size)

    def to_state(self):
        """(params, arrays): a JSON-able dict and named float64 arrays; no pickle."""
        params = {
            "format": "tenshot.head/1", "penalty": self.penalty, "l1_ratio": self.l1_ratio,
            "Cs": None if self.Cs is None else [float(c) for c in self.Cs],
            "n_splits": self.n_splits, "n_repeats": self.n_repeats,
            "random_state": self.random_state, "tol": self.tol, "C_": self.C_,
            "cv_accuracy_": self.cv_accuracy_, "cv_macro_f1_": self.cv_macro_f1_,
            "cv_scores_": [[c, a] for c, a in self.cv_scores_.items()],
            "n_features_in_": self.n_features_in_, "n_classes_": self.n_classes_,
        }
        arrays = {k: getattr(self, k) for k in ("mean_", "scale_", "coef_", "intercept_")}
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        """Rebuild a fitted Head from `to_state()` output."""
        if params.get("format") != "tenshot.head/1":
            raise InputError(f"Not a saved tenshot head (format {params.get('format')!r}).")
        head = cls(params["penalty"], l1_ratio=params["l1_ratio"], Cs=params["Cs"],
                   n_splits=params["n_splits"], n_repeats=params["n_repeats"],
                   random_state=params["random_state"], tol=params["tol"])
        for key in ("C_", "cv_accuracy_", "cv_macro_f1_", "n_features_in_", "n_classes_"):
            setattr(head, key, params[key])
        head.cv_scores_ = {float(c): float(a) for c, a in params["cv_scores_"]}
        head.oof_logits_ = None
        for key in ("mean_", "scale_", "coef_", "intercept_"):
            setattr(head, key, np.asarray(arrays[key], dtype=np.float64))
        return head

    def _check_Z(self, Z):
        if not hasattr(self, "coef_"):
            raise InputError("This head is not trained yet: call fit() first.")
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_features_in_:
            raise InputError(f"Expected features of shape (n, {self.n_features_in_}), "
                             f"got {Z.shape}. Were they made with the same feature spec?")
        return Z


def _check_fit_input(Z, y, *, need_cv):
    """Validate training data; returns (Z float64 (n, d), y int64 (n,), K)."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    if Z.ndim != 2 or y.ndim != 1 or len(Z) != len(y):
        raise InputError(f"Expected Z of shape (n, d) and y of shape (n,), got {Z.shape} "
                         f"and {y.shape}.")
    if not np.all(np.isfinite(Z)):
        raise InputError("Features contain NaN or infinite values; re-embed the sentences.")
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise InputError(f"y must hold class indices 0..K-1, got {y.dtype} values "
                         f"{np.unique(y)[:5]}.")
    K = max(int(y.max()) + 1, 2)
    check_labels(y, [f"class {k}" for k in range(K)], min_per_class=2 if need_cv else 1)
    return Z, y.astype(np.int64), K
