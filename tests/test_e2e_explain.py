"""Real-browser tests of the Explain and Stability pages (headless Chromium, Playwright).

A trained project is written straight into the workspace, then the pages are opened
in the browser: a demo project for screenshots a person looks at (test-artifacts/),
and a project made of injection strings that must stay inert text.
"""

from __future__ import annotations

import pytest

from core.store import Store
from tests.browser import NEGATIVE, POSITIVE, ROOT, _go, _open, _see, tall_shot

pytestmark = pytest.mark.e2e

UNLABELLED = ["the film was very good , not bad !", "it was a dull plot", "i love this movie !",
              "a boring and sad review", "the plot is fine"]
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "**bold** [x](javascript:alert(1))", ":red[x]"]


def _trained(db: str, tiny_model_dir: str, name: str, classes, labelled: dict, unlabelled) -> None:
    from core.model.loading import load_backbone
    from core.project import retrain

    with Store.open(db) as store:
        project = store.create_project(name, classes, settings={
            "backbone": tiny_model_dir, "prompt": "review : {text} sentiment :", "mode": "layer"})
        texts = list(labelled) + list(unlabelled)
        ids = dict(zip(texts, store.add_texts(project.id, texts).text_ids))
        for text, label in labelled.items():
            store.set_label(project.id, ids[text], label)
        retrain(store, project, load_backbone(tiny_model_dir))


def _no_injection(page) -> None:
    assert page.dialogs == []
    app = page.locator('[data-testid="stMain"]')
    assert app.locator("script").count() == 0
    assert app.locator("img[onerror]").count() == 0
    assert page.locator('a[href^="javascript"]').count() == 0


def test_explain_and_stability_pages_look_right(server, page, tiny_model_dir, tmp_path):
    url, db = server
    labelled = {**{t: "positive" for t in POSITIVE}, **{t: "negative" for t in NEGATIVE}}
    _trained(db, tiny_model_dir, "Movie reviews", ["negative", "positive"], labelled, UNLABELLED)
    _open(page, url)
    _go(page, "Explain", "Explain")
    _see(page, "they add up exactly")
    _see(page, "on a CPU this takes a while")  # what a SHAP run costs, before it is asked for
    tall_shot(page, "19-explain-before-shap")
    page.get_by_role("button", name="Compute SHAP", exact=True).click()
    _see(page, "versions read")
    _see(page, "Agreement of the two views")
    page.get_by_text("What the model learned overall").click()
    page.get_by_role("button", name="Find the words for each class").click()
    _see(page, "Words that point to")
    tall_shot(page, "20-explain")
    page.get_by_role("button", name="Build the report").click()
    _see(page, "Download report (HTML)")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download report (HTML)").click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    assert download.value.suggested_filename == "tenshot-report-movie-reviews-v1.html"
    viewer = page.context.new_page()
    viewer.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    viewer.goto(report.as_uri())
    viewer.locator(".plotly-graph-div .main-svg").first.wait_for()  # plotly.js runs offline
    viewer.wait_for_timeout(1000)
    viewer.screenshot(path=str(ROOT / "test-artifacts" / "25-report.png"), full_page=True)
    viewer.close()
    _go(page, "Stability", "Stability")
    page.get_by_role("button", name="Run the bootstrap").click()
    _see(page, "Held-out accuracy")
    _see(page, "Do the refits rank the words the same way?")
    tall_shot(page, "21-stability")
    _go(page, "Explain", "Explain")
    _see(page, "Across the bootstrap refits the word ranking")
    tall_shot(page, "22-explain-with-badge")
    _no_injection(page)


def test_hostile_text_stays_inert_on_explain_and_stability(server, page, tiny_model_dir):
    url, db = server
    labelled = {f"{h} good movie" if i % 2 else f"{h} bad film": HOSTILE[i % 2]
                for i, h in enumerate(HOSTILE * 2)}
    labelled.update({f"{h} very good": HOSTILE[1] for h in HOSTILE[2:]})
    labelled.update({f"{h} very bad": HOSTILE[0] for h in HOSTILE[2:]})
    _trained(db, tiny_model_dir, "<b>Tricky</b> **project**", HOSTILE[:2], labelled,
             [" ".join(HOSTILE)])
    _open(page, url)
    _go(page, "Explain", "Explain")
    _see(page, "they add up exactly")
    heatmap = page.get_by_text("<script>alert(1)</script>", exact=False).first
    assert heatmap.is_visible()
    _no_injection(page)
    tall_shot(page, "23-explain-hostile")
    _go(page, "Stability", "Stability")
    page.get_by_role("button", name="Run the bootstrap").click()
    _see(page, "Held-out accuracy")
    _no_injection(page)
    tall_shot(page, "24-stability-hostile")
