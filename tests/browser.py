"""Shared pieces of the real-browser tests (headless Chromium via Playwright): the
``browser``, ``server`` and ``page`` fixtures (a plugin that conftest.py's
``pytest_plugins`` registers, so no test module imports them) and page helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.store import Store

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
    yield from serve(tmp_path, {"TENSHOT_BACKBONE": tiny_model_dir,
                                "TENSHOT_CACHE": str(tmp_path / "cache")})


@pytest.fixture
def smollm2_server(tmp_path):
    """A running app on a fresh workspace whose new projects get what a user gets: the
    packaged SmolLM2 (converted once per test session into the session's model cache).
    Yields (base url, db path)."""
    env = {k: v for k, v in os.environ.items() if k != "TENSHOT_BACKBONE"}
    yield from serve(tmp_path, {"TENSHOT_CACHE": os.environ["TENSHOT_CACHE"]}, base=env)


def serve(tmp_path: Path, overrides: dict[str, str], *, base: dict[str, str] | None = None):
    """Run `streamlit run app.py` on a free port over a fresh workspace in tmp_path, with
    ``overrides`` on top of the ``base`` environment (default: this process's); yields
    (base url, db path) and stops the server afterwards. The server's log is
    tmp_path/server.log."""
    db = tmp_path / "workspace.db"
    Store.open(db).close()
    port = _free_port()
    env = {**(os.environ if base is None else base), "TENSHOT_DB": str(db), **overrides}
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


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
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


# the waits below use the page's default timeout (TIMEOUT_MS unless a test sets another)
def _idle(page) -> None:
    page.wait_for_selector(IDLE)


def _see(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for()
    _idle(page)


def _shot(page, name: str) -> None:
    # widgets hydrate after the script has finished; let their code load before the picture
    # (on a busy machine a lazily loaded widget shows a grey placeholder for seconds)
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-testid=stSkeleton]')")
    page.wait_for_timeout(800)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tall_shot(page, name: str) -> None:
    """A screenshot of the whole page: the app scrolls inside its main block, so grow the
    viewport to the content's height first (full_page alone stops at the viewport)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(800)
    height = page.evaluate('document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 6000)})
    _shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})


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


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def record_requests(page) -> list[str]:
    """The URLs of every request the page's browser context makes from now on (a live list)."""
    urls: list[str] = []
    page.context.on("request", lambda r: urls.append(r.url))
    return urls


def foreign_requests(urls: list[str]) -> list[str]:
    """The web requests among ``urls`` that went to a host other than this machine.

    Fails when no web request was recorded at all: the check would then pass whatever
    the page did."""
    web = [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    assert web, "no request was recorded: the check would pass whatever the page did"
    return sorted({u for u in web if urlparse(u).hostname not in LOCAL_HOSTS})


def assert_no_error_box(page, where: str) -> None:
    """No Streamlit exception (a traceback box) and no red error message on the page."""
    for testid in ("stException", "stAlertContentError"):
        boxes = page.get_by_test_id(testid)
        assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:500]}"
