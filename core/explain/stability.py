"""Bootstrap stability: how much predictions, coefficients and token ranks move when
the labelled set is resampled.

``bootstrap`` refits the classifier's head B times on bootstrap resamples of the
labelled rows, keeping the feature spec and the chosen C fixed (no feature selection
and no C search per refit: this measures the head's sensitivity to which sentences
were labelled, not the whole training pipeline's). From the refits it derives

- out-of-bag accuracy per refit (each refit scored on the rows it did not draw);
- per-sentence prediction stability: for labelled sentences over the refits where the
  sentence was out of bag, for other sentences (e.g. unlabelled) over all refits, the
  share of refits that predict what the full model predicts;
- per head feature (a column of Z, i.e. a (layer, neuron), of one backbone part in a
  fused model) its selection frequency and sign stability;
- every refit's linear weights, which ``core.explain.token_stability`` uses to compare a
  sentence's token attributions under each refit with the full model's.

The refits run on threads: the numba solver releases the GIL (numba itself starts no
threads). On 2 cores shared with other jobs (load 12), 2 threads took 1.6 s for 100
refits at 100 labels against 1.8 s for 1 (bench/stability.py).

Shortcuts admitted: the refits run at the full model's C, which was chosen on all the
rows (a resample whose smallest non-empty C is larger gives an empty refit, counted in
``Stability.empty_refits``); and a resample that lacks 2 distinct rows of some class is
redrawn rather than fitted, so the bootstrap is conditional on every class being present.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from core.learn.classifier import features_for
from core.errors import InputError, StoreError
from core.learn.features import FeatureSpec
from core.learn.head import Head, check_labels

__all__ = ["Stability", "bootstrap", "project_inputs", "save_stability", "load_stability"]

# a resample is redrawn until every class has 2 distinct rows; give up after this many
_MAX_DRAWS = 1000
_FORMAT = "tenshot.stability/1"
_KIND, _KEY = "stability", "bootstrap"
_PREDICT_CHUNK = 4096  # rows per matrix product when predicting with all refits at once


@dataclass(frozen=True)
class Stability:
    """The result of ``bootstrap``. n labelled rows, m other rows, d head features, K classes.

    classes: class names; spec: the classifier's feature spec; B, seed, C, penalty:
    how the refits were made. samples: int (B, n), the row indices each refit drew
    (sorted); y: int (n,) labels; ids, other_ids: int (n,), (m,) text ids of the rows
    (row positions when none were given).
    oob_accuracy: (B,) accuracy of each refit on its out-of-bag rows (NaN if none).
    pred, other_pred: int (n,), (m,) the full model's predicted class index.
    agreement: (n,) share of the refits with the row out of bag that predict ``pred``
    (NaN for a row never out of bag); oob_correct: (n,) share of them predicting y;
    n_oob: int (n,) how many refits had the row out of bag.
    other_agreement: (m,) share of all B refits that predict ``other_pred``.
    coef, intercept: (d, K), (K,) the full model on raw Z (logits = Z @ coef + intercept);
    refit_coef, refit_intercept: (B, d, K), (B, K) the same for every refit.
    """

    classes: list[str]
    spec: FeatureSpec
    B: int
    seed: int
    C: float
    penalty: str
    samples: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    other_ids: np.ndarray
    oob_accuracy: np.ndarray
    pred: np.ndarray
    agreement: np.ndarray
    oob_correct: np.ndarray
    n_oob: np.ndarray
    other_pred: np.ndarray
    other_agreement: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    refit_coef: np.ndarray
    refit_intercept: np.ndarray

    @property
    def selection_frequency(self) -> np.ndarray:
        """(d,) share of refits that give the feature a non-zero weight for any class."""
        return (self.refit_coef != 0).any(2).mean(0)

    @property
    def empty_refits(self) -> np.ndarray:
        """bool (B,): refits that selected no feature at C (their resample needs a larger C);
        they predict one class for every row and lower the stability figures."""
        return ~(self.refit_coef != 0).any((1, 2))

    @property
    def sign_stability(self) -> np.ndarray:
        """(d, K) share of the refits selecting a feature (for that class) whose weight has
        the reference sign: the full model's sign, or the refits' majority sign where the
        full model left the feature out. NaN where no refit selected it. For two classes
        both columns are equal (the head's rows are -w/2 and w/2)."""
        pos, neg = (self.refit_coef > 0).sum(0), (self.refit_coef < 0).sum(0)
        ref = np.where(self.coef != 0, self.coef > 0, pos >= neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ref, pos, neg) / (pos + neg)

    @property
    def feature_part(self) -> np.ndarray:
        """(d,) str: the backbone of a fused model each feature reads; "" on one backbone."""
        return _feature_origin(self.spec)[0]

    @property
    def feature_layer(self) -> np.ndarray:
        """(d,) hidden-state index of each feature within its backbone (``feature_part``);
        -1 for a mean over the spec's layers."""
        return _feature_origin(self.spec)[1]

    @property
    def feature_neuron(self) -> np.ndarray:
        """(d,) neuron (hidden-size index) of each feature within its backbone."""
        return _feature_origin(self.spec)[2]

    def full_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(V, b) of the full model: V (n_layers + 1, hidden, K), as ``linear_weights``."""
        return self.spec.back_project(self.coef), self.intercept

    def refit_weights(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(V, b) of refit i, V (n_layers + 1, hidden, K): logits == einsum('lh,lhk', X, V) + b."""
        return self.spec.back_project(self.refit_coef[i]), self.refit_intercept[i]

    def unstable(self, threshold: float = 0.8, *, other: bool = False) -> np.ndarray:
        """Text ids whose agreement is below ``threshold``, least stable first.

        Labelled sentences by default (never-out-of-bag ones are left out); other=True
        for the other sentences.
        """
        ids, share = (self.other_ids, self.other_agreement) if other else (self.ids, self.agreement)
        rows = np.flatnonzero(share < threshold)  # NaN compares False
        return ids[rows[np.argsort(share[rows], kind="stable")]]


def bootstrap(clf, X: np.ndarray, y: Sequence[int], *, X_other: np.ndarray | None = None,
              ids: Sequence[int] | None = None, other_ids: Sequence[int] | None = None,
              B: int = 100, seed: int = 0, n_jobs: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Stability:
    """Refit ``clf``'s head on B bootstrap resamples of its labelled rows.

    X: float32 (n, n_layers + 1, hidden) pooled features of the labelled texts; y: (n,)
    class indices into ``clf.classes``; X_other: (m, n_layers + 1, hidden) features of
    other texts (e.g. the unlabelled ones) whose prediction stability is wanted.
    ids, other_ids: text ids of those rows, kept for linking (default: row positions).
    Each refit keeps ``clf.spec`` and fits at ``clf.head.C_`` (no CV per refit). The
    resamples are drawn up front from ``seed``, so the result is identical bit for bit
    for a seed whatever ``n_jobs`` (the refits run on that many threads: the solver
    releases the GIL). progress(done, B) is called after each refit.
    """
    y = np.asarray(y)
    if not isinstance(B, (int, np.integer)) or B < 1:
        raise InputError(f"B, the number of bootstrap refits, must be a positive integer; "
                         f"got {B!r}.")
    check_labels(y, clf.classes)
    Z = clf.spec.transform(X).astype(np.float64)
    if len(Z) != len(y):
        raise InputError(f"X has {len(Z)} rows but y has {len(y)} labels; pass one label per row.")
    # float32 (m, d); cast chunk by chunk, as there may be many unlabelled texts
    Z_other = (np.zeros((0, Z.shape[1]), np.float32) if X_other is None
               else clf.spec.transform(X_other))
    ids = _ids(ids, len(Z), "ids")
    other_ids = _ids(other_ids, len(Z_other), "other_ids")
    samples = _resamples(y, len(clf.classes), B, np.random.default_rng(seed))
    # one BLAS thread: the parallelism is across refits, and it keeps results bitwise fixed
    with threadpool_limits(1, user_api="blas"):
        W, b = _refits(clf.head, Z, y, samples, n_jobs, progress)
        coef, intercept = clf.head.linear_map()
        pred, other_pred = _predict_full(clf.head, Z), _predict_full(clf.head, Z_other)
        votes, votes_other = _predict_all(Z, W, b), _predict_all(Z_other, W, b)
    labelled = _labelled_stats(votes, samples, y, pred)
    return Stability(list(clf.classes), clf.spec, int(B), int(seed), float(clf.head.C_),
                     clf.head.penalty, samples, y.astype(np.int64), ids, other_ids,
                     other_pred=other_pred, other_agreement=(votes_other == other_pred).mean(0),
                     coef=coef, intercept=intercept, refit_coef=W, refit_intercept=b, **labelled)


def _ids(ids, n, name):
    if ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InputError(f"{name} must hold one text id per row ({n}); got shape {ids.shape}.")
    return ids


def _resamples(y, K, B, rng):
    """(B, n) sorted row indices, each resample holding 2+ distinct rows of every class.

    A resample that fails the condition is redrawn from the same generator, so the
    sequence is a pure function of the seed.
    """
    n = len(y)
    out = np.empty((B, n), dtype=np.int64)
    for i in range(B):
        for _ in range(_MAX_DRAWS):
            idx = rng.integers(0, n, n)
            if np.bincount(y[np.unique(idx)], minlength=K).min() >= 2:
                break
        else:
            raise InputError(f"Could not draw a bootstrap resample with 2 distinct sentences of "
                             f"every class in {_MAX_DRAWS} tries; label more sentences of the "
                             f"smallest class (counts: {np.bincount(y, minlength=K).tolist()}).")
        out[i] = np.sort(idx)
    return out


def _refits(head, Z, y, samples, n_jobs, progress):
    """Fit a head at ``head.C_`` on each resample; (W (B, d, K), b (B, K)) on raw Z."""
    B = len(samples)
    K = head.n_classes_
    W, b = np.empty((B, Z.shape[1], K)), np.empty((B, K))

    def one(i):
        refit = Head(head.penalty, l1_ratio=head.l1_ratio, tol=head.tol)
        W[i], b[i] = refit.fit(Z[samples[i]], y[samples[i]], C=head.C_).linear_map()

    workers = max(1, min(B, n_jobs or min(os.cpu_count() or 1, 4)))
    if workers == 1:
        for i in range(B):
            one(i)
            if progress:
                progress(i + 1, B)
        return W, b
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, future in enumerate(as_completed([pool.submit(one, i) for i in range(B)]), 1):
            future.result()
            if progress:
                progress(done, B)
    return W, b


def _predict_full(head, Z):
    """int (m,): the full model's predicted class for the rows of Z (m, d)."""
    out = np.zeros(len(Z), dtype=np.int64)
    for start in range(0, len(Z), _PREDICT_CHUNK):
        out[start:start + _PREDICT_CHUNK] = head.predict(Z[start:start + _PREDICT_CHUNK])
    return out


def _predict_all(Z, W, b):
    """int (B, m): every refit's predicted class for the rows of Z (m, d)."""
    B, d, K = W.shape
    flat = W.transpose(1, 0, 2).reshape(d, B * K)
    out = np.empty((B, len(Z)), dtype=np.int64)
    for start in range(0, len(Z), _PREDICT_CHUNK):
        chunk = Z[start:start + _PREDICT_CHUNK].astype(np.float64)
        out[:, start:start + _PREDICT_CHUNK] = ((chunk @ flat).reshape(-1, B, K) + b).argmax(2).T
    return out


def _labelled_stats(votes, samples, y, pred):
    """Out-of-bag scores from votes (B, n), the refits' predictions on the labelled rows."""
    B, n = votes.shape
    oob = np.ones((B, n), dtype=bool)
    oob[np.arange(B)[:, None], samples] = False
    n_oob = oob.sum(0)
    per_refit = oob.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        oob_accuracy = ((votes == y) & oob).sum(1) / per_refit
        agreement = ((votes == pred) & oob).sum(0) / n_oob
        oob_correct = ((votes == y) & oob).sum(0) / n_oob
    return {"oob_accuracy": oob_accuracy, "pred": pred.astype(np.int64), "agreement": agreement,
            "oob_correct": oob_correct, "n_oob": n_oob.astype(np.int64)}


def _feature_origin(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(part (d,), layer (d,), neuron (d,)) of each column of Z, in the order of ``spec.transform``.

    part: the backbone each feature reads in a fused ("multi") spec, "" otherwise; layer
    and neuron are indices within that backbone's own hidden states (layer -1: a mean).
    """
    if spec.mode == "multi":
        origins = [_feature_origin(sub) for _, sub in spec.parts]
        names = [np.full(sub.n_features, part.name, dtype=object) for part, sub in spec.parts]
        return (np.concatenate(names), np.concatenate([o[1] for o in origins]),
                np.concatenate([o[2] for o in origins]))
    width = spec.shape[1]
    if spec.mode == "stc":
        layer = np.concatenate([np.full(len(idx), l) for l, idx in zip(spec.layers, spec.neurons)])
        neuron = np.concatenate([np.asarray(idx) for idx in spec.neurons])
    elif spec.combine == "mean":
        layer, neuron = np.full(width, -1), np.arange(width)
    else:
        layer = np.repeat(np.asarray(spec.layers), width)
        neuron = np.tile(np.arange(width), len(spec.layers))
    return np.full(len(layer), "", dtype=object), layer.astype(np.int64), neuron.astype(np.int64)


def project_inputs(store, project_id: int, backbone, clf, *, cache=None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """The keyword arguments ``bootstrap`` needs for a stored project, from its current labels.

    Returns {"X", "y", "ids", "X_other", "other_ids"}: features of the labelled texts whose
    label is one of ``clf.classes``, and of the unlabelled texts, through ``cache`` (default:
    the store). Use as ``bootstrap(clf, **project_inputs(store, pid, backbone, clf))``.
    """
    cache = cache if cache is not None else store
    index = {c: i for i, c in enumerate(clf.classes)}
    labelled = [r for r in store.labelled(project_id) if r.label in index]
    others = store.unlabelled(project_id)
    texts = [r.text for r in labelled] + [r.text for r in others]
    X_all = features_for(backbone, texts, clf.settings, cache=cache, progress=progress)
    n = len(labelled)
    return {"X": X_all[:n], "y": np.array([index[r.label] for r in labelled], dtype=np.int64),
            "ids": [r.text_id for r in labelled], "X_other": X_all[n:],
            "other_ids": [r.id for r in others]}


_SCALARS = ("classes", "spec", "B", "seed", "C", "penalty")


def save_stability(store, model_id: int, stability: Stability) -> None:
    """Keep ``stability`` with its model version (replacing an earlier run); no pickle."""
    params = {"format": _FORMAT, "classes": stability.classes, "spec": stability.spec.to_json(),
              "B": stability.B, "seed": stability.seed, "C": stability.C,
              "penalty": stability.penalty}
    arrays = {f.name: getattr(stability, f.name) for f in fields(Stability)
              if f.name not in _SCALARS}
    store.put_explanation(model_id, _KIND, _KEY, params, arrays)


def load_stability(store, model_id: int) -> Stability | None:
    """The stability saved for a model version, or None when none was computed."""
    found = store.get_explanation(model_id, _KIND, _KEY)
    if found is None:
        return None
    params, arrays = found
    if params.get("format") != _FORMAT:
        raise StoreError(f"The saved stability of model {model_id} has format "
                         f"{params.get('format')!r}, expected {_FORMAT!r}; run the bootstrap "
                         "again.")
    named = {f.name: arrays[f.name] for f in fields(Stability) if f.name not in _SCALARS}
    return Stability(list(params["classes"]), FeatureSpec.from_json(params["spec"]),
                     int(params["B"]), int(params["seed"]), float(params["C"]), params["penalty"],
                     **named)
