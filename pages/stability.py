"""Stability: how much the model, its predictions and its explanations move when the
labelled sentences are resampled (bootstrap refits of the head, core.explain.stability).

A run is stored with its model version, so every page (and the report) can use it.
Unstable sentences link to the Label page: an unlabelled one becomes the sentence on
screen there, a labelled one opens the Label table filtered to it.

A multi-label model is refitted one class at a time: the class picked here is a yes/no
problem ("<class>" vs "not <class>", core.multilabel_explain), with its own head, its
own stored run and the page below unchanged.
"""

import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.explain.attributions import reference_states
from core.explain.sentence import sentence_stability, sentence_states
from core.explain.stability import bootstrap, load_stability, project_inputs, save_stability
from core.figures import agreement_figure, oob_figure, sign_figure, spearman_figure, topk_figure
from core.multilabel import effective_thresholds
from core.multilabel_explain import ClassStore, class_inputs, class_model
from core.stability_view import predicted_classes, summarise, unstable_rows
from pages._shared import (backbone, escape_markdown, feature_cache, page_header, percent,
                           show_error, store, with_eta)
from pages._views import class_picker, remember, require_model, short, stability_badge

THRESHOLD = 0.8  # a sentence is unstable when fewer refits than this agree with the model


def run_section(project, clf, latest, view) -> None:
    with st.container(border=True):
        st.markdown("**Refit the model on resampled labels**")
        st.caption("Each refit trains the classifier on a random resample of your labelled "
                   "sentences (drawn with replacement) and is tested on the ones it left out.")
        left, mid, right = st.columns(3, vertical_alignment="bottom")
        n = left.number_input("Refits", min_value=10, max_value=1000, value=100, step=10,
                              key="st_B", help="More refits give smoother figures; 100 is plenty.")
        seed = mid.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                                key="st_seed", help="The same seed gives exactly the same results.")
        if right.button("Run the bootstrap", type="primary", key="st_run",
                        icon=":material/play_arrow:", width="stretch"):
            run(project, clf, latest, view, int(n), int(seed))


def run(project, clf, latest, view, n: int, seed: int) -> None:
    """Refit ``clf`` (a multi-label model's one class: ``view`` is then its ClassStore)."""
    s = store()
    bar = st.progress(0.0, text="Reading the sentences...")
    eta = with_eta(bar)
    reading = lambda d, t: eta(0.2 * d / t, f"Reading the sentences: {d} of {t}.")  # noqa: E731
    try:
        bb = backbone(clf.settings.backbone)
        if isinstance(view, ClassStore):
            inputs = class_inputs(s, project.id, bb, multi_label_clf, view.class_name,
                                  cache=feature_cache(s), progress=reading)
        else:
            inputs = project_inputs(s, project.id, bb, clf, cache=feature_cache(s), progress=reading)
        result = bootstrap(clf, **inputs, B=n, seed=seed, progress=lambda d, t: eta(
            0.2 + 0.8 * d / t, f"Refit {d} of {t}."))
        save_stability(view, latest.id, result)
    except TenshotError as err:
        show_error(err)
    bar.empty()


def summary(stab, latest) -> None:
    run = summarise(stab, THRESHOLD)
    cols = st.columns(4)
    cols[0].metric("Refits", f"{run.refits}", help=f"Seed {run.seed}; C = {run.C:.3g} as in the model.")
    cols[1].metric("Held-out accuracy", percent(run.oob_accuracy),
                   help="Median over the refits of the accuracy on the labels each refit did "
                        "not draw. The model's cross-validated accuracy: "
                        f"{percent(latest.metrics.get('cv_accuracy'))}.")
    cols[2].metric("Stable predictions", percent(run.stable_share),
                   help=f"Sentences on which at least {THRESHOLD:.0%} of the refits agree with the model.")
    cols[3].metric("Features used by the model", f"{run.features_used:,}")
    if run.empty_refits:
        st.warning(f"{run.empty_refits} refit{'s' * (run.empty_refits != 1)} selected no feature at "
                   "the model's C and predict one class for everything: label more sentences to "
                   "steady the model.", icon=":material/warning:")


