"""What the Stability page shows of a stored bootstrap run (``core.explain.stability``):
its headline numbers, the unstable sentences, and each scored sentence's prediction.

Plain values in, plain rows out, so the page only draws them. A sentence is unstable
when fewer than ``threshold`` of the refits that scored it agree with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Container

import numpy as np

from core.explain.stability import Stability

__all__ = ["RunSummary", "UnstableRow", "summarise", "unstable_rows", "predicted_classes"]


@dataclass(frozen=True)
class RunSummary:
    """The headline numbers of a run.

    oob_accuracy: median over the refits of their out-of-bag accuracy (NaN if none);
    stable_share: share of the scored sentences (labelled and other) on which at least
    ``threshold`` of the refits agree, None when no sentence was scored;
    features_used: head features the full model gives a non-zero weight;
    empty_refits: refits that selected no feature.
    """

    refits: int
    seed: int
    C: float
    oob_accuracy: float
    stable_share: float | None
    features_used: int
    empty_refits: int


def summarise(stability: Stability, threshold: float) -> RunSummary:
    """The ``RunSummary`` of ``stability`` at ``threshold`` (a share of refits, 0..1)."""
    share = np.concatenate([stability.agreement, stability.other_agreement])
    share = share[np.isfinite(share)]  # labelled rows never out of bag have no agreement
    return RunSummary(stability.B, stability.seed, stability.C,
                      float(np.nanmedian(stability.oob_accuracy)),
                      float((share >= threshold).mean()) if len(share) else None,
                      int((stability.coef != 0).any(1).sum()), int(stability.empty_refits.sum()))


@dataclass(frozen=True)
class UnstableRow:
    """One unstable sentence: the share of refits agreeing with the model, its text id and
    the class the model predicts for it."""

    agreement: float
    text_id: int
    predicted: str


def unstable_rows(stability: Stability, text_ids: Container[int], threshold: float) -> list[UnstableRow]:
    """The scored sentences below ``threshold`` that still exist (their id in ``text_ids``),
    least stable first; on a tie labelled sentences come before the others."""
    rows = [UnstableRow(float(a), int(i), stability.classes[int(p)])
            for ids, share, pred in ((stability.ids, stability.agreement, stability.pred),
                                     (stability.other_ids, stability.other_agreement, stability.other_pred))
            for i, a, p in zip(ids, share, pred) if a < threshold]  # NaN compares False
    return sorted((r for r in rows if r.text_id in text_ids), key=lambda r: r.agreement)


def predicted_classes(stability: Stability) -> dict[int, int]:
    """{text id: the full model's class index} of every sentence the run scored, labelled
    ones first."""
    return {int(i): int(p) for i, p in zip(np.r_[stability.ids, stability.other_ids],
                                           np.r_[stability.pred, stability.other_pred])}
