"""Real-browser tests: the app served by `streamlit run`, driven by Playwright in Debian's Chromium.

Each test starts its own server on a free port with a fresh workspace whose projects
use the tiny test model, and saves a screenshot of every page it visits to
test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.store import Store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TIMEOUT_MS = 60_000
POSITIVE = ["good movie", "great film", "i love it", "wonderful plot", "excellent review",
            "a happy film", "the best movie", "superb plot", "a delight", "very good film"]
NEGATIVE = ["bad movie", "awful film", "i hate it", "terrible plot", "boring review",
            "a sad film", "the worst movie", "poor plot", "dull and ugly", "very bad film"]
INJECTION = "<script>alert(1)</script> **bold** [x](javascript:alert(1))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: apt-get install -y chromium fonts-noto-color-emoji")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """A running app on a fresh workspace; yields (base url, db path)."""
    db = tmp_path / "workspace.db"
    Store.open(db).close()
    port = _free_port()
    env = {**os.environ, "TENSHOT_DB": str(db), "TENSHOT_BACKBONE": tiny_model_dir,
           "TENSHOT_CACHE": str(tmp_path / "cache")}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, str(db)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("streamlit did not become healthy in time")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def _idle(page) -> None:
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)


def _see(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT_MS)
    _idle(page)


def _shot(page, name: str) -> None:
    # widgets hydrate after the script has finished; let their code load before the picture
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(800)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _go(page, title: str, heading: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=heading).first.wait_for()
    _idle(page)


def _open(page, url: str) -> None:
    page.goto(url)
    _idle(page)
    page.get_by_role("heading", name="Projects").first.wait_for()


def _current_sentence(page) -> str:
    return page.locator('[data-testid="stMarkdownContainer"] h4').first.inner_text().strip()


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
    _see(page, "All 20 sentences are ready for the model")
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
    _see(page, f"Accuracy (cross-validated), model v{version}")
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
    _see(page, "Accuracy (cross-validated), model v")
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
