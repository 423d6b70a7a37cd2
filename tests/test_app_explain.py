"""The Explain page on a trained tiny-model project: the exact word heatmap, SHAP kept in
the store, the class switch, the what-if sandbox, the global view, the report download,
the empty states, and user text that must stay inert."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import softmax

from core.store import Store
from tests.helpers import (CLASSES, check_inert, open_page, page_text, plotly_array,
                           plotly_specs, sql)

EXACT = re.compile(r"Words ([+-]\d+\.\d+) \+ prompt ([+-]\d+\.\d+) \+ constant ([+-]\d+\.\d+) "
                   r"= ([+-]\d+\.\d+); the model's score \(logit\) for “(.+?)” is ([+-]\d+\.\d+)")


def exactness(at) -> tuple[np.ndarray, str, float]:
    """(words, prompt, constant, shown sum), the class named and the logit, from the page."""
    found = [EXACT.search(c.value.replace("\\", "")) for c in at.caption]
    (m,) = [m for m in found if m]
    return np.array([float(m.group(i)) for i in (1, 2, 3, 4)]), m.group(5), float(m.group(6))


def reference_logits(db: str, pid: int, text: str, tiny_model_dir: str) -> tuple[list, np.ndarray]:
    """(classes, logits) of the latest model for a text, computed without the app."""
    from core.model.loading import load_backbone
    from core.explain.attributions import coefficient_attributions
    from core.project import load_classifier

    with Store.open(db) as store:
        clf = load_classifier(store.latest_model(pid))
    attr = coefficient_attributions(load_backbone(tiny_model_dir), clf, text)
    return clf.classes, attr.logits


def model_temperature(db: str, pid: int) -> float:
    from core.learn.coverage import temperature_of
    from core.project import load_classifier

    with Store.open(db) as store:
        return temperature_of(load_classifier(store.latest_model(pid)))


def html_bodies(at) -> str:
    return "\n".join(h.proto.body for h in at.get("html"))


def html_text(at) -> str:
    """What the st.html blocks show, tags removed and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_bodies(at)))


def chart(at, title: str, index: int = 0) -> dict:
    specs = [s for s in plotly_specs(at) if title in str(s["layout"].get("title", {}).get("text"))]
    return specs[index]


def least_confident(db: str, pid: int):
    with Store.open(db) as store:
        preds = store.predictions(store.latest_model(pid).id)
        unlabelled = {r.id for r in store.unlabelled(pid)}
    return min((p for p in preds if p.text_id in unlabelled), key=lambda p: p.confidence)


def test_without_a_model_says_what_to_do(fresh_workspace, tiny_model_dir, whole_app_reruns):
    with Store.open(fresh_workspace) as store:
        project = store.create_project("new", CLASSES, settings={"backbone": tiny_model_dir})
        at = open_page("explain")
        assert not at.exception
        assert "Add some sentences" in at.info[0].value
        store.add_texts(project.id, ["good movie", "bad movie"])
    at.run()
    assert not at.exception
    assert "Label at least 2 sentences per class to train a first model" in at.info[0].value
    assert [link.proto.page for link in at.get("page_link")][-1] == "label"


def test_explains_the_least_confident_prediction_exactly(workspace, tiny_model_dir):
    db, pid, _ = workspace
    at = open_page("explain")
    assert not at.exception
    first = least_confident(db, pid)
    assert at.selectbox(key="ex_pick_Unlabelled").value == first.text_id
    (parts, name, logit) = exactness(at)
    assert abs(parts[:3].sum() - logit) < 1e-4 and abs(parts[3] - logit) < 1e-4
    assert "they add up exactly" in page_text(at)
    classes, logits = reference_logits(db, pid, first.text, tiny_model_dir)
    assert name == first.label == classes[int(np.argmax(logits))]  # the predicted class
    assert_allclose(logit, logits[classes.index(name)], atol=1e-4)
    # the calibrated probabilities, as the Predictions page and the export show them: the
    # page said "69% sure" of a text listed as "58% positive" when it showed softmax(logits)
    temperature = model_temperature(db, pid)
    assert abs(temperature - 1.0) > 0.05  # else calibrated and plain would look alike
    probs = plotly_array(chart(at, "Class probabilities")["data"][0]["x"])
    assert_allclose(probs, softmax(logits / temperature), atol=1e-6)
    assert_allclose(probs.max(), first.confidence, atol=1e-3)
    assert f"({first.confidence:.0%} sure)" in page_text(at)
    assert first.text in html_text(at)
    assert f"towards “{name}”" in html_text(at)  # the legend names the explained class
    assert chart(at, "Strongest words")["data"][0]["type"] == "bar"


