"""Projects: create, open, rename and delete projects, and edit a project's classes."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.io import read_path
from pages._multilabel import multilabel_overview
from pages._shared import (current_project, escape_markdown, flash, labeller, new_project_settings,
                           percent, select_project, show_error, show_flashes, start_embedding,
                           store)

DEMO_FILE = Path(__file__).resolve().parent.parent / "data" / "demo.csv"
DEMO_NAME = "Demo: product and movie reviews"
# the radio's words -> the store's project type
PROJECT_TYPES = {"one class (single-label)": "single_label",
                 "any number of classes (multi-label)": "multi_label"}


def split_classes(raw: str) -> list[str]:
    return [c.strip() for c in raw.replace("\n", ",").split(",") if c.strip()]


def create_form(first: bool) -> None:
    with st.form("create_project", clear_on_submit=False, border=True):
        st.markdown("**New project**")
        name = st.text_input("Project name", placeholder="e.g. Support tickets", key="new_project_name")
        raw = st.text_input("Classes, separated by commas (at least 2)",
                            placeholder="e.g. negative, positive",
                            help="You can add, rename, merge or delete classes later.",
                            key="new_project_classes")
        kind = st.radio("Each sentence gets", list(PROJECT_TYPES), key="new_project_type",
                        horizontal=True, help="Fixed once the project is created. Multi-label: "
                        "a sentence may have zero, one or several of the classes, and “none of "
                        "these” is an answer of its own.")
        if first:
            st.caption("Single-label: exactly one of these classes per sentence. Multi-label: "
                       "none, one or several, and “none of these” is an answer of its own.")
        if st.form_submit_button("Create project", type="primary", icon=":material/add:",
                                 key="create_project_btn"):
            try:
                project = store().create_project(name, split_classes(raw),
                                                 settings=new_project_settings(),
                                                 task_type=PROJECT_TYPES[kind])
            except TenshotError as err:
                show_error(err)
                return
            flash(f"Created the project “{project.name}”. "
                  "Next: add some sentences on the Data page.")
            for key in ("new_project_name", "new_project_classes", "new_project_type"):
                st.session_state.pop(key, None)
            select_project(project.id)


def load_demo() -> None:
    s = store()
    existing = {p.name: p for p in s.projects()}
    if DEMO_NAME in existing:
        flash("The demo project was already there; it is now open.", "info")
        select_project(existing[DEMO_NAME].id)
    rows = read_path(DEMO_FILE)
    classes = sorted({lab for lab in rows.labels if lab})
    project = s.create_project(DEMO_NAME, classes, settings=new_project_settings())
    added = s.add_texts(project.id, rows.texts, source="demo", labels=rows.labels,
                        session=labeller())
    start_embedding(project, rows.texts)
    flash(f"Loaded the demo: {added.added} review sentences, "
          f"{sum(1 for lab in rows.labels if lab)} of them labelled. Open Label to continue.")
    select_project(project.id)


def empty_state() -> None:
    st.markdown("Build a text classifier in three steps, all on this machine:")
    st.markdown("1. **Create a project** and name its classes.  \n"
                "2. **Add sentences**: type, paste or upload them.  \n"
                "3. **Label a few dozen**: a model retrains after every label and suggests "
                "what to label next.")
    left, right = st.columns(2, gap="large")
    with left:
        create_form(first=True)
    with right:
        with st.container(border=True):
            st.markdown("**Just looking?**")
            st.caption("The demo has 40 short product and movie reviews, 12 of them "
                       "labelled positive or negative.")
            if st.button("Load demo project", icon=":material/play_circle:", key="load_demo"):
                load_demo()


def overview(project) -> None:
    s = store()
    counts = s.label_counts(project.id)
    n_texts = len(s.texts(project.id))
    model = s.latest_model(project.id)
    if project.multi_label:
        multilabel_overview(project, n_texts, model)
        return
    cols = st.columns(4)
    cols[0].metric("Sentences", n_texts)
    cols[1].metric("Labelled", sum(counts.values()))
    cols[2].metric("Classes", len(counts))
    cols[3].metric("Model accuracy (CV)", percent(model.metrics.get("cv_accuracy")) if model else "–")
    if n_texts == 0:
        st.info("Next step: add some sentences.", icon=":material/arrow_forward:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
    elif model is None:
        st.info("Next step: label 2 sentences per class to get a first model.",
                icon=":material/arrow_forward:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")


def class_table(project) -> None:
    counts = store().label_counts(project.id)
    st.dataframe(pd.DataFrame({"Class": list(counts), "Labels": list(counts.values())}),
                 hide_index=True, width="content")


def schema_action(action, done: str,
                  after: str = " Labels were carried along; the model updates at the next label.") -> None:
    """Run one class change; on success flash ``done`` + ``after`` and redraw."""
    try:
        action()
    except TenshotError as err:
        show_error(err)
        return
    flash(done + after)
    st.rerun()


UNDO_HINT = " “Undo last class change” brings it back."


def labels_text(n: int) -> str:
    return f"{n:,} label" + ("" if n == 1 else "s")


def delete_class(project) -> None:
    """Pick a class and delete it. A class with labels asks first, naming the class and
    its labels; the answer acts on that class's id, whatever the picker shows by then."""
    s = store()
    counts, ids = s.label_counts(project.id), s.class_ids(project.id)
    gone = st.selectbox("Delete a class", list(counts), key="delete_class_name",
                        format_func=lambda c: f"{c} ({labels_text(counts[c])})",
                        on_change=lambda: st.session_state.pop("_confirm_class_delete", None))
    pending = st.session_state.get("_confirm_class_delete")
    names = {class_id: name for name, class_id in ids.items()}
    if pending is not None and pending[0] == project.id and pending[1] in names:
        confirm_class_delete(project, names[pending[1]], counts[names[pending[1]]])
        return
    if st.button("Delete", icon=":material/delete:", key="delete_class_btn", disabled=gone is None):
        if counts[gone] == 0:
            schema_action(lambda: s.delete_class(project.id, gone),
                          f"Deleted the class “{gone}” (it had no labels).", UNDO_HINT)
            return
        st.session_state["_confirm_class_delete"] = (project.id, ids[gone])
        st.rerun()


