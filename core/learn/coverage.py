"""Confidence a user can act on: calibration from cross-validation, and coverage estimates.

Out-of-fold (OOF) logits for every labelled text come from auto mode's nested CV
(``core.learn.features``: the feature selection reran inside each fold), or otherwise
from the head's own CV at the chosen C (``core.learn.head``). From them:

- a *temperature* T (one scalar, so it is stable with a few dozen labels): the model's
  probabilities become ``softmax(logits / T)``, T chosen by the lowest OOF log-loss
  with a weak prior that keeps T near 1 (log T ~ Normal(0, 0.5));
- the OOF (calibrated confidence, right or wrong) pairs, kept with the model, from
  which the accuracy above a confidence threshold t is estimated: the share of OOF
  predictions with confidence >= t that were right, with a 95% Wilson interval.

A target accuracy A picks the smallest threshold whose interval's *lower bound*
reaches A, so the promise is conservative. Fewer than ``MIN_ESTIMATE`` labelled texts'
worth of OOF predictions above a threshold is too few for an estimate, and is said so.

Shortcuts admitted: with repeated CV every labelled text has one OOF prediction per
repeat; the interval counts each text once (counts divided by the repeats), not each
prediction. The fold models saw 1/k fewer labels than the final model. Where the OOF
logits come from the head's CV (a fixed mode, or a submit that reuses the last feature
spec) the spec was chosen with every label, and after STC's neuron selection that makes
the estimate optimistic; auto mode's fresh selection avoids it (bench/coverage.py
measures the result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = ["MIN_ESTIMATE", "Calibration", "Estimate", "fit_temperature", "fit_calibration",
           "calibrate", "temperature_of", "wilson", "estimate", "threshold_for", "coverage", "curve"]

MIN_ESTIMATE = 10  # labelled texts above a threshold needed before an accuracy is estimated
_PRIOR_SD = 0.5  # of log T: T stays within about 0.37..2.7 unless the data insist
_Z = 1.96  # 95% interval


@dataclass(frozen=True)
class Calibration:
    """A model's temperature and its OOF (calibrated confidence, correct) pairs.

    confidence: float array (m,), top-class calibrated probability of each OOF
    prediction; correct: bool array (m,); repeats: how many OOF predictions each
    labelled text has (m = repeats * n_labels).
    """

    temperature: float
    confidence: np.ndarray
    correct: np.ndarray
    repeats: int = 1

    @property
    def n_labels(self) -> int:
        return int(round(len(self.confidence) / self.repeats))

    def to_json(self) -> dict:
        return {"temperature": float(self.temperature), "repeats": int(self.repeats),
                "confidence": [round(float(c), 5) for c in self.confidence],
                "correct": [int(c) for c in self.correct]}

    @classmethod
    def from_json(cls, d: dict | None) -> "Calibration | None":
        """The calibration stored in a model's metrics, or None (a model from before it)."""
        if not d:
            return None
        return cls(float(d["temperature"]), np.asarray(d["confidence"], dtype=float),
                   np.asarray(d["correct"], dtype=bool), int(d.get("repeats", 1)))


@dataclass(frozen=True)
class Estimate:
    """Estimated accuracy of the predictions with confidence >= threshold.

    n: labelled texts' worth of OOF predictions above the threshold; accuracy, low,
    high: the point estimate and its 95% interval, None when n < MIN_ESTIMATE.
    """

    threshold: float
    n: float
    accuracy: float | None
    low: float | None
    high: float | None

    @property
    def enough(self) -> bool:
        return self.accuracy is not None


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, repeats: int = 1) -> float:
    """The temperature T minimising the log-loss of softmax(logits / T) plus a prior on log T.

    logits: (m, K) OOF logits; y: (m,) true class indices; repeats: OOF predictions
    per labelled text (the data term counts each text once). Example: logits that are
    right but too timid ([[0, 1]] * 20 with y = 1) give T < 1.
    """
    logits, y = np.asarray(logits, dtype=float), np.asarray(y)

    def objective(log_t: float) -> float:
        nll = -log_softmax(logits / math.exp(log_t), axis=1)[np.arange(len(y)), y].sum()
        return nll / repeats + log_t ** 2 / (2 * _PRIOR_SD ** 2)

    return float(math.exp(minimize_scalar(objective, bounds=(-3.0, 3.0), method="bounded").x))


def fit_calibration(oof_logits: np.ndarray, y: np.ndarray) -> Calibration:
    """Calibration from the head's OOF logits (repeats, n, K) and labels y (n,)."""
    oof_logits = np.asarray(oof_logits, dtype=float)
    repeats = oof_logits.shape[0]
    logits = oof_logits.reshape(-1, oof_logits.shape[-1])
    ys = np.tile(np.asarray(y), repeats)
    t = fit_temperature(logits, ys, repeats=repeats)
    probs = softmax(logits / t, axis=1)
    return Calibration(t, probs.max(1), probs.argmax(1) == ys, repeats)


def temperature_of(clf) -> float:
    """The temperature of a classifier's calibration; 1.0 (plain softmax) for a model
    without one (saved before calibration, or a multi-label class's yes/no head)."""
    cal = getattr(clf, "calibration", None)
    return float(cal.temperature) if cal is not None else 1.0


def calibrate(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities (n, K) from logits (n, K): softmax(logits / temperature)."""
    return softmax(np.asarray(logits, dtype=float) / temperature, axis=1)


def wilson(k: float, n: float, z: float = _Z) -> tuple[float, float]:
    """Wilson score interval of a share k / n. Example: wilson(9, 10) -> (0.596, 0.982)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(cal: Calibration, threshold: float) -> Estimate:
    """How accurate the predictions with confidence >= threshold are, from the OOF pairs."""
    above = cal.confidence >= threshold - 1e-9
    n = above.sum() / cal.repeats
    if n < MIN_ESTIMATE:
        return Estimate(float(threshold), float(n), None, None, None)
    k = cal.correct[above].sum() / cal.repeats
    low, high = wilson(k, n)
    return Estimate(float(threshold), float(n), float(k / n), low, high)


def threshold_for(cal: Calibration, target: float) -> Estimate | None:
    """The smallest threshold whose estimate's lower bound reaches ``target``, or None.

    Candidates are the OOF confidences themselves (where the estimate changes).
    """
    for t in np.unique(np.concatenate([[0.0], cal.confidence])):
        est = estimate(cal, float(t))
        if not est.enough:
            return None  # higher thresholds keep even fewer labelled texts
        if est.low >= target:
            return est
    return None


def coverage(confidence: np.ndarray, threshold: float) -> int:
    """How many of the confidences (n,) clear the threshold (>=)."""
    return int((np.asarray(confidence, dtype=float) >= threshold - 1e-9).sum())


def curve(cal: Calibration, confidence: np.ndarray, thresholds=None) -> dict[str, list]:
    """Estimated accuracy (with interval) and share of ``confidence`` cleared per threshold.

    Returns {"threshold", "accuracy", "low", "high", "share"}: lists of equal length;
    accuracy/low/high are None where there are too few labelled texts for an estimate.
    """
    thresholds = np.linspace(0.0, 1.0, 51) if thresholds is None else np.asarray(thresholds)
    n = max(len(confidence), 1)
    out: dict[str, list] = {k: [] for k in ("threshold", "accuracy", "low", "high", "share")}
    for t in thresholds:
        est = estimate(cal, float(t))
        out["threshold"].append(float(t))
        out["accuracy"].append(est.accuracy)
        out["low"].append(est.low)
        out["high"].append(est.high)
        out["share"].append(coverage(confidence, float(t)) / n)
    return out
