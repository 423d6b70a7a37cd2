"""The Predictions page of a multi-label project (issue 16, item 5).

Each unlabelled sentence shows its predicted set and every class's probability; the
"Your labels" column starts as the predicted set, so correcting a prediction in place
means adding or removing classes there (an emptied set is “none of these”), and ticking
Keep saves the set as it stands. "What changed" compares the predicted sets of the two
newest model versions. The coverage control is not offered here: it ranks sentences by
one confidence, and a sentence with several classes has one per class.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.multilabel import changed_sets, effective_thresholds, set_predictions
from pages._multilabel import describe_set
from pages._shared import changes_header, export_link, labeller, percent, show_error, store, train
from pages._views import missing_predictions, no_model_yet

__all__ = ["KEEP", "YOUR_LABELS", "ORDERS", "edited_sets", "predictions_page"]

KEEP, YOUR_LABELS, PREDICTED = "Keep", "Your labels", "Predicted"
ORDERS = ["Least sure first", "Most sure first", "Sentence order"]
MAX_ROWS = 1000
EDITOR_KEY_STATE = "ml_pred_editor_key"


def closeness(pred, thresholds: dict[str, float]) -> float:
    """How near the sentence's closest call is: min over classes of |probability - threshold|."""
    return min(abs(pred.probs.get(c, 0.0) - t) for c, t in thresholds.items())


def _shown(preds, thresholds, *, search: str, has: list[str], order: str):
    rows = [p for p in preds if (not search or search.lower() in p.text.lower())
            and (not has or any(c in p.labels for c in has)
                 or ("none of these" in has and not p.labels))]
    if order != ORDERS[2]:
        rows.sort(key=lambda p: closeness(p, thresholds), reverse=order == ORDERS[1])
    return rows


def edited_sets(shown, edited_rows: dict, classes: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """(text_id, label set) of each row the user kept or whose set they edited, in row order.

    edited_rows: the data_editor's {row position: {column: value}}; an edited set wins
    over Keep, and an emptied set is “none of these”.
    """
    out = []
    for pos, edit in sorted((int(k), v) for k, v in edited_rows.items()):
        if not 0 <= pos < len(shown):
            continue
        if YOUR_LABELS in edit:
            picked = set(edit[YOUR_LABELS] or ())
            out.append((shown[pos].text_id, tuple(c for c in classes if c in picked)))
        elif edit.get(KEEP):
            out.append((shown[pos].text_id, shown[pos].labels))
    return out


def _editor_key(model_id: int, shown) -> str:
    digest = hashlib.sha1(",".join(str(p.text_id) for p in shown).encode()).hexdigest()[:12]
    return f"ml_pred_edit_{model_id}_{digest}"


def _save(project, pairs) -> None:
    s = store()
    try:
        for labels in dict.fromkeys(lab for _, lab in pairs):
            s.set_label_sets(project.id, [t for t, lab in pairs if lab == labels], labels,
                             session=labeller())
    except TenshotError as err:
        show_error(err)
        return
    st.session_state.pop(st.session_state.get(EDITOR_KEY_STATE, ""), None)
    train(project)
    st.rerun()


def review(project, latest, preds, classes) -> None:
    thresholds = effective_thresholds(project, latest)
    st.caption("The coverage control of single-label projects is not offered here: it ranks "
               "sentences by one confidence, and here each class has its own. “Least sure "
               "first” puts the sentences with a class nearest its threshold on top.")
    left, mid, right = st.columns([3, 3, 2])
    search = left.text_input("Search", placeholder="Words in the sentence", key="mlp_search")
    has = mid.multiselect("Predicted to have", classes + ["none of these"], key="mlp_has",
                          placeholder="Any set")
    order = right.selectbox("Order", ORDERS, key="mlp_order")
    shown = _shown(preds, thresholds, search=search, has=has, order=order)
    if not shown:
        st.info("No prediction matches these filters.", icon=":material/filter_alt_off:")
        return
    st.caption(f"Showing the first {MAX_ROWS:,} of {len(shown):,}; narrow them with the filters."
               if len(shown) > MAX_ROWS else f"{len(shown):,} of {len(preds):,} predictions.")
    shown = shown[:MAX_ROWS]
    key = _editor_key(latest.id, shown)
    st.session_state[EDITOR_KEY_STATE] = key
    probs = {f"p({c})": [100 * p.probs.get(c, 0.0) for p in shown] for c in classes}
    frame = pd.DataFrame({KEEP: False, YOUR_LABELS: [list(p.labels) for p in shown],
                          "Sentence": [p.text for p in shown],
                          PREDICTED: [describe_set(p.labels) for p in shown], **probs})
    config = {"Sentence": st.column_config.TextColumn(width="medium"),
              KEEP: st.column_config.CheckboxColumn(width="small", help="The predicted set is "
                                                    "right: keep it as the sentence's labels."),
              YOUR_LABELS: st.column_config.MultiselectColumn(
                  options=classes, width="medium", help="Starts as the predicted set: add or remove "
                  "classes to correct it (empty: none of these). An edited row is saved.")}
    for c in classes:
        config[f"p({c})"] = st.column_config.ProgressColumn(
            min_value=0, max_value=100, format="%.0f%%",
            help=f"Probability of this class; predicted at {thresholds[c]:.0%} or more.")
    st.data_editor(frame, key=key, hide_index=True, width="stretch", column_config=config,
                   disabled=["Sentence", PREDICTED, *probs])
    export_link()
    pairs = edited_sets(shown, st.session_state.get(key, {}).get("edited_rows", {}), classes)
    n = len(pairs)
    if st.button(f"Save {n} label set{'s' * (n != 1)} and retrain", type="primary",
                 icon=":material/model_training:", disabled=not n, key="mlp_save"):
        _save(project, pairs)


def what_changed(models, changes) -> None:
    versions = changes_header(models, len(changes), "set")
    if versions is None:
        return
    before, after = versions
    if changes:
        st.dataframe(pd.DataFrame({
            "Sentence": [c.text for c in changes],
            f"v{before.version}": [describe_set(c.before) for c in changes],
            f"v{after.version}": [describe_set(c.after) for c in changes],
            "Gained": [", ".join(x for x in c.after if x not in c.before) for c in changes],
            "Lost": [", ".join(x for x in c.before if x not in c.after) for c in changes]}),
            hide_index=True, width="stretch")


def predictions_page(project) -> None:
    """The whole page for a multi-label project (page_header already drawn)."""
    s = store()
    models = s.models(project.id)
    if not models:
        no_model_yet(project, "its predicted sets for the other sentences")
    latest = models[-1]
    unlabelled = {r.id for r in s.unlabelled(project.id)}
    preds = [p for p in set_predictions(s, project, latest) if p.text_id in unlabelled]
    cols = st.columns(4)
    cols[0].metric("Model", f"v{latest.version}")
    cols[1].metric("CV macro-F1", percent(latest.metrics.get("cv_macro_f1")),
                   help="F1 of each class on labels held out by cross-validation, averaged over classes.")
    cols[2].metric("Trained on labels", f"{latest.n_labels:,}")
    cols[3].metric("Predicted sentences", f"{len(preds):,}")
    missing_predictions(project, latest, len(unlabelled) - len(preds))
    changes = changed_sets(s, project)
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
