"""Model diagnostics: out-of-fold confusion matrix, learning curve, labels-needed
estimate, per-layer accuracy profile and prompt A/B comparison.

All of them refit a head many times on pooled features that are already computed,
so they are pure numpy/scikit-learn. Shortcuts, said plainly in the UI too:
- The confusion matrix and the learning curve refit with the C the model chose on
  all labels and the model's feature spec (chosen on all labels), instead of
  re-running the selection inside every fold; the numbers are slightly optimistic.
- The layer profile scores each layer with the head's own repeated CV (its C chosen
  per layer), so it reads like the model's CV accuracy, max-over-C optimism included.
- The labels-needed estimate extrapolates a 3-parameter curve fitted to a handful of
  noisy points; its bootstrap interval is the honest part of the answer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

from core.errors import NotEnoughLabels
from core.learn import classifier
from core.learn.head import Head
from core.model.embed import embed_many
from core.model.group import is_fused

__all__ = ["LearningCurve", "LabelsNeeded", "PromptResult", "Diagnostics", "encode_labels",
           "fixed_head", "cv_confusion", "learning_curve", "labels_needed", "saturating",
           "layer_profile", "diagnose", "profile_layers", "compare_prompts", "accuracy_noise",
           "PROFILE_POOLINGS", "profile_position", "accuracy_range", "clear_change"]

#: the poolings the layer profile compares, in the order it fits them
PROFILE_POOLINGS = ("mean", "last", "max")
#: make_model(random_state) -> an unfitted estimator with fit(Z, y) and predict(Z)
ModelFactory = Callable[[int], object]
Progress = Callable[[int, int], None]


def encode_labels(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Class names -> int array of indices into ``classes``; ["b", "a"], ["a", "b"] -> [1, 0]."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[lab] for lab in labels], dtype=int)


class _FixedC:
    """The model's head refitted at a fixed C (no inner CV): fit(Z, y) and predict(Z)."""

    def __init__(self, penalty: str, C: float, random_state: int):
            self.head, self.C = Head(penalty, random_state=random_state), float(C)

    def fit(self, Z, y):
        self.head.fit(Z, y, C=self.C)
        return self

    def predict(self, Z):
        return self.head.predict(Z)


def fixed_head(penalty: str, C: float) -> ModelFactory:
    """A factory of the model's head (standardise + penalised LR) with its chosen C fixed."""
    return lambda random_state: _FixedC(penalty, C, random_state)


def _fit_predict(make_model: ModelFactory, Z, y, train, test, random_state: int) -> np.ndarray:
    return np.asarray(make_model(random_state).fit(Z[train], y[train]).predict(Z[test]))


def _splits(y: np.ndarray, wanted: int, need: int, what: str) -> int:
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < need:
        raise NotEnoughLabels(
            f"The {what} needs at least {need} labels in every class; the smallest class has "
            f"{smallest}. Label a few more sentences first.", {})
    return max(2, min(wanted, smallest))


def cv_confusion(Z: np.ndarray, y: np.ndarray, n_classes: int, make_model: ModelFactory, *,
                 n_splits: int = 5, random_state: int = 0) -> np.ndarray:
    """Confusion counts of out-of-fold predictions; every label is predicted once.

    Z: (n, d) features; y: (n,) class indices. Returns int (n_classes, n_classes),
    rows = true class, columns = predicted class; it sums to n.
    """
    k = _splits(y, n_splits, 2, "confusion matrix")
    cm = np.zeros((n_classes, n_classes), dtype=int)
    folds = StratifiedKFold(k, shuffle=True, random_state=random_state)
    for train, test in folds.split(Z, y):
        pred = _fit_predict(make_model, Z, y, train, test, random_state)
        np.add.at(cm, (y[test], pred), 1)
    return cm


@dataclass(frozen=True)
class LearningCurve:
    """Held-out accuracy against labels per class.

    sizes: (k,) labels per class used for training; scores: (k, runs) accuracy of each
    (seed, fold) run on that fold's held-out labels; counts: labels per class now.
    """

    sizes: np.ndarray
    scores: np.ndarray
    counts: tuple[int, ...]

    @property
    def mean(self) -> np.ndarray:
        return self.scores.mean(1)

    @property
    def std(self) -> np.ndarray:
        return self.scores.std(1)


