"""The Model page's Quality tab for a multi-label project (issue 16, items 2 and 6).

Scores of the latest model (micro- and macro-F1, subset accuracy, Hamming loss), a row
per class with its precision, recall, F1 and out-of-fold confusion counts, and the
per-class decision thresholds: the one cross-validation chose, the user's own, and a
control to set or clear it. Predicted sets use the user's threshold at once, with no
retraining (``core.multilabel.effective_thresholds``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.learn.classifier import features_for
from core.learn.multilabel import THRESHOLD_MIN_LABELS
from core.multilabel import effective_thresholds, set_threshold
from core.multilabel_curve import multilabel_curve_figure, multilabel_learning_curve
from core.project import load_classifier
from pages._shared import (backbone, escape_markdown, feature_cache, flash, percent, show_error, store,
                           with_eta)

__all__ = ["multilabel_curve_section", "multilabel_quality", "per_class_frame"]


def _points(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def summary(latest) -> None:
    m = latest.metrics
    cols = st.columns(6)
    cols[0].metric("Model", f"v{latest.version}")
    cols[1].metric("CV macro-F1", percent(m.get("cv_macro_f1")),
                   help="F1 of each class on labels held out by cross-validation, averaged over "
                        "the classes: a rare class counts as much as a common one.")
    cols[2].metric("CV micro-F1", percent(m.get("cv_micro_f1")),
                   help="F1 of every (sentence, class) decision pooled: common classes weigh more.")
    cols[3].metric("Subset accuracy", percent(m.get("cv_subset_accuracy")),
                   help="Share of held-out sentences whose whole predicted set is exactly right.")
    cols[4].metric("Hamming loss", _points(m.get("cv_hamming_loss")),
                   help="Share of (sentence, class) decisions that are wrong: lower is better.")
    cols[5].metric("Labelled", f"{latest.n_labels:,}",
                   help=f"Labelled sentences; {m.get('n_none', 0):,} of them “none of these”.")
    s = latest.params.get("settings", {})
    at = m.get("cv_at_labels")
    st.caption(escape_markdown(
        f"One head per class on the same features · backbone {s.get('backbone')} · penalty "
        f"{s.get('penalty')} · scores from cross-validation on your labels"
        + (f" (last run at {at} labelled sentences; submits since reuse its choices)" if at and
           at != latest.n_labels else "") + "."))


def per_class_frame(project, latest) -> pd.DataFrame:
    """A row per class: P/R/F1, out-of-fold confusion counts, and its thresholds."""
    per_class = latest.metrics.get("per_class", {})
    used = effective_thresholds(project, latest)
    chosen = dict(zip(latest.params["classes"], latest.params["head"]["thresholds_"]))
    own = project.settings.get("thresholds", {})
    rows = []
    for c in latest.params["classes"]:
        pc = per_class.get(c, {})
        rows.append({"Class": c, "Precision": pc.get("precision"), "Recall": pc.get("recall"),
                     "F1": pc.get("f1"), "With it": pc.get("support"),
                     "Found": pc.get("tp"), "False alarms": pc.get("fp"),
                     "Missed": pc.get("fn"), "Right “no”": pc.get("tn"),
                     "Threshold by CV": chosen.get(c), "Yours": own.get(c), "In use": used[c]})
    return pd.DataFrame(rows)


def per_class_table(project, latest) -> None:
    st.subheader("Per class", anchor=False)
    # short headers with the long names in their tooltips: the table fits a 1280 px window
    # (with "Found (TP)" and "Your threshold" it scrolled sideways and hid the last column)
    def pct(help_text: str | None = None):
        return st.column_config.NumberColumn(format="percent", help=help_text)

    def count(help_text: str):
        return st.column_config.NumberColumn(help=help_text)

    st.dataframe(per_class_frame(project, latest), hide_index=True, width="stretch", column_config={
        "Precision": pct(), "Recall": pct(), "F1": pct(),
        "With it": count("Labelled sentences that have the class."),
        "Found": count("True positives: sentences with the class that the model found."),
        "False alarms": count("False positives: the class given to sentences without it."),
        "Missed": count("False negatives: sentences with the class that the model left out."),
        "Right “no”": count("True negatives: sentences without the class, correctly left out."),
        "Threshold by CV": pct("The threshold cross-validation chose for this class."),
        "Yours": pct("The threshold you set below, if any; it replaces the chosen one."),
        "In use": pct("The threshold the predictions use now.")})
    st.caption("Each class is scored on held-out labels as a yes/no question. Found: sentences "
               "with the class the model found; false alarms: given the class wrongly; missed: "
               "with the class but not found; right “no”: correctly left out. A threshold is "
               f"0.5 until the class has {THRESHOLD_MIN_LABELS} sentences with it and "
               f"{THRESHOLD_MIN_LABELS} without; then cross-validation picks the one of best F1.")


def _apply(project, name: str, value: float | None) -> None:
    try:
        set_threshold(store(), project, name, value)
    except TenshotError as err:
        show_error(err)
        return
    flash(f"“{name}” now uses " + (f"your threshold {value:.0%}" if value is not None else
                                   "the threshold cross-validation chose")
          + ": the predicted sets follow at once, without retraining.", "success")
    st.rerun()


def threshold_control(project, latest) -> None:
    st.subheader("Decision thresholds", anchor=False)
    classes = latest.params["classes"]
    used = effective_thresholds(project, latest)
    left, right = st.columns([1, 2])
    name = left.selectbox("Class", classes, key="ml_thr_class")
    value = right.slider("Predict it at this probability or more", 0.01, 0.99, float(used[name]),
                         0.01, format="%.2f", key=f"ml_thr_{classes.index(name)}",
                         help="Lower: the class is predicted more often (more found, more false "
                              "alarms). Higher: less often.")
    save, reset, _ = st.columns([1, 1.4, 2])
    if save.button("Use this threshold", key="ml_thr_save", icon=":material/tune:"):
        _apply(project, name, value)
    if reset.button("Back to the chosen one", key="ml_thr_reset", icon=":material/restart_alt:",
                    disabled=name not in project.settings.get("thresholds", {})):
        _apply(project, name, None)


def multilabel_quality(project, latest, models) -> None:
    """The Quality tab of a multi-label project with a model."""
    summary(latest)
    per_class_table(project, latest)
    threshold_control(project, latest)
    if len(models) > 1:
        st.caption("Macro-F1 by model version: " + " · ".join(
            f"v{m.version} {percent(m.metrics.get('cv_macro_f1'))}" for m in models[-8:]))


def multilabel_curve_section(project, latest) -> None:
    """The learning curve on macro-F1, computed on a button press and kept per model version."""
    st.subheader("Learning curve", anchor=False)
    key = ("ml_curve", project.id, latest.id)
    if st.button("Compute", icon=":material/query_stats:", key="m_diag"):
        clf = load_classifier(latest)
        rows = store().label_sets(project.id)
        bar = st.progress(0.0, text="Reading the labelled sentences...")
        try:
            X = features_for(backbone(clf.settings.backbone), [r.text for r in rows], clf.settings,
                             cache=feature_cache(store()))
            eta = with_eta(bar)
            st.session_state[key] = multilabel_learning_curve(
                clf, X, [r.labels for r in rows], progress=lambda d, t: eta(d / t, f"Refitting: {d}/{t} folds."))
        except TenshotError as err:
            show_error(err)
        bar.empty()
    curve = st.session_state.get(key)
    if curve is None:
        st.caption("Trains the heads on growing subsets of your labelled sentences and scores "
                   "macro-F1 on held-out ones: whether more labels still help. Takes seconds.")
        return
    st.plotly_chart(multilabel_curve_figure(curve, latest.metrics.get("cv_macro_f1")), key="m_curve")
    st.caption("The refits keep the current model's features, C and thresholds, so the curve "
               "is slightly optimistic. Still rising at the right: more labels should help.")
