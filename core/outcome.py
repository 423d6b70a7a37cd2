"""What one retrain produced, for the page or the CLI to show: one shape for single-label
projects (headline: cross-validated accuracy) and multi-label ones (macro-F1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from core.learn.curves import clear_change

__all__ = ["AccuracyChange", "TrainOutcome"]


@dataclass(frozen=True)
class AccuracyChange:
    """How a model's cross-validated score moved from the previous one.

    points: the difference in percentage points; clear: whether it is beyond the
    noise of that many labels (``core.learn.curves.clear_change``).
    """

    points: float
    clear: bool

    def __str__(self) -> str:
        return f"{self.points:+.0f} pts" if self.clear else "no clear change"


@dataclass(frozen=True)
class TrainOutcome:
    """What one retrain produced. The headline score is ``metrics[headline]``:
    cross-validated accuracy here, macro-F1 for a multi-label project
    (``core.multilabel.MultiLabelOutcome``); ``previous_accuracy`` is in the same score."""

    headline: ClassVar[str] = "cv_accuracy"

    version: int
    metrics: dict
    previous_accuracy: float | None
    counts: dict[str, int]
    n_predicted: int
    reselected: bool
    seconds: float
    # True when a version trained on newer labels was saved first: this head was dropped,
    # and version/metrics describe that newer latest version instead
    superseded: bool = False
    previous_labels: int | None = None

    @property
    def accuracy_change(self) -> float | None:
        if self.previous_accuracy is None or self.metrics.get(self.headline) is None:
            return None
        return self.metrics[self.headline] - self.previous_accuracy

    @property
    def change(self) -> AccuracyChange | None:
        """The change since the previous model, with whether it is beyond the noise."""
        if self.accuracy_change is None or self.previous_labels is None:
            return None
        return AccuracyChange(self.accuracy_change * 100, clear_change(
            (self.previous_accuracy, self.previous_labels),
            (self.metrics[self.headline], self.metrics["n_labels"])))
