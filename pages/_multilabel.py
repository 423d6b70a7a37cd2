"""The multi-label parts of the Projects and Label pages (issue 16).

In a multi-label project a sentence gets zero, one or several classes, and “none of
these” is an answer of its own. The Label page then shows a toggle per class (number
keys toggle, Enter submits, N answers “none of these”, U undoes) instead of one
button per class, and its table mode gives the selected rows one set of classes.
Single-label projects never reach this module.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.learn.multilabel import label_matrix, missing_per_class, not_enough_multilabel
from core.multilabel_active import next_for_multilabel, table_rows_multilabel
from pages._shared import (escape_markdown, flash, labeller, percent, show_error, skip_text, store, train,
                           undo_own_label)

__all__ = ["NONE_KEY", "SUBMIT_KEY", "describe_set", "multilabel_overview", "missing_message",
           "set_summary", "label_one_at_a_time", "label_table"]

NONE_KEY, SUBMIT_KEY, SKIP_KEY, UNDO_KEY, ACCEPT_KEY = "N", "Enter", "S", "U", "A"
NONE_OF_THESE = "none of these"
TABLE_KEY = "ml_label_table"
GIVE = ["These classes", "None of these", "No label (remove it)"]


def describe_set(labels) -> str:
    """A label set in words: 'a, b', 'none of these', or 'unlabelled' for None."""
    if labels is None:
        return "unlabelled"
    return ", ".join(labels) if labels else NONE_OF_THESE


def missing_message(project) -> str | None:
    """The per-class refusal ('Label 2 more sentences with “a” and 1 more without “b”...')
    while some class is short of sentences with or without it; None once every class has enough."""
    s = store()
    classes = s.classes(project.id)
    Y = label_matrix([r.labels for r in s.label_sets(project.id)], classes)
    missing = missing_per_class(Y, classes)
    return str(not_enough_multilabel(missing)) if missing else None


def multilabel_overview(project, n_texts: int, model) -> None:
    """The Projects page's overview of a multi-label project: its type, counts and next step."""
    s = store()
    sets = s.label_sets(project.id)
    cols = st.columns(4)
    cols[0].metric("Sentences", n_texts)
    cols[1].metric("Labelled", len(sets), help="Sentences with a set of classes or “none of these”.")
    cols[2].metric("Classes", len(s.classes(project.id)))
    cols[3].metric("Model macro-F1 (CV)", percent(model.metrics.get("cv_macro_f1")) if model else "–",
                   help="F1 of each class, averaged over the classes.")
    st.caption("Multi-label project: a sentence may have zero, one or several classes, and "
               "“none of these” is an answer of its own.")
    if n_texts == 0:
        st.info("Next step: add some sentences.", icon=":material/arrow_forward:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
    elif model is None:
        st.info(escape_markdown("Next step: " + (missing_message(project) or "train a first model "
                                                 "on the Label page.")), icon=":material/arrow_forward:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")


def set_summary(project, models) -> None:
    """The Label page's header: macro-F1 of the latest model, sentences per class, the refusal."""
    s = store()
    counts = s.label_counts(project.id)
    per_class = len(counts) <= 5
    cols = st.columns([2] + [1] * ((len(counts) if per_class else 1) + 1))
    if models:
        latest = models[-1]
        cols[0].metric(f"Macro-F1, model v{latest.version}", percent(latest.metrics.get("cv_macro_f1")),
                       help="F1 of each class on labels held out by cross-validation, averaged "
                            "over the classes. With few labels it moves a lot between labels.")
    else:
        cols[0].metric("Macro-F1", "–", help="Estimated by cross-validation once there is a model.")
    if per_class:
        for col, (name, n) in zip(cols[1:], counts.items()):
            col.metric(escape_markdown(name), n)
    else:
        cols[1].metric("Class labels", sum(counts.values()))
        st.caption(escape_markdown(" · ".join(f"{name}: {n}" for name, n in counts.items())))
    cols[-1].metric("None of these", s.none_count(project.id))
    missing = missing_message(project)
    if missing:
        st.info(escape_markdown(missing), icon=":material/school:")
    elif not models or models[-1].n_labels != len(s.label_sets(project.id)) or \
            models[-1].params.get("classes") != s.classes(project.id):
        st.info("There are enough labels for a first model: train it now, or label a sentence "
                "(every label retrains)." if not models else
                "The model is older than your labels or classes: train it again, or label a "
                "sentence.", icon=":material/update:")
        if st.button("Train now", icon=":material/model_training:", key="train_now"):
            train(project, say_missing=False)
            st.rerun()


# --- one sentence at a time -------------------------------------------------------------
# As on the single-label page, every button acts through a callback whose arguments are
# bound when it is drawn: a key pressed twice quickly acts on the sentence (and the
# toggles) on screen, never on a state the user has not seen.


def _chosen_key(project_id: int) -> str:
    return f"ml_chosen_{project_id}"


def chosen(project_id: int, text_id: int) -> list[str]:
    """The classes toggled on for this sentence (toggles of another sentence are forgotten)."""
    state = st.session_state.get(_chosen_key(project_id))
    return list(state[1]) if state and state[0] == text_id else []


def on_toggle(project_id: int, text_id: int, name: str, classes: list[str]) -> None:
    now = set(chosen(project_id, text_id)) ^ {name}
    st.session_state[_chosen_key(project_id)] = (text_id, [c for c in classes if c in now])


def on_submit(project_id: int, text_id: int, labels: tuple[str, ...], text: str) -> None:
    try:
        store().set_label_set(project_id, text_id, labels, session=labeller())
    except TenshotError as err:
        flash(str(err), "error")
        return
    st.session_state.setdefault(f"recent_{project_id}", []).append(text)
    st.session_state.setdefault(f"ml_submitted_{project_id}", {})[text_id] = list(labels)
    st.session_state.pop(f"current_{project_id}", None)
    st.session_state.pop(_chosen_key(project_id), None)
    train(store().project(project_id), say_missing=False)


def on_submit_toggled(project_id: int, text_id: int, text: str) -> None:
    """Submit the classes toggled on when the click arrives, not when the button was drawn:
    a fast "1" then Enter sends the click before the page has redrawn after the toggle."""
    labels = tuple(chosen(project_id, text_id))
    if not labels:
        flash("Toggle at least one class first (keys 1–9), or answer “none of these”.", "warning")
        return
    on_submit(project_id, text_id, labels, text)


def on_skip(project_id: int, text_id: int) -> None:
    skip_text(project_id, text_id)
    st.session_state.pop(_chosen_key(project_id), None)


def on_undo(project_id: int) -> None:
    undone = undo_own_label(project_id)
    if undone is None:
        return
    text_id, restored = undone
    # the toggles show what was chosen before (usually a slip to fix), ready to submit again
    submitted = st.session_state.get(f"ml_submitted_{project_id}", {}).pop(text_id, [])
    st.session_state[_chosen_key(project_id)] = (text_id, list(restored or submitted))
    back = ("unlabelled again" if restored is None else f"back to “{describe_set(restored)}”")
    flash(f"Undid the last label; the sentence is {back}"
          + ("; the toggles show what you had chosen." if submitted and not restored else "."), "info")
    train(store().project(project_id), say_missing=False)


def label_one_at_a_time(project, classes: list[str], session_list) -> None:
    """The multi-label card: the sentence, a toggle per class, submit, none of these, skip, undo."""
    key = f"current_{project.id}"
    picked = next_for_multilabel(store(), project.id, recent_texts=session_list("recent", project),
                              skip=session_list("skipped", project),
                              prefer=st.session_state.get(key), random_state=project.id)
    if not picked:
        st.success("Every sentence is labelled. Add more on the Data page, or check the "
                   "predictions.", icon=":material/celebration:")
        st.page_link("pages/data.py", label="Add sentences", icon=":material/upload:")
        _undo_button(project)
        return
    current = picked[0]
    st.session_state[key] = current.text_id
    guess = current if current.guess is not None else None
    with st.container(border=True):
        size = "#### " if len(current.text) <= 300 else ""
        st.markdown(size + escape_markdown(current.text))
        if guess is None:
            st.caption("No model guess yet.")
        else:
            probs = " · ".join(f"{c} {percent(guess.probs.get(c))}" for c in classes)
            st.caption(escape_markdown(f"Model's guess: {describe_set(guess.guess)} ({probs})"))
    on = chosen(project.id, current.text_id)
    st.caption("Toggle every class this sentence has, then submit:")
    toggles = st.columns(min(len(classes), 5) or 1)
    for i, name in enumerate(classes):
        toggles[i % len(toggles)].button(
            escape_markdown(name), key=f"ml_toggle_{i}", shortcut=str(i + 1) if i < 9 else None,
            type="primary" if name in on else "secondary",
            icon=":material/check_box:" if name in on else ":material/check_box_outline_blank:",
            on_click=on_toggle, args=(project.id, current.text_id, name, classes), width="stretch")
    _actions(project, current, tuple(on), guess)
    n = min(len(classes), 9)
    accept = f" · {ACCEPT_KEY} accept the model's guess" if guess is not None else ""
    st.caption(f"Keyboard: 1–{n} toggle a class · {SUBMIT_KEY} submit · {NONE_KEY} none of these · "
               f"{SKIP_KEY} skip · {UNDO_KEY} undo{accept}. "
               + ("Picked at random until there is a model." if guess is None else
                  "Picked where some class is nearest its threshold, favouring classes with few "
                  "sentences and avoiding repeats of what you just labelled."))


def _actions(project, current, on: tuple[str, ...], guess) -> None:
    submit, none, skip, accept, undo = st.columns([1.6, 1.4, 1, 1.3, 1])
    label = f"Submit: {describe_set(on)}" if on else "Submit"
    # never disabled: a disabled button drops its shortcut, and Enter pressed right after a
    # class key arrived before the redraw that enabled it (lost labels in the browser test)
    submit.button(escape_markdown(label), key="ml_submit", shortcut=SUBMIT_KEY, type="primary",
                  icon=":material/done:", width="stretch",
                  help="Submit the classes toggled on; toggle at least one first, or answer "
                       "“none of these”.",
                  on_click=on_submit_toggled, args=(project.id, current.text_id, current.text))
    none.button("None of these", key="ml_none", shortcut=NONE_KEY, icon=":material/block:",
                help="The sentence has none of the classes: a real answer, not a skip.",
                on_click=on_submit, args=(project.id, current.text_id, (), current.text),
                width="stretch")
    skip.button("Skip", key="skip", shortcut=SKIP_KEY, icon=":material/skip_next:",
                on_click=on_skip, args=(project.id, current.text_id), width="stretch")
    if guess is not None:
        accept.button("Accept guess", key="accept", shortcut=ACCEPT_KEY, icon=":material/check:",
                      help=escape_markdown(f"Label it “{describe_set(guess.guess)}”, the model's guess."),
                      on_click=on_submit, args=(project.id, current.text_id, guess.guess,
                                                current.text), width="stretch")
    with undo:
        _undo_button(project)


def _undo_button(project) -> None:
    st.button("Undo", key="undo", shortcut=UNDO_KEY, icon=":material/undo:", on_click=on_undo,
              args=(project.id,), width="stretch")


# --- table mode --------------------------------------------------------------------------


def _table_frame(project, show: str, search: str) -> tuple[list[int], pd.DataFrame]:
    rows = [r for r in table_rows_multilabel(store(), project.id)
            if (show == "all" or (show == "labelled") == (r.labels is not None))
            and (not search or search.lower() in r.text.lower())]
    frame = pd.DataFrame({"Select": False, "Sentence": [r.text for r in rows],
                          "Labels": ["" if r.labels is None else describe_set(r.labels) for r in rows],
                          "Model guess": ["" if r.predicted is None else describe_set(r.predicted)
                                          for r in rows]})
    return [r.text_id for r in rows], frame


def label_table(project, classes: list[str]) -> None:
    """Many sentences at once: pick rows, then give them one set of classes."""
    left, right = st.columns([2, 1])
    search = left.text_input("Search", placeholder="Words in the sentence", key="table_search",
                             on_change=lambda: st.session_state.pop(TABLE_KEY, None))
    show = right.selectbox("Show", ["unlabelled", "labelled", "all"], key="table_show",
                           on_change=lambda: st.session_state.pop(TABLE_KEY, None))
    ids, frame = _table_frame(project, show, search)
    if not ids:
        st.info("No sentence matches these filters.", icon=":material/filter_alt_off:")
        return
    edited = st.data_editor(frame.drop(columns=["Labels"] if show == "unlabelled" else []),
                            key=TABLE_KEY, hide_index=True,
                            disabled=["Sentence", "Labels", "Model guess"],
                            column_config={"Select": st.column_config.CheckboxColumn(width="small"),
                                           "Sentence": st.column_config.TextColumn(width="large")})
    everything = st.checkbox(f"Select all {len(ids):,} shown", key="table_all")
    picked = [t for t, on in zip(ids, edited["Select"]) if on or everything]
    give = st.segmented_control("Give the selected sentences", GIVE, default=GIVE[0],
                                key="ml_table_give", required=True)
    target: tuple[str, ...] | None = ()
    if give == GIVE[0]:
        target = tuple(st.multiselect("Their classes", classes, key="ml_table_classes",
                                      placeholder="Pick one or more classes"))
    elif give == GIVE[2]:
        target = None
    ready = bool(picked) and (give != GIVE[0] or bool(target))
    if st.button(f"Apply to {len(picked)} selected", type="primary", disabled=not ready,
                 icon=":material/done_all:", key="ml_table_apply"):
        try:
            store().set_label_sets(project.id, picked, target, session=labeller())
        except TenshotError as err:
            show_error(err)
            return
        st.session_state.pop(TABLE_KEY, None)
        st.session_state.pop("table_all", None)
        train(project, say_missing=False)
        st.rerun()
