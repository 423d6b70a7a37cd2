"""The Label page: one at a time with shortcuts, retrain on every submit, undo, skip, table mode."""

from pathlib import Path

import pytest
from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

from core.store import Store
from pages._shared import escape_markdown
from tests.helpers import open_page, page_text, sql

pytestmark = pytest.mark.usefixtures("whole_app_reruns")

APP = str(Path(__file__).parents[1] / "app.py")
TRUTH = {"good movie": "pos", "great film": "pos", "a wonderful plot": "pos", "the best review": "pos",
         "bad movie": "neg", "awful film": "neg", "a terrible plot": "neg", "the worst review": "neg"}
INJECTION = "<script>alert(1)</script> **bold** [x](javascript:alert(1))"


@pytest.fixture
def project(fresh_workspace, tiny_model_dir):
    with Store.open(fresh_workspace) as store:
        p = store.create_project("Reviews", ["neg", "pos"],
                                 settings={"backbone": tiny_model_dir, "prompt": None})
        store.add_texts(p.id, list(TRUTH))
    return fresh_workspace, p.id


def _label_page(pid: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_id"] = pid
    at.switch_page("pages/label.py")
    return at.run()




def _current(at, path: str, pid: int) -> str:
    text_id = at.session_state[f"current_{pid}"]
    return sql(path, "SELECT text FROM texts WHERE id = ?", text_id)[0][0]


def _label_current(at, path, pid) -> str:
    text = _current(at, path, pid)
    assert "#### " + escape_markdown(text) in [m.value for m in at.markdown]
    index = ["neg", "pos"].index(TRUTH[text])
    at.button(key=f"label_{index}").click().run()
    assert not at.exception
    return text


def test_without_sentences_the_page_says_add_some(fresh_workspace):
    with Store.open(fresh_workspace) as store:
        pid = store.create_project("Empty", ["a", "b"]).id
    at = _label_page(pid)
    assert not at.exception
    assert "Add some sentences first" in page_text(at)


def test_label_with_shortcuts_until_a_model_appears_then_undo(project):
    path, pid = project
    at = _label_page(pid)
    assert not at.exception
    assert "Label 2 more “neg” and 2 more “pos” sentences to train a first model" in page_text(at)
    buttons = {b.key: b for b in at.button}
    assert (buttons["label_0"].label, buttons["label_0"].proto.shortcut) == ("neg", "1")
    assert (buttons["label_1"].label, buttons["label_1"].proto.shortcut) == ("pos", "2")
    assert buttons["skip"].proto.shortcut == "s" and buttons["undo"].proto.shortcut == "u"
    assert "Keyboard: 1–2 label · S skip · U undo" in page_text(at)

    first = _label_current(at, path, pid)
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(1,)]
    assert "more “neg”" in page_text(at) or "more “pos”" in page_text(at)
    labelled = [first]
    while sql(path, "SELECT COUNT(*) FROM models") == [(0,)]:
        labelled.append(_label_current(at, path, pid))
        assert len(labelled) <= 8
    assert "Model v1 trained on" in page_text(at)
    metric = at.metric[0]
    assert metric.label == "Accuracy, model v1"  # shortened: the old label was cut off (issue 15 item 9)
    assert metric.value.endswith("%")
    assert "Model's guess:" in page_text(at)
    assert sql(path, "SELECT n_texts FROM predictions") == [(len(TRUTH) - len(labelled),)]

    _label_current(at, path, pid)
    assert sql(path, "SELECT MAX(version) FROM models") == [(2,)]
    assert at.metric[0].delta is not None, "the change since the last model is shown"

    n_before = sql(path, "SELECT COUNT(*) FROM labels")[0][0]
    at.button(key="undo").click().run()
    assert not at.exception
    assert "Undid the last label" in page_text(at)
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(n_before - 1,)]


def test_a_key_labels_the_sentence_that_was_on_screen(project):
    # regression: a second key press during a retrain labelled the next sentence,
    # which the page had picked but the user had not seen yet
    path, pid = project
    at = _label_page(pid)
    on_screen = _current(at, path, pid)
    other = next(t for t in TRUTH if t != on_screen)
    at.session_state[f"current_{pid}"] = sql(path, "SELECT id FROM texts WHERE text = ?", other)[0][0]
    at.button(key="label_1").click().run()
    assert not at.exception
    labelled = sql(path, "SELECT t.text FROM labels l JOIN texts t ON t.id = l.text_id")
    assert labelled == [(on_screen,)]


def test_skip_moves_on_without_labelling(project):
    path, pid = project
    at = _label_page(pid)
    shown = at.session_state[f"current_{pid}"]
    at.button(key="skip").click().run()
    assert not at.exception
    assert at.session_state[f"current_{pid}"] != shown
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(0,)]


def test_table_mode_labels_selected_rows(project):
    path, pid = project
    at = _label_page(pid)
    at.segmented_control(key="label_mode").set_value("Table").run()
    assert not at.exception
    at.text_input(key="table_search").input("film").run()
    assert at.data_editor[0].value["Sentence"].tolist() == ["great film", "awful film"]
    at.session_state["label_table"] = {"edited_rows": {1: {"Select": True}}, "added_rows": [],
                                       "deleted_rows": []}
    at.selectbox(key="table_target").set_value("neg")
    at.run()
    assert at.button(key="table_apply").label == "Label 1 selected"
    at.button(key="table_apply").click().run()
    assert not at.exception
    labelled = sql(path, "SELECT t.text FROM labels l JOIN texts t ON t.id = l.text_id")
    assert labelled == [("awful film",)]
    at.text_input(key="table_search").input("").run()
    at.checkbox(key="table_all").check()
    at.selectbox(key="table_target").set_value("pos")
    at.run()
    assert at.button(key="table_apply").label == "Label 7 selected"
    at.button(key="table_apply").click().run()
    assert not at.exception
    assert sql(path, "SELECT COUNT(*) FROM labels") == [(8,)]
    assert "No sentence matches these filters." in page_text(at)
    at.selectbox(key="table_show").set_value("all").run()
    assert not at.checkbox(key="table_all").value, "the selection is cleared after labelling"


