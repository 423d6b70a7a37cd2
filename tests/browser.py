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
