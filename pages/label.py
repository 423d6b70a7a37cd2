"""Label: one sentence at a time with keyboard shortcuts, or many at once in a table.

Every submitted label retrains the model; the next sentence is chosen by active
learning (core.active).
"""

import pandas as pd
import streamlit as st

from core.active import COVERING, cold_start_labels, filter_rows, next_for_project, table_rows
from core.learn.curves import accuracy_range
from core.learn.head import MIN_LABELS_PER_CLASS, labels_missing, not_enough_labels
from core.errors import TenshotError
from core.project import accuracy_change
from pages._multilabel import label_one_at_a_time, label_table, set_summary
from pages._shared import (
    escape_markdown, flash, labeller, page_header, percent, pool_matrix, show_error, skip_text, store,
    train, undo_own_label,
)


SKIP_KEY, UNDO_KEY = "S", "U"
ACCEPT_KEY = "A"  # accept the model's guess
TABLE_KEY = "label_table"
REMOVE = "(remove the label)"


def session_list(name: str, project) -> list:
    return st.session_state.setdefault(f"{name}_{project.id}", [])


def model_summary(project) -> None:
    """Accuracy of the latest model with its change, and labels per class."""
    s = store()
    models = s.models(project.id)
    counts = s.label_counts(project.id)
    per_class = len(counts) <= 6  # more classes do not fit as metrics; they get one line
    cols = st.columns([2] + [1] * (len(counts) if per_class else 1))
    if models:
        accuracy_metric(cols[0], models)
    else:
        cols[0].metric("Accuracy", "–", help=f"Estimated by cross-validation once there is a "
                       f"model: after {MIN_LABELS_PER_CLASS} labels per class.")
    if per_class:
        for col, (name, n) in zip(cols[1:], counts.items()):
            col.metric(escape_markdown(name), n)
    else:
        cols[1].metric("Labels", sum(counts.values()))
        st.caption(escape_markdown(" · ".join(f"{name}: {n}" for name, n in counts.items())))
    missing = labels_missing(counts)
    if missing:
        st.info(escape_markdown(str(not_enough_labels(missing))), icon=":material/school:")
    elif not models or models[-1].n_labels != sum(counts.values()) or stale(project, models[-1]):
        st.info("There are enough labels for a first model: train it now, or label a sentence "
                "(every label retrains)." if not models else
                "The model is older than your labels or classes: train it again, or label a "
                "sentence.", icon=":material/update:")
        if st.button("Train now", icon=":material/model_training:", key="train_now"):
            train(project, say_missing=False)
            st.rerun()


def accuracy_metric(col, models) -> None:
    """The latest accuracy with its likely range; a change is shown only when beyond the noise."""
    latest = models[-1]
    accuracy = latest.metrics.get("cv_accuracy")
    change = accuracy_change(models[-2], latest) if len(models) > 1 else None
    clear = change is not None and change.clear
    col.metric(f"Accuracy, model v{latest.version}", percent(accuracy),
               delta=None if change is None else str(change),
               delta_color="normal" if clear else "off", delta_arrow="auto" if clear else "off",
               help="Estimated by cross-validation on your labels. With few labels it moves by "
                    "many points from one label to the next; a change is shown only when it is "
                    "larger than that noise.")
    if accuracy is not None:
        low, high = accuracy_range(accuracy, latest.n_labels)
        col.caption(f"Likely between {low:.0%} and {high:.0%} with {latest.n_labels} labels.")


def stale(project, model) -> bool:
    return model.params.get("classes") != store().classes(project.id)


# The buttons act through callbacks whose arguments are bound when the button is drawn:
# a key pressed twice quickly labels the sentence that was on screen, never one picked
# by a run the user has not seen yet. Callbacks run before the script, so the retrain
# they start is finished when the sidebar and the page are drawn.


def on_label(project_id: int, text_id: int, label: str, text: str) -> None:
    store().set_label(project_id, text_id, label, session=labeller())
    st.session_state.setdefault(f"recent_{project_id}", []).append(text)
    st.session_state.pop(f"current_{project_id}", None)
    train(store().project(project_id), say_missing=False)


def on_skip(project_id: int, text_id: int) -> None:
    skip_text(project_id, text_id)


def on_undo(project_id: int) -> None:
    undone = undo_own_label(project_id)
    if undone is None:
        return
    text_id, restored = undone
    flash("Undid the last label" + (f"; it is back to “{restored}”." if restored else "."), "info")
    train(store().project(project_id), say_missing=False)


