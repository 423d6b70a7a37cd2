"""Findability in a real browser (issue 15, item 9): no metric is cut off, the
predictions grid's "Your label" column is on screen and edits on a double-click,
and choosing a model setting keeps the Settings tab open."""

from __future__ import annotations

import pytest

from core.store import Store
from tests.browser import NEGATIVE, POSITIVE, _go, _idle, _open, _see, _shot

pytestmark = pytest.mark.e2e

CUT_OFF = """() => Array.from(document.querySelectorAll(
    '[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] *, '
    + '[data-testid="stMetricValue"], [data-testid="stMetricValue"] *'))
  .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)"""


def _trained(db: str, tiny_model_dir: str) -> None:
    from core.model.loading import load_backbone
    from core.project import retrain

    with Store.open(db) as store:
        project = store.create_project("Reviews", ["negative", "positive"],
                                       settings={"backbone": tiny_model_dir, "prompt": None,
                                                 "mode": "layer"})
        labelled = POSITIVE[:6] + NEGATIVE[:6]
        ids = store.add_texts(project.id, labelled + POSITIVE[6:] + NEGATIVE[6:]).text_ids
        for text_id, text in zip(ids, labelled):
            store.set_label(project.id, text_id, "positive" if text in POSITIVE else "negative")
        retrain(store, project, load_backbone(tiny_model_dir))


def test_metrics_grid_and_settings_tab_are_findable(server, page, tiny_model_dir):
    url, db = server
    _trained(db, tiny_model_dir)
    _open(page, url)
    _see(page, "Reviews")
    page.set_viewport_size({"width": 1024, "height": 900})  # a laptop screen
    for title in ("Label", "Model", "Predictions"):
        _go(page, title, title)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(CUT_OFF) == [], f"cut-off metric text on the {title} page"
    page.set_viewport_size({"width": 1280, "height": 900})

    # the grid draws on a canvas; its accessible table mirrors the column order
    page.wait_for_function("() => document.querySelectorAll('th[role=columnheader]').length")
    headers = page.evaluate("() => Array.from(document.querySelectorAll("
                            "'th[role=columnheader]')).map(e => e.textContent)")
    assert headers[:2] == ["Accept", "Your label"], headers  # on screen whatever the width
    grid = page.locator('[data-testid="stDataFrameResizable"]').first
    grid.scroll_into_view_if_needed()  # the coverage control above it pushes it below the fold
    box = grid.bounding_box()
    # a double-click on the first row's "Your label" cell (after the 75 px Accept column,
    # below the 35 px header) opens its choices
    page.mouse.dblclick(box["x"] + 120, box["y"] + 52)
    page.locator("#portal").get_by_text("negative", exact=True).first.click()
    page.keyboard.press("Escape")
    _see(page, "Save 1 label and retrain")
    _shot(page, "friction-predictions-grid")

    _go(page, "Model", "Model")
    page.get_by_role("tab", name="Settings").click()
    _idle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Features").first.click()
    page.get_by_role("option", name="Fusion (LLMEmbed)").click()
    _see(page, "Fusion (LLMEmbed): the hidden states at")  # the help names the depths (issue 12)
    page.wait_for_timeout(500)
    assert page.get_by_role("tab", selected=True).inner_text() == "Settings"
    _shot(page, "friction-model-settings")
