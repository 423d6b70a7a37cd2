"""The stakeholder report (core.report): escaped user text everywhere, plotly's scripts
the only scripts, the sum check of the examples, and its optional parts."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.learn.curves import diagnose
from core.explain.words import Piece
from core.explain.attributions import coefficient_attributions, layer_weights_by_backbone
from core.project import load_classifier, retrain
from core.report import (build_report, example_of, exactness_text, heatmap_html, legend_html, pick_examples, report_filename,
                         stakeholder_report)
from core.explain.stability import bootstrap, project_inputs
from core.store import Store

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "**bold** [x](javascript:alert(1))", ":red[x]"]
WORDS = ["good movie", "bad film", "very dull plot", "the best review"]
WHEN = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)


class Parsed(HTMLParser):
    """Every start tag with its attributes, and the body of every <script>."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self._in_script = [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
def hostile_model(tiny_backbone, tmp_path_factory):
    """(store, project, model version, classifier) of a project made of injection strings."""
    store = Store.open(tmp_path_factory.mktemp("report") / "w.db")
    project = store.create_project(f"{HOSTILE[0]} {HOSTILE[2]}", HOSTILE, settings={
        "backbone": "tiny", "prompt": f"{HOSTILE[1]} : {{text}} sentiment :", "mode": "layer"})
    labelled = {f"{h} {w}": h for h in HOSTILE for w in WORDS}
    texts = list(labelled) + [" ".join(HOSTILE)]
    ids = dict(zip(texts, store.add_texts(project.id, texts).text_ids))
    for text, label in labelled.items():
        store.set_label(project.id, ids[text], label)
    retrain(store, project, tiny_backbone)
    model = store.latest_model(project.id)
    yield store, project, model, load_classifier(model)
    store.close()


def _examples(tiny_backbone, store, project, model, clf):
    picked = pick_examples(store.predictions(model.id), store.labelled(project.id), clf.classes)
    return [example_of(coefficient_attributions(tiny_backbone, clf, t), clf.classes, t, label=lab)
            for t, lab in picked]


@pytest.fixture(scope="module")
def full_report(tiny_backbone, hostile_model) -> str:
    store, project, model, clf = hostile_model
    rows = store.labelled(project.id)
    inputs = project_inputs(store, project.id, tiny_backbone, clf)
    diag = diagnose(clf, inputs["X"], [r.label for r in rows if r.label in clf.classes])
    return build_report(project.name, model, _examples(tiny_backbone, store, project, model, clf),
                        diagnostics=diag, profile={"mean": np.linspace(0.3, 0.8, 3)},
                        layer_shares=layer_weights_by_backbone(clf), stability=bootstrap(clf, **inputs, B=8),
                        generated=WHEN)


def test_only_plotly_runs_scripts_and_user_text_is_escaped(full_report):
    page = Parsed(full_report)
    library, *figures = page.scripts
    assert "Plotly" in library and len(library) > 1_000_000  # plotly.js, inline: works offline
    assert len(figures) == 7 and all("Plotly.newPlot" in s for s in figures)
    assert all("<" not in s for s in figures)  # plotly writes "<" in its JSON as \u003c
    assert sum(tag == "script" for tag, _ in page.tags) == 8
    assert not [(t, a) for t, attrs in page.tags for a in attrs if a.lower().startswith("on")]
    assert not [t for t, attrs in page.tags if str(attrs.get("href", "")).startswith("javascript")]
    assert not [t for t, _ in page.tags if t == "img"]
    body = full_report[full_report.index("</head>"):]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # the name, classes and sentences
    assert "&lt;img src=x onerror=alert(1)&gt;" in body  # the class and the prompt
    assert "<script>alert" not in body and "<img" not in body
    assert f"<title>{html.escape(HOSTILE[0])}" in full_report


def test_report_has_every_section(full_report):
    for title in ("Model card", "Confusion matrix", "Learning curve", "each layer alone",
                  "Where in the network the signal lives", "Example explanations",
                  "Accuracy on unseen labels across 8 refits", "How often the refits agree",
                  "How reliably each feature is used", "generated 2026-01-02 03:04 UTC"):
        assert title in full_report, title


def test_report_without_optional_parts_says_how_to_get_them(tiny_backbone, hostile_model):
    store, project, model, clf = hostile_model
    report = build_report(project.name, model, [])
    assert "Learning curve not included" in report and "run one on the Stability page" in report
    assert len(Parsed(report).scripts) == 1  # the library, no figure


