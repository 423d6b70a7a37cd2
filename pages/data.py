"""Data: add sentences (type one, paste many, upload a file) and watch the model read them."""

from pathlib import Path

import pandas as pd
import streamlit as st

import core.jobs as jobs
from core.active import table_rows
from core.errors import InputError, TenshotError
from core.io import columns_of, is_number, read_records
from pages._multilabel_data import set_table_frame, upload_sets
from pages._shared import (escape_markdown, eta_text, flash, labeller, page_header, show_error,
                           start_embedding, store)


UPLOAD_TYPES = ["csv", "tsv", "txt", "jsonl", "ndjson", "json"]
NO_LABELS = "(no label column)"
# Each poll of a running job is a Streamlit rerun costing about 0.1-0.2 s of CPU in the
# server, whose threads the job shares: polled every second on a busy machine, the
# server spent 95% of its CPU on the polls and the job read 20x slower (seen with the
# newcomer flow, tests/test_e2e_newcomer.py). Every 3 s leaves the job most of it.
POLL_SECONDS = 3.0


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def add(project, texts: list[str], *, labels=None, source: str, warnings=(), new_classes=()) -> None:
    """Store texts (and labels, creating new_classes), start reading them in the
    background, then redraw."""
    s = store()
    try:  # the store refuses the whole batch when the project would exceed its limits
        result = s.add_texts(project.id, texts, source=source, labels=labels,
                             new_classes=new_classes, session=labeller())
    except TenshotError as err:
        show_error(err)
        return
    stored = {r.id: r.text for r in s.texts(project.id)}
    start_embedding(project, [stored[i] for i in result.text_ids])
    parts = [f"Added {plural(result.added, 'new sentence')}."]
    if result.duplicates:
        parts.append(f"{plural(result.duplicates, 'duplicate')} skipped (already there).")
    if result.empty:
        parts.append(f"{plural(result.empty, 'empty line')} ignored.")
    # only labels that changed count: re-importing a file imports none again
    if result.labelled:
        parts.append(f"{plural(result.labelled, 'label')} imported.")
    unchanged = sum(1 for lab in labels or [] if lab) - result.labelled
    if unchanged > 0:
        parts.append(f"{plural(unchanged, 'label')} unchanged (already set).")
    flash(" ".join(parts), "success" if result.added else "info")
    for warning in warnings:
        flash(warning, "warning")
    st.rerun()


def type_one(project) -> None:
    with st.form("type_one", clear_on_submit=True, border=False):
        text = st.text_input("Sentence", placeholder="Type a sentence and press Enter", key="type_text")
        if st.form_submit_button("Add sentence", icon=":material/add:", key="type_btn"):
            if not text.strip():
                st.warning("Type a sentence first.")
            else:  # through the importer, so a typed text gets the same length limit
                try:
                    rows = read_records(text.encode("utf-8"), "typed.txt", limits=store().limits)
                except InputError as err:
                    show_error(err)
                    return
                add(project, rows.texts, source="typed", warnings=rows.warnings)


def paste_many(project) -> None:
    with st.form("paste_many", clear_on_submit=True, border=False):
        raw = st.text_area("Sentences, one per line", height=200,
                           placeholder="The battery lasts all day.\nThe screen cracked in a week.",
                           key="paste_text")
        if st.form_submit_button("Add sentences", icon=":material/playlist_add:", key="paste_btn"):
            if not raw.strip():
                st.warning("Paste one or more sentences first, one per line.")
                return
            try:
                rows = read_records(raw.encode("utf-8"), "pasted.txt", limits=store().limits)
            except InputError as err:
                show_error(err)
                return
            add(project, rows.texts, source="pasted", warnings=rows.warnings)


def column_choice(columns: list[str], text_guess: str | None,
                  label_guess: str | None) -> tuple[str, str | None]:
    left, right = st.columns(2)
    text_col = left.selectbox("Text column", columns,
                              index=columns.index(text_guess) if text_guess in columns else None,
                              placeholder="Pick the column that holds the sentences",
                              key="upload_text_col")
    options = [NO_LABELS] + [c for c in columns if c != text_col]
    default = options.index(label_guess) if label_guess in options else 0
    label_col = right.selectbox("Label column (optional)", options, index=default,
                                key="upload_label_col")
    return text_col, None if label_col == NO_LABELS else label_col


def pick_columns(data: bytes, name: str) -> tuple[str | None, str | None]:
    """Let the user pick the text and label columns, starting from read_records' guesses."""
    try:
        first = read_records(data, name, limits=store().limits)
        columns, text_guess, label_guess = first.columns, first.text_column, first.label_column
    except InputError:
        columns, text_guess, label_guess = columns_of(data, name, limits=store().limits), None, None
        if len(columns) < 2:
            raise
        st.info("Which column holds the sentences? None is called “text”.", icon=":material/help:")
    return column_choice(columns, text_guess, label_guess)