def test_user_text_is_shown_literally_never_as_markup(fresh_workspace, tiny_model_dir):
    with Store.open(fresh_workspace) as store:
        pid = store.create_project("Tricky", ["[neg](javascript:alert(1))", "**pos**"],
                                   settings={"backbone": tiny_model_dir, "prompt": None}).id
        store.add_texts(pid, [INJECTION])
    at = _label_page(pid)
    assert not at.exception
    shown = [m for m in at.markdown if "script" in m.value]
    assert [m.value for m in shown] == ["#### " + escape_markdown(INJECTION)]
    assert not shown[0].proto.allow_html
    assert "\\<script\\>" in shown[0].value and "\\*\\*bold\\*\\*" in shown[0].value
    assert at.button(key="label_0").label == "\\[neg\\]\\(javascript\\:alert\\(1\\)\\)"
    assert at.button(key="label_1").label == "\\*\\*pos\\*\\*"
    assert at.info[0].value.startswith("Label 2 more “\\[neg\\]\\(javascript\\:alert\\(1\\)\\)”")


@pytest.mark.parametrize("text, escaped", [
    ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
    ("<b>x</b> & $1", "\\<b\\>x\\<\\/b\\> \\& \\$1"),
    ("# title\n    code", "\\# title  \ncode"),
    (":red[alert] :smile:", "\\:red\\[alert\\] \\:smile\\:"),
])
def test_escape_markdown(text, escaped):
    assert escape_markdown(text) == escaped


def test_imported_labels_can_be_trained_at_once(project):
    path, pid = project
    with Store.open(path) as store:
        for text in ["good movie", "great film", "bad movie", "awful film"]:
            store.set_label(pid, store.text_id(pid, text), TRUTH[text])
    at = _label_page(pid)
    assert "There are enough labels for a first model" in page_text(at)
    at.button(key="train_now").click().run()
    assert not at.exception
    assert "Model v1 trained on 4 labels" in page_text(at)
    assert sql(path, "SELECT version, n_labels FROM models") == [(1, 4)]
    assert "train_now" not in [b.key for b in at.button]


def test_accept_the_guess_key_and_no_class_is_highlighted(project):
    # issue 15 item 7: the model's guess was pre-highlighted as the primary button (it
    # anchors the labeller), and there was no key to accept it
    path, pid = project
    with Store.open(path) as store:
        for text in ("good movie", "great film", "bad movie", "awful film"):
            store.set_label(pid, store.text_id(pid, text), TRUTH[text])
    at = _label_page(pid)
    at.button(key="train_now").click().run()
    assert not at.exception
    assert "Model's guess:" in page_text(at)
    assert {b.proto.type for b in at.button if b.key.startswith("label_")} == {"secondary"}
    accept = at.button(key="accept")
    assert accept.proto.shortcut == "a"
    assert "A accept the model's guess" in page_text(at)
    text_id = at.session_state[f"current_{pid}"]
    with Store.open(path) as store:  # predictions are one blob per model version (schema v5)
        (guess,) = [p.label for p in store.predictions(store.latest_model(pid).id) if p.text_id == text_id]
    accept.click().run()
    assert not at.exception
    assert sql(path, "SELECT c.name FROM labels l JOIN classes c ON c.id = l.class_id "
                     "WHERE l.text_id = ?", text_id) == [(guess,)]


@pytest.mark.parametrize("n_labels, before, after, delta, colour", [
    (30, 0.31, 0.54, "no clear change", "GRAY"),  # issue 15 item 6: a ±23-point jump was badged
    (200, 0.40, 0.60, "+20 pts", "GREEN"),
])
def test_accuracy_change_is_badged_only_beyond_the_noise(project, n_labels, before, after,
                                                          delta, colour):
    path, pid = project
    with Store.open(path) as store:
        for n, accuracy in ((n_labels, before), (n_labels + 1, after)):
            store.save_model(pid, params={"classes": ["neg", "pos"]},
                             metrics={"cv_accuracy": accuracy}, state={}, n_labels=n)
    at = _label_page(pid)
    assert not at.exception
    metric = at.metric[0]
    assert (metric.label, metric.delta) == ("Accuracy, model v2", delta)
    assert Metric.MetricColor.Name(metric.proto.color) == colour
    assert "Likely between" in page_text(at)


def test_the_caption_says_why_a_cold_start_pick_was_chosen_and_keeps_it_on_a_rerun(workspace):
    # with fewer than cold_start_labels() per class, the pick covers a kind of sentence no
    # label covers yet; the caption said "where the model is least sure" all the same
    from core.active import cold_start_labels

    at = open_page("label")
    at.button(key="label_0").click().run()  # the submit fills the pool's head inputs
    assert not at.exception
    # "on average": the cold start ends when labels / classes reaches it (core.active.suggest),
    # not when the smallest class does
    why = f"no label covers yet: until there are {cold_start_labels()} labels per class on average"
    assert why in page_text(at)
    at.run()  # the same sentence stays on screen (reason "on screen"): so does the why
    assert why in page_text(at)