def test_switching_the_class_explains_that_class(workspace, tiny_model_dir):
    db, pid, _ = workspace
    at = open_page("explain")
    first = least_confident(db, pid)
    other = next(c for c in CLASSES if c != first.label)
    (picker,) = [w for w in at.get("button_group") if w.label == "Explain the class"]
    picker.set_value(other).run()
    assert not at.exception
    parts, name, logit = exactness(at)
    assert name == other and abs(parts[:3].sum() - logit) < 1e-4
    classes, logits = reference_logits(db, pid, first.text, tiny_model_dir)
    assert_allclose(logit, logits[classes.index(other)], atol=1e-4)
    assert f"towards “{other}”" in html_bodies(at)


def test_shap_is_computed_once_then_read_from_the_store(workspace, monkeypatch):
    import core.explain.shapley

    db, pid, _ = workspace
    calls = []
    original = core.explain.shapley._run_shap
    monkeypatch.setattr(core.explain.shapley, "_run_shap", lambda *a, **k: calls.append(1) or original(*a, **k))
    at = open_page("explain")
    assert "on a CPU this takes a while" in page_text(at)  # before the first run: what it costs
    at.button(key="ex_shap").click().run()
    assert not at.exception
    assert len(calls) == 1
    assert sql(db, "SELECT count(*) FROM explanations WHERE kind = 'shap'") == [(1,)]
    assert "versions read in" in page_text(at)
    assert any(m.label == "Agreement of the two views" for m in at.metric)
    assert [t["name"] for t in chart(at, "Strongest words")["data"]] == [
        "model weights (filled)", "SHAP (outline)"]
    again = open_page("explain")  # a new session: the stored result, no new forward pass
    assert not again.exception
    assert len(calls) == 1
    assert "(stored earlier)" in page_text(again)
    assert not [b for b in again.button if b.key == "ex_shap"]



def test_shap_can_run_for_every_sentence_opened(workspace):
    db, pid, _ = workspace
    at = open_page("explain")
    assert [b for b in at.button if b.key == "ex_shap"]  # off by default: a button
    at.toggle(key="ex_shap_auto").set_value(True).run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "ex_shap"]
    assert sql(db, "SELECT count(*) FROM explanations WHERE kind = 'shap'") == [(1,)]
    at.switch_page("pages/label.py").run()
    at.switch_page("pages/explain.py").run()
    assert at.toggle(key="ex_shap_auto").value  # still on after visiting another page
    at.button_group(key="ex_source").set_value("Type your own").run()
    at.text_area(key="ex_typed").input("the plot was dull").run()
    assert not at.exception
    assert sql(db, "SELECT count(*) FROM explanations WHERE kind = 'shap'") == [(2,)]

def test_editing_the_sentence_updates_the_probabilities(workspace, tiny_model_dir):
    db, pid, _ = workspace
    at = open_page("explain")
    before = plotly_array(chart(at, "Class probabilities", 1)["data"][-1]["x"])
    (box,) = [t for t in at.text_area if t.label == "Your version"]
    box.input("bad movie awful film terrible plot").run()
    assert not at.exception
    sandbox = chart(at, "Class probabilities", 1)["data"]
    assert [t["name"] for t in sandbox] == ["original", "your version"]
    original, edited = plotly_array(sandbox[0]["x"]), plotly_array(sandbox[1]["x"])
    assert_allclose(original, before)
    classes, logits = reference_logits(db, pid, "bad movie awful film terrible plot", tiny_model_dir)
    assert_allclose(edited, softmax(logits / model_temperature(db, pid)), atol=1e-6)  # calibrated
    assert not np.allclose(edited, original)
    deltas = {m.label: m.proto.delta for m in at.metric if m.label in CLASSES}
    assert set(deltas) == set(CLASSES) and all("pts" in d for d in deltas.values())
    (drop,) = [m for m in at.multiselect if m.label == "Remove words"]
    drop.set_value(["awful", "terrible"]).run()
    assert not at.exception
    assert "bad movie film plot" in html_text(at)


