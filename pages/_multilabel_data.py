"""The Data page of a multi-label project (issue 16, items 8-9): uploading a file whose
labels column holds several class names (``;``-separated in CSV, a list in JSONL), with
its import summary, and the sentence table showing each sentence's set.

Bad input is read first and listed (``core.multilabel_io.label_sets_of``): an empty
cell leaves the sentence unlabelled, a name twice counts once, a class name holding
the separator is matched whole; names that are not classes stop the import until the
user lets them be added. The import is all or nothing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import InputError, TenshotError
from core.io import read_records
from core.multilabel_active import table_rows_multilabel
from core.multilabel_io import SEPARATOR, import_label_sets, label_sets_of
from pages._multilabel import describe_set
from pages._shared import escape_markdown, flash, labeller, show_error, start_embedding, store

__all__ = ["upload_sets", "set_table_frame"]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _summary(parsed, classes: list[str]) -> bool:
    """Draw the import summary; return whether new classes may be added (None needed: False)."""
    st.markdown("**Import summary**")
    st.caption(escape_markdown(parsed.summary()))
    for note in parsed.notes:
        st.info(escape_markdown(note), icon=":material/info:")
    if not parsed.unknown:
        return False
    listed = "; ".join(f"“{n}” (line{'s' * (len(lines) > 1)} {', '.join(map(str, lines[:5]))})"
                       for n, lines in parsed.unknown.items())
    st.warning(escape_markdown(
        f"Some labels are not classes of this project ({', '.join(classes)}): {listed}. Fix them "
        "in the file, or add them as new classes; nothing is imported until then."),
        icon=":material/warning:")
    return st.checkbox("Add them as new classes", key="upload_add_classes")


def _import(project, parsed, name: str, add_classes: bool) -> None:
    s = store()
    try:
        result = import_label_sets(s, project.id, parsed, source=name, add_classes=add_classes,
                                   session=labeller())
    except TenshotError as err:
        show_error(err)
        return
    stored = {r.id: r.text for r in s.texts(project.id)}
    start_embedding(project, [stored[i] for i in result.text_ids if i in stored])
    parts = [f"Added {_plural(result.added, 'new sentence')}."]
    if result.duplicates:
        parts.append(f"{_plural(result.duplicates, 'duplicate')} skipped (already there).")
    if result.labelled:
        parts.append(f"{_plural(result.labelled, 'label set')} imported.")
    flash(" ".join(parts), "success" if result.added or result.labelled else "info")
    for note in parsed.notes:
        flash(note, "info")
    st.session_state["upload_generation"] = st.session_state.get("upload_generation", 0) + 1
    st.rerun()


def upload_sets(project, data: bytes, name: str, text_col: str, label_col: str) -> None:
    """The upload of a file with a labels column into a multi-label project."""
    classes = store().classes(project.id)
    try:
        rows = read_records(data, name, text_column=text_col, label_column=label_col,
                            limits=store().limits, label_lists=True)
        parsed = label_sets_of(rows, classes)
    except InputError as err:
        show_error(err)
        return
    for warning in rows.warnings:
        st.warning(escape_markdown(warning), icon=":material/warning:")
    if rows.skipped:
        with st.expander(f"{_plural(len(rows.skipped), 'row')} will be skipped", icon=":material/info:"):
            st.dataframe(pd.DataFrame(rows.skipped, columns=["Line", "Why"]), hide_index=True)
    st.caption(f"Labels: several class names in a cell separated by “{SEPARATOR}” (CSV) or a "
               "list (JSONL); “none of these” or [] for none; an empty cell leaves the sentence "
               "unlabelled.")
    add_classes = _summary(parsed, classes)
    st.caption("Preview:" if len(parsed.texts) <= 5 else f"The first 5 of {len(parsed.texts):,} rows:")
    st.dataframe(pd.DataFrame({"Text": parsed.texts[:5],
                               "Labels": ["" if x is None else describe_set(x) for x in parsed.sets[:5]]}),
                 hide_index=True)
    n_sets = len(parsed.sets) - parsed.n_unlabelled
    blocked = bool(parsed.unknown) and not add_classes
    if st.button(f"Import {_plural(len(parsed.texts), 'sentence')} ({n_sets:,} labelled)",
                 type="primary", icon=":material/upload:", disabled=blocked or not parsed.texts,
                 key="import_btn"):
        _import(project, parsed, name, add_classes)


def set_table_frame(project) -> pd.DataFrame:
    """Every sentence with its labels and the model's predicted set, for the Data page."""
    rows = table_rows_multilabel(store(), project.id)
    return pd.DataFrame({"Sentence": [r.text for r in rows],
                         "Labels": ["" if r.labels is None else describe_set(r.labels) for r in rows],
                         "Model guess": ["" if r.predicted is None else describe_set(r.predicted)
                                         for r in rows]})
