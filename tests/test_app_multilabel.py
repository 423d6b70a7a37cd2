"""Multi-label projects in the app (issue 16): the type chosen on the Projects page, the
Label page's toggles (number keys, Enter, N for none of these, undo; submit retrains),
its table mode, and the Predictions page (sets, probabilities, corrections, What changed)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from tests.helpers import page_text, sql

pytestmark = pytest.mark.usefixtures("whole_app_reruns")

APP = str(Path(__file__).parents[1] / "app.py")
CLASSES = ["pos", "neg", "film"]
# (text, label set): "film" goes with either sentiment; () is "none of these"
LABELLED = [("good movie", ("pos", "film")), ("great film", ("pos", "film")),
            ("i love it", ("pos",)), ("wonderful plot", ("pos",)),
            ("bad movie", ("neg", "film")), ("awful film", ("neg", "film")),
            ("i hate it", ("neg",)), ("terrible plot", ("neg",)),
            ("the review", ()), ("it is a review", ())]
UNLABELLED = ["very good film", "very bad", "the plot", "excellent movie"]


@pytest.fixture
def ml_project(fresh_workspace, tiny_model_dir):
    """A multi-label project with sentences and no label yet: (db path, project id)."""
    with Store.open(fresh_workspace) as store:
        p = store.create_project("Tags", CLASSES, task_type="multi_label", settings={
            "backbone": tiny_model_dir, "prompt": None, "mode": "layer", "penalty": "l2"})
        store.add_texts(p.id, [t for t, _ in LABELLED] + UNLABELLED)
    return fresh_workspace, p.id


@pytest.fixture
def ml_trained(ml_project, tiny_model_dir):
    """ml_project with every LABELLED set and two model versions: (db path, project id)."""
    from core.model.loading import load_backbone
    from core.project import retrain

    path, pid = ml_project
    with Store.open(path) as store:
        p = store.project(pid)
        bb = load_backbone(tiny_model_dir)
        for text, labels in LABELLED[:-1]:
            store.set_label_set(pid, store.text_id(pid, text), labels)
        retrain(store, p, bb)
        store.set_label_set(pid, store.text_id(pid, LABELLED[-1][0]), LABELLED[-1][1])
        retrain(store, p, bb)
    return ml_project


def _open(page: str, pid: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_id"] = pid
    at.switch_page(f"pages/{page}.py")
    return at.run()


def _current(at, path: str, pid: int) -> str:
    return sql(path, "SELECT text FROM texts WHERE id = ?", at.session_state[f"current_{pid}"])[0][0]


def _set_of(path: str, text: str) -> tuple[str, ...] | None:
    """The stored set of a text through the Store (None: unlabelled, (): none of these)."""
    with Store.open(path) as store:
        pid = sql(path, "SELECT project_id FROM texts WHERE text = ?", text)[0][0]
        return store.label_set(pid, store.text_id(pid, text))


# --- Projects page -------------------------------------------------------------------------


def test_the_project_type_is_chosen_at_creation_and_shown_afterwards(fresh_workspace, whole_app_reruns):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="new_project_name").input("Tickets")
    at.text_input(key="new_project_classes").input("billing, login, bug")
    at.radio(key="new_project_type").set_value("any number of classes (multi-label)")
    at.button(key="create_project_btn").click().run()
    assert not at.exception
    assert sql(fresh_workspace, "SELECT name, task_type FROM projects") == [("Tickets", "multi_label")]
    assert "Multi-label project" in page_text(at)


def test_a_project_created_as_before_is_single_label(fresh_workspace, whole_app_reruns):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="new_project_name").input("Reviews")
    at.text_input(key="new_project_classes").input("neg, pos")
    at.button(key="create_project_btn").click().run()
    assert not at.exception
    assert sql(fresh_workspace, "SELECT task_type FROM projects") == [("single_label",)]
    assert "Multi-label project" not in page_text(at)


# --- Label page ----------------------------------------------------------------------------


def test_toggles_have_number_keys_and_submit_none_and_undo_have_theirs(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    assert not at.exception
    buttons = {b.key: b for b in at.button}
    assert [(buttons[f"ml_toggle_{i}"].label, buttons[f"ml_toggle_{i}"].proto.shortcut)
            for i in range(3)] == [("pos", "1"), ("neg", "2"), ("film", "3")]
    assert buttons["ml_submit"].proto.shortcut.lower() == "enter"
    assert buttons["ml_none"].proto.shortcut.lower() == "n"
    assert buttons["undo"].proto.shortcut.lower() == "u"
    # never disabled: a disabled button has no shortcut, and Enter pressed right after a class
    # key arrived before the redraw that enabled it
    assert not buttons["ml_submit"].disabled
    assert "Keyboard: 1–3 toggle a class · Enter submit · N none of these" in page_text(at)
    # the per-class refusal, as the single-label page shows its own
    assert "Label 2 more sentences with “pos”" in page_text(at)


def test_submit_takes_the_classes_toggled_when_it_arrives_and_refuses_an_empty_set(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    text = _current(at, path, pid)
    at.button(key="ml_submit").click().run()  # nothing toggled: a warning, nothing stored
    assert not at.exception
    assert _set_of(path, text) is None and _current(at, path, pid) == text
    assert "Toggle at least one class first" in " ".join(w.value for w in at.warning)
    # a class key and Enter in quick succession: the submit was drawn before the toggle
    at.button(key="ml_toggle_0").click()
    at.button(key="ml_submit").click().run()
    assert not at.exception
    assert _set_of(path, text) == ("pos",)


def test_toggle_submit_stores_the_set_and_toggling_twice_turns_a_class_off(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    text = _current(at, path, pid)
    at.button(key="ml_toggle_0").click().run()
    at.button(key="ml_toggle_2").click().run()
    at.button(key="ml_toggle_1").click().run()
    at.button(key="ml_toggle_1").click().run()  # "neg" on, then off again
    buttons = {b.key: b for b in at.button}
    assert [buttons[f"ml_toggle_{i}"].proto.type for i in range(3)] == ["primary", "secondary", "primary"]
    assert buttons["ml_submit"].label.replace("\\", "") == "Submit: pos, film"
    assert _set_of(path, text) is None  # nothing stored before the submit
    at.button(key="ml_submit").click().run()
    assert not at.exception
    assert _set_of(path, text) == ("pos", "film")
    assert _current(at, path, pid) != text
    # the next sentence starts with every toggle off
    assert all(b.proto.type == "secondary" for b in at.button if b.key.startswith("ml_toggle_"))


def test_none_of_these_is_recorded_and_undo_brings_the_sentence_back_unlabelled(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    text = _current(at, path, pid)
    at.button(key="ml_none").click().run()
    assert not at.exception
    assert _set_of(path, text) == ()  # a real answer, not unlabelled
    assert sql(path, "SELECT COUNT(*) FROM none_labels") == [(1,)]
    at.button(key="undo").click().run()
    assert not at.exception
    assert _set_of(path, text) is None
    assert _current(at, path, pid) == text
    assert "the sentence is unlabelled again" in page_text(at)


def test_undo_puts_the_set_back_on_the_toggles(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    text = _current(at, path, pid)
    at.button(key="ml_toggle_1").click().run()
    at.button(key="ml_submit").click().run()
    at.button(key="undo").click().run()
    assert _current(at, path, pid) == text and _set_of(path, text) is None
    buttons = {b.key: b for b in at.button}
    assert buttons["ml_toggle_1"].proto.type == "primary"
    assert buttons["ml_submit"].label.replace("\\", "") == "Submit: neg"


def test_labelling_sets_until_every_class_has_enough_trains_a_model(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    truth = dict(LABELLED)
    for _ in range(len(LABELLED) + len(UNLABELLED)):
        if sql(path, "SELECT COUNT(*) FROM models") != [(0,)]:
            break
        text = _current(at, path, pid)
        labels = truth.get(text)
        if labels is None:
            at.button(key="skip").click().run()
            continue
        for name in labels:
            at.button(key=f"ml_toggle_{CLASSES.index(name)}").click().run()
        at.button(key="ml_submit" if labels else "ml_none").click().run()
        assert not at.exception
    assert sql(path, "SELECT COUNT(*) FROM models") == [(1,)]
    assert "Model v1 trained on" in page_text(at) and "cross-validated macro-F1" in page_text(at)
    assert at.metric[0].label == "Macro-F1, model v1"
    # every submit after that retrains
    at.button(key="ml_none").click().run()
    assert sql(path, "SELECT COUNT(*) FROM models") == [(2,)]


def test_the_model_guess_shows_the_predicted_set_and_accept_stores_it(ml_trained):
    path, pid = ml_trained
    at = _open("label", pid)
    assert not at.exception
    text = _current(at, path, pid)
    assert "Model's guess:" in page_text(at) and "film " in page_text(at)
    accept = at.button(key="accept")
    guess = accept.help.replace("\\", "").split("“")[1].split("”")[0]
    accept.click().run()
    stored = _set_of(path, text)
    assert stored is not None and (", ".join(stored) or "none of these") == guess


def test_table_mode_gives_selected_rows_one_set(ml_project):
    path, pid = ml_project
    at = _open("label", pid)
    at.segmented_control(key="label_mode").set_value("Table").run()
    assert not at.exception
    at.session_state["ml_label_table"] = {"edited_rows": {0: {"Select": True}, 1: {"Select": True}},
                                          "added_rows": [], "deleted_rows": []}
    at.multiselect(key="ml_table_classes").set_value(["neg", "film"]).run()
    at.button(key="ml_table_apply").click().run()
    assert not at.exception
    first_two = [t for t, _ in LABELLED[:2]]
    assert [_set_of(path, t) for t in first_two] == [("neg", "film")] * 2
    at.segmented_control(key="ml_table_give").set_value("None of these").run()
    at.session_state["ml_label_table"] = {"edited_rows": {0: {"Select": True}},
                                          "added_rows": [], "deleted_rows": []}
    at.run()
    at.button(key="ml_table_apply").click().run()
    assert _set_of(path, LABELLED[2][0]) == ()


# --- Predictions page ----------------------------------------------------------------------


def _editor_key(at) -> str:
    return at.session_state["ml_pred_editor_key"]


def test_predictions_show_sets_and_per_class_probabilities(ml_trained):
    from core.multilabel import set_predictions

    path, pid = ml_trained
    at = _open("predictions", pid)
    assert not at.exception
    assert at.metric[1].label == "CV macro-F1"
    frame = at.dataframe[0].value
    assert {"Keep", "Your labels", "Sentence", "Predicted", "p(pos)", "p(neg)", "p(film)"} <= set(frame.columns)
    with Store.open(path) as store:
        p = store.project(pid)
        stored = {x.text: x for x in set_predictions(store, p, store.latest_model(pid))}
    for _, row in frame.iterrows():
        want = stored[row["Sentence"]]
        assert list(row["Your labels"]) == list(want.labels)
        assert row["Predicted"] == (", ".join(want.labels) or "none of these")
        assert abs(row["p(film)"] - 100 * want.probs["film"]) < 1e-6
    assert "coverage control of single-label projects is not offered here" in page_text(at)


def test_correcting_a_prediction_in_place_edits_the_set_and_retrains(ml_trained):
    path, pid = ml_trained
    at = _open("predictions", pid)
    frame = at.dataframe[0].value
    first, second = frame["Sentence"][0], frame["Sentence"][1]
    kept = tuple(frame["Your labels"][1])
    at.session_state[_editor_key(at)] = {
        "edited_rows": {0: {"Your labels": ["neg", "film"]}, 1: {"Keep": True}},
        "added_rows": [], "deleted_rows": []}
    at.run()
    save = at.button(key="mlp_save")
    assert save.label == "Save 2 label sets and retrain" and not save.disabled
    save.click().run()
    assert not at.exception
    assert _set_of(path, first) == ("neg", "film")
    assert _set_of(path, second) == kept  # kept as predicted
    assert sql(path, "SELECT COUNT(*) FROM models") == [(3,)]
    assert "Model v3 trained on" in page_text(at)


def test_an_emptied_set_is_saved_as_none_of_these(ml_trained):
    path, pid = ml_trained
    at = _open("predictions", pid)
    first = at.dataframe[0].value["Sentence"][0]
    at.session_state[_editor_key(at)] = {"edited_rows": {0: {"Your labels": []}},
                                         "added_rows": [], "deleted_rows": []}
    at.run()
    at.button(key="mlp_save").click().run()
    assert _set_of(path, first) == ()


def test_what_changed_lists_sets_that_changed(ml_trained):
    from core.model.loading import load_backbone
    from core.multilabel import changed_sets
    from core.project import retrain

    path, pid = ml_trained
    with Store.open(path) as store:
        p = store.project(pid)
        # labels against the grain move the heads, so some predicted sets change
        for text in ("very good film", "excellent movie"):
            store.set_label_set(pid, store.text_id(pid, text), ["neg"])
        retrain(store, p, load_backbone(p.settings["backbone"]))
        expected = changed_sets(store, p)
    assert expected, "the test needs a change to show"
    at = _open("predictions", pid)
    assert not at.exception
    assert at.tabs[1].label == f"What changed ({len(expected)})"
    assert f"Model v2 → v3: {len(expected):,} sentence" in page_text(at)
    table = at.tabs[1].dataframe[0].value
    shown = {r["Sentence"]: (r["v2"], r["v3"]) for _, r in table.iterrows()}
    assert shown == {c.text: (", ".join(c.before) or "none of these", ", ".join(c.after) or "none of these")
                     for c in expected}


# --- Model page ----------------------------------------------------------------------------


def test_model_page_shows_multi_label_scores_and_a_row_per_class(ml_trained):
    path, pid = ml_trained
    at = _open("model", pid)
    assert not at.exception
    with Store.open(path) as store:
        m = store.latest_model(pid).metrics
    metrics = {x.label: x.value for x in at.metric}
    assert metrics["CV macro-F1"] == f"{m['cv_macro_f1']:.0%}"
    assert metrics["CV micro-F1"] == f"{m['cv_micro_f1']:.0%}"
    assert metrics["Subset accuracy"] == f"{m['cv_subset_accuracy']:.0%}"
    assert metrics["Hamming loss"] == f"{m['cv_hamming_loss']:.3f}"
    table = at.dataframe[0].value
    assert list(table["Class"]) == CLASSES
    for _, row in table.iterrows():
        pc = m["per_class"][row["Class"]]
        assert (row["Precision"], row["Recall"], row["F1"]) == (pc["precision"], pc["recall"], pc["f1"])
        assert (row["Found"], row["False alarms"], row["Missed"], row["Right “no”"]) == (
            pc["tp"], pc["fp"], pc["fn"], pc["tn"])
        assert row["With it"] == pc["support"]


def test_a_threshold_set_on_the_model_page_changes_the_predicted_sets(ml_trained):
    from core.multilabel import effective_thresholds, set_predictions

    path, pid = ml_trained
    at = _open("model", pid)
    at.selectbox(key="ml_thr_class").set_value("film").run()
    at.slider(key="ml_thr_2").set_value(0.01).run()
    at.button(key="ml_thr_save").click().run()
    assert not at.exception
    with Store.open(path) as store:
        p = store.project(pid)
        model = store.latest_model(pid)
        assert effective_thresholds(p, model)["film"] == 0.01
        assert all("film" in x.labels for x in set_predictions(store, p, model))
    assert at.dataframe[0].value.set_index("Class").loc["film", "Yours"] == 0.01
    at.button(key="ml_thr_reset").click().run()
    with Store.open(path) as store:
        assert store.project(pid).settings["thresholds"] == {}


def test_the_learning_curve_is_on_macro_f1(fresh_workspace, tiny_model_dir):
    from core.model.loading import load_backbone
    from core.project import retrain
    from tests.helpers import plotly_specs

    good = "good great love wonderful delight excellent fine happy best superb".split()
    bad = "bad awful hate terrible boring worst poor sad dull ugly".split()
    sets = {}
    for words, name in ((good, "pos"), (bad, "neg")):
        for w in words:
            sets.update({f"{w} movie": (name, "film"), f"{w} plot": (name,),
                         f"very {w} film": (name, "film")})
    sets.update({t: () for t in ("the review", "it is a review", "this is it", "a review !")})
    with Store.open(fresh_workspace) as store:
        p = store.create_project("Tags", CLASSES, task_type="multi_label", settings={
            "backbone": tiny_model_dir, "prompt": None, "mode": "layer", "penalty": "l2"})
        store.add_labelled_sets(p.id, list(sets), list(sets.values()))
        retrain(store, p, load_backbone(tiny_model_dir))
    at = _open("model", p.id)
    at.button(key="m_diag").click().run()
    assert not at.exception and not at.error
    spec = [s for s in plotly_specs(at) if "Learning curve" in json_title(s)][0]
    assert spec["layout"]["yaxis"]["title"]["text"] == "macro-F1"
    assert spec["layout"]["xaxis"]["title"]["text"] == "labelled sentences"


def json_title(spec) -> str:
    title = spec.get("layout", {}).get("title", {})
    return title.get("text", "") if isinstance(title, dict) else str(title)


def test_model_page_without_a_model_names_what_each_class_needs(ml_project):
    path, pid = ml_project
    at = _open("model", pid)
    assert not at.exception
    assert "Label 2 more sentences with “pos”" in page_text(at)


# --- Explain page --------------------------------------------------------------------------


def test_explain_picks_a_class_and_explains_that_class_head(ml_trained, tiny_model_dir, downloads):
    import numpy as np

    from core.explain.attributions import coefficient_attributions
    from core.model.loading import load_backbone
    from core.project import load_classifier

    path, pid = ml_trained
    at = _open("explain", pid)
    assert not at.exception
    picker = at.button_group(key=[w.key for w in at.button_group if w.key.startswith("ex_mlclass_")][0])
    assert list(picker.options) == CLASSES
    text = at.selectbox(key="ex_pick_Unlabelled").value  # a text id
    with Store.open(path) as store:
        clf = load_classifier(store.latest_model(pid))
    attr = coefficient_attributions(load_backbone(tiny_model_dir), clf, _text_of(path, text))
    probs = 1 / (1 + np.exp(-np.asarray(attr.logits)))
    assert "Predicted set:" in page_text(at)
    for name in ("film", "neg"):
        picker.set_value(name).run()
        assert not at.exception
        k = CLASSES.index(name)
        # the words explained are those of the class's own head: its yes/no view, whose
        # log-odds are the multi-label head's column for that class
        view = coefficient_attributions(load_backbone(tiny_model_dir), clf.class_classifier(name),
                                        _text_of(path, text))
        assert abs((view.logits[1] - view.logits[0]) - attr.logits[k]) < 1e-5
        assert f"the model's score (logit) for “{name}” is {view.logits[1]:+.5f}" in page_text(at)
        assert f"“{name}”: probability {probs[k]:.0%}" in page_text(at)
        picker = at.button_group(key=picker.key)
    assert "10 labelled · model v2: macro-F1" in page_text(at)  # the sidebar counts sentences
    # the report is the picked class's (it was "single-label for now" before)
    assert "This report is about the class “neg”." in page_text(at)
    at.checkbox(key="ex_report_profile").uncheck()
    at.button(key="ex_report_build").click().run()
    assert not at.exception, at.exception
    (file,) = [n for n in downloads if n.endswith(".html")]
    assert "neg" in file and "not neg" in downloads[file].decode()


def _text_of(path: str, text_id) -> str:
    return sql(path, "SELECT text FROM texts WHERE id = ?", text_id)[0][0]


# --- Data page -----------------------------------------------------------------------------


def test_uploading_a_multi_label_csv_lists_its_summary_and_imports_all_or_nothing(ml_project):
    path, pid = ml_project
    at = _open("data", pid)
    data = ("text,labels\n"
            "good movie,pos;film\n"          # line 2: two classes
            "the review,none of these\n"     # line 3: none of these
            "very bad,\n"                    # line 4: empty cell -> unlabelled
            "great film,pos;pos\n"           # line 5: a name twice -> counted once
            "boring movie,neg;horror\n")     # line 6: not a class
    at.file_uploader(key="upload_0").set_value(("tags.csv", data.encode(), "text/csv")).run()
    assert not at.exception
    shown = page_text(at)
    assert "5 texts: 3 with classes, 1 “none of these”, 1 unlabelled." in shown
    assert "(line 4) had an empty labels cell and came in unlabelled" in shown
    assert "(line 5) named a class twice in one cell; it was counted once" in shown
    assert "“horror” (line 6)" in shown and "nothing is imported until then" in shown
    assert at.button(key="import_btn").disabled  # nothing half-imported
    before = sql(path, "SELECT COUNT(*) FROM texts")
    at.checkbox(key="upload_add_classes").check().run()
    button = at.button(key="import_btn")
    assert button.label == "Import 5 sentences (4 labelled)" and not button.disabled
    button.click().run()
    assert not at.exception
    assert sql(path, "SELECT COUNT(*) FROM texts") == [(before[0][0] + 1,)]  # only "boring movie" is new
    assert [_set_of(path, t) for t in ("good movie", "the review", "very bad", "great film", "boring movie")] == [
        ("pos", "film"), (), None, ("pos",), ("neg", "horror")]
    with Store.open(path) as store:
        assert store.classes(pid) == CLASSES + ["horror"]
    assert "label sets imported" in page_text(at)
    table = at.dataframe[0].value
    assert dict(zip(table["Sentence"], table["Labels"]))["good movie"] == "pos, film"


def test_uploading_jsonl_lists(ml_project):
    path, pid = ml_project
    at = _open("data", pid)
    data = b'{"text": "i love it", "labels": ["pos"]}\n{"text": "it is a review", "labels": []}\n'
    at.file_uploader(key="upload_0").set_value(("tags.jsonl", data, "application/json")).run()
    assert "2 texts: 1 with classes, 1 “none of these”, 0 unlabelled." in page_text(at)
    at.button(key="import_btn").click().run()
    assert not at.exception
    assert [_set_of(path, t) for t in ("i love it", "it is a review")] == [("pos",), ()]


def test_the_stability_page_refits_a_multi_label_model_one_class_at_a_time(ml_trained):
    # issue 16 item 7: the stability page per class (each class's own yes/no head and run)
    path, pid = ml_trained
    at = _open("stability", pid)
    assert not at.exception
    classes = at.selectbox(key="st_ml_class").options
    assert len(classes) >= 2
    at.number_input(key="st_B").set_value(10)
    at.button(key="st_run").click().run()
    assert not at.exception, at.exception
    first = classes[0]
    with Store.open(path) as store:
        from core.multilabel_explain import load_class_stability

        model = store.latest_model(pid)
        run = load_class_stability(store, model.id, first)
        assert run is not None and run.classes == [f"not {first}", first]
        assert load_class_stability(store, model.id, classes[1]) is None
    assert "Held-out accuracy" in [m.label for m in at.metric]
    assert "unstable sentence" in page_text(at) or "Every sentence gets the same" in page_text(at)
    at.selectbox(key="st_ml_class").set_value(classes[1]).run()
    assert not at.exception
    assert "No bootstrap run for model" in page_text(at)


def test_the_export_page_builds_one_class_s_stakeholder_report(ml_trained, downloads):
    # issue 16 item 7: the report per class (it said "single-label for now")
    path, pid = ml_trained
    at = _open("export", pid)
    assert not at.exception
    name = at.selectbox(key="export_report_class").options[1]
    at.selectbox(key="export_report_class").set_value(name).run()
    at.checkbox(key="export_report_profile").uncheck()
    at.button(key="export_report_build").click().run()
    assert not at.exception, at.exception
    (file,) = [n for n in downloads if n.endswith(".html")]
    assert name in file
    report = downloads[file].decode()
    assert "Model card" in report and f"not {name}" in report


def test_the_export_page_writes_label_sets(ml_trained, downloads):
    # the export of a multi-label project writes sets, in the format import reads back
    path, pid = ml_trained
    at = _open("export", pid)
    assert not at.exception, at.exception
    csvs = {n: b for n, b in downloads.items() if n.endswith(".csv")}
    assert csvs, list(downloads)
    text = next(iter(csvs.values())).decode()
    header = text.splitlines()[0]
    assert "text" in header and "labels" in header, header
    assert "neg;film" in text or "film;neg" in text, text[:400]