def test_sandbox_colours_follow_the_probability_of_the_class_named(workspace, tiny_model_dir):
    # issue 15 bug 4: the sandbox coloured words "away from" a class whose probability rose
    from core.model.loading import load_backbone
    from core.explain.attributions import coefficient_attributions
    from core.explain.words import probability_effects
    from core.project import load_classifier

    db, pid, _ = workspace
    at = open_page("explain")
    variant = "bad movie awful film terrible plot"
    (box,) = [t for t in at.text_area if t.label == "Your version"]
    box.input(variant).run()
    assert not at.exception
    bodies = [h.proto.body for h in at.get("html")]
    (sandbox_map,) = [b for b in bodies if "tenshot-heatmap" in b and "awful" in b]
    legend_after = bodies[bodies.index(sandbox_map) + 1]
    name = html.unescape(re.search(r"towards “(.+?)”", legend_after).group(1))
    tips = {w: float(v) for w, v in re.findall(r'title="([^":]+): ([+-][0-9.]+)"', sandbox_map)}
    with Store.open(db) as store:
        clf = load_classifier(store.latest_model(pid))
    attr = coefficient_attributions(load_backbone(tiny_model_dir), clf, variant)
    effects = {p.text: p.score for p in probability_effects(attr, variant, clf.classes.index(name),
                                                            temperature=model_temperature(db, pid))}
    assert set(tips) == set(effects) and len(tips) == 6
    for word, score in tips.items():
        assert score == pytest.approx(effects[word], abs=1e-4), word


def test_a_typed_sentence_is_explained(workspace):
    at = open_page("explain")
    at.button_group(key="ex_source").set_value("Type your own").run()
    at.text_area(key="ex_typed").input("the plot was dull").run()
    assert not at.exception
    parts, _, logit = exactness(at)
    assert abs(parts[:3].sum() - logit) < 1e-4
    assert "the plot was dull" in html_text(at)


def test_global_view_lists_words_per_class_and_layer_weights(workspace):
    at = open_page("explain")
    layers = chart(at, "Where in the network")["data"][0]
    assert_allclose(plotly_array(layers["y"]).sum(), 1.0)
    at.button(key="ex_phrases").click().run()
    assert not at.exception
    titles = [str(s["layout"]["title"]["text"]) for s in plotly_specs(at)]
    assert any("Words that point to" in t for t in titles)
    frame = at.dataframe[0].value
    assert list(frame.columns) == ["Word", "Mean contribution", "Uses", "Examples"]
    assert (frame["Uses"] >= 2).all()


def test_report_download(workspace, downloads):
    at = open_page("explain")
    at.button(key="ex_report_build").click().run()
    assert not at.exception
    (name,) = [n for n in downloads if n.endswith(".html")]
    assert name == "tenshot-report-reviews-v2.html"
    report = downloads[name].decode()
    assert "Model card" in report and "Learning curve" in report
    assert "Cross-validated accuracy of each layer alone" in report


def test_hostile_text_stays_inert(hostile_workspace, downloads):
    db, pid = hostile_workspace
    at = open_page("explain")
    assert not at.exception
    for choice in ("Unlabelled", "Labelled"):
        at.button_group(key="ex_source").set_value(choice).run()
        assert not at.exception
        check_inert(at)
    # the heatmap wraps each token in its own span: compare the text between the tags
    shown_text = re.sub(r"<[^>]*>", "", html_bodies(at))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown_text
    at.button(key="ex_report_build").click().run()
    assert not at.exception
    (report,) = downloads.values()
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in report and b"<img src=x" not in report


def test_last_token_pooling_is_flagged_as_approximate(workspace, tiny_model_dir):
    from core.model.loading import load_backbone
    from core.project import retrain

    db, pid, _ = workspace
    with Store.open(db) as store:
        project = store.update_settings(pid, {**store.project(pid).settings, "pooling": "last"})
        retrain(store, project, load_backbone(tiny_model_dir))
    at = open_page("explain")
    assert not at.exception
    assert any("approximation" in w.value and "SHAP" in w.value for w in at.warning)
    _, _, logit = exactness(at)
    first = least_confident(db, pid)
    classes, logits = reference_logits(db, pid, first.text, tiny_model_dir)
    assert_allclose(logit, logits[classes.index(first.label)], atol=1e-4)


