"""The Data page: type, paste and upload sentences; duplicates, skipped rows, bad files, jobs."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.jobs as jobs
from core.store import Store
from tests.helpers import page_text, sql

pytestmark = pytest.mark.usefixtures("whole_app_reruns")

APP = str(Path(__file__).parents[1] / "app.py")


@pytest.fixture
def project(fresh_workspace, tiny_model_dir):
    with Store.open(fresh_workspace) as store:
        p = store.create_project("Reviews", ["neg", "pos"],
                                 settings={"backbone": tiny_model_dir, "prompt": None})
    return fresh_workspace, p.id


def _data_page(pid: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["project_id"] = pid
    at.switch_page("pages/data.py")
    return at.run()




def _finish_jobs(path: str, pid: int) -> None:
    with Store.open(path) as store:
        job = store.latest_job(pid, jobs.EMBED)
    if job is not None:
        assert jobs.wait(job.id, timeout=60)


def test_without_a_project_the_page_points_to_projects(fresh_workspace):
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/data.py")
    at.run()
    assert not at.exception
    assert "Create or choose a project first" in page_text(at)


def test_type_and_paste_sentences_with_duplicates(project):
    path, pid = project
    at = _data_page(pid)
    assert "No sentences yet" in page_text(at)
    assert "Limits: files up to 25 MB" in page_text(at)
    at.text_input(key="type_text").input("good movie")
    at.button(key="type_btn").click().run()
    assert not at.exception
    assert "Added 1 new sentence." in page_text(at)
    at.text_area(key="paste_text").input("bad film\n\ngood movie\na wonderful plot\nbad film\n")
    at.button(key="paste_btn").click().run()
    assert not at.exception
    assert "Added 2 new sentences. 2 duplicates skipped (already there)." in page_text(at)
    assert sql(path, "SELECT text FROM texts ORDER BY id") == [
        ("good movie",), ("bad film",), ("a wonderful plot",)]
    assert at.dataframe[-1].value["Sentence"].tolist() == ["good movie", "bad film", "a wonderful plot"]
    _finish_jobs(path, pid)
    at.run()
    assert "✓ 3 sentences read and ready for the model" in page_text(at)


def test_the_ready_message_counts_what_the_table_counts(project):
    # issue 15 bug 5: "All 300 sentences are ready" under a table of 303 sentences
    path, pid = project
    at = _data_page(pid)
    at.text_input(key="type_text").input("good movie")
    at.button(key="type_btn").click().run()
    at.text_area(key="paste_text").input("bad film\na wonderful plot\n")
    at.button(key="paste_btn").click().run()
    _finish_jobs(path, pid)
    at.run()
    assert not at.exception
    text = page_text(at)
    assert "**3 sentences**" in text
    assert "All 2 sentences" not in text
    assert "Last batch: 2 sentences read and ready for the model." in text


def test_the_import_button_counts_new_sentences_and_duplicates(project):
    # issue 15 bug 5: a second upload of the same file said "0 new, 300 duplicates
    # skipped" after a click on a button labelled "Import 300"
    path, pid = project
    at = _data_page(pid)
    at.file_uploader(key="upload_0").set_value(("a.txt", b"good movie\nbad film\n", "text/plain")).run()
    assert at.button(key="import_btn").label == "Import 2 sentences"
    at.button(key="import_btn").click().run()
    at.file_uploader(key="upload_1").set_value(
        ("b.txt", b"good movie\nbad film\nbad film\na wonderful plot\n", "text/plain")).run()
    assert not at.exception
    assert at.button(key="import_btn").label == "Import 1 new sentence, skip 3 duplicates"
    at.button(key="import_btn").click().run()
    assert "Added 1 new sentence. 3 duplicates skipped" in page_text(at)
    at.file_uploader(key="upload_2").set_value(("c.txt", b"good movie\nbad film\n", "text/plain")).run()
    button = at.button(key="import_btn")
    assert button.label == "Import 0 new sentences, skip 2 duplicates" and button.disabled
    assert "Every sentence in this file is already in the project." in page_text(at)
    csv = b"text,label\ngood movie,pos\nbad film,neg\n"
    at.file_uploader(key="upload_2").set_value(("c.csv", csv, "text/csv")).run()
    button = at.button(key="import_btn")
    assert button.label == "Import 0 new sentences, skip 2 duplicates (2 labelled)" and not button.disabled
    _finish_jobs(path, pid)


def test_a_too_long_sentence_is_cut_with_a_warning(project):
    path, pid = project
    at = _data_page(pid)
    at.text_input(key="type_text").input("x" * 6000)
    at.button(key="type_btn").click().run()
    assert not at.exception
    assert "was cut to 5,000" in page_text(at)
    assert sql(path, "SELECT LENGTH(text) FROM texts") == [(5000,)]
    _finish_jobs(path, pid)


def test_upload_csv_with_a_label_column(project):
    path, pid = project
    at = _data_page(pid)
    csv = ("review,sentiment,stars\n"
           "good movie,pos,5\n"
           "bad film,neg,1\n"
           "it was fine,,3\n"
           "broken,row\n"
           "a wonderful plot,meh,4\n").encode()
    at.file_uploader(key="upload_0").set_value(("reviews.csv", csv, "text/csv")).run()
    assert not at.exception
    assert "Which column holds the sentences?" in page_text(at)
    assert at.selectbox(key="upload_text_col").value is None
    assert "import_btn" not in [b.key for b in at.button], "no import before the text column is known"
    at.selectbox(key="upload_text_col").set_value("review").run()
    assert at.selectbox(key="upload_label_col").value == "(no label column)"
    at.selectbox(key="upload_label_col").set_value("sentiment").run()
    assert "Some labels are not classes of this project: “meh”" in page_text(at)
    assert at.expander[0].label == "1 row will be skipped"
    assert at.button(key="import_btn").label == "Import 4 sentences (2 labelled)"
    at.checkbox(key="upload_add_classes").check().run()
    assert at.button(key="import_btn").label == "Import 4 sentences (3 labelled)"
    at.button(key="import_btn").click().run()
    assert not at.exception
    assert "Added 4 new sentences. 3 labels imported." in page_text(at)
    labels = dict(sql(path, "SELECT t.text, c.name FROM labels l JOIN texts t ON t.id = l.text_id "
                             "JOIN classes c ON c.id = l.class_id"))
    assert labels == {"good movie": "pos", "bad film": "neg", "a wonderful plot": "meh"}
    assert sql(path, "SELECT source FROM texts WHERE text = 'it was fine'") == [("reviews.csv",)]
    _finish_jobs(path, pid)



def test_a_refused_upload_adds_no_new_classes(project, monkeypatch):
    path, pid = project
    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "2")
    at = _data_page(pid)
    csv = b"text,label\ngood movie,pos\nbad film,neg\nso so,meh\n"
    at.file_uploader(key="upload_0").set_value(("big.csv", csv, "text/csv")).run()
    at.checkbox(key="upload_add_classes").check().run()
    at.button(key="import_btn").click().run()
    assert not at.exception
    assert "Nothing was added" in page_text(at)
    assert sql(path, "SELECT name FROM classes ORDER BY position") == [("neg",), ("pos",)]
    assert sql(path, "SELECT count(*) FROM texts") == [(0,)]

def test_upload_jsonl_and_txt(project):
    path, pid = project
    at = _data_page(pid)
    jsonl = b'{"text": "good movie", "label": "pos"}\nnot json\n{"text": "bad film"}\n'
    at.file_uploader(key="upload_0").set_value(("rows.jsonl", jsonl, "application/jsonl")).run()
    assert at.selectbox(key="upload_label_col").value == "label"
    at.button(key="import_btn").click().run()
    assert not at.exception
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(1,)]
    assert "import_btn" not in [b.key for b in at.button], "the uploader is emptied after an import"
    at.file_uploader(key="upload_1").set_value(("more.txt", b"it was fine\ngood movie\n",
                                                "text/plain")).run()
    at.button(key="import_btn").click().run()
    assert "Added 1 new sentence. 1 duplicate skipped" in page_text(at)
    assert sql(path, "SELECT COUNT(*) FROM texts") == [(3,)]
    _finish_jobs(path, pid)


@pytest.mark.parametrize("name, data, message", [
    ("sheet.csv", b"PK\x03\x04rest", "is a zip or Excel (.xlsx) file"),
    ("empty.csv", b"   ", "is empty"),
    ("binary.txt", b"abc\x00def", "looks like a binary file"),
])
def test_bad_uploads_give_a_plain_message_and_lose_nothing(project, name, data, message):
    path, pid = project
    with Store.open(path) as store:
        store.add_texts(pid, ["good movie", "bad film"], labels=["pos", "neg"])
    at = _data_page(pid)
    at.file_uploader(key="upload_0").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    assert message in at.error[0].value.replace("\\", "")
    assert "Traceback" not in page_text(at)
    assert sql(path, "SELECT COUNT(*) FROM texts") == [(2,)]
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(2,)]


def test_failed_job_is_shown_with_a_retry(project):
    path, pid = project
    with Store.open(path) as store:
        store.add_texts(pid, ["good movie"])
        job_id = store.start_job(pid, jobs.EMBED, 1)
        store.update_job(job_id, done=0, status="failed", message="No model file or folder at 'x'.")
    at = _data_page(pid)
    assert not at.exception
    assert "No model file or folder at 'x'." in at.error[0].value.replace("\\", "")
    at.button(key="embed_again").click().run()
    assert not at.exception
    _finish_jobs(path, pid)
    with Store.open(path) as store:
        assert store.latest_job(pid, jobs.EMBED).status == "done"


def test_reimporting_the_same_file_counts_only_labels_that_changed(project):
    # regression: re-uploading a file after an interruption said "10 labels imported"
    # although no label changed
    path, pid = project
    csv = "text,label\ngood movie,pos\nbad film,neg\na wonderful plot,pos\n".encode()
    at = _data_page(pid)
    for generation, expected in ((0, "Added 3 new sentences. 3 labels imported."),
                                 (1, "Added 0 new sentences. 3 duplicates skipped (already "
                                     "there). 3 labels unchanged (already set).")):
        at.file_uploader(key=f"upload_{generation}").set_value(("l.csv", csv, "text/csv")).run()
        at.button(key="import_btn").click().run()
        assert not at.exception
        assert expected in page_text(at)
        _finish_jobs(path, pid)
    assert "labels imported" not in page_text(at)
    # one label changed in a third upload: exactly one is counted
    changed = csv.replace(b"bad film,neg", b"bad film,pos")
    at.file_uploader(key="upload_2").set_value(("l.csv", changed, "text/csv")).run()
    at.button(key="import_btn").click().run()
    assert "1 label imported. 2 labels unchanged (already set)." in page_text(at)
    assert sql(path, "SELECT COUNT(*) FROM label_events") == [(4,)]
    _finish_jobs(path, pid)


def test_delete_edit_and_undo_single_sentences(project):
    # issue 15 item 8: a wrong-column import ("0.5", "0.7", ...) could be neither deleted nor edited
    path, pid = project
    with Store.open(path) as store:
        store.add_texts(pid, ["0.5", "godo movie", "0.7"], labels=["neg", "pos", None])
    at = _data_page(pid)
    at.button(key="edit_numbers").click().run()
    assert at.multiselect(key="edit_pick").value == [1, 3]
    at.button(key="edit_delete").click().run()
    assert not at.exception
    assert "Deleted 2 sentences" in page_text(at)
    assert at.dataframe[-1].value["Sentence"].tolist() == ["godo movie"]
    assert sql(path, "SELECT COUNT(*) FROM texts WHERE deleted_at IS NULL") == [(1,)]
    at.button(key="edit_undo").click().run()
    assert at.dataframe[-1].value["Sentence"].tolist() == ["0.5", "godo movie", "0.7"]
    at.multiselect(key="edit_pick").set_value([2]).run()
    at.text_input(key="edit_text_2").input("good movie")
    at.button(key="edit_save").click().run()
    assert not at.exception
    assert sql(path, "SELECT t.text, c.name FROM texts t JOIN labels l ON l.text_id = t.id "
                     "JOIN classes c ON c.id = l.class_id WHERE t.id = 2") == [("good movie", "pos")]
    _finish_jobs(path, pid)


def test_a_numeric_text_column_is_warned_about_before_import(project):
    # issue 15 item 8: picking a column of scores as the text column imported "0.5", "0.7", ...
    path, pid = project
    at = _data_page(pid)
    csv = b"score,review\n0.5,good movie\n0.7,bad film\n"
    at.file_uploader(key="upload_0").set_value(("r.csv", csv, "text/csv")).run()
    at.selectbox(key="upload_text_col").set_value("score").run()
    assert not at.exception
    assert any("holds mostly numbers" in w.value for w in at.warning)


def test_a_running_job_is_polled_every_few_seconds_not_every_second(project, monkeypatch):
    # regression (newcomer flow, issue 15): each poll is a rerun costing 0.1-0.2 s of the
    # server's CPU; polled every second on a busy machine, the job read 20x slower
    import os

    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext

    intervals: list[float] = []
    original = ScriptRunContext.enqueue

    def record(self, msg):
        if msg.HasField("auto_rerun"):
            intervals.append(msg.auto_rerun.interval)
        return original(self, msg)

    monkeypatch.setattr(ScriptRunContext, "enqueue", record)
    path, pid = project
    with Store.open(path) as store:
        store.add_texts(pid, ["good movie", "bad film"])
        job_id = store.start_job(pid, jobs.EMBED, 2, pid=os.getpid())
        store.update_job(job_id, done=1, message="Reading 2 sentences...")
    at = _data_page(pid)
    assert not at.exception
    assert at.get("progress")  # the job's progress bar, redrawn by the poll
    assert intervals and min(intervals) >= 3.0
