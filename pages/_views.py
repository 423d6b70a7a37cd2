"""Drawing helpers shared by the pages that show a model: the empty state, the loaded
model, the escaped word heatmap, the class picker, the stability badge, and reading a
data_editor's edits. Their plotly figures are built in ``core.figures``.

User text reaches the page only as escaped HTML (``core.report.heatmap_html``),
escaped markdown, plotly labels through ``core.figures.plot_text``, or plain widget
options.
"""

from __future__ import annotations

import streamlit as st

from core.errors import TenshotError
from core.export import labels_from_choices
from core.learn.head import MIN_LABELS_PER_CLASS
from core.figures import short
from core.project import load_classifier
from core.multilabel_explain import class_report
from core.report import heatmap_html, legend_html, report_filename, stakeholder_report
from core.explain.token_stability import MODERATE, STABLE
from pages._shared import (backbone, db_path, escape_markdown, feature_cache, show_error, store, train,
                           with_eta)

__all__ = ["shap_duration", "no_model_yet", "require_model", "model_backbone", "heatmap", "legend", "class_picker",
           "stability_badge", "short", "remember", "editor_choices", "labels_from_edits"]

BADGE = {STABLE: ("green", ":material/verified:"), MODERATE: ("orange", ":material/warning:")}


def shap_duration(last_seconds: float | None, bb) -> str:
    """How long a SHAP run takes here: the last one of this session, else what it took on
    the machines measured (bench/BENCHMARKS.md: the fused default on a 2-core CPU 10.6 s,
    SmolLM2 on an H200 0.4 s)."""
    if last_seconds is not None:
        return f"the last one took {last_seconds:.0f} s." if last_seconds >= 1 else "under a second here."
    if str(getattr(bb, "device", "cpu")).startswith("cuda"):
        return "about a second on a GPU."
    return "on a CPU this takes a while (about 10 s a sentence for the default model on 2 cores)."


