"""The Projects page: create, open, rename and delete projects; edit classes with undo."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.jobs as jobs
from core.store import Store
from tests.helpers import page_text, sql

pytestmark = pytest.mark.usefixtures("whole_app_reruns")

APP = str(Path(__file__).parents[1] / "app.py")


def _app(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()




def test_empty_workspace_explains_the_first_steps(fresh_workspace):
    at = _app()
    assert not at.exception
    assert at.title[0].value == "Projects"
    assert "Create a project" in page_text(at)
    assert at.button(key="load_demo").label == "Load demo project"
    assert "No project yet" in page_text(at.sidebar)


def test_create_a_project(fresh_workspace, tiny_model_dir):
    at = _app()
    at.text_input(key="new_project_name").input("Reviews")
    at.text_input(key="new_project_classes").input("negative, positive")
    at.button(key="create_project_btn").click().run()
    assert not at.exception
    assert "Created the project “Reviews”" in page_text(at)
    assert at.subheader[0].value == "Reviews"
    (pid, settings), = sql(fresh_workspace, "SELECT id, settings FROM projects WHERE name = 'Reviews'")
    assert tiny_model_dir in settings
    assert at.session_state["project_id"] == pid
    classes = sql(fresh_workspace, "SELECT name FROM classes WHERE project_id = ? ORDER BY position", pid)
    assert classes == [("negative",), ("positive",)]
    assert "Next step: add some sentences" in page_text(at)


def test_a_project_needs_two_classes(fresh_workspace):
    at = _app()
    at.text_input(key="new_project_name").input("Solo")
    at.text_input(key="new_project_classes").input("only")
    at.button(key="create_project_btn").click().run()
    assert not at.exception
    assert "at least 2 classes" in at.error[0].value.replace("\\", "")
    assert sql(fresh_workspace, "SELECT COUNT(*) FROM projects") == [(0,)]


@pytest.fixture
def labelled_project(fresh_workspace):
    with Store.open(fresh_workspace) as store:
        project = store.create_project("Reviews", ["neg", "pos", "meh"])
        store.add_texts(project.id, ["bad", "awful", "good", "great", "fine"],
                        labels=["neg", "neg", "pos", "pos", "meh"])
    return fresh_workspace, project.id


def _labels(path: str, pid: int) -> dict[str, str]:
    rows = sql(path, "SELECT t.text, c.name FROM labels l JOIN texts t ON t.id = l.text_id "
                      "JOIN classes c ON c.id = l.class_id WHERE l.project_id = ?", pid)
    return dict(rows)


def test_edit_classes_rename_merge_delete_and_undo(labelled_project):
    path, pid = labelled_project
    at = _app(project_id=pid)
    at.selectbox(key="rename_from").set_value("pos")
    at.text_input(key="rename_to").input("positive")
    at.button(key="rename_class_btn").click().run()
    assert not at.exception
    assert "Renamed “pos” to “positive”" in page_text(at)
    assert _labels(path, pid)["good"] == "positive"

    at.multiselect(key="merge_sources").set_value(["meh"])
    at.selectbox(key="merge_into").set_value("neg")
    at.button(key="merge_btn").click().run()
    assert not at.exception
    assert _labels(path, pid)["fine"] == "neg"
    assert "meh" not in Store.open(path).classes(pid)

    at.button(key="undo_schema").click().run()
    assert not at.exception
    assert "Split 'meh' back out" in page_text(at)
    assert _labels(path, pid)["fine"] == "meh"

    at.selectbox(key="delete_class_name").set_value("meh")
    at.button(key="delete_class_btn").click().run()
    assert "Delete the class “meh” and remove its 1 label?" in page_text(at)
    assert "meh" in Store.open(path).classes(pid), "nothing is deleted without confirmation"
    at.button(key="delete_class_yes").click().run()
    assert not at.exception
    assert "fine" not in _labels(path, pid)
    at.button(key="undo_schema").click().run()
    assert _labels(path, pid)["fine"] == "meh"
    at.text_input(key="add_class_name").input("mixed")
    at.button(key="add_class_btn").click().run()
    assert Store.open(path).classes(pid) == ["neg", "positive", "meh", "mixed"]
    assert at.dataframe[0].value["Class"].tolist() == ["neg", "positive", "meh", "mixed"]


def test_deleting_a_class_deletes_the_class_confirmed(labelled_project):
    # issue 15 bug 1: the first Delete reset the picker to the first class, so confirming
    # deleted "neg" (with its labels) instead of the class the user had picked
    path, pid = labelled_project
    at = _app(project_id=pid)
    at.selectbox(key="delete_class_name").set_value("pos")
    at.button(key="delete_class_btn").click().run()
    assert not at.exception
    assert at.selectbox(key="delete_class_name").value == "pos", "the picker stays on the class"
    assert "Delete the class “pos” and remove its 2 labels?" in page_text(at)
    assert Store.open(path).classes(pid) == ["neg", "pos", "meh"]
    assert at.button(key="delete_class_yes").label.replace("\\", "") == "Delete “pos” and its 2 labels"
    at.button(key="delete_class_yes").click().run()
    assert not at.exception
    assert Store.open(path).classes(pid) == ["neg", "meh"]
    assert _labels(path, pid) == {"bad": "neg", "awful": "neg", "fine": "meh"}
    text = page_text(at)
    assert "Deleted the class “pos” and its 2 labels" in text and "carried along" not in text
    at.button(key="undo_schema").click().run()
    assert _labels(path, pid)["good"] == "pos"


def test_picking_another_class_cancels_a_pending_delete(labelled_project):
    path, pid = labelled_project
    at = _app(project_id=pid)
    at.selectbox(key="delete_class_name").set_value("pos")
    at.button(key="delete_class_btn").click().run()
    at.selectbox(key="delete_class_name").set_value("meh").run()
    assert not at.exception
    assert "delete_class_yes" not in [b.key for b in at.button]
    assert Store.open(path).classes(pid) == ["neg", "pos", "meh"]


def test_a_class_without_labels_is_deleted_at_once(labelled_project):
    # issue 15 bug 1: a class with 0 labels needs no confirmation; undo still brings it back
    path, pid = labelled_project
    with Store.open(path) as store:
        store.add_class(pid, "spare")
    at = _app(project_id=pid)
    at.selectbox(key="delete_class_name").set_value("spare")
    at.button(key="delete_class_btn").click().run()
    assert not at.exception
    assert Store.open(path).classes(pid) == ["neg", "pos", "meh"]
    assert "Deleted the class “spare” (it had no labels)" in page_text(at)
    at.button(key="undo_schema").click().run()
    assert Store.open(path).classes(pid) == ["neg", "pos", "meh", "spare"]


def test_schema_errors_are_plain_messages(labelled_project):
    path, pid = labelled_project
    at = _app(project_id=pid)
    at.selectbox(key="rename_from").set_value("pos")
    at.text_input(key="rename_to").input("neg")
    at.button(key="rename_class_btn").click().run()
    assert not at.exception
    assert "already has a class called 'neg'" in at.error[0].value.replace("\\", "")
    assert Store.open(path).classes(pid) == ["neg", "pos", "meh"]


def test_rename_and_delete_a_project_with_confirmation(labelled_project):
    path, pid = labelled_project
    at = _app(project_id=pid)
    at.text_input(key=f"project_name_{pid}").input("Film reviews")
    at.button(key="rename_project_btn").click().run()
    assert not at.exception
    assert sql(path, "SELECT name FROM projects") == [("Film reviews",)]
    assert at.selectbox(key="_project_picker").value == pid

    at.button(key="delete_project").click().run()
    assert "This cannot be undone" in page_text(at)
    at.button(key="delete_project_no").click().run()
    assert sql(path, "SELECT COUNT(*) FROM projects") == [(1,)]
    at.button(key="delete_project").click().run()
    at.button(key="delete_project_yes").click().run()
    assert not at.exception
    assert sql(path, "SELECT COUNT(*) FROM projects") == [(0,)]
    assert sql(path, "SELECT COUNT(*) FROM texts") == [(0,)]
    assert "Deleted the project" in page_text(at)


def test_switch_project_from_the_sidebar(labelled_project):
    path, pid = labelled_project
    with Store.open(path) as store:
        other = store.create_project("Other", ["a", "b"])
    at = _app(project_id=pid)
    at.selectbox(key="_project_picker").set_value(other.id).run()
    assert not at.exception
    assert at.session_state["project_id"] == other.id
    assert at.subheader[0].value == "Other"


def test_load_demo_project(fresh_workspace):
    at = _app()
    at.button(key="load_demo").click().run()
    assert not at.exception
    (pid,), = sql(fresh_workspace, "SELECT id FROM projects")
    assert sql(fresh_workspace, "SELECT COUNT(*) FROM texts WHERE project_id = ?", pid) == [(40,)]
    assert sql(fresh_workspace, "SELECT COUNT(*) FROM labels WHERE project_id = ?", pid) == [(12,)]
    assert "Loaded the demo" in page_text(at)
    with Store.open(fresh_workspace) as store:
        job = store.latest_job(pid, jobs.EMBED)
    assert jobs.wait(job.id, timeout=60)
    assert Store.open(fresh_workspace).job(job.id).status == "done"
