"""Several labellers at once, jobs cut short by a kill, and every way data leaves the app.

- Two browser sessions (two AppTests on one workspace file, each with its own session
  state) label one project: undo must revert only the session's own label.
- Two retrains of one project finish out of order: the one on older labels must not
  become the latest model.
- An embedding job's process is killed with SIGKILL mid-way: what it had read must be
  stored, the job must be shown interrupted at once, and "Continue" must read only the rest.
- The tables' CSV download (Streamlit's dataframe toolbar) must not hand out live
  spreadsheet formulas: it is switched off, and the Export page's CSV neutralises them.

Each test records its figures for the reliability report (tests/test_reliability.py).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from dataclasses import fields
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

import core.jobs as jobs
from core.export import FORMULA_PREFIXES
from core.model.backbone import Backbone
from core.model.loading import load_backbone
from core.project import retrain
from core.store import Store
from tests.browser import _go, _open, _shot
from tests.helpers import APP, WORDS, DictCache, page_text, record_figures, sql

ROOT = Path(__file__).resolve().parents[1]
TRUTH = {"good movie": "pos", "great film": "pos", "a wonderful plot": "pos",
         "the best review": "pos", "bad movie": "neg", "awful film": "neg",
         "a terrible plot": "neg", "the worst review": "neg"}
_FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _record_session_figures(tmp_path_factory):
    yield
    if {"undo", "race"} <= set(_FIGURES):
        record_figures(tmp_path_factory, "sessions", f"{_FIGURES['undo']}; {_FIGURES['race']}", 0)


# --- two browser sessions ----------------------------------------------------------------


@pytest.fixture
def project(fresh_workspace, tiny_model_dir, whole_app_reruns):
    with Store.open(fresh_workspace) as store:
        p = store.create_project("Reviews", ["neg", "pos"],
                                 settings={"backbone": tiny_model_dir, "prompt": None,
                                           "mode": "layer"})
        store.add_texts(p.id, list(TRUTH))
    return fresh_workspace, p.id


def _session(pid: int) -> AppTest:
    """A new browser session on the Label page: its own session state, so its own labeller."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["project_id"] = pid
    at.switch_page("pages/label.py")
    return at.run()


def _label_current(at: AppTest, path: str, pid: int) -> str:
    text_id = at.session_state[f"current_{pid}"]
    (text,) = sql(path, "SELECT text FROM texts WHERE id = ?", text_id)[0]
    at.button(key=f"label_{['neg', 'pos'].index(TRUTH[text])}").click().run()
    assert not at.exception
    return text


def _labels(path: str) -> set[str]:
    return {r[0] for r in sql(path, "SELECT t.text FROM labels l JOIN texts t ON t.id = l.text_id")}


def test_undo_in_one_session_never_removes_another_sessions_label(project):
    # regression: A labelled two, B one, A pressed U: B's label went, A's stayed
    path, pid = project
    a = _session(pid)
    a_first, a_second = _label_current(a, path, pid), _label_current(a, path, pid)
    b = _session(pid)
    b_first = _label_current(b, path, pid)
    assert len({a_first, a_second, b_first}) == 3
    a.button(key="undo").click().run()
    assert not a.exception
    assert _labels(path) == {a_first, b_first}
    assert "Undid the last label." in page_text(a)
    b.run()
    assert "8 sentences · 2 labelled" in page_text(b)
    b.button(key="undo").click().run()
    assert _labels(path) == {a_first}
    b.button(key="undo").click().run()  # B has nothing left of its own to undo
    assert "There is no label of yours to undo in this tab." in page_text(b)
    assert _labels(path) == {a_first}
    a.button(key="undo").click().run()
    assert _labels(path) == set()
    _FIGURES["undo"] = "2 sessions, 3 labels, 4 undos: each undid only its own session's label"


class _GatedBackbone(Backbone):
    """The tiny backbone, paused inside its first forward pass until ``gate`` is set."""

    def hidden_states(self, input_ids, attention_mask, depth=None):
        self.entered.set()
        assert self.gate.wait(60), "the test never released the gate"
        return super().hidden_states(input_ids, attention_mask, depth=depth)


