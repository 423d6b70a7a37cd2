"""Multi-label projects in the store (issue 16): project type, label sets, "none of these",
undo of a set change, class changes on sets, and the migration from schema version 5."""

import sqlite3

import numpy as np
import pytest
from sqlite_utils import Database

from core.errors import InputError
from core.store import SCHEMA_VERSION, Store
from core.store.codec import pack_arrays
from core.store.schema import MIGRATIONS, migrate, schema_version


@pytest.fixture
def path(tmp_path):
    return tmp_path / "work.db"


@pytest.fixture
def store(path):
    with Store.open(path) as opened:
        yield opened


@pytest.fixture
def pid(store):
    return store.create_project("comments", ["staff", "waiting", "food"], task_type="multi_label").id


def test_project_type_round_trips_and_is_checked(path, store, pid):
    single = store.create_project("reviews", ["neg", "pos"])
    assert (single.task_type, single.multi_label) == ("single_label", False)
    with Store.open(path) as again:
        project = again.project(pid)
        assert (project.task_type, project.multi_label) == ("multi_label", True)
        assert again.is_multi_label(pid) and not again.is_multi_label(single.id)
    with pytest.raises(InputError, match="'single_label' or 'multi_label'.*'both'"):
        store.create_project("x", ["a", "b"], task_type="both")


def test_label_sets_round_trip_with_none_of_these_distinct_from_unlabelled(path, store, pid):
    ids = store.add_texts(pid, ["rude nurse, long wait", "cold soup", "fine", "unread"]).text_ids
    store.set_label_set(pid, ids[0], ["waiting", "staff", "staff"])  # a repeat counts once
    store.set_label_set(pid, ids[1], ["food"])
    store.set_label_set(pid, ids[2], [])  # none of these
    with Store.open(path) as again:
        assert [tuple(r) for r in again.label_sets(pid)] == [
            (ids[0], "rude nurse, long wait", ("staff", "waiting")),
            (ids[1], "cold soup", ("food",)), (ids[2], "fine", ())]
        assert again.label_set(pid, ids[2]) == () and again.label_set(pid, ids[3]) is None
        assert [r.id for r in again.unlabelled(pid)] == [ids[3]]
        assert again.unlabelled_columns(pid) == ([ids[3]], ["unread"])
        assert again.none_count(pid) == 1
        assert again.label_counts(pid) == {"staff": 1, "waiting": 1, "food": 1}


def test_setting_the_same_set_records_nothing_and_generation_counts_none(store, pid):
    (tid,) = store.add_texts(pid, ["fine"]).text_ids
    before = store.label_generation(pid)
    assert store.set_label_set(pid, tid, [])
    assert store.label_generation(pid) > before
    assert not store.set_label_set(pid, tid, [])
    assert store.db.execute("SELECT COUNT(*) FROM label_events").fetchone()[0] == 1


def test_a_set_change_is_one_event_and_undo_restores_the_previous_set(store, pid):
    (tid,) = store.add_texts(pid, ["rude nurse, long wait"]).text_ids
    store.set_label_set(pid, tid, ["staff"])
    store.set_label_set(pid, tid, ["staff", "waiting", "food"])
    store.set_label_set(pid, tid, [])
    assert store.undo_last_label(pid) == (tid, ("staff", "waiting", "food"))
    assert store.label_set(pid, tid) == ("staff", "waiting", "food")
    assert store.undo_last_label(pid) == (tid, ("staff",))
    assert store.undo_last_label(pid) == (tid, None)
    assert store.label_set(pid, tid) is None and store.undo_last_label(pid) is None


def test_undo_brings_back_none_of_these(store, pid):
    (tid,) = store.add_texts(pid, ["fine"]).text_ids
    store.set_label_set(pid, tid, [])
    store.set_label_set(pid, tid, ["food"])
    assert store.undo_last_label(pid) == (tid, ())
    assert store.label_set(pid, tid) == () and store.none_count(pid) == 1


def test_table_mode_sets_one_set_on_several_rows_and_set_label_means_one_class(store, pid):
    ids = store.add_texts(pid, ["a", "b", "c"]).text_ids
    assert store.set_label_sets(pid, ids[:2], ["food", "staff"]) == 2
    store.set_label(pid, ids[2], "waiting")
    assert [r.labels for r in store.label_sets(pid)] == [("staff", "food")] * 2 + [("waiting",)]
    store.set_labels(pid, ids[:1], None)
    assert store.label_set(pid, ids[0]) is None


def test_set_refusals_write_nothing(store, pid):
    (tid,) = store.add_texts(pid, ["a"]).text_ids
    with pytest.raises(InputError, match="Unknown class.*'noise'.*'staff', 'waiting', 'food'"):
        store.set_label_set(pid, tid, ["staff", "noise"])
    with pytest.raises(InputError, match=r"list of class names.*\['staff'\]"):
        store.set_label_set(pid, tid, "staff")
    assert store.label_set(pid, tid) is None
    single = store.create_project("reviews", ["neg", "pos"]).id
    with pytest.raises(InputError, match="multi-label project"):
        store.add_labelled_sets(single, ["x"], [["neg"]])