def test_a_fused_model_is_explained_exactly_over_both_backbones(fresh_workspace, tiny_model_dir,
                                                                 whole_app_reruns, monkeypatch):
    """A two-backbone model: word colours sum both backbones' tokens and still add up."""
    import core.model.loading as loading
    from core.model.loading import load_backbone
    from core.model.registry import REGISTRY, PackagedModel
    from core.project import retrain

    bb = load_backbone(tiny_model_dir)
    for name in ("tiny-a", "tiny-b"):
        monkeypatch.setitem(REGISTRY, name, PackagedModel(
            name, name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-"))
    monkeypatch.setattr(loading, "load_backbone", lambda name, **kw: load_backbone(tiny_model_dir))
    group = load_backbone("tiny-a+tiny-b")
    with Store.open(fresh_workspace) as store:
        project = store.create_project("fused", CLASSES, settings={
            "backbone": "tiny-a+tiny-b", "prompt": None, "mode": "layer"})
        texts = ["good movie", "great film", "i love it", "bad movie", "awful film", "i hate it",
                 "very good"]
        ids = store.add_texts(project.id, texts).text_ids
        for i, label in zip(ids, ["pos"] * 3 + ["neg"] * 3):
            store.set_label(project.id, i, label)
        retrain(store, project, group)
    at = open_page("explain")
    assert not at.exception
    parts, name, logit = exactness(at)
    assert abs(parts[:3].sum() - logit) < 1e-4 and "they add up exactly" in page_text(at)
    assert "very good" in html_text(at)
    # the stability badge works on a fused model too (issue 12 follow-up; it said it
    # "needs a model on a single backbone"): with no bootstrap run yet it says how to get one
    assert "Run a bootstrap" in page_text(at) and "single backbone" not in page_text(at)


def test_fused_model_gets_the_global_view_and_the_report(fresh_workspace, whole_app_reruns,
                                                         monkeypatch, downloads):
    """A model over two backbones: one layer chart per backbone, words for each class
    from both, and the stakeholder report."""
    import streamlit as st

    import core.model.group as multi
    from core.model.backbone import Backbone
    from core.model.registry import PackagedModel
    from core.project import retrain
    from tests.helpers import NEG, POS, make_tiny_model, make_tokenizer

    tok = make_tokenizer()
    a = Backbone("tiny-a", make_tiny_model(len(tok), seed=1, layers=2, hidden=32), tok, "fp-a")
    b = Backbone("tiny-b", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    for bb in (a, b):
        monkeypatch.setitem(multi.REGISTRY, bb.name, PackagedModel(
            bb.name, bb.name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-"))
    group = multi.BackboneGroup("tiny-a+tiny-b", (a, b), tuple(multi.group_parts("tiny-a+tiny-b")))
    monkeypatch.setattr("pages._shared.load_backbone", lambda name, **_: group)
    st.cache_resource.clear()
    with Store.open(fresh_workspace) as store:
        project = store.create_project("Fused", ["neg", "pos"], settings={
            "backbone": group.name, "prompt": "review : {text}", "mode": "layer", "penalty": "l2"})
        ids = store.add_texts(project.id, POS + NEG).text_ids
        for text_id, label in zip(ids, ["pos"] * len(POS) + ["neg"] * len(NEG)):
            store.set_label(project.id, text_id, label)
        retrain(store, project, group)

    at = open_page("explain")
    assert not at.exception
    titles = [str(s["layout"]["title"]["text"]) for s in plotly_specs(at)]
    assert "Where in tiny-a the signal lives" in titles and "Where in tiny-b the signal lives" in titles
    shares = sum(plotly_array(chart(at, f"Where in {n}")["data"][0]["y"]).sum() for n in ("tiny-a", "tiny-b"))
    assert shares == pytest.approx(1.0)
    at.button(key="ex_phrases").click().run()
    assert not at.exception
    assert (at.dataframe[0].value["Uses"] >= 2).all()
    at.button(key="ex_report_build").click().run()
    assert not at.exception
    (report,) = [v.decode() for n, v in downloads.items() if n.endswith(".html")]
    assert "Where in tiny-a the signal lives" in report and "Where in tiny-b the signal lives" in report
    assert "Example explanations" in report
    st.cache_resource.clear()  # the fake group must not serve later tests
