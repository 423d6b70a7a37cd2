"""Real-browser tests: the app served by `streamlit run`, driven by Playwright in Debian's Chromium.

Each test starts its own server on a free port with a fresh workspace whose projects
use the tiny test model, and saves a screenshot of every page it visits to
test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import pytest

from core.store import Store
from tests.browser import INJECTION, NEGATIVE, POSITIVE, _current_sentence, _go, _idle, _open, _see, _shot

pytestmark = pytest.mark.e2e


def test_create_paste_label_with_keys_and_reload(server, page):
    url, db = server
    _open(page, url)
    _see(page, "Create a project")
    _shot(page, "01-projects-empty")
    page.get_by_role("textbox", name="Project name").fill("Movie reviews")
    page.get_by_role("textbox", name="Classes, separated by commas").fill("negative, positive")
    page.get_by_role("button", name="Create project").click()
    _see(page, "Created the project")
    _shot(page, "02-projects-created")

    _go(page, "Data", "Data")
    page.get_by_role("tab", name="Paste many").click()
    page.get_by_role("textbox", name="Sentences, one per line").fill("\n".join(POSITIVE + NEGATIVE))
    page.get_by_role("button", name="Add sentences").click()
    _see(page, "Added 20 new sentences")
    _see(page, "20 sentences read and ready for the model")
    _shot(page, "03-data")

    _go(page, "Label", "Label")
    _see(page, "Keyboard: 1–2 label")
    truth = {**{t: "2" for t in POSITIVE}, **{t: "1" for t in NEGATIVE}}
    for n in range(1, 11):
        sentence = _current_sentence(page)
        page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page
        page.keyboard.press(truth[sentence])
        _see(page, f"20 sentences · {n} labelled")
        if n == 1:
            _shot(page, "04-label-first")
    with Store.open(db) as store:
        (project,) = store.projects()
        assert sum(store.label_counts(project.id).values()) == 10
        version = store.latest_model(project.id).version
    _see(page, f"Accuracy, model v{version}")
    _see(page, f"20 sentences · 10 labelled · model v{version}:")  # the sidebar is up to date
    _see(page, "Model's guess:")
    _shot(page, "05-label-model")

    page.keyboard.press("s")  # skip keeps the counts
    _idle(page)
    page.keyboard.press("u")  # undo removes the 10th label
    _see(page, "Undid the last label")
    _see(page, "20 sentences · 9 labelled")

    page.get_by_role("radio", name="Table").or_(page.get_by_role("button", name="Table")).first.click()
    _see(page, "Select all")
    _shot(page, "06-label-table")

    _go(page, "Predictions", "Predictions")
    _shot(page, "07-predictions")

    page.reload()
    _idle(page)
    page.get_by_role("heading", name="Predictions").first.wait_for()
    _see(page, "20 sentences · 9 labelled")
    _go(page, "Label", "Label")
    _see(page, "Accuracy, model v")
    _shot(page, "08-after-reload")
    assert page.dialogs == []


def test_upload_a_csv_with_labels(server, page, tmp_path, tiny_model_dir):
    url, db = server
    with Store.open(db) as store:
        store.create_project("Uploads", ["neg", "pos"], settings={"backbone": tiny_model_dir})
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngood movie,pos\nbad film,neg\nit was fine,\nbroken,row,extra\n")
    _open(page, url)
    _go(page, "Data", "Data")
    page.get_by_role("tab", name="Upload a file").click()
    page.locator('input[type="file"]').set_input_files(str(csv))
    _see(page, "Import 3 sentences (2 labelled)")
    _see(page, "1 row will be skipped")
    _shot(page, "09-upload-preview")
    page.get_by_role("button", name="Import 3 sentences").click()
    _see(page, "Added 3 new sentences. 2 labels imported.")
    _shot(page, "10-upload-done")
    with Store.open(db) as store:
        (project,) = store.projects()
        assert store.label_counts(project.id) == {"neg": 1, "pos": 1}


def test_injection_text_renders_inert(server, page, tiny_model_dir):
    url, db = server
    with Store.open(db) as store:
        project = store.create_project("Tricky", ["[neg](javascript:alert(1))", "**pos**"],
                                       settings={"backbone": tiny_model_dir})
        store.add_texts(project.id, [INJECTION])
    _open(page, url)
    _shot(page, "11-projects-tricky")
    _go(page, "Label", "Label")
    heading = page.locator('[data-testid="stMarkdownContainer"] h4').first
    assert heading.inner_text().strip() == INJECTION
    assert page.locator('[data-testid="stMarkdownContainer"] script').count() == 0
    assert page.locator('a[href^="javascript"]').count() == 0
    assert page.get_by_role("button", name="[neg](javascript:alert(1))").count() == 1
    assert page.get_by_role("button", name="**pos**").count() == 1
    needs = "Label 2 more “[neg](javascript:alert(1))” and 2 more “**pos**”"
    assert page.get_by_text(needs).count() == 1
    _shot(page, "12-label-tricky")
    _go(page, "Data", "Data")
    _shot(page, "13-data-tricky")
    assert page.locator('a[href^="javascript"]').count() == 0
    assert page.dialogs == []


def test_first_visit_straight_to_a_page_gets_the_whole_app(server, page, tiny_model_dir):
    # regression: the first request after a server start that opened /label ran the page
    # script alone (legacy pages/ folder handling): no project picker, file names as menu
    url, db = server
    with Store.open(db) as store:
        project = store.create_project("Direct", ["neg", "pos"], settings={"backbone": tiny_model_dir})
        store.add_texts(project.id, ["good movie"])
    page.goto(f"{url}/label")
    _idle(page)
    page.get_by_role("heading", name="Label").first.wait_for()
    _see(page, "1 sentence · 0 labelled")
    assert page.get_by_test_id("stSidebarNav").get_by_role("link", name="Predictions").count() == 1
    assert page.get_by_text("shared", exact=True).count() == 0
    assert _current_sentence(page) == "good movie"
    _shot(page, "14-direct-label")