def test_stakeholder_report_gathers_its_parts_from_the_store(tiny_backbone, hostile_model):
    store, project, model, clf = hostile_model
    first = f"{HOSTILE[3]} {WORDS[0]}"
    explained, steps = [], []

    def attribute(text):
        explained.append(text)
        return coefficient_attributions(tiny_backbone, clf, text)

    report = stakeholder_report(store, project, tiny_backbone, clf, model, first=first,
                                with_profile=False, attribute=attribute,
                                progress=lambda share, what: steps.append((share, what))).decode("utf-8")
    # the user's sentence is always explained; confident examples lead (pick_examples)
    assert first in explained and explained[0] != first and len(explained) >= 3
    assert "Learning curve" in report and "each layer alone" not in report
    assert "run one on the Stability page" in report  # no bootstrap stored for this model
    assert steps[-1] == (0.95, "Explaining examples...")
    assert all(0 <= share <= 0.6 and what == "Learning curve..." for share, what in steps[:-1])


def test_examples_add_up_to_the_logit(tiny_backbone, hostile_model):
    store, project, model, clf = hostile_model
    examples = _examples(tiny_backbone, store, project, model, clf)
    assert len(examples) >= 3
    for ex in examples:
        assert ex.exact and ex.adds_up
        assert_allclose(ex.words + ex.prompt + ex.constant, ex.logit, atol=1e-4)
        assert_allclose(ex.probs.sum(), 1.0)
        assert ex.classes[ex.class_index] == ex.predicted
        numbers = [float(x) for x in re.findall(r"[+-]\d+\.\d{5}", exactness_text(ex))]
        assert abs(sum(numbers[:3]) - numbers[4]) < 1e-4 and "add up exactly" in exactness_text(ex)


def test_heatmap_keeps_every_character_and_escapes_it():
    text = "  <b>good</b>\n & 'bad' \"x\"  "
    pieces = [Piece(5, 9, "good", 0.5), Piece(18, 21, "bad", -1.0), Piece(0, 2, "  ", 0.2)]
    out = heatmap_html(text, pieces)
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == text
    tags = Parsed(out).tags
    assert [t for t, _ in tags] == ["div", "span", "span"]  # whitespace is never coloured
    assert "rgba(220,38,38,0.90)" in out  # the strongest score gets the strongest colour
    assert 'title="bad: -1.0000"' in out
    assert "&lt;b&gt;" in legend_html("<b>") and "<b>" not in legend_html("<b>")


def test_pick_examples_takes_each_class_and_the_least_sure():
    P = lambda text, label, conf: SimpleNamespace(text=text, label=label, confidence=conf)  # noqa: E731
    L = lambda text, label: SimpleNamespace(text=text, label=label)  # noqa: E731
    preds = [P("a", "pos", 0.9), P("b", "pos", 0.6), P("c", "neg", 0.8), P("d", "neg", 0.51)]
    # confident examples lead, most confident first; the user's sentence, then the least sure
    assert pick_examples(preds, [], ["neg", "pos"], first="z") == [
        ("a", None), ("c", None), ("z", None), ("d", None)]
    assert pick_examples([], [L("x", "pos"), L("y", "neg")], ["neg", "pos"]) == [
        ("y", "neg"), ("x", "pos")]


def test_pick_examples_keeps_the_users_sentence_within_the_limit():
    P = lambda text, label, conf: SimpleNamespace(text=text, label=label, confidence=conf)  # noqa: E731
    classes = list("abcdefg")
    preds = [P(f"{c}-text", c, 0.3 + 0.1 * i) for i, c in enumerate(classes)] + [P("low", "a", 0.2)]
    picked = pick_examples(preds, [], classes, first="mine", limit=5)
    assert [t for t, _ in picked] == ["g-text", "f-text", "e-text", "d-text", "mine"]
    confidences = [p.confidence for t, _ in picked for p in preds if p.text == t]
    assert confidences == sorted(confidences, reverse=True)


def test_report_filename_is_safe():
    assert report_filename("Movie reviews!", 3) == "tenshot-report-movie-reviews-v3.html"
    assert report_filename("<script>", 1) == "tenshot-report-script-v1.html"
    assert report_filename("ÿ/..", 2) == "tenshot-report-project-v2.html"


def test_a_reports_example_shows_the_confidence_the_predictions_show(tiny_backbone, hostile_model):
    # the Predictions page and the export show calibrated probabilities; the report (and the
    # Explain page) showed softmax(logits), so one sentence had two confidences
    from core.learn.coverage import temperature_of

    store, project, model, clf = hostile_model
    (stored,) = store.predictions(model.id)  # the one unlabelled text
    temperature = temperature_of(clf)
    assert abs(temperature - 1.0) > 0.05  # else calibrated and plain would look alike
    ex = example_of(coefficient_attributions(tiny_backbone, clf, stored.text), clf.classes, stored.text,
                    temperature=temperature)
    assert ex.predicted == stored.label
    assert_allclose(ex.probs.max(), stored.confidence, atol=1e-3)
    report = stakeholder_report(store, project, tiny_backbone, clf, model, with_profile=False).decode("utf-8")
    assert f"<b>{html.escape(stored.label)}</b> ({stored.confidence:.0%})" in report