def test_the_database_refuses_none_of_these_in_a_single_label_project(store):
    project = store.create_project("reviews", ["neg", "pos"])
    (tid,) = store.add_texts(project.id, ["x"]).text_ids
    with pytest.raises(sqlite3.IntegrityError, match="multi-label"):
        store.db.execute("INSERT INTO none_labels VALUES (?, ?, 'now')", [project.id, tid])


def test_add_labelled_sets_dedups_keeps_the_last_set_and_counts_changes(store, pid):
    result = store.add_labelled_sets(pid, ["a", " a ", "b", "", "c"],
                                     [["food"], ["staff"], [], None, None])
    assert (result.added, result.duplicates, result.empty, result.labelled) == (3, 1, 1, 2)
    assert [(r.text, r.labels) for r in store.label_sets(pid)] == [("a", ("staff",)), ("b", ())]
    assert store.add_labelled_sets(pid, ["a"], [["staff"]]).labelled == 0


def test_deleting_a_class_takes_it_off_sets_and_undo_puts_it_back(store, pid):
    ids = store.add_texts(pid, ["a", "b"]).text_ids
    store.set_label_set(pid, ids[0], ["staff", "food"])
    store.set_label_set(pid, ids[1], ["food"])
    store.delete_class(pid, "food")
    # b said no to every other class: with food gone it is none of these
    assert [r.labels for r in store.label_sets(pid)] == [("staff",), ()]
    store.undo_schema_change(pid)
    assert [r.labels for r in store.label_sets(pid)] == [("staff", "food"), ("food",)]


def test_merging_classes_unites_them_in_each_set_and_undo_splits_them(store, pid):
    (tid,) = store.add_texts(pid, ["a"]).text_ids
    store.add_class(pid, "noise")
    store.set_label_set(pid, tid, ["staff", "waiting", "noise"])
    store.merge_classes(pid, ["staff", "noise"], into="waiting")
    assert store.label_set(pid, tid) == ("waiting",)
    store.undo_schema_change(pid)
    assert store.label_set(pid, tid) == ("staff", "waiting", "noise")


def test_label_undo_refuses_to_restore_a_deleted_class_in_a_set(store, pid):
    (tid,) = store.add_texts(pid, ["a"]).text_ids
    store.set_label_set(pid, tid, ["food"])
    store.set_label_set(pid, tid, [])
    store.delete_class(pid, "food")
    with pytest.raises(InputError, match="'food'.*deleted or merged"):
        store.undo_last_label(pid)


def test_a_deleted_text_leaves_the_label_sets_and_comes_back_with_its_set(store, pid):
    ids = store.add_texts(pid, ["a", "b"]).text_ids
    store.set_label_set(pid, ids[0], [])
    store.delete_texts(pid, [ids[0]])
    assert store.label_sets(pid) == [] and store.none_count(pid) == 0
    store.undo_text_change(pid)
    assert store.label_set(pid, ids[0]) == ()


def test_a_version_5_workspace_migrates_keeping_everything(path):
    # issue 16: schema v6 adds none_labels and set columns to label_events
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    migrate(db, MIGRATIONS[:5])
    now = "2026-01-01T00:00:00+00:00"
    db.execute("INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)",
               [now, now])
    for class_id, name in ((1, "neg"), (2, "pos")):
        db.execute("INSERT INTO classes (id, project_id, name, position, created_at) "
                   "VALUES (?, 1, ?, ?, ?)", [class_id, name, class_id, now])
    for text_id, text in ((1, "good"), (2, "bad")):
        db.execute("INSERT INTO texts (id, project_id, hash, text, source, created_at) "
                   "VALUES (?, 1, ?, ?, 'typed', ?)", [text_id, f"h{text_id}", text, now])
    db.execute("INSERT INTO labels (project_id, text_id, class_id, updated_at) VALUES (1, 1, 2, ?)",
               [now])
    db.execute("INSERT INTO label_events (project_id, text_id, class_id, created_at) "
               "VALUES (1, 1, 2, ?)", [now])
    db.execute("INSERT INTO models (id, project_id, version, created_at, params, metrics, "
               "n_labels, state, label_generation) VALUES (1, 1, 1, ?, '{}', "
               "'{\"cv_accuracy\": 0.5}', 1, ?, 1)", [now, pack_arrays({"c": np.ones(2)})])
    db.close()
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION >= 6
        project = store.project(1)
        assert (project.task_type, store.classes(1)) == ("single_label", ["neg", "pos"])
        assert [(r.text, r.label) for r in store.labelled(1)] == [("good", "pos")]
        assert [r.text for r in store.unlabelled(1)] == ["bad"]
        model = store.latest_model(1)
        assert model.metrics == {"cv_accuracy": 0.5}
        np.testing.assert_array_equal(model.state["c"], [1, 1])
        assert store.undo_last_label(1) == (1, None)  # the old event still undoes
        multi = store.create_project("m", ["a", "b"], task_type="multi_label").id
        (tid,) = store.add_texts(multi, ["x"]).text_ids
        store.set_label_set(multi, tid, [])
        assert store.label_set(multi, tid) == ()
