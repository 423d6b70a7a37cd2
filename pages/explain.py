"""Explain: why the latest model predicts what it does for one sentence.

Word contributions from the model's weights (exact under mean pooling), SHAP beside
them on demand (kept in the store per model version and sentence), the stability badge
of a stored bootstrap run, a what-if sandbox, what the model learned overall, and the
stakeholder report.
"""

import re
import threading

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import TenshotError
from core.explain.attributions import class_phrases, layer_weights_by_backbone, reference_states
from core.explain.sentence import sentence_attribution, sentence_stability
from core.explain.shapley import SHAP_MAX_EVALS, shap_attributions, warm_up
from core.explain.stability import load_stability
from core.explain.words import probability_effects, view_agreement, word_attributions
from core.figures import layer_weights_figure, phrases_figure, probability_figure, word_figure
from core.hashing import text_hash
from core.learn.coverage import temperature_of
from core.report import example_of, exactness_text
from pages._multilabel import describe_set
from pages._multilabel_explain import multilabel_class_view
from pages._shared import escape_markdown, feature_cache, page_header, percent, show_error, store, with_eta
from pages._views import (class_picker, heatmap, legend, model_backbone, remember, report_builder, require_model,
                          shap_duration, short, stability_badge)

SOURCES = ["Unlabelled", "Labelled", "Type your own"]
MAX_OPTIONS = 2000  # a longer list is slow to draw; the selectbox filters as you type
POOLING_NAMES = {"last": "the last token", "max": "the maximum over tokens"}
_WORD = re.compile(r"\w+(?:['’-]\w+)*")


def pick_sentence(project, latest):
    """(text, its label or None) chosen by the user; unlabelled, least confident first."""
    s = store()
    unlabelled, labelled = s.unlabelled(project.id), s.labelled(project.id)
    preds = {p.text_id: p for p in s.predictions(latest.id)}
    source = st.segmented_control("Sentence", SOURCES, default=SOURCES[0 if unlabelled else 1],
                                  key="ex_source", required=True)
    if source == "Type your own":
        typed = st.text_area("Your sentence", key="ex_typed", height=80,
                             placeholder="Type any sentence to see how the model reads it")
        return typed.strip() or None, None
    if source == "Unlabelled":
        rows = sorted(unlabelled, key=lambda r: preds[r.id].confidence if r.id in preds else 2.0)
        names = {r.id: (f"{percent(preds[r.id].confidence)} {preds[r.id].label} · " if r.id in preds
                        else "") + short(r.text) for r in rows[:MAX_OPTIONS]}
        texts, labels = {r.id: r.text for r in rows}, {}
        help_ = "Least confident predictions first: the model's guess and how sure it is."
    elif project.multi_label:
        rows = s.label_sets(project.id)
        names = {r.text_id: f"{describe_set(r.labels)} · {short(r.text)}" for r in rows[:MAX_OPTIONS]}
        texts, labels = {r.text_id: r.text for r in rows}, {r.text_id: describe_set(r.labels) for r in rows}
        help_ = "Your labels, then the sentence."
    else:
        rows = labelled
        names = {r.text_id: f"{r.label} · {short(r.text)}" for r in rows[:MAX_OPTIONS]}
        texts, labels = {r.text_id: r.text for r in rows}, {r.text_id: r.label for r in rows}
        help_ = "Your label, then the sentence."
    if not names:
        st.info(f"There is no {source.lower()} sentence: pick another source or type one.",
                icon=":material/info:")
        return None, None
    picked = st.selectbox("Pick a sentence", list(names), format_func=names.get,
                          key=f"ex_pick_{source}", help=help_)
    return texts[picked], labels.get(picked)


def explain_text(bb, clf, model_id, text):
    """(token states, attribution) of a text, computed once per model and text this session."""
    return remember(("attr", model_id, tuple(clf.classes), text_hash(text)),
                    lambda: sentence_attribution(bb, clf, text))


