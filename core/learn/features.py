"""Which hidden states feed the head: one layer, a fusion of depths, or STC neurons.

X everywhere is a float32 array of shape (n_texts, n_layers + 1, hidden): mean-pooled
hidden states per layer, index 0 being the embedding layer. A `FeatureSpec` turns X
into the head's input Z (n, d) by a linear map, so `back_project` can carry head
weights back onto every (layer, neuron) exactly; token attributions rely on this.

Modes:
- layer: the single best layer, found by a cheap proxy scanned over all layers
  (leave-one-out ridge regression on one-hot targets, closed form per layer).
- fusion (LLMEmbed-style): a fixed band of middle layers (FUSION_DEPTHS: about 1/3,
  1/2 and 2/3 of the depth), averaged; the head reads those few hidden states only.
- stc (Sparsify-then-Classify): an L1 probe on each of the best-scanned layers keeps
  the fewest neurons carrying a fraction `eta` of that layer's |weight| mass; the
  neurons of all probed layers are concatenated.
- multi: several backbones (see core.model.group); each part gets its own spec under the
  project's mode, and the parts' columns are concatenated.
- auto: all three, compared by nested CV (the selection reruns inside each fold, at
  the C each mode chose on all data), so STC's and the scan's use of the labels does
  not flatter them; ties go to the simpler mode. Below AUTO_MIN_PER_CLASS labels in a
  class it is fusion: on the tuning half of bench/protocol.py (issue 12) CV's choice of
  mode lost to the fixed fusion at 8 and at 32 labels per class.

Texts whose features lack some layers (NaN rows: a 100,000-text pool caches only
``core.model.cache.band_layers``) restrict selection to the layers every text
has: the scan, STC and fusion only read complete layers.

Shortcut admitted: the layer scan uses ridge regression, not the head's own penalised
logistic regression; on the benchmark sets it picked layers as good as a logistic CV.
"""

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack
from sklearn.model_selection import RepeatedStratifiedKFold

from core.errors import InputError
from core.learn.head import Head, check_labels, min_c
from core.learn.solver import BLAS, standardise
from core.model.cache import FUSION_DEPTHS
from core.model.group import Part

__all__ = ["OOF_KEY", "FeatureSpec", "select_features", "select_group_features"]

OOF_KEY = "oof_logits"  # in auto mode's report: the chosen mode's nested out-of-fold logits

_MODES = ("layer", "fusion", "stc")
_COMBINES = {"layer": ("single",), "fusion": ("concat", "mean"), "stc": ("concat",),
             "multi": ("concat",)}
_FORMAT = "tenshot.features/1"
# ridge strength of the layer scan, relative to the mean eigenvalue of Z Z^T
_SCAN_ALPHA = 10.0
# L1 strength of the STC probes, as a multiple of the smallest non-empty C
_PROBE_RATIO = 16.0
_STC_TOP_LAYERS = 4
# Auto mode lets nested CV choose between the modes only when every class has at least
# this many labels, and uses the fixed fusion below: on the tuning half of
# bench/protocol.py (issue 12) CV's choice lost to the fixed fusion by 1.9 points at 8
# and 0.5 at 32 labels per class (L2 head). 64 is the next count up, not measured.
AUTO_MIN_PER_CLASS = 64
# Fusion reads the hidden states at these fractions of the depth (of each backbone of a
# group) and combines them by FUSION_COMBINE ("mean" or "concat"; None lets CV choose).
# bench/protocol.py's tuning half chose a middle band, averaged: on SmolLM2 it matched
# or beat the quarter depths (1/4, 1/2, 3/4, 1), concatenation and CV's choice.
# FUSION_DEPTHS = (0.33, 0.5, 0.67) lives in core.model.cache: the pool's band keeps them.
FUSION_COMBINE = "mean"