def no_model_yet(project, shows: str) -> None:
    """The empty state of a page that needs a model: the next step, then stop.

    shows: what the page will show once there is a model ("its predictions ...").
    """
    if not store().texts(project.id):
        st.info("Add some sentences first: type, paste or upload them on the Data page.",
                icon=":material/upload:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
    else:
        st.info(f"No model yet. Label at least {MIN_LABELS_PER_CLASS} sentences per class to train a first model; "
                f"then {shows} appear here.", icon=":material/school:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")
    st.stop()


def require_model(project):
    """(latest ModelVersion, Classifier); otherwise the empty state with the next step, and stop."""
    s = store()
    latest = s.latest_model(project.id)
    if latest is None:
        no_model_yet(project, "its explanations and stability")
    key = ("_classifier", db_path(), latest.id)
    if key not in st.session_state:
        st.session_state[key] = load_classifier(latest)
    return latest, st.session_state[key]


def model_backbone(clf):
    """The model's backbone; explains and stops when it cannot be loaded or has no tokens."""
    try:
        bb = backbone(clf.settings.backbone)
    except TenshotError as err:
        show_error(err)
        st.stop()
    return bb


def remember(key, compute, limit: int = 12):
    """compute() once per key in this session. Token states of a long text under SmolLM2
    take a few MB, so only the last few are kept."""
    cache = st.session_state.setdefault("_views_cache", {})
    if key not in cache:
        cache[key] = compute()
        while len(cache) > limit:
            cache.pop(next(iter(cache)))
    return cache[key]


def heatmap(text: str, pieces, *, scale: float | None = None) -> None:
    st.html(heatmap_html(text, pieces, scale=scale))


def legend(class_name: str) -> None:
    st.html(legend_html(class_name))


def class_picker(label: str, classes: list[str], default: str, key: str, help: str | None = None) -> str:
    """A segmented control for a few classes, a selectbox for many; names shown as text."""
    if len(classes) <= 5 and sum(len(c) for c in classes) <= 80:
        return st.segmented_control(label, classes, default=default, key=key, required=True,
                                    format_func=escape_markdown, help=help)
    return st.selectbox(label, classes, index=classes.index(default), key=key, help=help)


def stability_badge(result, *, where: str = "explanation") -> None:
    """The badge for a token-rank stability result, with its two numbers."""
    unit = "words" if result.get("labels") else "tokens"  # merged into words by sentence_stability
    colour, icon = BADGE.get(result["badge"], ("red", ":material/error:"))
    st.badge(f"{where.capitalize()} {result['badge']}", color=colour, icon=icon)
    st.caption(f"Across the bootstrap refits the word ranking keeps a median Spearman "
               f"correlation of {result['median_spearman']:.2f}, and {result['mean_topk_overlap']:.0%} "
               f"of the {result['k']} strongest {unit} stay among the {result['k']} strongest.")


def editor_choices(edited_rows: dict, *, label_column: str,
                   accept_column: str) -> tuple[dict[int, str], list[int]]:
    """({row position: chosen label}, [accepted row positions]) from a data_editor's
    ``edited_rows``, Streamlit's ``{row position: {column: value}}`` (positions may come
    back from the session as str). Empty choices and unticked boxes are left out."""
    rows = sorted((int(k), v) for k, v in edited_rows.items())
    chosen = {pos: str(edit[label_column]) for pos, edit in rows if edit.get(label_column)}
    return chosen, [pos for pos, edit in rows if edit.get(accept_column)]


def labels_from_edits(shown, edited_rows: dict, *, label_column: str,
                      accept_column: str) -> list[tuple[int, str]]:
    """The (text_id, label) pairs a data_editor's edits ask for; shown: the predictions in
    the editor's row order. See ``core.export.labels_from_choices``."""
    chosen, accepted = editor_choices(edited_rows, label_column=label_column,
                                      accept_column=accept_column)
    return labels_from_choices(shown, chosen, accepted)


def missing_predictions(project, latest, missing: int) -> None:
    """Say how many unlabelled sentences the latest model has not predicted yet (they
    arrived after it), with a button that trains now; nothing when there are none."""
    if missing <= 0:
        return
    st.info(f"{missing:,} sentence{'s' * (missing != 1)} arrived after model v{latest.version} "
            f"and {'have' if missing != 1 else 'has'} no prediction yet.", icon=":material/update:")
    if st.button("Train now", icon=":material/model_training:", key="pred_train"):
        train(project)
        st.rerun()


def report_builder(project, latest, load, *, prefix: str, first: str | None = None,
                   attribute=None, class_name: str | None = None) -> None:
    """The "Build the report" controls and the download, shared by Explain and Export.

    The built report is kept under one session key per model version, so a report
    built on one page can be downloaded on the other. load() -> (backbone, classifier),
    called only when the report is built; prefix: the widgets' key prefix; first,
    attribute: as ``stakeholder_report`` takes them; class_name: on a multi-label model
    (load() then gives the whole multi-label classifier), the report of that class's
    yes/no head (``core.multilabel_explain.class_report``), kept per class.
    """
    key = ("ex_report", latest.id) if class_name is None else ("ex_report", latest.id, class_name)
    with_profile = st.checkbox("Include the layer profile", value=True, key=f"{prefix}_report_profile",
                               help="Re-reads every labelled sentence: up to a minute.")
    if st.button("Build the report", key=f"{prefix}_report_build", icon=":material/description:"):
        bar = st.progress(0.0, text="Scoring held-out labels...")
        eta = with_eta(bar)
        try:
            bb, clf = load()
            if class_name is not None:
                st.session_state[key] = class_report(
                    store(), project, bb, clf, latest, class_name, first=first,
                    with_profile=with_profile, cache=feature_cache(store()), attribute=attribute,
                    progress=eta)
            else:
                st.session_state[key] = stakeholder_report(
                    store(), project, bb, clf, latest, first=first, with_profile=with_profile,
                    diagnostics=st.session_state.get(("diag", project.id, latest.id)),  # the Model page's
                    profile=st.session_state.get(("layers", project.id, latest.id)),
                    cache=feature_cache(store()), attribute=attribute,
                    progress=eta)
        except TenshotError as err:
            show_error(err)
        bar.empty()
    if key in st.session_state:
        st.download_button("Download report (HTML)", st.session_state[key],
                           file_name=report_filename(project.name if class_name is None else
                                                     f"{project.name} {class_name}", latest.version),
                           mime="text/html", key=f"{prefix}_report_download", type="primary",
                           icon=":material/download:", on_click="ignore")
