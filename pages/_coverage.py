"""The coverage control of the Predictions and Export pages: a confidence threshold or a
target accuracy -> how many predictions clear it, how accurate they are estimated to be,
and which ones are marked "needs a human". The estimate and its wording live in
``core.coverage_view``; this module only draws them.

The last threshold or target chosen is kept in session state, so the Export page starts
from what the Predictions page showed.
"""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from core.coverage_view import MARKER, Choice, choose, describe
from core.figures import coverage_figure
from core.learn.coverage import Calibration, curve

__all__ = ["MARKER", "coverage_control", "calibration_of"]

BY_CONFIDENCE, BY_ACCURACY = "Confidence threshold", "Target accuracy"
_SHARED = "coverage_choice"  # {"mode", "threshold", "target"} in percent, shared by both pages


def calibration_of(model) -> Calibration | None:
    """The stored model version's calibration, or None for a model trained before it."""
    return Calibration.from_json(model.metrics.get("calibration"))


def coverage_control(model, confidence, *, key: str) -> Choice:
    """Draw the control for ``confidence`` (one per prediction) and return the choice.

    key: a prefix for the widgets' keys, one per page.
    """
    cal = calibration_of(model)
    shared = st.session_state.setdefault(_SHARED, {"mode": BY_CONFIDENCE, "threshold": 80, "target": 90})
    left, right = st.columns([2, 3])
    mode = left.radio("Set by", [BY_CONFIDENCE, BY_ACCURACY], key=f"{key}_mode",
                      index=[BY_CONFIDENCE, BY_ACCURACY].index(shared["mode"]),
                      help="A confidence the model must reach, or the accuracy you need (the "
                           "lowest threshold whose 95% interval's lower end reaches it).")
    if mode == BY_CONFIDENCE:
        value = right.slider("Trust predictions with confidence of at least", 0, 100,
                             shared["threshold"], 1, format="%d%%", key=f"{key}_threshold")
        choice = choose(cal, confidence, threshold=value / 100)
        shared.update(mode=mode, threshold=value)
    else:
        value = right.slider("Target accuracy", 50, 99, shared["target"], 1, format="%d%%",
                             key=f"{key}_target")
        choice = choose(cal, confidence, target=value / 100)
        shared.update(mode=mode, target=value)
    show = st.warning if choice.threshold is None else st.info
    show(describe(choice, cal), icon=":material/rule:")
    if cal is not None:
        with st.expander("How accuracy and coverage trade off"):
            # no prediction is less confident than 1/K: start the axis where the choice begins
            low = math.floor(20 * min(min(confidence, default=1.0), cal.confidence.min())) / 20
            st.plotly_chart(coverage_figure(curve(cal, confidence, np.linspace(low, 1.0, 41)),
                                            choice.threshold), key=f"{key}_figure")
            st.caption(f"From {cal.n_labels:,} labels, each predicted by a model that did not "
                       f"see it (cross-validation); probabilities calibrated by a temperature of "
                       f"{cal.temperature:.2f}. The band is missing where fewer than 10 labels "
                       "reach the threshold.")
    return choice