def test_a_retrain_that_finishes_after_a_newer_one_is_not_published(tmp_path, tiny_backbone):
    # regression: v13 (18 labels) was saved after v12 (19 labels), so "the latest model"
    # was trained on older data
    path = tmp_path / "race.db"
    texts = ["good movie", "great film", "a delight", "bad movie", "awful film", "dull and ugly",
             "the best film", "the worst film", "it was fine"]
    with Store.open(path) as store:
        project = store.create_project("race", ["neg", "pos"],
                                       settings={"backbone": "tiny", "prompt": None, "mode": "layer"})
        ids = store.add_texts(project.id, texts).text_ids
        for i, label in enumerate(["pos", "pos", "pos", "neg", "neg", "neg"]):
            store.set_label(project.id, ids[i], label)
    slow = _GatedBackbone(**{f.name: getattr(tiny_backbone, f.name) for f in fields(Backbone)})
    slow.entered, slow.gate = threading.Event(), threading.Event()
    outcomes = {}

    def older() -> None:  # session A's retrain: reads 6 labels, then is slow to embed
        with Store.open(path) as own:
            outcomes["older"] = retrain(own, project, slow, cache=DictCache())

    thread = threading.Thread(target=older)
    thread.start()
    try:
        assert slow.entered.wait(60)
        with Store.open(path) as store:  # session B labels two more and retrains at once
            store.set_label(project.id, ids[6], "pos", session="tab-b")
            store.set_label(project.id, ids[7], "neg", session="tab-b")
            newer = retrain(store, project, tiny_backbone)
    finally:
        slow.gate.set()
        thread.join(60)
    assert (newer.version, newer.metrics["n_labels"], newer.superseded) == (1, 8, False)
    assert outcomes["older"].superseded and outcomes["older"].version == 1
    with Store.open(path) as store:
        assert [(m.version, m.n_labels) for m in store.models(project.id)] == [(1, 8)]
        assert store.latest_model(project.id).n_labels == 8
        assert len(store.predictions(store.latest_model(project.id).id)) == 1
    _FIGURES["race"] = ("2 retrains finishing out of order: the one on newer labels (8) stayed "
                        "the latest, the one on older labels (6) was not kept")


# --- an embedding job killed mid-way -------------------------------------------------------

BATCH_DELAY_S = 1.0  # per 32-sentence batch, so the kill lands between batches
_JOB_PROCESS = textwrap.dedent("""
    import sys, time
    from dataclasses import fields
    sys.path.insert(0, sys.argv[1])
    import core.jobs as jobs
    from core.learn.classifier import Settings
    from core.model.backbone import Backbone
    from core.model.loading import load_backbone

    class Slow(Backbone):
        def hidden_states(self, input_ids, attention_mask, depth=None):
            time.sleep(float(sys.argv[5]))
            return super().hidden_states(input_ids, attention_mask, depth=depth)

    db, project_id, model_dir = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    loaded = load_backbone(model_dir)
    slow = Slow(**{f.name: getattr(loaded, f.name) for f in fields(Backbone)})
    texts = sys.stdin.read().splitlines()
    job_id = jobs.start_embedding(db, project_id, texts, Settings(backbone=model_dir, prompt=None),
                                  slow)
    print(job_id, flush=True)
    jobs.wait(job_id)
""")


def _feature_times(path: str) -> dict[str, str]:
    return dict(sql(path, "SELECT text_hash, created_at FROM features"))