def _sizes(max_k: int, n_sizes: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(2, max(max_k, 2), n_sizes)).astype(int))


def learning_curve(Z: np.ndarray, y: np.ndarray, make_model: ModelFactory, *, n_sizes: int = 6,
                   seeds: int = 3, n_splits: int = 5, random_state: int = 0,
                   progress: Progress | None = None) -> LearningCurve:
    """Subsample the labels at several sizes per class, train, score on held-out folds.

    For each seed, a stratified k-fold split holds out a fold; from the rest, the first
    ``size`` shuffled labels of each class train a head that is scored on the held-out
    fold. Every size sees the same held-out fold, so the points are comparable.
    """
    k = _splits(y, n_splits, 3, "learning curve")
    counts = np.bincount(y)
    sizes = _sizes(int(counts.min()) * (k - 1) // k, n_sizes)
    scores = np.zeros((len(sizes), seeds * k))
    total, done = seeds * k, 0
    for s in range(seeds):
        rng = np.random.default_rng(random_state + s)
        folds = StratifiedKFold(k, shuffle=True, random_state=random_state + s)
        for f, (train, test) in enumerate(folds.split(Z, y)):
            pools = [rng.permutation(train[y[train] == c]) for c in range(len(counts))]
            for i, size in enumerate(sizes):
                sub = np.concatenate([p[:size] for p in pools])
                pred = _fit_predict(make_model, Z, y, sub, test, random_state + s)
                scores[i, s * k + f] = np.mean(pred == y[test])
            done += 1
            if progress:
                progress(done, total)
    return LearningCurve(sizes, scores, tuple(int(c) for c in counts))


def saturating(n, a: float, b: float, c: float):
    """acc(n) = a - b * n**-c: rises with n towards the plateau a."""
    return a - b * np.power(n, -c)


def _fit_curve(sizes: np.ndarray, means: np.ndarray) -> tuple[str, tuple]:
    """('saturating', (a, b, c)) when the fit converges on >= 3 sizes, else ('log', (alpha, beta))."""
    if len(sizes) >= 3:
        from scipy.optimize import curve_fit

        a0 = min(1.0, float(means.max()) + 0.05)
        b0 = max(1e-3, (a0 - float(means[0])) * float(sizes[0]) ** 0.5)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(saturating, sizes.astype(float), means, p0=(a0, b0, 0.5),
                                      bounds=([0.0, 0.0, 0.05], [1.0, 10.0, 3.0]), maxfev=5000)
            return "saturating", tuple(float(p) for p in params)
        except (RuntimeError, ValueError):
            pass
    beta, alpha = np.polyfit(np.log(sizes.astype(float)), means, 1)
    return "log", (float(alpha), float(beta))


def _per_class_needed(kind: str, params: tuple, target: float) -> float:
    """Labels per class at which the fitted curve reaches target (inf if it never does)."""
    if kind == "saturating":
        a, b, c = params
        if a <= target:
            return math.inf
        return 0.0 if b <= 0 else float((b / (a - target)) ** (1.0 / c))
    alpha, beta = params
    if beta <= 0 or target >= 1.0:
        return math.inf
    return float(math.exp(min((target - alpha) / beta, 50.0)))


@dataclass(frozen=True)
class LabelsNeeded:
    """How many more labels the fitted learning curve says reach ``target`` accuracy.

    extra: more labels in total (0: reached; inf: the curve levels off below target);
    low/high: 10th-90th percentile of ``extra`` over bootstrap refits; plateau: the
    fitted accuracy limit (None for a log fit, which has none).
    """

    target: float
    extra: float
    low: float
    high: float
    per_class: float
    plateau: float | None
    plateau_interval: tuple[float, float] | None
    method: str
    reached: bool
    params: tuple = field(default=())

    @property
    def finite(self) -> bool:
        return math.isfinite(self.extra)


def _extra(per_class: float, counts: Sequence[int]) -> float:
    if not math.isfinite(per_class) or per_class > 1e6:
        return math.inf
    return float(sum(max(0, math.ceil(per_class) - c) for c in counts))


def labels_needed(curve: LearningCurve, target: float, *, n_boot: int = 100,
                  random_state: int = 0, current: float | None = None) -> LabelsNeeded:
    """Fit acc(n) = a - b n^-c to the curve and solve acc(n) = target for n.

    n is labels per class; the extra labels are summed over classes from their current
    counts. When the curve's best observed accuracy, or ``current`` (the model's own CV
    accuracy on all its labels, which the curve's smaller training sets lie below),
    already meets the target, 0.
    Uncertainty: the same fit on bootstrap resamples of the (seed, fold) runs.
    """
    kind, params = _fit_curve(curve.sizes, curve.mean)
    if max(float(curve.mean.max()), current if current is not None else 0.0) >= target:
        a = params[0] if kind == "saturating" else None
        return LabelsNeeded(target, 0.0, 0.0, 0.0, float(curve.sizes[curve.mean.argmax()]), a,
                            None, kind, True, params)
    per_class = _per_class_needed(kind, params, target)
    rng = np.random.default_rng(random_state)
    runs = curve.scores.shape[1]
    boot_extra, boot_plateau = [], []
    for _ in range(n_boot):
        means = curve.scores[:, rng.integers(0, runs, runs)].mean(1)
        k, p = _fit_curve(curve.sizes, means)
        boot_extra.append(_extra(_per_class_needed(k, p, target), curve.counts))
        if k == "saturating":
            boot_plateau.append(p[0])
    # inverted_cdf: no interpolation, so an infinite draw stays inf instead of nan
    low, high = np.percentile(boot_extra, [10, 90], method="inverted_cdf")
    extra = _extra(per_class, curve.counts)
    plateau = params[0] if kind == "saturating" else None
    interval = (tuple(float(v) for v in np.percentile(boot_plateau, [10, 90]))
                if plateau is not None and boot_plateau else None)
    return LabelsNeeded(target, extra, float(low), float(high), per_class, plateau, interval,
                        kind, extra == 0, params)


def profile_position(done: int, total: int,
                     poolings: Sequence[str] = PROFILE_POOLINGS) -> tuple[str, int, int]:
    """Where a layer profile is, from its progress(done, total): (pooling, layer, n_layers).

    The profile fits every hidden state (index 0 the embedding layer) once per pooling,
    in order. Example: a 30-layer model has 31 states, so 3 poolings make 93 fits, and
    fit 40 of 93 is ("last", 8, 30).
    """
    n_states = max(1, total // max(1, len(poolings)))
    step = min(max(done, 1), total) - 1
    return poolings[min(step // n_states, len(poolings) - 1)], step % n_states, n_states - 1


def layer_profile(features: dict[str, np.ndarray], y: np.ndarray, *, penalty: str = "l1",
                  random_state: int = 0, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """The head's cross-validated accuracy on each single layer, for each pooling.

    features: {pooling: float32 (n, n_layers, hidden)}; y: (n,) class indices. Returns
    {pooling: (n_layers,)} accuracies, index 0 being the embedding layer. Each layer gets
    its own C by the head's repeated CV, so the numbers read like the model's own.
    """
    _splits(y, 2, 2, "layer profile")
    total = sum(X.shape[1] for X in features.values())
    out, done = {}, 0
    for pooling, X in features.items():
        accs = np.zeros(X.shape[1])
        for layer in range(X.shape[1]):
            accs[layer] = Head(penalty, random_state=random_state).fit(X[:, layer, :], y).cv_accuracy_
            done += 1
            if progress:
                progress(done, total)
        out[pooling] = accs
    return out


@dataclass(frozen=True)
class PromptResult:
    """CV metrics of a classifier trained with one prompt template."""

    prompt: str | None
    cv_accuracy: float
    cv_macro_f1: float
    n_labels: int


def compare_prompts(backbone, texts: Sequence[str], labels: Sequence[str], classes: Sequence[str],
                    settings, prompts: Sequence[str | None], *, cache=None,
                    progress: Progress | None = None, random_state: int = 0) -> list[PromptResult]:
    """Embed the labelled texts under each prompt, train, and report CV accuracy.

    Everything but the prompt stays as in ``settings``; each prompt is checked first.
    """
    candidates = [replace(settings, prompt=p or None).check() for p in prompts]
    out = []
    for i, s in enumerate(candidates):
        X = classifier.features_for(backbone, texts, s, cache=cache)
        clf = classifier.train(X, labels, classes, s, random_state=random_state)
        out.append(PromptResult(s.prompt, clf.metrics["cv_accuracy"], clf.metrics["cv_macro_f1"],
                                len(labels)))
        if progress:
            progress(i + 1, len(candidates))
    return out


@dataclass(frozen=True)
class Diagnostics:
    """What the Model page draws for one model version.

    confusion: (n_classes, n_classes) out-of-fold counts; curve: None when some class
    has fewer than 3 labels (too few to hold some out and still subsample); skipped:
    labels of classes the model does not know (added or renamed since it was trained).
    """

    classes: list[str]
    confusion: np.ndarray
    curve: LearningCurve | None
    skipped: int


def _model_labels(clf, X: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    keep = [i for i, lab in enumerate(labels) if lab in clf.classes]
    y = encode_labels([labels[i] for i in keep], clf.classes)
    return X[keep], y, len(labels) - len(keep)


def diagnose(clf, X: np.ndarray, labels: Sequence[str], *, seeds: int = 3, random_state: int = 0,
             progress: Progress | None = None) -> Diagnostics:
    """Confusion matrix and learning curve of a trained classifier on its labelled features.

    X: float32 (n, n_layers, hidden) pooled features of the labelled texts; labels: n names.
    Both refit the model's head with its chosen C on the model's feature spec.
    """
    X, y, skipped = _model_labels(clf, X, labels)
    Z = clf.spec.transform(X)
    make = fixed_head(clf.settings.penalty, clf.metrics["C"])
    cm = cv_confusion(Z, y, len(clf.classes), make, random_state=random_state)
    try:
        curve = learning_curve(Z, y, make, seeds=seeds, random_state=random_state, progress=progress)
    except NotEnoughLabels:
        curve = None
    return Diagnostics(list(clf.classes), cm, curve, skipped)


def profile_layers(backbone, texts: Sequence[str], labels: Sequence[str], clf, *, cache=None,
                   poolings: Sequence[str] = PROFILE_POOLINGS, random_state: int = 0,
                   progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Per-layer accuracy for each pooling, under the model's prompt (see layer_profile).

    One forward pass yields every pooling; texts already cached for all of them cost none.
    """
    s = clf.settings
    # every row: a submit caches its texts only up to the band's deepest row
    rows = range(backbone.n_layers)
    if is_fused(backbone):  # a backbone group: rows are every part's layers, stacked
        features = {p: classifier.features_for(backbone, texts, replace(s, pooling=p), cache=cache, rows=rows)
                    for p in poolings}
    else:
        features = embed_many(backbone, texts, prompt=s.prompt, poolings=tuple(poolings),
                              max_length=s.max_length, cache=cache, rows=rows)
    y_all = np.array(labels, dtype=object)
    keep = np.isin(y_all, clf.classes)
    y = encode_labels(list(y_all[keep]), clf.classes)
    return layer_profile({p: X[keep] for p, X in features.items()}, y, penalty=s.penalty,
                         random_state=random_state, progress=progress)


def accuracy_noise(accuracy: float, n: int) -> float:
    """Two standard errors of an accuracy measured on n labels: differences below it are noise."""
    return 2.0 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n, 1))


def accuracy_range(accuracy: float, n: int) -> tuple[float, float]:
    """The range an accuracy measured on n held-out labels is likely in: (low, high).

    A Wilson score interval at two standard errors (about 95%), which, unlike
    ``accuracy ± accuracy_noise``, stays honest at 0% and 100%.
    Example: (0.54, 30) -> (0.36, 0.71); (1.0, 4) -> (0.5, 1.0).
    """
    z2, n = 4.0, max(int(n), 1)
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / (1 + z2 / n) * 2.0
    return max(0.0, centre - half), min(1.0, centre + half)


def clear_change(before: tuple[float, int], after: tuple[float, int]) -> bool:
    """Whether two models' accuracies differ beyond noise: their ranges do not overlap.

    before, after: (cross-validated accuracy, number of labels). With a few dozen
    labels, cross-validated accuracy swings by 20 points between consecutive labels
    (issue 15: 31 -> 54 -> 30 -> 47 %); only a change outside both ranges is called one.
    Example: (0.31, 30) -> (0.54, 31) is not clear; (0.40, 200) -> (0.60, 201) is.
    """
    low_before, high_before = accuracy_range(*before)
    low_after, high_after = accuracy_range(*after)
    return low_after > high_before or high_after < low_before
