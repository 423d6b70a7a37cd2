"""Nothing leaves the machine: every request the browser makes while a person uses
every page of the app goes to the local server (issue 15, item 10: the pages
requested fonts.gstatic.com for the favicon, a Material Symbols icon)."""

from __future__ import annotations

import pytest

from core.store import Store
from tests.browser import NEGATIVE, POSITIVE, _go, _open, _see, foreign_requests, record_requests

pytestmark = pytest.mark.e2e

PAGES = [("Data", "Data"), ("Label", "Label"), ("Predictions", "Predictions"),
         ("Explain", "Explain"), ("Model", "Model"), ("Stability", "Stability"),
         ("Export", "Export"), ("Projects", "Projects")]


def _trained(db: str, tiny_model_dir: str) -> None:
    from core.model.loading import load_backbone
    from core.project import retrain

    with Store.open(db) as store:
        project = store.create_project("Reviews", ["negative", "positive"],
                                       settings={"backbone": tiny_model_dir, "prompt": None,
                                                 "mode": "layer"})
        ids = store.add_texts(project.id, POSITIVE + NEGATIVE + ["the plot is fine"]).text_ids
        for text_id, text in zip(ids, POSITIVE + NEGATIVE):
            store.set_label(project.id, text_id, "positive" if text in POSITIVE else "negative")
        retrain(store, project, load_backbone(tiny_model_dir))
        retrain(store, project, load_backbone(tiny_model_dir))  # a history chart needs two


def test_every_page_requests_only_the_local_server(server, page, tiny_model_dir):
    url, db = server
    _trained(db, tiny_model_dir)
    requests = record_requests(page)
    _open(page, url)
    _see(page, "Reviews")
    for title, heading in PAGES:
        _go(page, title, heading)
        page.wait_for_load_state("networkidle")
    page.reload()
    page.wait_for_load_state("networkidle")
    assert foreign_requests(requests) == []
