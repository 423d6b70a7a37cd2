"""The coverage control shared by the Predictions page, the Export page and ``tenshot predict``:
a confidence threshold (or a target accuracy) -> how many predictions clear it, their
estimated accuracy, and a plain-language sentence saying so.

Predictions below the threshold are the ones marked "needs a human". The estimates
come from ``core.learn.coverage`` (the model's out-of-fold predictions); this module
only chooses and words them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import InputError
from core.learn.coverage import MIN_ESTIMATE, Calibration, Estimate, coverage, estimate, threshold_for

__all__ = ["MARKER", "Choice", "check_fraction", "choose", "best_promise", "describe", "unreachable"]

MARKER = "needs a human"


@dataclass(frozen=True)
class Choice:
    """The threshold in force and what it means for the predictions.

    threshold: the confidence a prediction needs to be kept without review; None when a
    target accuracy cannot be promised (then every prediction needs a human).
    target: the accuracy asked for, None when a threshold was given directly.
    estimate: the estimated accuracy above the threshold, None without calibration or
    threshold. cleared / total: predictions at or above the threshold / all of them.
    """

    threshold: float | None
    target: float | None
    estimate: Estimate | None
    cleared: int
    total: int

    @property
    def below(self) -> int:
        return self.total - self.cleared

    def marks(self, confidence: Sequence[float]) -> list[bool]:
        """For each confidence: True when that prediction needs a human."""
        if self.threshold is None:
            return [True] * len(confidence)
        return [float(c) < self.threshold - 1e-9 for c in confidence]


def check_fraction(value: float, what: str) -> float:
    """A threshold or target between 0 and 1, else InputError naming ``what``.

    Example: check_fraction(80, "--threshold") raises "... give 0.8 for 80%".
    """
    value = float(value)
    if not 0.0 <= value <= 1.0:
        hint = f" (give {value / 100:g} for {value:g}%)" if 1.0 < value <= 100.0 else ""
        raise InputError(f"{what} must be a share between 0 and 1, got {value:g}{hint}.")
    return value


def choose(cal: Calibration | None, confidence: Sequence[float], *, threshold: float | None = None,
           target: float | None = None) -> Choice:
    """The Choice for a confidence threshold, or for a target accuracy (give one of them).

    A target picks the smallest threshold whose 95% interval's lower end reaches it.
    """
    conf = np.asarray(confidence, dtype=float)
    if target is not None:
        est = threshold_for(cal, target) if cal is not None else None
        if est is None:
            return Choice(None, target, None, 0, len(conf))
        return Choice(est.threshold, target, est, coverage(conf, est.threshold), len(conf))
    if threshold is None:
        raise InputError("Give a confidence threshold or a target accuracy.")
    est = estimate(cal, threshold) if cal is not None else None
    return Choice(threshold, None, est, coverage(conf, threshold), len(conf))


def best_promise(cal: Calibration) -> Estimate | None:
    """The estimate with the highest lower bound over all thresholds with enough labels."""
    best = None
    for t in np.unique(cal.confidence):
        est = estimate(cal, float(t))
        if est.enough and (best is None or est.low > best.low):
            best = est
    return best


def unreachable(cal: Calibration | None, target: float) -> str:
    """Why no threshold reaches ``target``: the best promise there is, or too few labels."""
    if cal is None:
        return ("This model version has no accuracy estimate (it was trained before estimates "
                "existed; retrain to get one), so no threshold can promise an accuracy.")
    best = best_promise(cal)
    why = (f"the best it can promise is {_pct(best.low)} (above {_pct(best.threshold)} "
           "confidence)" if best else f"too few of its {cal.n_labels} labels are held out above "
           "any threshold to estimate one")
    return f"No confidence threshold can promise {_pct(target)} accuracy with this model: {why}."


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _accuracy(est: Estimate) -> str:
    return (f"estimated accuracy {_pct(est.accuracy)} (95% interval {_pct(est.low)}–"
            f"{_pct(est.high)}, from {est.n:.0f} of your labels held out by cross-validation)")


def describe(choice: Choice, cal: Calibration | None) -> str:
    """One or two plain sentences saying what the choice keeps and how accurate it is."""
    total = f"{choice.total:,} prediction{'s' * (choice.total != 1)}"
    if choice.threshold is None:
        return (f"{unreachable(cal, choice.target)} Label more sentences or lower the target; "
                f"until then all {total} are marked “{MARKER}”.")
    share = choice.cleared / choice.total if choice.total else 0.0
    kept = (f"{choice.cleared:,} of {total} ({_pct(share)}) have at least "
            f"{_pct(choice.threshold)} confidence")
    if choice.target is not None:
        kept = (f"For at least {_pct(choice.target)} accuracy (the interval's lower end), keep "
                f"predictions with {_pct(choice.threshold)} confidence or more: {choice.cleared:,} "
                f"of {total} ({_pct(share)})")
    marked = {0: f"None is marked “{MARKER}”.",
              1: f"The other one is marked “{MARKER}”."}.get(
        choice.below, f"The other {choice.below:,} are marked “{MARKER}”.")
    if cal is None:
        return (f"{kept}. This model version has no accuracy estimate (it was trained before "
                f"estimates existed; retrain to get one). {marked}")
    est = choice.estimate
    if est is None or not est.enough:
        return (f"{kept}. Too few of your labels ({est.n if est else 0:.0f}) reach that "
                f"confidence in cross-validation to estimate their accuracy ({MIN_ESTIMATE} are "
                f"needed): label more sentences or lower the threshold. {marked}")
    return f"{kept}, {_accuracy(est)}. {marked}"