def one_at_a_time(project, classes: list[str]) -> None:
    key = f"current_{project.id}"
    picked = next_for_project(store(), project.id, recent_texts=session_list("recent", project),
                              skip=session_list("skipped", project),
                              prefer=st.session_state.get(key), pool=pool_matrix(store(), project.id),
                              random_state=project.id)
    if not picked:
        st.success("Every sentence is labelled. Add more on the Data page, or check the "
                   "predictions.", icon=":material/celebration:")
        st.page_link("pages/data.py", label="Add sentences", icon=":material/upload:")
        undo_button(project)
        return
    current = picked[0]
    st.session_state[key] = current.text_id
    # the text kept on screen comes back as "on screen": keep why it was picked
    why = st.session_state.get(f"why_{project.id}")
    if current.reason != "on screen" or why is None or why[0] != current.text_id:
        why = (current.text_id, current.reason)
        st.session_state[f"why_{project.id}"] = why
    with st.container(border=True):
        # a short sentence reads best large; a long one as a paragraph
        size = "#### " if len(current.text) <= 300 else ""
        st.markdown(size + escape_markdown(current.text))
        if current.guess is not None:
            st.caption(escape_markdown(f"Model's guess: {current.guess} "
                                       f"({percent(current.confidence)} sure)"))
        else:
            st.caption("No model guess yet." if current.uncertainty is None else "Not predicted yet.")
    # every class button looks the same: highlighting the model's guess anchors the labeller
    buttons = st.columns(min(len(classes), 5) or 1)
    for i, name in enumerate(classes):
        buttons[i % len(buttons)].button(
            escape_markdown(name), key=f"label_{i}", shortcut=str(i + 1) if i < 9 else None,
            on_click=on_label, args=(project.id, current.text_id, name, current.text),
            width="stretch")
    skip, accept, undo_col, _ = st.columns([1, 1.3, 1, 1.7])
    skip.button("Skip", key="skip", shortcut=SKIP_KEY, icon=":material/skip_next:",
                on_click=on_skip, args=(project.id, current.text_id), width="stretch")
    if current.guess in classes:
        accept.button("Accept guess", key="accept", shortcut=ACCEPT_KEY, icon=":material/check:",
                      help=escape_markdown(f"Label it “{current.guess}”, the model's guess."),
                      on_click=on_label, args=(project.id, current.text_id, current.guess,
                                               current.text), width="stretch")
    with undo_col:
        undo_button(project)
    n = min(len(classes), 9)
    accept_help = f" · {ACCEPT_KEY} accept the model's guess" if current.guess in classes else ""
    if current.guess is None:
        how = "Picked at random until there is a model."
    elif why[1] == COVERING:
        how = (f"Picked from a kind of sentence no label covers yet: until there are "
               f"{cold_start_labels()} labels per class on average, suggestions spread over your "
               "sentences; then they go where the model is least sure.")
    else:
        how = ("Picked where the model is least sure, favouring sentences like many other unsure "
               "ones, classes with fewer labels, and no repeats of what you just labelled.")
    st.caption(f"Keyboard: 1–{n} label · {SKIP_KEY} skip · {UNDO_KEY} undo{accept_help}. " + how)


def undo_button(project) -> None:
    st.button("Undo", key="undo", shortcut=UNDO_KEY, icon=":material/undo:", on_click=on_undo,
              args=(project.id,), width="stretch")


def reset_selection() -> None:
    st.session_state.pop(TABLE_KEY, None)


def table_mode(project, classes: list[str]) -> None:
    rows = table_rows(store(), project.id)
    has_model = any(r.predicted for r in rows)
    left, mid, right = st.columns([2, 1, 1])
    search = left.text_input("Search", placeholder="Words in the sentence", key="table_search",
                             on_change=reset_selection)
    show = mid.selectbox("Show", ["unlabelled", "labelled", "all"], key="table_show",
                         on_change=reset_selection)
    predicted, confidence = [], (0.0, 1.0)
    if has_model:
        predicted = right.multiselect("Model guess", classes, key="table_predicted",
                                      placeholder="Any class", on_change=reset_selection)
        low, high = st.slider("Model confidence (%)", 0, 100, (0, 100), 5, key="table_confidence",
                              on_change=reset_selection)
        confidence = (low / 100, high / 100)
    shown = filter_rows(rows, search=search, show=show, predicted=predicted, confidence=confidence)
    if not shown:
        st.info("No sentence matches these filters.", icon=":material/filter_alt_off:")
        return
    frame = pd.DataFrame({"Select": False, "Sentence": [r.text for r in shown],
                          "Label": [r.label or "" for r in shown],
                          "Model guess": [r.predicted or "" for r in shown],
                          "Confidence": [None if r.confidence is None else 100 * r.confidence
                                         for r in shown]})
    hidden = [c for c, empty in (("Label", show == "unlabelled"), ("Model guess", not has_model),
                                 ("Confidence", not has_model)) if empty]
    edited = st.data_editor(
        frame.drop(columns=hidden), key=TABLE_KEY, hide_index=True,
        disabled=["Sentence", "Label", "Model guess", "Confidence"],
        column_config={"Select": st.column_config.CheckboxColumn(width="small"),
                       "Sentence": st.column_config.TextColumn(width="large"),
                       "Confidence": st.column_config.ProgressColumn(min_value=0, max_value=100,
                                                                     format="%.0f%%")})
    everything = st.checkbox(f"Select all {len(shown):,} shown", key="table_all")
    chosen = [r.text_id for r, on in zip(shown, edited["Select"]) if on or everything]
    target_col, button_col = st.columns([2, 1], vertical_alignment="bottom")
    target = target_col.selectbox("Label for the selected sentences", classes + [REMOVE],
                                  key="table_target")
    verb = "Remove the label of" if target == REMOVE else "Label"
    if button_col.button(f"{verb} {len(chosen)} selected", type="primary", disabled=not chosen,
                         icon=":material/done_all:", width="stretch", key="table_apply"):
        try:
            store().set_labels(project.id, chosen, None if target == REMOVE else target,
                               session=labeller())
        except TenshotError as err:
            show_error(err)
            return
        reset_selection()
        st.session_state.pop("table_all", None)
        train(project, say_missing=False)
        st.rerun()


project = page_header("Label")
classes = store().classes(project.id)
if not store().texts(project.id):
    st.info("Add some sentences first: type, paste or upload them on the Data page.",
            icon=":material/upload:")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
    st.stop()
if project.multi_label:
    set_summary(project, store().models(project.id))
else:
    model_summary(project)
mode = st.segmented_control("Mode", ["One at a time", "Table"], default="One at a time",
                            key="label_mode", required=True, label_visibility="collapsed")
if project.multi_label and mode == "Table":  # the selected rows get one set of classes
    label_table(project, classes)
elif project.multi_label:  # a toggle per class, "none of these"
    label_one_at_a_time(project, classes, session_list)
elif mode == "Table":
    table_mode(project, classes)
else:
    one_at_a_time(project, classes)