def coefficient_view(ex, pooling: str) -> None:
    st.markdown("**By the model's weights**", help="Each word's share of the model's score, "
                "read straight from the classifier's weights.")
    heatmap(ex.text, ex.pieces)
    legend(ex.classes[ex.class_index])
    if ex.exact:
        icon = ":green[:material/check_circle:]" if ex.adds_up else ":red[:material/error:]"
        st.caption(f"{icon} " + escape_markdown(exactness_text(ex)))
    else:
        st.warning(f"This model pools {POOLING_NAMES.get(pooling, pooling)}, which is not a sum "
                   "over words: these colours are an approximation. Compute SHAP for a "
                   "faithful view.", icon=":material/warning:")
        st.caption(escape_markdown(exactness_text(ex)))


@st.cache_resource(show_spinner=False)
def shap_warm_up() -> threading.Thread:
    """Once per process: shap's import and compilation in the background, so the first
    SHAP the user asks for does not wait for them."""
    def run() -> None:
        try:
            warm_up()
        except Exception:  # only a warm-up: the real call reports any problem itself
            pass

    thread = threading.Thread(target=run, name="tenshot-shap-warm-up", daemon=True)
    thread.start()
    return thread


def shap_view(bb, clf, latest, text, k, *, view: str | None = None):
    """SHAP's word scores for class k, from the store when computed before; None until asked.

    view: the class a multi-label page explains (its binary view); such SHAP is kept for
    this session only, as the store keys SHAP by model version and sentence, not class.
    """
    s, h = store(), text_hash(text)
    st.markdown("**By SHAP (hiding words)**", help="How much the score drops when words are "
                "hidden, averaged fairly over combinations (Partition SHAP).")
    key = ("shap", latest.id, h, view)
    stored = view is None and any(k_.startswith(f"{h}|evals{SHAP_MAX_EVALS}|")
                                  for k_ in s.explanation_keys(latest.id, "shap"))
    cache = st.session_state.setdefault("_ex_shap", {})
    slot = st.empty()
    auto = st.session_state.get("_ex_shap_auto", False)  # kept while visiting other pages
    if key not in cache and (stored or auto or slot.button("Compute SHAP", key="ex_shap",
                                                           icon=":material/calculate:")):
        slot.empty()
        bar = st.progress(0.0, text="Hiding words and re-reading the sentence...")
        eta = with_eta(bar)
        try:
            cache[key] = shap_attributions(bb, clf, text, store=None if view else s, model_id=latest.id,
                                           cache=feature_cache(s),
                                           progress=lambda d, t: eta(d / t, f"SHAP: {d} of {t} versions read."))
        except TenshotError as err:
            show_error(err)
        bar.empty()
        if key in cache and not cache[key].cached:
            st.session_state["_ex_shap_seconds"] = cache[key].seconds
    result = cache.get(key)
    st.toggle("Compute SHAP for every sentence I open", value=auto, key="ex_shap_auto",
              on_change=lambda: st.session_state.update(_ex_shap_auto=st.session_state["ex_shap_auto"]),
              help="Each new sentence then takes one SHAP run longer to open.")
    if result is None:
        st.caption(f"Re-reads the sentence about {SHAP_MAX_EVALS} times with words hidden: "
                   + shap_duration(st.session_state.get("_ex_shap_seconds"), bb)
                   + " The result is kept " + ("for this session." if view else "with this model version."))
        return None
    pieces = word_attributions(result, text, k)
    heatmap(text, pieces)
    legend(clf.classes[k])
    st.caption(escape_markdown(
        f"Words {sum(p.score for p in pieces):+.5f} + all words hidden {result.base_values[k]:+.5f} "
        f"= the score {result.logits[k]:+.5f}. {result.n_evals} versions read"
        + (" (stored earlier)." if result.cached else f" in {result.seconds:.1f} s.")))
    return result


def agreement_and_badge(latest, clf, text, k, states, attr, shap, *, view: str | None = None) -> None:
    left, right = st.columns(2)
    with left:
        if shap is None:
            st.caption("Compute SHAP to see whether the two views agree.")
        else:
            agree = view_agreement(attr, shap, text, k)
            st.metric("Agreement of the two views", "–" if agree.reason else f"{agree.rho:.2f}",
                      help="Spearman correlation of the words' scores: 1 when both views rank the "
                           "words the same, 0 when unrelated.")
            st.caption(escape_markdown(f"Not defined: {agree.reason}.") if agree.reason else
                       "Above 0.7 the two views tell the same story.")
    with right:
        if view is not None:
            st.caption("The stability badge is for single-label models for now: a bootstrap run "
                       "refits every class's head, which the Stability page does not do yet.")
            return
        try:
            stab = load_stability(store(), latest.id)
        except TenshotError as err:
            show_error(err)
            return
        if stab is None:
            st.caption("Is this explanation stable? Run a bootstrap for this model to find out.")
            st.page_link("pages/stability.py", label="Go to Stability", icon=":material/balance:")
            return
        result = sentence_stability(stab, states, k, text=text, reference=reference_states(clf))
        if result is None:
            st.caption("The sentence has no word tokens to compare.")
            return
        stability_badge(result)