def upload(project) -> None:
    st.caption("CSV or TSV with a header row, JSONL with one object per line, or TXT with one "
               "sentence per line. For CSV and JSONL, pick the text column and, optionally, "
               "a column of labels.")
    # a new key after each import empties the uploader, so a file is not imported twice
    key = f"upload_{st.session_state.get('upload_generation', 0)}"
    file = st.file_uploader("File", type=UPLOAD_TYPES, key=key,
                            max_upload_size=max(1, store().limits.upload_bytes // (1024 * 1024)))
    if file is None:
        return
    data = file.getvalue()
    try:
        text_col, label_col = "text", None
        if Path(file.name).suffix.lower() != ".txt":
            text_col, label_col = pick_columns(data, file.name)
            if text_col is None:
                return
            if project.multi_label and label_col:  # label sets, with their import summary
                upload_sets(project, data, file.name, text_col, label_col)
                return
        rows = read_records(data, file.name, text_column=text_col, label_column=label_col,
                            limits=store().limits)
    except InputError as err:
        show_error(err)
        return
    labels = rows.labels if label_col else None
    classes = store().classes(project.id)
    unknown = sorted({lab for lab in labels or [] if lab and lab not in classes})
    for warning in rows.warnings:
        st.warning(escape_markdown(warning), icon=":material/warning:")
    if rows.skipped:
        with st.expander(f"{plural(len(rows.skipped), 'row')} will be skipped", icon=":material/info:"):
            st.dataframe(pd.DataFrame(rows.skipped, columns=["Line", "Why"]), hide_index=True)
    add_classes = False
    if unknown:
        st.warning(escape_markdown(
            "Some labels are not classes of this project: " + ", ".join(f"“{c}”" for c in unknown)
            + ". Those rows are imported without a label, unless you add the classes."),
            icon=":material/warning:")
        add_classes = st.checkbox("Add them as new classes", key="upload_add_classes")
    preview = {"Text": rows.texts[:5]}
    if labels is not None:
        preview["Label"] = [lab or "" for lab in labels[:5]]
    st.caption("Preview:" if len(rows.texts) <= 5 else f"The first 5 of {len(rows.texts):,} rows:")
    st.dataframe(pd.DataFrame(preview), hide_index=True)
    n_labelled = sum(1 for lab in labels or [] if lab and (add_classes or lab in classes))
    counts = store().count_new_texts(project.id, rows.texts)  # as add_texts will count them
    button = (f"Import {plural(counts.added, 'new sentence')}, skip "
              f"{plural(counts.duplicates, 'duplicate')}" if counts.duplicates
              else f"Import {plural(counts.added, 'sentence')}") + (
        f" ({n_labelled:,} labelled)" if labels is not None else "")
    nothing_new = counts.added == 0 and not n_labelled
    if nothing_new and rows.texts:
        st.info("Every sentence in this file is already in the project.", icon=":material/info:")
    if st.button(button, type="primary", icon=":material/upload:", disabled=nothing_new,
                 key="import_btn"):
        if labels is not None and not add_classes:
            labels = [lab if lab in classes else None for lab in labels]
        st.session_state["upload_generation"] = st.session_state.get("upload_generation", 0) + 1
        add(project, rows.texts, labels=labels, source=file.name, warnings=rows.warnings,
            new_classes=unknown if add_classes else ())


def job_panel(project) -> None:
    """Progress of the latest reading job; polls while it runs, the rest of the page stays usable.
    A finished job that read fewer sentences than the project holds is called the last batch."""
    job = store().latest_job(project.id, jobs.EMBED)
    if job is None:
        return
    was_active = jobs.progress_of(job).active

    @st.fragment(run_every=POLL_SECONDS if was_active else None)
    def panel() -> None:
        p = jobs.progress_of(store().job(job.id))
        if p.active:
            text = p.message if p.done == 0 else (
                f"Reading the sentences for the model: {p.done:,} of {p.total:,} done."
                f"{eta_text(p.eta_seconds, almost=' Almost done with this batch.')} You can keep working meanwhile.")
            st.progress(p.fraction, text=escape_markdown(text))
        elif p.state == "done":
            batch = "" if p.total == len(store().texts(project.id)) else "Last batch: "
            st.caption(escape_markdown(f"✓ {batch}{p.message}"))
        else:
            st.error(escape_markdown(p.message or "Reading the sentences stopped."),
                     icon=":material/error:")
            # sentences already read are stored, so a new job only reads the rest
            label = ("Continue reading" if p.state == "interrupted"
                     else "Read all sentences again")
            if st.button(label, icon=":material/refresh:", key="embed_again"):
                start_embedding(project, [r.text for r in store().texts(project.id)])
                st.rerun()

    panel()


def export_hint() -> None:
    """Tables have no download button (``client.disableDataExport``): their CSV would
    keep formula cells live; the Export page's files neutralise them."""
    st.page_link("pages/export.py", label="Download sentences, labels and predictions as "
                 "CSV or JSONL on the Export page", icon=":material/download:")


def sentence_table(project) -> None:
    if project.multi_label:  # each sentence's set of classes
        frame = set_table_frame(project)
        rows, n_labelled = list(frame["Sentence"]), int((frame["Labels"] != "").sum())
    else:
        rows = table_rows(store(), project.id)
        n_labelled = sum(1 for r in rows if r.label)
        frame = pd.DataFrame({"Sentence": [r.text for r in rows], "Label": [r.label or "" for r in rows],
                              "Model guess": [r.predicted or "" for r in rows]})
    if not rows:
        st.info("No sentences yet. Add some above: type one, paste many, or upload a file.",
                icon=":material/arrow_upward:")
        return
    st.markdown(f"**{plural(len(rows), 'sentence')}**, {n_labelled:,} labelled")
    st.dataframe(frame, hide_index=True, height=min(400, 38 + 35 * len(rows)))
    export_hint()
    if n_labelled < len(rows):
        st.page_link("pages/label.py", label="Label them", icon=":material/label:")


EDIT_PICK = "edit_pick"


def on_pick_numbers(ids: list[int]) -> None:
    st.session_state[EDIT_PICK] = ids


def on_delete(project_id: int, ids: list[int]) -> None:
    try:
        n = store().delete_texts(project_id, ids)
    except TenshotError as err:
        flash(str(err), "error")
        return
    st.session_state.pop(EDIT_PICK, None)
    flash(f"Deleted {plural(n, 'sentence')} with their labels. Undo brings them back.", "info")


def on_save(project_id: int, text_id: int, key: str) -> None:
    try:
        saved = store().edit_text(project_id, text_id, st.session_state.get(key, ""))
    except TenshotError as err:
        flash(str(err), "error")
        return
    st.session_state["edit_saved"] = saved
    flash("Saved the new wording; its label is kept. The model reads it again and uses it "
          "from its next training.", "success")


def on_undo_edit(project_id: int) -> None:
    try:
        message = store().undo_text_change(project_id)
    except TenshotError as err:
        flash(str(err), "error")
        return
    flash(message or "There is no edit or deletion to undo.", "info")


def edit_sentences(project) -> None:
    """Fix the wording of a sentence, or delete sentences (a wrong-column import); undoable."""
    rows = store().texts(project.id)
    if not rows:
        return
    saved = st.session_state.pop("edit_saved", None)
    if saved is not None:  # the edited text needs its features read; the label stays
        start_embedding(project, [saved])
    texts = {r.id: r.text for r in rows}
    with st.expander("Edit or delete sentences", icon=":material/edit:"):
        numbers = [r.id for r in rows if is_number(r.text)]
        picked = st.multiselect("Sentences", list(texts), format_func=texts.__getitem__,
                                key=EDIT_PICK, placeholder="Type to find sentences")
        picked = [i for i in picked if i in texts]
        if len(picked) == 1:
            key = f"edit_text_{picked[0]}"
            st.text_input("Wording", value=texts[picked[0]], key=key)
        save, delete, numbers_col, undo = st.columns(4)
        if len(picked) == 1:
            save.button("Save wording", icon=":material/save:", key="edit_save", width="stretch",
                        on_click=on_save, args=(project.id, picked[0], key))
        delete.button(f"Delete {plural(len(picked), 'sentence')}", icon=":material/delete:",
                      key="edit_delete", disabled=not picked, width="stretch",
                      on_click=on_delete, args=(project.id, picked))
        if numbers:
            numbers_col.button(f"Pick the {plural(len(numbers), 'number')}", key="edit_numbers",
                               icon=":material/pin:", width="stretch",
                               help="Sentences that are only a number, as a wrong text column "
                                    "gives.", on_click=on_pick_numbers, args=(numbers,))
        undo.button("Undo edit or delete", icon=":material/undo:", key="edit_undo",
                    width="stretch", on_click=on_undo_edit, args=(project.id,))


project = page_header("Data")
typed, pasted, uploaded = st.tabs(["Type one", "Paste many", "Upload a file"], key="data_tab",
                                  on_change="rerun")
with typed:
    type_one(project)
with pasted:
    paste_many(project)
with uploaded:
    upload(project)
st.caption(f"Limits: files up to {store().limits.upload_bytes / 2**20:.0f} MB, sentences up to "
           f"{store().limits.text_chars:,} characters (longer ones are cut), "
           f"{store().limits.project_texts:,} sentences per project. Duplicates are skipped.")
job_panel(project)
sentence_table(project)
edit_sentences(project)