def _wait_until(check, proc: subprocess.Popen, timeout: float = 120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the job process made no progress in time")


def test_a_killed_job_keeps_its_progress_is_shown_interrupted_and_continues(
        fresh_workspace, tiny_model_dir, whole_app_reruns, tmp_path_factory):
    # regression: "32 of 70 done" when the server was killed, yet 0 features stored; the job
    # looked alive for two minutes and stayed "running" in the database forever
    path = fresh_workspace
    texts = [f"{a} {b}" for a in WORDS[:10] for b in WORDS[10:17]]  # 70 distinct sentences
    with Store.open(path) as store:
        project = store.create_project("kill", ["neg", "pos"],
                                       settings={"backbone": tiny_model_dir, "prompt": None})
        store.add_texts(project.id, texts)
    proc = subprocess.Popen([sys.executable, "-c", _JOB_PROCESS, str(ROOT), path,
                             str(project.id), tiny_model_dir, str(BATCH_DELAY_S)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        proc.stdin.write("\n".join(texts))
        proc.stdin.close()
        job_id = int(proc.stdout.readline())
        _wait_until(lambda: sql(path, "SELECT done FROM jobs WHERE id = ? AND done >= 32",
                                job_id), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [(done, status)] = sql(path, "SELECT done, status FROM jobs WHERE id = ?", job_id)
    stored = _feature_times(path)
    assert status == "running" and 32 <= done < len(texts)
    assert len(stored) >= done, "every sentence the job said it had read must be stored"

    at = AppTest.from_file(str(APP), default_timeout=60)  # the app starts again
    at.session_state["project_id"] = project.id
    at.switch_page("pages/data.py")
    started = time.monotonic()
    at.run()
    assert not at.exception
    assert time.monotonic() - started < 60  # at once, not after two minutes of silence
    assert sql(path, "SELECT status FROM jobs WHERE id = ?", job_id) == [("interrupted",)]
    assert "This job was interrupted" in at.error[0].value.replace("\\", "")
    assert "About" not in page_text(at)  # no estimate for a job nobody runs
    assert at.button(key="embed_again").label == "Continue reading"
    at.button(key="embed_again").click().run()
    assert not at.exception
    with Store.open(path) as store:
        resumed = store.latest_job(project.id, jobs.EMBED)
    assert resumed.id != job_id and jobs.wait(resumed.id, timeout=120)
    with Store.open(path) as store:
        resumed = store.job(resumed.id)
    assert (resumed.status, resumed.done, resumed.total) == ("done", len(texts), len(texts))
    after = _feature_times(path)
    assert len(after) == len(texts)
    # the sentences read before the kill were not read again
    assert {h: after[h] for h in stored} == stored
    record_figures(tmp_path_factory, "resumed_jobs",
                   f"a {len(texts)}-sentence job killed at {done} of {len(texts)}: {len(stored)} "
                   "features found stored, the job shown interrupted on the first page run with "
                   f"Continue, which read only the {len(texts) - len(stored)} others", 0)


def test_the_continue_button_is_offered_for_an_interrupted_job(project):
    path, pid = project
    with Store.open(path) as store:
        job_id = store.start_job(pid, jobs.EMBED, 8, pid=2 ** 22 + 7, process_started=1.0)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["project_id"] = pid
    at.switch_page("pages/data.py")
    at.run()
    assert not at.exception
    assert at.button(key="embed_again").label == "Continue reading"
    assert sql(path, "SELECT status FROM jobs WHERE id = ?", job_id) == [("interrupted",)]


def test_a_job_of_a_live_process_is_not_marked_interrupted(tmp_path):
    path = str(tmp_path / "live.db")
    with Store.open(path) as store:
        pid = store.create_project("p", ["a", "b"]).id
        unknown = store.start_job(pid, jobs.EMBED, 3)  # no process recorded (an older tenshot)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Store.open(path) as store:
            started = psutil.Process(sleeper.pid).create_time()
            live = store.start_job(pid, jobs.EMBED, 3, pid=sleeper.pid, process_started=started)
            reused = store.start_job(pid, jobs.EMBED, 3, pid=sleeper.pid,
                                     process_started=started - 30)  # that pid, another process
            assert jobs.mark_interrupted(store) == [reused]
            assert store.job(live).status == "running"
            assert store.job(unknown).status == "running"  # nobody can tell: left as it is
    finally:
        sleeper.kill()
        sleeper.wait()
    with Store.open(path) as store:
        assert jobs.mark_interrupted(store) == [live]
        assert jobs.progress_of(store.job(unknown)).state == "running"  # not silent for long


# --- export paths ---------------------------------------------------------------------------


def test_the_tables_offer_no_csv_download_and_point_to_the_export_page(workspace, downloads):
    # regression: the tables' toolbar "Download as CSV" exported "=cmd|' /C calc'!A0" raw
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["disableDataExport"] is True
    assert 'st.set_option("client.disableDataExport", True)' in (ROOT / "app.py").read_text()
    for page in ("data", "predictions"):
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception
        links = [link.proto.page for link in at.get("page_link")]
        assert "export" in links, links
        shown = {str(v) for frame in at.dataframe for col in frame.value.columns
                 for v in frame.value[col]}
        assert "=cmd|' /C calc'!A0" in shown  # the user's text is shown as it is
    at.switch_page("pages/export.py")
    at.run()
    (name,) = [n for n in downloads if n.endswith(".csv")]
    rows = list(csv.reader(io.StringIO(downloads[name].decode("utf-8-sig"))))
    cells = [cell for row in rows for cell in row]
    assert "'=cmd|' /C calc'!A0" in cells
    assert [c for c in cells if c.startswith(FORMULA_PREFIXES)] == []


@pytest.mark.e2e
def test_no_table_in_the_browser_has_a_csv_download(server, page, tiny_model_dir,
                                                     tmp_path_factory):
    url, db = server
    formulas = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)"]
    with Store.open(db) as store:
        project = store.create_project("Formulas", ["neg", "pos"],
                                       settings={"backbone": tiny_model_dir, "prompt": None,
                                                 "mode": "layer"})
        labelled = list(TRUTH)
        ids = store.add_texts(project.id, labelled + formulas).text_ids
        for text_id, text in zip(ids, labelled):
            store.set_label(project.id, text_id, TRUTH[text])
        retrain(store, project, load_backbone(tiny_model_dir))
    _open(page, url)
    toolbars = 0
    for title in ("Data", "Predictions"):
        _go(page, title, title)
        page.get_by_text("Export page").first.wait_for()
        tables = page.get_by_test_id("stDataFrame")
        assert tables.count() >= 1
        for i in range(tables.count()):
            tables.nth(i).hover()
            toolbar = page.get_by_test_id("stElementToolbar").nth(i)
            toolbar.get_by_role("button", name="Search").wait_for()
            assert toolbar.get_by_role("button", name="Download as CSV").count() == 0
            toolbars += 1
        _shot(page, f"40-{title.lower()}-no-csv-download")
    assert page.get_by_role("button", name="Download as CSV").count() == 0
    record_figures(tmp_path_factory, "export_paths",
                   f"{toolbars} tables in Chromium (Data, Predictions) offer no CSV download; "
                   f"the Export page's CSV neutralises all {len(formulas)} formula sentences "
                   "(tests/test_app_export.py, this module)", 0)
