"""Predictions: every unlabelled sentence with the latest model's class and confidence.

Accept or correct predictions in the table; each becomes a label and the model
retrains. "What changed" lists the sentences whose predicted class flipped since
the previous model version.
"""

import hashlib

import pandas as pd
import streamlit as st

from core.export import SORTS, filter_predictions, prediction_changes
from core.errors import TenshotError
from pages._coverage import MARKER, coverage_control
from pages._multilabel_predictions import predictions_page
from pages._shared import changes_header, export_link, labeller, page_header, percent, show_error, store, train
from pages._views import labels_from_edits, missing_predictions, no_model_yet


YOUR_LABEL, ACCEPT, REVIEW = "Your label", "Accept", "Review"
MAX_ROWS = 1000  # a longer table is slow to draw and to scan; the filters narrow it
EDITOR_KEY_STATE = "predictions_editor_key"


def editor_key(model_id: int, shown) -> str:
    """A key per (model, rows shown): edits never carry over to other rows after filtering."""
    digest = hashlib.sha1(",".join(str(p.text_id) for p in shown).encode()).hexdigest()[:12]
    return f"pred_edit_{model_id}_{digest}"


def save_edits(project, shown, key: str) -> None:
    edits = st.session_state.get(key, {}).get("edited_rows", {})
    pairs = labels_from_edits(shown, edits, label_column=YOUR_LABEL, accept_column=ACCEPT)
    if not pairs:
        st.info("Tick Accept or choose a label in some rows first.", icon=":material/info:")
        return
    s = store()
    try:
        for label in dict.fromkeys(lab for _, lab in pairs):
            s.set_labels(project.id, [t for t, lab in pairs if lab == label], label,
                         session=labeller())
    except TenshotError as err:
        show_error(err)
        return
    st.session_state.pop(key, None)
    train(project)
    st.rerun()


def review(project, latest, preds, classes) -> None:
    with st.container(border=True):
        choice = coverage_control(latest, [p.confidence for p in preds], key="pred_cover")
    left, mid, right = st.columns([3, 3, 2])
    search = left.text_input("Search", placeholder="Words in the sentence", key="pred_search")
    picked = mid.multiselect("Predicted class", classes, default=classes, key="pred_classes")
    sort = right.selectbox("Order", SORTS, key="pred_sort")
    low, high = st.slider("Confidence", 0, 100, (0, 100), 1, format="%d%%", key="pred_confidence",
                          help="How sure the model is of its predicted class.")
    shown = filter_predictions(preds, search=search, classes=picked,
                               confidence=(low / 100, high / 100), sort=sort)
    if not shown:
        st.info("No prediction matches these filters.", icon=":material/filter_alt_off:")
        return
    if len(shown) > MAX_ROWS:
        st.caption(f"Showing the first {MAX_ROWS:,} of {len(shown):,}; narrow them with the filters.")
        shown = shown[:MAX_ROWS]
    else:
        st.caption(f"{len(shown):,} of {len(preds):,} predictions.")
    key = editor_key(latest.id, shown)
    st.session_state[EDITOR_KEY_STATE] = key
    frame = pd.DataFrame({"Sentence": [p.text for p in shown], "Predicted": [p.label for p in shown],
                          "Confidence": [100 * p.confidence for p in shown],
                          REVIEW: [MARKER if m else "" for m in choice.marks([p.confidence for p in shown])],
                          ACCEPT: False,
                          YOUR_LABEL: pd.Series([None] * len(shown), dtype=object)})
    # the columns to edit (and the marker saying which rows to check) come first, so they
    # are on screen however long the sentences are
    st.data_editor(frame, key=key, hide_index=True, width="stretch",
                   column_order=[ACCEPT, YOUR_LABEL, REVIEW, "Sentence", "Predicted", "Confidence"],
                   disabled=["Sentence", "Predicted", "Confidence", REVIEW],
                   column_config={
                       "Sentence": st.column_config.TextColumn(width="medium"),
                       "Confidence": st.column_config.ProgressColumn(min_value=0, max_value=100,
                                                                     format="%.0f%%"),
                       REVIEW: st.column_config.TextColumn(
                           width=120, help="Below the confidence threshold set above: check "
                                               "these by hand."),
                       ACCEPT: st.column_config.CheckboxColumn(
                           width="small", help="The prediction is right: keep it as a label."),
                       YOUR_LABEL: st.column_config.SelectboxColumn(
                           options=classes, help="The right class, when the prediction is wrong.")})
    export_link()
    n_edits = len(labels_from_edits(shown, st.session_state.get(key, {}).get("edited_rows", {}),
                                    label_column=YOUR_LABEL, accept_column=ACCEPT))
    if st.button(f"Save {n_edits} label{'s' * (n_edits != 1)} and retrain", type="primary",
                 icon=":material/model_training:", disabled=not n_edits, key="pred_save"):
        save_edits(project, shown, key)


def what_changed(models, changes) -> None:
    versions = changes_header(models, len(changes), "class")
    if versions is None:
        return
    before, after = versions
    if changes:
        st.dataframe(pd.DataFrame({
            "Sentence": [c.text for c in changes], f"v{before.version}": [c.before for c in changes],
            f"v{after.version}": [c.after for c in changes],
            "Confidence now": [100 * c.confidence_after for c in changes]}),
            hide_index=True, width="stretch",
            column_config={"Confidence now": st.column_config.ProgressColumn(
                min_value=0, max_value=100, format="%.0f%%")})


project = page_header("Predictions")
if project.multi_label:  # predicted sets, per-class probabilities, corrections edit the set
    predictions_page(project)
    st.stop()
s = store()
models = s.models(project.id)
if not models:
    no_model_yet(project, "its predictions for the other sentences")
latest = models[-1]
unlabelled = {r.id for r in s.unlabelled(project.id)}
preds = [p for p in s.predictions(latest.id) if p.text_id in unlabelled]
cols = st.columns(4)
cols[0].metric("Model", f"v{latest.version}")
cols[1].metric("CV accuracy", percent(latest.metrics.get("cv_accuracy")),
               help="Accuracy on labels held out by cross-validation.")
cols[2].metric("Trained on labels", f"{latest.n_labels:,}")
cols[3].metric("Predicted sentences", f"{len(preds):,}")
missing_predictions(project, latest, len(unlabelled) - len(preds))
changes = prediction_changes(s.predictions(models[-2].id), preds) if len(models) > 1 else []
review_tab, changed_tab = st.tabs(["Review predictions", f"What changed ({len(changes)})"])
with review_tab:
    if preds:
        review(project, latest, preds, s.classes(project.id))
    elif not unlabelled:
        st.success("Every sentence is labelled. Add more sentences on the Data page to see "
                   "predictions.", icon=":material/celebration:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
with changed_tab:
    what_changed(models, changes)