@dataclass(frozen=True)
class FeatureSpec:
    """How X (n, n_layers + 1, hidden) becomes Z (n, d).

    mode: "layer" | "fusion" | "stc"; layers: hidden-state indices used;
    combine: "single" (one layer), "concat" or "mean" (fusion), "concat" (stc);
    shape: (n_layers + 1, hidden) of the X it was made for;
    neurons: for stc, the kept neuron indices of each layer in `layers`.
    parts: for multi, ((Part, FeatureSpec), ...): each backbone's place in X and its spec;
        `layers` then lists the hidden-state rows any part reads.
    Example: FeatureSpec("fusion", (8, 15, 23, 30), "mean", (31, 576)) gives d = 576.
    """

    mode: str
    layers: tuple
    combine: str
    shape: tuple
    neurons: tuple = ()
    parts: tuple = ()

    @property
    def n_features(self):
        """d, the width of Z."""
        if self.mode == "multi":
            return sum(spec.n_features for _, spec in self.parts)
        if self.mode == "stc":
            return sum(len(idx) for idx in self.neurons)
        return self.shape[1] * (len(self.layers) if self.combine == "concat" else 1)

    def describe(self):
        """One line for people, e.g. 'layer 15 of 30' or 'STC: 212 neurons of layers 14, 16'."""
        layers = ", ".join(map(str, self.layers))
        if self.mode == "multi":
            return "; ".join(f"{part.name}: {spec.describe()}" for part, spec in self.parts)
        if self.mode == "layer":
            return f"layer {self.layers[0]} of {self.shape[0] - 1}"
        if self.mode == "fusion":
            how = "concatenated" if self.combine == "concat" else "averaged"
            return f"fusion of layers {layers} ({how})"
        return f"STC: {self.n_features} neurons of layers {layers}"

    def reads(self):
        """What the head reads of the hidden states, for people: '4 of 31 hidden states',
        '212 of 2,304 neurons in 4 of 31 hidden states' (STC) or, for a group, each part's
        ('smollm2-135m: 4 of 31 hidden states; mpnet: 4 of 13 hidden states')."""
        if self.mode == "multi":
            return "; ".join(f"{part.name}: {spec.reads()}" for part, spec in self.parts)
        states = f"{len(self.layers)} of {self.shape[0]} hidden states"
        if self.mode == "stc":
            return f"{self.n_features:,} of {len(self.layers) * self.shape[1]:,} neurons in {states}"
        return states

    def transform(self, X):
        """Z: float32 array of shape (n, d) from X of shape (n, n_layers + 1, hidden)."""
        self._check()
        X = np.asarray(X)
        if X.ndim != 3 or tuple(X.shape[1:]) != tuple(self.shape):
            raise InputError(f"Expected hidden states of shape (n, {self.shape[0]}, "
                             f"{self.shape[1]}), got {X.shape}. Were they made with the "
                             "same backbone as this feature spec?")
        if self.mode == "multi":
            parts = [spec.transform(X[:, part.rows, :part.width]) for part, spec in self.parts]
            return np.ascontiguousarray(np.concatenate(parts, 1), dtype=np.float32)
        if self.mode == "stc":
            parts = [X[:, layer, list(idx)] for layer, idx in zip(self.layers, self.neurons)]
            return np.ascontiguousarray(np.concatenate(parts, 1), dtype=np.float32)
        picked = X[:, list(self.layers), :]
        if self.combine == "mean":
            return picked.mean(1, dtype=np.float64).astype(np.float32)
        return np.ascontiguousarray(picked.reshape(len(X), -1), dtype=np.float32)

    def back_project(self, W):
        """V of shape (n_layers + 1, hidden, K) with Z @ W == einsum('nlh,lhk->nk', X, V).

        W: weights on Z, shape (d, K) (or (d,), giving V of shape (n_layers + 1, hidden)).
        """
        self._check()
        W = np.asarray(W, dtype=np.float64)
        if W.shape[0] != self.n_features:
            raise InputError(f"Expected weights with {self.n_features} rows (one per "
                             f"feature), got shape {W.shape}.")
        V = np.zeros(tuple(self.shape) + W.shape[1:])
        if self.mode == "multi":
            offset = 0
            for part, spec in self.parts:
                V[part.rows, :part.width] = spec.back_project(W[offset:offset + spec.n_features])
                offset += spec.n_features
            return V
        width, offset = self.shape[1], 0
        for i, layer in enumerate(self.layers):
            if self.mode == "stc":
                idx = list(self.neurons[i])
                V[layer, idx] += W[offset:offset + len(idx)]
                offset += len(idx)
            elif self.combine == "mean":
                V[layer] += W / len(self.layers)
            else:
                V[layer] += W[i * width:(i + 1) * width]
        return V

    def lift(self, z):
        """X of shape ``shape`` (float64) with ``transform(X[None])[0] == z``: a point in
        hidden-state space whose features are z (zero where no feature reads).

        z: (d,). Used to centre token states on the head's mean feature
        (``core.explain.attributions``): for a fusion mean every fused layer gets z.
        """
        self._check()
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self.n_features,):
            raise InputError(f"Expected {self.n_features} feature values, got shape {z.shape}.")
        X = np.zeros(tuple(self.shape))
        if self.mode == "multi":
            offset = 0
            for part, spec in self.parts:
                X[part.rows, :part.width] = spec.lift(z[offset:offset + spec.n_features])
                offset += spec.n_features
            return X
        width, offset = self.shape[1], 0
        for i, layer in enumerate(self.layers):
            if self.mode == "stc":
                idx = list(self.neurons[i])
                X[layer, idx] = z[offset:offset + len(idx)]
                offset += len(idx)
            elif self.combine == "mean":
                X[layer] = z
            else:
                X[layer] = z[i * width:(i + 1) * width]
        return X

    def to_json(self):
        """A JSON-able dict; `FeatureSpec.from_json` reads it back."""
        out = {"format": _FORMAT, "mode": self.mode, "layers": list(self.layers),
               "combine": self.combine, "shape": list(self.shape),
               "neurons": [list(idx) for idx in self.neurons]}
        if self.parts:
            out["parts"] = [{"name": p.name, "offset": p.offset, "n_states": p.n_states,
                             "width": p.width, "spec": spec.to_json()} for p, spec in self.parts]
        return out

    @classmethod
    def from_json(cls, d):
        """Rebuild (and check) a spec from `to_json()` output."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise InputError(f"Not a tenshot feature spec (expected format {_FORMAT!r}).")
        parts = tuple((Part(str(p["name"]), int(p["offset"]), int(p["n_states"]), int(p["width"])),
                       cls.from_json(p["spec"])) for p in d.get("parts", ()))
        spec = cls(d["mode"], tuple(int(i) for i in d["layers"]), d["combine"],
                   tuple(int(i) for i in d["shape"]),
                   tuple(tuple(int(j) for j in idx) for idx in d["neurons"]), parts)
        spec._check()
        return spec

    def _check(self):
        if self.mode not in _COMBINES or self.combine not in _COMBINES[self.mode]:
            raise InputError(f"Unknown feature spec: mode {self.mode!r} with combine "
                             f"{self.combine!r}; modes are {_COMBINES}.")
        n_states, width = self.shape
        if not self.layers or not all(0 <= i < n_states for i in self.layers):
            raise InputError(f"Layers {self.layers} must be hidden-state indices "
                             f"0..{n_states - 1}.")
        if self.mode == "layer" and len(self.layers) != 1:
            raise InputError(f"Mode 'layer' uses one layer, got {len(self.layers)}.")
        if self.mode == "stc" and (len(self.neurons) != len(self.layers) or not all(
                idx and all(0 <= j < width for j in idx) for idx in self.neurons)):
            raise InputError("STC needs a non-empty list of neuron indices per layer.")
        if (self.mode == "multi") != bool(self.parts) or not all(
                part.offset + part.n_states <= n_states and part.width <= width
                and tuple(spec.shape) == (part.n_states, part.width) for part, spec in self.parts):
            raise InputError("A multi-backbone spec needs parts that fit its shape, and only it has parts.")


def select_features(X, y, *, mode="auto", penalty="l1", random_state=0, fusion_layers=None,
                    eta=0.9, candidate_layers=None, auto_min_per_class=AUTO_MIN_PER_CLASS):
    """Choose how X (n, n_layers + 1, hidden) becomes the head's input; y (n,) indices.

    mode: "layer", "fusion", "stc" or "auto" (see the module docstring).
    fusion_layers: override the fusion depths; candidate_layers: restrict the scan (and
    so the layer and STC choices) to these hidden-state indices; eta: the share of each
    probe's |weight| mass STC keeps; auto_min_per_class: in auto mode, the fewest labels
    in a class for nested CV to choose the mode (below it: fusion). Returns (spec, report); report["layer_scores"] is
    the scan's leave-one-out accuracy per hidden-state index (None where not scanned),
    and in auto mode report["mode_scores"] the nested-CV accuracy of each mode.
    """
    if mode not in _MODES + ("auto",):
        raise InputError(f"Unknown feature mode {mode!r}; choose one of {_MODES + ('auto',)}.")
    X, y = _check_input(X, y)
    fixed = mode == "auto" and np.bincount(y).min() < auto_min_per_class
    mode = "fusion" if fixed else mode
    cands = _complete(X, _candidates(X, candidate_layers))
    with BLAS.limit(limits=1, user_api="blas"):
        err, acc = _scan(X, y, cands)
        report = {"layer_scores": [None if np.isnan(a) else float(a) for a in acc]}
        options = dict(penalty=penalty, random_state=random_state, eta=eta, cands=cands,
                       fusion_layers=fusion_layers, report=report)
        modes = _MODES if mode == "auto" else (mode,)
        built = {m: _build(m, X, y, err, **options) for m in modes}
        specs = {m: spec for m, (spec, _) in built.items()}
        if mode == "auto":
            Cs = {m: C if C is not None else _quick_head(penalty, random_state).fit(
                specs[m].transform(X), y).C_ for m, (_, C) in built.items()}
            options.pop("report")
            scores, logits = _nested_scores(X, y, specs, Cs, **options)
            report["mode_scores"] = scores
            # each step up layer < fusion < stc must gain half a sentence of accuracy
            mode = max(_MODES, key=lambda m: scores[m] - 0.5 / len(y) * _MODES.index(m))
            # honest out-of-fold logits (the selection saw no held-out label) for calibration;
            # core.learn.classifier.train takes them out of the report before storing it
            report[OOF_KEY] = logits[mode].tolist()  # a list: reports compare with ==
    report["mode"] = mode
    if fixed:
        report["auto_rule"] = (f"fusion: a class has fewer than {auto_min_per_class} labels, "
                               "too few for cross-validation to choose the mode")
    return specs[mode], report


def select_group_features(X, y, parts, *, mode="auto", **options):
    """Feature selection for a backbone group (core.model.group): each part on its own rows of X.

    parts: the group's ``Part``s. Returns (spec, report) with report["parts"] holding
    each part's own report.
    """
    if not parts:
        raise InputError("A backbone group needs at least one part.")
    X = np.asarray(X)
    chosen, reports = [], {}
    for part in parts:
        spec, reports[part.name] = select_features(X[:, part.rows, :part.width], y, mode=mode, **options)
        chosen.append((part, spec))
    layers = tuple(sorted({part.offset + layer for part, spec in chosen for layer in spec.layers}))
    spec = FeatureSpec("multi", layers, "concat", tuple(X.shape[1:]), parts=tuple(chosen))
    spec._check()
    return spec, {"mode": "multi", "parts": reports}


def _check_input(X, y):
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 3 or y.ndim != 1 or len(X) != len(y):
        raise InputError(f"Expected X of shape (n, n_layers + 1, hidden) and y of shape (n,), "
                         f"got {X.shape} and {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise InputError(f"y must hold class indices 0..K-1, got {y.dtype}.")
    check_labels(y, [f"class {k}" for k in range(max(int(y.max()) + 1, 2))])
    return X, y.astype(np.int64)


def _candidates(X, candidate_layers):
    """Sorted hidden-state indices to scan (default: all of them)."""
    n_states = X.shape[1]
    cands = sorted(set(range(n_states) if candidate_layers is None else candidate_layers))
    if not cands or not all(0 <= int(c) < n_states for c in cands):
        raise InputError(f"candidate_layers must be indices 0..{n_states - 1}, "
                         f"got {candidate_layers}.")
    return [int(c) for c in cands]


def _complete(X, layers):
    """The layers among ``layers`` that every text of X has (no NaN), in the same order."""
    kept = [layer for layer in layers if np.isfinite(X[:, layer]).all()]
    if not kept:
        raise InputError(f"None of the layers {list(layers)} is known for every text; "
                         "embed the texts again (their cached features are incomplete).")
    return type(layers)(kept)


def _scan(X, y, layers):
    """Leave-one-out squared error and accuracy of ridge per layer; NaN where not scanned.

    One-hot targets, standardised features, ridge strength _SCAN_ALPHA times the mean
    eigenvalue of Z Z^T (at least _SCAN_ALPHA, so a constant layer scans too). Closed form from one Cholesky inverse per layer, of the Gram
    matrix on the smaller side. A strong ridge made the squared error the steadiest
    guide to the best layer on the benchmark sets.
    """
    err, acc = np.full(X.shape[1], np.nan), np.full(X.shape[1], np.nan)
    n, K = len(y), int(y.max()) + 1
    Y = np.eye(K)[y]
    prior = Y.mean(0)
    Y -= prior
    for layer in layers:
        Z = standardise(X[:, layer].astype(np.float64))[0]
        # (Z ** 2).sum() / n counts the layer's non-constant neurons; a layer that is the
        # same for every text (last-token pooling under a prompt ending in a fixed token)
        # has none, and the floor of one keeps the Gram matrix invertible: such a layer
        # scores as the intercept alone
        lam = _SCAN_ALPHA * max((Z ** 2).sum() / n, 1.0)
        if n <= Z.shape[1]:
            # dual: residual = lam * A @ Y and 1 - hat = lam * diag(A), A = (Z Z^T + lam I)^-1
            A = _inverse_pd(Z @ Z.T + lam * np.eye(n))
            resid, one_minus_hat = lam * (A @ Y), lam * np.diag(A)
        else:
            B = _inverse_pd(Z.T @ Z + lam * np.eye(Z.shape[1]))
            ZB = Z @ B
            resid, one_minus_hat = Y - ZB @ (Z.T @ Y), 1.0 - (ZB * Z).sum(1)
        # the unpenalised intercept adds 1/n to every leverage
        loo_resid = resid / (one_minus_hat - 1.0 / n)[:, None]
        err[layer] = float((loo_resid ** 2).sum(1).mean())
        acc[layer] = float(((Y - loo_resid + prior).argmax(1) == y).mean())
    return err, acc


def _inverse_pd(M):
    """Inverse of a symmetric positive definite matrix by Cholesky (LAPACK potrf/potri)."""
    factor, info = lapack.dpotrf(M)
    inv, info2 = lapack.dpotri(factor)
    if info or info2:
        raise InputError("The hidden states are degenerate (a singular Gram matrix).")
    return np.triu(inv) + np.triu(inv, 1).T


def _quick_head(penalty, random_state):
    """The head as used inside selection: one CV repeat and a loose solver tolerance;
    only its predictions and chosen C are used, never its exact weights."""
    return Head(penalty, n_repeats=1, tol=1e-4, random_state=random_state)


def _ranked_layers(err):
    """Scanned layers, best first; the embedding layer 0 only where strictly best."""
    order = sorted(np.flatnonzero(~np.isnan(err)).tolist(), key=lambda i: (err[i], i == 0))
    return order if order[0] == 0 else [i for i in order if i != 0]


def _build(mode, X, y, err, *, penalty, random_state, eta, cands, fusion_layers, report):
    """(spec, C or None): the spec of one mode from all rows of X, y and the scan `err`.

    Writes what it chose into `report`. C is the head's CV-chosen C where it was fitted.
    """
    shape, ranked = tuple(X.shape[1:]), _ranked_layers(err)
    if mode == "layer":
        report["layer"] = ranked[0]
        return FeatureSpec("layer", (ranked[0],), "single", shape), None
    if mode == "stc":
        layers, neurons = _stc(X, y, sorted(ranked[:_STC_TOP_LAYERS]), eta, random_state)
        report["stc_layers"], report["stc_neurons"] = list(layers), sum(map(len, neurons))
        return FeatureSpec("stc", layers, "concat", shape, neurons), None
    layers = _complete(X, _fusion_layers(X.shape[1] - 1, fusion_layers))
    if FUSION_COMBINE is not None or len(layers) == 1:
        return FeatureSpec("fusion", layers, FUSION_COMBINE or "concat", shape), None
    heads = {c: _quick_head(penalty, random_state).fit(
        FeatureSpec("fusion", layers, c, shape).transform(X), y) for c in ("concat", "mean")}
    report["fusion_combine_scores"] = {c: h.cv_accuracy_ for c, h in heads.items()}
    combine = "mean" if heads["mean"].cv_accuracy_ > heads["concat"].cv_accuracy_ else "concat"
    return FeatureSpec("fusion", layers, combine, shape), heads[combine].C_


def _fusion_layers(n_layers, fusion_layers):
    """Hidden-state indices at the FUSION_DEPTHS fractions of the depth (or the user's)."""
    if fusion_layers is not None:
        layers = sorted({int(i) for i in fusion_layers})
        if not layers or not all(0 <= i <= n_layers for i in layers):
            raise InputError(f"fusion_layers must be indices 0..{n_layers}, got {fusion_layers}.")
        return tuple(layers)
    return tuple(sorted({max(1, round(n_layers * q)) for q in FUSION_DEPTHS}))


def _stc(X, y, layers, eta, random_state):
    """Per layer, the fewest neurons carrying `eta` of an L1 probe's |weight| mass.

    The probe is the head with penalty "l1" at a fixed C (_PROBE_RATIO times the
    smallest non-empty C) on the layer's standardised neurons; a neuron's importance is
    its |weight| summed over classes. Returns (layers, neurons) for the layers kept.
    """
    kept_layers, kept = [], []
    for layer in layers:
        Z = X[:, layer]
        probe = _quick_head("l1", random_state).fit(Z, y, C=_PROBE_RATIO * min_c(Z, y))
        importance = np.abs(probe.coef_).sum(0)
        if not importance.any():
            continue
        order = np.argsort(-importance, kind="stable")
        mass = np.cumsum(importance[order])
        n_keep = min(int(np.searchsorted(mass, eta * mass[-1])) + 1, len(order))
        kept_layers.append(layer)
        kept.append(tuple(sorted(order[:n_keep].tolist())))
    if not kept:  # every probe empty (cannot happen above C_min): keep a whole layer
        return (layers[0],), (tuple(range(X.shape[2])),)
    return tuple(kept_layers), tuple(kept)


def _nested_scores(X, y, specs, Cs, *, penalty, random_state, **options):
    """Accuracy of each mode with its selection rerun inside each fold of a stratified
    K-fold CV, and the head fitted at the C that mode chose on all rows.

    Returns ({mode: accuracy}, {mode: out-of-fold logits of shape (1, n, K)})."""
    n_splits = max(2, min(5, int(np.bincount(y).min())))
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=1, random_state=random_state)
    correct = dict.fromkeys(specs, 0)
    logits = {mode: np.zeros((1, len(y), max(int(y.max()) + 1, 2))) for mode in specs}
    for tr, te in cv.split(np.zeros(len(y)), y):
        err, _ = _scan(X[tr], y[tr], options["cands"])
        for mode, spec in specs.items():
            if mode != "fusion":
                spec, _ = _build(mode, X[tr], y[tr], err, penalty=penalty,
                                 random_state=random_state, report={}, **options)
            head = _quick_head(penalty, random_state).fit(spec.transform(X[tr]), y[tr], C=Cs[mode])
            logits[mode][0, te] = head.decision_function(spec.transform(X[te]))
            correct[mode] += int((logits[mode][0, te].argmax(1) == y[te]).sum())
    return {mode: correct[mode] / len(y) for mode in specs}, logits