def confirm_class_delete(project, name: str, n_labels: int) -> None:
    """The second step of deleting a class that has labels."""
    st.warning(escape_markdown(f"Delete the class “{name}” and remove its {labels_text(n_labels)}?"),
               icon=":material/warning:")
    # stacked, full width: the class column is narrow
    if st.button(escape_markdown(f"Delete “{name}” and its {labels_text(n_labels)}"), type="primary",
                 key="delete_class_yes", width="stretch"):
        st.session_state.pop("_confirm_class_delete", None)
        schema_action(lambda: store().delete_class(project.id, name),
                      f"Deleted the class “{name}” and its {labels_text(n_labels)}.",
                      " “Undo last class change” brings both back.")
    if st.button("Cancel", key="delete_class_no", width="stretch"):
        st.session_state.pop("_confirm_class_delete", None)
        st.rerun()


def class_editor(project) -> None:
    s = store()
    classes = s.classes(project.id)
    st.caption("Change the classes at any time. Labels move with renames and merges; "
               "deleting a class removes its labels. Every change can be undone.")
    class_table(project)
    add, rename, merge, delete = st.columns(4, gap="medium")
    with add.form("add_class", clear_on_submit=True):
        new = st.text_input("Add a class", placeholder="e.g. neutral", key="add_class_name")
        if st.form_submit_button("Add", icon=":material/add:", key="add_class_btn"):
            schema_action(lambda: s.add_class(project.id, new), f"Added the class “{new.strip()}”.")
    with rename.form("rename_class", clear_on_submit=True):
        old = st.selectbox("Rename a class", classes, key="rename_from")
        to = st.text_input("New name", key="rename_to")
        if st.form_submit_button("Rename", icon=":material/edit:", key="rename_class_btn"):
            schema_action(lambda: s.rename_class(project.id, old, to),
                          f"Renamed “{old}” to “{to.strip()}”.")
    with merge.form("merge_classes", clear_on_submit=True):
        sources = st.multiselect("Merge these classes...", classes, key="merge_sources")
        into = st.selectbox("...into", classes, key="merge_into")
        if st.form_submit_button("Merge", icon=":material/merge:", key="merge_btn"):
            schema_action(lambda: s.merge_classes(project.id, sources, into),
                          f"Merged {', '.join(f'“{c}”' for c in sources)} into “{into}”.")
    with delete.container(border=True):
        delete_class(project)
    if st.button("Undo last class change", icon=":material/undo:", key="undo_schema"):
        try:
            message = s.undo_schema_change(project.id)
        except TenshotError as err:
            show_error(err)
        else:
            flash(message or "There is no class change to undo.", "success" if message else "info")
            st.rerun()


def project_settings(project) -> None:
    s = store()
    with st.form("rename_project", clear_on_submit=True):
        name = st.text_input("Rename the project", value=project.name, key=f"project_name_{project.id}")
        if st.form_submit_button("Rename", icon=":material/edit:", key="rename_project_btn"):
            try:
                s.rename_project(project.id, name)
            except TenshotError as err:
                show_error(err)
            else:
                flash(f"Renamed the project to “{name.strip()}”.")
                st.rerun()
    st.caption(escape_markdown(f"Backbone: {project.settings.get('backbone', 'default')}"))
    if st.session_state.get("_confirm_delete") != project.id:
        if st.button("Delete this project...", icon=":material/delete_forever:", key="delete_project"):
            st.session_state["_confirm_delete"] = project.id
            st.rerun()
        return
    n_texts = len(s.texts(project.id))
    n_labels = sum(s.label_counts(project.id).values())
    st.warning(escape_markdown(f"Delete “{project.name}” with its {n_texts} sentences, "
                               f"{n_labels} labels and all its models? This cannot be undone."),
               icon=":material/warning:")
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", type="primary", icon=":material/delete_forever:",
                  key="delete_project_yes"):
        s.delete_project(project.id)
        st.session_state.pop("_confirm_delete", None)
        flash(f"Deleted the project “{project.name}”.")
        select_project(None)
    if no.button("Cancel", key="delete_project_no"):
        st.session_state.pop("_confirm_delete", None)
        st.rerun()


def project_list(current) -> None:
    s = store()
    for p in s.projects():
        left, right = st.columns([4, 1], vertical_alignment="center")
        mark = " (open)" if current is not None and p.id == current.id else ""
        left.markdown(escape_markdown(f"{p.name}{mark}"))
        if right.button("Open", key=f"open_{p.id}", disabled=bool(mark)):
            select_project(p.id)


st.title("Projects")
show_flashes()
projects = store().projects()
if not projects:
    empty_state()
    st.stop()

project = current_project() or projects[0]
st.subheader(escape_markdown(project.name), anchor=False)
overview(project)
classes_tab, settings_tab, all_tab = st.tabs(["Classes", "Rename or delete", "All projects"],
                                             key="project_tab", on_change="rerun")
with classes_tab:
    class_editor(project)
with settings_tab:
    project_settings(project)
with all_tab:
    project_list(project)
    with st.expander("New project", icon=":material/add:"):
        create_form(first=False)
    if DEMO_NAME not in {p.name for p in projects}:
        if st.button("Load demo project", icon=":material/play_circle:", key="load_demo"):
            load_demo()
