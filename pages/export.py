"""Export: labels and predictions as CSV or JSONL, the trained model as a bundle
that `tenshot predict --bundle FILE` and `core.learn.bundle.load_bundle` read, and
the stakeholder report (also on the Explain page; a report built on either page
can be downloaded on both)."""

import math

import pandas as pd
import streamlit as st

from core.learn.bundle import bundle_bytes
from core.export import export_rows, file_stem, needs_human, to_csv, to_jsonl
from core.multilabel_io import set_rows, sets_to_csv, sets_to_jsonl
from core.project import load_classifier
from pages._coverage import coverage_control
from pages._shared import backbone, escape_markdown, page_header, store
from pages._views import report_builder


INCLUDE = {"both": "Labels and predictions", "labels": "Your labels only",
           "predictions": "Model predictions only"}


def set_table_section(project, s, latest) -> None:
    """A multi-label project's table: label sets (``;``-joined in the CSV, lists in the
    JSONL, "none of these" for the empty set), so the file imports back as it was."""
    include = st.selectbox("What to export", list(INCLUDE), format_func=INCLUDE.get,
                           key="export_include")
    rows = set_rows(s, project, latest, include=include)
    if not rows:
        st.info("Nothing to export yet: add sentences on the Data page and label a few.",
                icon=":material/upload:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
        return
    n_human = sum(r.labels is not None for r in rows)
    st.caption(f"{len(rows):,} rows: {n_human:,} labelled by you, {len(rows) - n_human:,} "
               "predicted by model" + (f" v{latest.version}" if latest else "") + ". Columns: "
               "text_id, text, labels (yours, separated by “;”), predicted (the model's set), "
               "then one probability column per class; the file imports back as a multi-label file.")
    with st.expander("Preview the first rows"):
        st.dataframe(pd.DataFrame({
            "text": [r.text for r in rows[:20]],
            "labels": [None if r.labels is None else "; ".join(r.labels) or "none of these" for r in rows[:20]],
            "predicted": [None if r.predicted is None else "; ".join(r.predicted) or "none of these"
                          for r in rows[:20]]}), hide_index=True, width="stretch")
    classes = s.classes(project.id)
    stem = f"{file_stem(project.name)}-{include}"
    left, right = st.columns(2)
    left.download_button("Download CSV", sets_to_csv(rows, classes), file_name=f"{stem}.csv",
                         mime="text/csv", icon=":material/table:", key="export_csv",
                         width="stretch", on_click="ignore")
    right.download_button("Download JSONL", sets_to_jsonl(rows, classes), file_name=f"{stem}.jsonl",
                          mime="application/jsonl", icon=":material/data_object:",
                          key="export_jsonl", width="stretch", on_click="ignore")


def table_section(project, s, latest) -> None:
    st.subheader("Labels and predictions", anchor=False)
    if project.multi_label:
        set_table_section(project, s, latest)
        return
    labelled = s.labelled(project.id)
    preds = s.predictions(latest.id) if latest else []
    if not labelled and not preds:
        st.info("Nothing to export yet: add sentences on the Data page and label a few.",
                icon=":material/upload:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
        return
    include = st.selectbox("What to export", list(INCLUDE), format_func=INCLUDE.get,
                           key="export_include")
    rows = export_rows(labelled, preds, include=include)
    n_human = sum(r.source == "human" for r in rows)
    st.caption(f"{len(rows):,} rows: {n_human:,} labelled by you, {len(rows) - n_human:,} "
               "predicted by model"
               + (f" v{latest.version}" if latest else "") + ". Columns: text_id, text, label (yours), "
               "predicted (the model's class), confidence, then one probability column per "
               "class; `tenshot predict` writes the same columns.")
    threshold = marker_section(latest, rows)
    preview = {"text": [r.text for r in rows[:20]], "label": [r.label for r in rows[:20]],
               "predicted": [r.predicted for r in rows[:20]],
               "confidence": [r.confidence for r in rows[:20]]}
    if threshold is not None:
        preview["needs_human"] = [needs_human(r, threshold) for r in rows[:20]]
    with st.expander("Preview the first rows"):
        st.dataframe(pd.DataFrame(preview), hide_index=True, width="stretch")
    classes = s.classes(project.id)
    stem = f"{file_stem(project.name)}-{include}"
    left, right = st.columns(2)
    left.download_button("Download CSV", to_csv(rows, classes, threshold=threshold),
                         file_name=f"{stem}.csv",
                         mime="text/csv", icon=":material/table:", key="export_csv",
                         disabled=not rows, width="stretch", on_click="ignore")
    right.download_button("Download JSONL", to_jsonl(rows, classes, threshold=threshold),
                          file_name=f"{stem}.jsonl",
                          mime="application/jsonl", icon=":material/data_object:",
                          key="export_jsonl", disabled=not rows, width="stretch",
                          on_click="ignore")
    st.caption("In the CSV, cells that start with = + - or @ get a leading apostrophe, so a "
               "spreadsheet shows them as text instead of running them as formulas.")


def marker_section(latest, rows) -> float | None:
    """The threshold for the files' needs_human column, or None when the user wants none."""
    predicted = [r.confidence for r in rows if r.predicted is not None]
    if latest is None or not predicted:
        return None
    if not st.toggle("Mark predictions that need a human", key="export_mark",
                     help="Adds a needs_human column: yes for predictions below the confidence "
                          "threshold you choose, as `tenshot predict --threshold` writes it."):
        return None
    with st.container(border=True):
        choice = coverage_control(latest, predicted, key="export_cover")
    # no threshold reaches the target: every prediction needs a human
    return math.inf if choice.threshold is None else choice.threshold


def bundle_section(project, latest) -> None:
    st.subheader("Trained model", anchor=False)
    if latest is None:
        st.info("No model yet. Label 2 sentences per class to train one, then export it here.",
                icon=":material/school:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")
        return
    key = ("_bundle", project.id, latest.id)
    if st.session_state.get("_bundle_key") != key:  # building the zip costs a moment: once per model
        st.session_state["_bundle_key"] = key
        st.session_state["_bundle_bytes"] = bundle_bytes(load_classifier(latest))
    name = f"{file_stem(project.name)}-v{latest.version}.tenshot.zip"
    st.download_button(f"Download model v{latest.version}", st.session_state["_bundle_bytes"],
                       file_name=name, mime="application/zip", icon=":material/download:",
                       key="export_bundle", type="primary", on_click="ignore")
    backbone = latest.params.get("settings", {}).get("backbone", "")
    st.caption(escape_markdown(
        f"The bundle holds the classifier (classes, settings, selected features and weights) "
        f"as JSON and arrays, with checksums and no pickled code. It does not hold the "
        f"language model: the machine that uses it needs the same backbone ({backbone})."))
    st.code(f"tenshot predict --bundle {name} --data new_sentences.csv --out predictions.csv",
            language="bash", wrap_lines=True)


def report_section(project, latest) -> None:
    st.subheader("Report for stakeholders", anchor=False)
    if latest is None:
        st.caption("The report describes a trained model: train one first.")
        return
    st.caption("One HTML file with the model card, accuracy, learning curve, layer profile, "
               "example explanations and the stored stability run. It opens in any browser, "
               "offline.")

    def load():
        clf = load_classifier(latest)
        return backbone(clf.settings.backbone), clf

    # the built report is shared with the Explain page: one built there downloads here
    name = None
    if project.multi_label:  # one report per class: each class has its own yes/no head
        name = st.selectbox("Class", latest.params["classes"], key="export_report_class",
                            help="A multi-label model has one yes/no head per class; the "
                                 "report describes one class.")
    report_builder(project, latest, load, prefix="export", class_name=name)


project = page_header("Export")
s = store()
latest = s.latest_model(project.id)
table_section(project, s, latest)
st.divider()
bundle_section(project, latest)
st.divider()
report_section(project, latest)