def unstable_list(project, stab, view) -> None:
    texts = {r.id: r.text for r in view.texts(project.id)}
    labels = {r.text_id: r.label for r in view.labelled(project.id)}
    rows = unstable_rows(stab, texts, THRESHOLD)
    if not rows:
        st.success("Every sentence gets the same prediction from at least "
                   f"{THRESHOLD:.0%} of the refits.", icon=":material/verified:")
        return
    st.markdown(f"**{len(rows)} unstable sentence{'s' * (len(rows) != 1)}**, least stable first: "
                "labelling them, or checking their label, steadies the model most.")
    st.dataframe(pd.DataFrame({
        "Sentence": [texts[r.text_id] for r in rows],
        "Refits agreeing": [100 * r.agreement for r in rows],
        "Model says": [r.predicted for r in rows],
        "Your label": [labels.get(r.text_id, "") for r in rows]}),
        hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 320),
        column_config={"Sentence": st.column_config.TextColumn(width="large"),
                       "Refits agreeing": st.column_config.ProgressColumn(
                           min_value=0, max_value=100, format="%.0f%%",
                           help="Share of the refits that predict what the model predicts.")})
    pick_col, go_col = st.columns([4, 1], vertical_alignment="bottom")
    text_id = pick_col.selectbox("Open in the Label page", [r.text_id for r in rows], key="st_unstable",
                                 format_func=lambda i: short(texts[i], 110))
    unlabelled = text_id not in labels
    if go_col.button("Label it" if unlabelled else "Check its label", key="st_go",
                     icon=":material/label:", width="stretch"):
        open_in_label_page(project, text_id, texts[text_id], unlabelled)


def open_in_label_page(project, text_id: int, text: str, unlabelled: bool) -> None:
    """Hand the sentence to the Label page through the session keys it reads."""
    if unlabelled:
        st.session_state[f"current_{project.id}"] = text_id  # the one it shows first (both label pages)
        st.session_state["label_mode"] = "One at a time"
    else:
        st.session_state["label_mode"] = "Table"
        st.session_state["table_show"] = "labelled"
        st.session_state["table_search"] = text
    st.switch_page("pages/label.py")


def token_section(project, clf, stab) -> None:
    st.subheader("Are the explanations stable?", anchor=False)
    bb = backbone(clf.settings.backbone)
    texts = {r.id: r.text for r in store().texts(project.id)}
    predicted = predicted_classes(stab)
    ids = [i for i in predicted if i in texts]
    if not ids:
        st.caption("The sentences of this run were deleted.")
        return
    left, right = st.columns([3, 2])
    text_id = left.selectbox("Sentence", ids, format_func=lambda i: short(texts[i]), key="st_sentence")
    name = class_picker("Class", clf.classes, clf.classes[predicted[text_id]],
                        key=f"st_class_{text_id}")
    with right:
        text = texts[text_id]
        s = clf.settings  # the states the Explain page reads: same prompt, length and echo
        states = remember(("states", s.backbone, s.prompt, s.max_length, s.echo, text),
                          lambda: sentence_states(bb, s, text))
        result = sentence_stability(stab, states, clf.classes.index(name), text=text,
                                    reference=reference_states(clf))
        if result is None:
            st.caption("This sentence has no word tokens to compare.")
            return
        stability_badge(result)
    a, b = st.columns(2)
    a.plotly_chart(spearman_figure(result), key="st_spearman")
    a.caption("Each refit ranks the sentence's words by their contribution; near 1 means it "
              "ranks them as the model does.")
    b.plotly_chart(topk_figure(result), key="st_topk")
    b.caption("Words that stay among the strongest in most refits are the ones to trust "
              "(indigo: pushes towards the class, red: away).")


project = page_header("Stability")
latest, clf = require_model(project)
view, multi_label_clf = store(), clf  # the latter: the whole multi-label model, for run()
if project.multi_label:  # one class at a time: its own yes/no head and its own runs
    name = st.selectbox("Class", clf.classes, key="st_ml_class",
                        help="A multi-label model has one yes/no head per class; each class "
                             "is refitted and judged on its own.")
    view = ClassStore(store(), name, effective_thresholds(project, latest))
    clf, latest = clf.class_classifier(name), class_model(latest, name)
st.caption(escape_markdown(f"Model v{latest.version}: would the model, its predictions and its "
                           "explanations stay the same with a slightly different set of labels?"))
run_section(project, clf, latest, view)
try:
    stab = load_stability(view, latest.id)
except TenshotError as err:
    show_error(err)
    st.stop()
if stab is None:
    st.info(f"No bootstrap run for model v{latest.version} yet: choose the number of refits and "
            "run it (100 refits take seconds).", icon=":material/balance:")
    st.stop()
summary(stab, latest)
left, right = st.columns(2)
with left:
    st.plotly_chart(oob_figure(stab), key="st_oob")
    st.caption("Each refit is scored on the labelled sentences it did not draw: the spread shows "
               "how much the accuracy depends on which sentences were labelled.")
with right:
    st.plotly_chart(agreement_figure(stab, THRESHOLD), key="st_agreement")
    st.caption("For each sentence, the share of refits that predict the same class as the model: "
               "bars on the left are sentences the model could easily flip on.")
unstable_list(project, stab, view)
st.plotly_chart(sign_figure(stab), key="st_sign")
st.caption("Each dot is one neuron the classifier reads: top right are the ones almost every "
           "refit picks with the same sign, the reliable core of the model.")
token_section(project, clf, stab)