def sandbox(bb, clf, latest, text, ex) -> None:
    st.subheader("What if the sentence were different?", anchor=False)
    st.caption("Edit the sentence or remove words; the probabilities follow (press Ctrl+Enter "
               "or click outside the box to apply).")
    h = text_hash(text)[:16]
    left, right = st.columns([3, 2])
    with left:
        edited = st.text_area("Your version", value=text, key=f"ex_edit_{latest.id}_{h}", height=90)
        words = list(dict.fromkeys(_WORD.findall(edited)))
        drop = st.multiselect("Remove words", words, key=f"ex_drop_{latest.id}_{h}",
                              placeholder="Pick words to take out")
        variant = edited
        for word in drop:
            variant = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", "", variant)
        variant = re.sub(r"[ \t]{2,}", " ", variant).strip()
        if not variant:
            st.info("Nothing left to read: type something.", icon=":material/edit:")
            return
        _, attr_v = explain_text(bb, clf, latest.id, variant)
        t = temperature_of(clf)
        ex_v = example_of(attr_v, clf.classes, variant, class_index=ex.class_index, temperature=t)
        if variant == text:
            st.caption("Change a word to see how the contributions and the probabilities move.")
        else:
            # colours by the effect on the probability, so they agree with the numbers beside them
            name = clf.classes[ex.class_index]
            effects = probability_effects(attr_v, variant, ex.class_index, temperature=t)
            before = probability_effects(explain_text(bb, clf, latest.id, text)[1], text, ex.class_index,
                                         temperature=t)
            heatmap(variant, effects, scale=max((abs(p.score) for p in before + effects), default=None))
            legend(name)
            st.caption(escape_markdown(f"Each word's colour: how much it raises or lowers the "
                                       f"probability of “{name}” (the class picked above)."))
        if ex_v.predicted != ex.predicted:
            st.markdown(":material/swap_horiz: " + escape_markdown(
                f"The prediction flips from “{ex.predicted}” to “{ex_v.predicted}”."))
    with right:
        st.plotly_chart(probability_figure(clf.classes, ex_v.probs, before=ex.probs),
                        key="ex_sandbox_chart")
        cols = st.columns(min(len(clf.classes), 3))
        for i, (name, p, p0) in enumerate(zip(clf.classes, ex_v.probs, ex.probs)):
            change = round((p - p0) * 100)
            cols[i % len(cols)].metric(escape_markdown(short(name, 30)), f"{p:.0%}",
                                       delta=f"{change:+d} pts" if change else "no change",
                                       delta_color="normal" if change else "off",
                                       delta_arrow="auto" if change else "off")


