"""The Predictions page on a trained tiny-model project: list, filter, correct, what changed."""

from __future__ import annotations

import numpy as np

from core.store import Store
from tests.helpers import CLASSES, NEG, POS, UNLABELLED, open_page


def _unlabelled_texts():
    return set(POS[5:] + NEG[5:] + UNLABELLED)


def test_lists_every_unlabelled_sentence_with_its_prediction(workspace):
    at = open_page("predictions")
    assert not at.exception
    frame = at.dataframe[0].value  # the review table comes first, 'what changed' second
    assert set(frame["Sentence"]) == _unlabelled_texts()
    assert set(frame["Predicted"]) <= set(CLASSES)
    assert frame["Confidence"].between(50, 100).all()  # percent of the predicted class
    assert frame["Confidence"].is_monotonic_increasing  # least confident first
    # user text is shown as data, never rendered as markdown anywhere on the page
    assert not any("<b>html</b>" in m.value or "**bold**" in m.value for m in at.markdown)


def test_search_narrows_the_table(workspace):
    at = open_page("predictions")
    at.text_input(key="pred_search").input("VERY").run()
    assert not at.exception
    assert set(at.dataframe[0].value["Sentence"]) == {"very good", "very bad"}


def test_correcting_a_prediction_saves_a_label_and_trains_a_new_model(workspace):
    db, pid, ids = workspace
    at = open_page("predictions")
    first = at.dataframe[0].value.iloc[0]
    other = next(c for c in CLASSES if c != first["Predicted"])
    key = at.session_state["predictions_editor_key"]
    at.session_state[key] = {"edited_rows": {0: {"Your label": other}, 1: {"Accept": True}},
                             "added_rows": [], "deleted_rows": []}
    at.run()
    save = at.button(key="pred_save")
    assert save.label == "Save 2 labels and retrain"
    save.click().run()
    assert not at.exception
    second = at.dataframe[0].value  # the table now lists the remaining unlabelled sentences
    with Store.open(db) as store:
        labels = {r.text: r.label for r in store.labelled(pid)}
        assert labels[first["Sentence"]] == other
        assert len(labels) == 2 * 5 + 2
        assert [m.version for m in store.models(pid)] == [1, 2, 3]
    assert first["Sentence"] not in set(second["Sentence"])
    assert any("Model v3 trained on 12 labels" in s.value for s in at.success)


def test_what_changed_lists_exactly_the_flipped_predictions(workspace):
    db, pid, ids = workspace
    flip = {ids["very good"], ids[UNLABELLED[-1]]}
    with Store.open(db) as store:
        v1, v2 = store.models(pid)
        # v2 predicts what v1 did, except for two sentences: a known set of flips
        store.save_predictions(v2.id, [
            (p.text_id, CLASSES[1 - CLASSES.index(p.label)] if p.text_id in flip else p.label,
             p.confidence, p.probs) for p in store.predictions(v1.id)])
    at = open_page("predictions")
    assert not at.exception
    assert any("v1 → v2: 2 sentences changed" in c.value for c in at.caption)
    changed = at.dataframe[1].value
    assert list(changed["Sentence"]) == ["very good", UNLABELLED[-1]]
    assert (changed["v1"] != changed["v2"]).all()


def test_no_model_explains_the_next_step(fresh_workspace, tiny_model_dir, whole_app_reruns):
    with Store.open(fresh_workspace) as store:
        p = store.create_project("new", CLASSES, settings={"backbone": str(tiny_model_dir)})
        at = open_page("predictions")
        assert not at.exception
        assert "Add some sentences" in at.info[0].value
        store.add_texts(p.id, ["good movie"])
        at.run()
        assert ("Label at least 2 sentences per class to train a first model; then its "
                "predictions for the other sentences appear here.") in at.info[0].value


def test_the_coverage_control_counts_and_marks_the_predictions_below_it(workspace):
    # issue 15 item 12: the page showed confidences but no way to act on them
    at = open_page("predictions")
    assert not at.exception
    frame = at.dataframe[0].value
    n = len(frame)
    middle = int(np.ceil(frame["Confidence"].median()))  # splits the rows: both marks appear
    for percent in (0, middle, 100):
        at.slider(key="pred_cover_threshold").set_value(percent).run()
        assert not at.exception
        frame = at.dataframe[0].value
        below = frame["Confidence"] < percent - 1e-7
        assert list(frame["Review"]) == ["needs a human" if b else "" for b in below]
        said = " ".join(i.value for i in at.info)
        assert f"{n - below.sum()} of {n} predictions" in said and f"at least {percent}% confidence" in said
        marked = {0: "None is marked", 1: "The other one is marked"}.get(
            int(below.sum()), f"The other {below.sum()} are marked")
        assert f"{marked} “needs a human”" in said
        assert below.sum() == {0: 0, middle: below.sum(), 100: n}[percent]
        assert percent != middle or 0 < below.sum() < n


def test_a_target_accuracy_the_labels_cannot_promise_marks_every_prediction(workspace):
    at = open_page("predictions")
    at.radio(key="pred_cover_mode").set_value("Target accuracy").run()
    at.slider(key="pred_cover_target").set_value(99).run()
    assert not at.exception
    assert "No confidence threshold can promise 99% accuracy" in at.warning[0].value
    assert set(at.dataframe[0].value["Review"]) == {"needs a human"}


def test_a_sentence_added_after_the_model_is_counted_and_can_be_trained(workspace):
    # the notice and its "Train now" button, shared by the single- and multi-label pages
    path, pid, _ = workspace
    with Store.open(path) as store:
        store.add_texts(pid, ["a brand new sentence"])
        before = len(store.models(pid))
    at = open_page("predictions")
    assert not at.exception
    assert any("1 sentence arrived after model v" in i.value and "has no prediction yet" in i.value
               for i in at.info)
    at.button(key="pred_train").click().run()
    assert not at.exception
    with Store.open(path) as store:
        assert len(store.models(pid)) == before + 1
    assert not any("arrived after model" in i.value for i in at.info)