def global_view(project, bb, clf, latest) -> None:
    with st.expander("What the model learned overall", icon=":material/public:"):
        for i, (name, weights) in enumerate(layer_weights_by_backbone(clf)):  # fused: per backbone
            st.plotly_chart(layer_weights_figure(weights, name), key=f"ex_layers_{i}")
        st.caption("How the model's weight is spread over the language model's layers: "
                   "shallow layers see words, deeper ones meaning.")
        key = ("ex_phrases", latest.id, tuple(clf.classes))
        texts = [r.text for r in store().texts(project.id)]
        if st.button("Find the words for each class", key="ex_phrases",
                     icon=":material/manage_search:"):
            bar = st.progress(0.0, text="Reading sentences...")
            eta = with_eta(bar)
            try:
                st.session_state[key] = class_phrases(bb, clf, texts, max_texts=300,
                                                      progress=lambda d, t: eta(d / t, f"Read {d} of {t}."))
            except TenshotError as err:
                show_error(err)
            bar.empty()
        phrases = st.session_state.get(key)
        if phrases is None:
            st.caption(f"Reads up to 300 of your {len(texts):,} sentences and averages each "
                       "word's contribution to every class (words seen at least twice).")
            return
        for tab, name in zip(st.tabs([escape_markdown(short(c, 40)) for c in clf.classes]),
                             clf.classes):
            with tab:
                rows = phrases.get(name, [])
                if not rows:
                    st.caption("No word was seen often enough.")
                    continue
                st.plotly_chart(phrases_figure(name, rows[:12]), key=f"ex_phr_{clf.classes.index(name)}")
                st.dataframe(pd.DataFrame({
                    "Word": [p.text for p in rows], "Mean contribution": [p.score for p in rows],
                    "Uses": [p.count for p in rows],
                    "Examples": [" | ".join(short(e, 80) for e in p.examples) for p in rows]}),
                    hide_index=True, width="stretch",
                    column_config={"Mean contribution": st.column_config.NumberColumn(format="%+.3f")})


def report_section(project, bb, clf, latest, text, *, view: str | None = None, whole=None) -> None:
    """view: the class picked on a multi-label model (clf is then its yes/no head and
    whole the multi-label classifier): the report is that class's."""
    st.subheader("Share with stakeholders", anchor=False)
    st.caption("One HTML file with the model card, accuracy, learning curve, layer profile, "
               "example explanations and the stored stability run. It opens in any browser, "
               "offline." + ("" if view is None else f" This report is about the class “{view}”."))
    report_builder(project, latest, lambda: (bb, clf if whole is None else whole), prefix="ex",
                   first=text, attribute=lambda t: explain_text(bb, clf, latest.id, t)[1],
                   class_name=view)


project = page_header("Explain")
latest, clf = require_model(project)
shap_warm_up()
bb = model_backbone(clf)
st.caption(escape_markdown(f"Model v{latest.version}: which words push a prediction towards "
                           "or away from a class, and how much to trust that."))
text, label = pick_sentence(project, latest)
if text is None:
    st.stop()
view, whole = None, clf
if project.multi_label:  # pick a class; the rest of the page explains that class's own head
    clf, view = multilabel_class_view(project, latest, clf, bb, text, label,
                                      lambda c: explain_text(bb, c, latest.id, text)[1])
try:
    states, attr = explain_text(bb, clf, latest.id, text)
except TenshotError as err:
    show_error(err)
    st.stop()
predicted = clf.classes[int(np.argmax(attr.logits))]
top, chart = st.columns([3, 2], vertical_alignment="center")
if view is not None:  # the class is chosen above; its yes/no probability is in the chart there
    top, chart = st.container(), None
with top:
    k = 1 if view is not None else clf.classes.index(class_picker(
        "Explain the class", clf.classes, predicted, key=f"ex_class_{latest.id}_{text_hash(text)[:16]}",
        help="The colours show what pushes the model towards this class."))
    ex = example_of(attr, clf.classes, text, class_index=k, label=label, temperature=temperature_of(clf))
    if view is None:
        st.markdown(escape_markdown(f"Predicted: {predicted} ({ex.probs.max():.0%} sure)")
                    + ("" if label is None else "  \n" + escape_markdown(f"Your label: {label}")))
    if view is None and label is not None and label != predicted:
        st.caption(":orange[:material/warning:] The model disagrees with your label.")
if chart is not None:
    with chart:
        st.plotly_chart(probability_figure(clf.classes, ex.probs, highlight=predicted), key="ex_probs")
st.subheader("Which words made the difference", anchor=False)
coef_col, shap_col = st.columns(2, gap="large")
with coef_col:
    coefficient_view(ex, clf.settings.pooling)
with shap_col:
    shap = shap_view(bb, clf, latest, text, k, view=view)
agreement_and_badge(latest, clf, text, k, states, attr, shap, view=view)
if any(p.score for p in ex.pieces):
    st.plotly_chart(word_figure(ex.pieces, None if shap is None else word_attributions(shap, text, k)),
                    key="ex_words")
sandbox(bb, clf, latest, text, ex)
global_view(project, bb, clf, latest)
report_section(project, bb, clf, latest, text, view=view, whole=None if view is None else whole)
