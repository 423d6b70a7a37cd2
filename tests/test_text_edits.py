"""Deleting and editing single sentences (issue 15, item 8), against real SQLite files.

A wrong-column import ("0.5", "0.7", ...) used to stay in a project forever: texts
could be neither deleted nor edited.
"""

import sqlite3

import numpy as np
import pytest
from sqlite_utils import Database

from core.errors import InputError
from core.hashing import text_hash
from core.store import SCHEMA_VERSION, Store
from core.store.schema import MIGRATIONS, migrate, schema_version


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "work.db") as opened:
        yield opened


@pytest.fixture
def pid(store):
    return store.create_project("reviews", ["neg", "pos"]).id


def _ids(store, pid, texts):
    return store.add_texts(pid, texts).text_ids


def _predict(store, pid, text_ids):
    version = store.save_model(pid, params={}, metrics={}, state={"w": np.zeros(2)}, n_labels=2)
    model_id = store.models(pid)[version - 1].id
    store.save_predictions(model_id, [(t, "pos", 0.9, {"neg": 0.1, "pos": 0.9}) for t in text_ids])
    return model_id


def test_deleting_a_text_hides_it_with_its_label_and_prediction(store, pid):
    good, wrong, other = _ids(store, pid, ["good film", "0.5", "bad film"])
    store.set_label(pid, good, "pos")
    store.set_label(pid, wrong, "neg")
    model_id = _predict(store, pid, [other, wrong])
    assert store.delete_texts(pid, [wrong]) == 1
    assert [r.text for r in store.texts(pid)] == ["good film", "bad film"]
    assert [r.text for r in store.labelled(pid)] == ["good film"]
    assert store.label_counts(pid) == {"neg": 0, "pos": 1}
    assert [p.text for p in store.predictions(model_id)] == ["bad film"]
    assert store.text_id(pid, "0.5") is None
    with pytest.raises(InputError, match="deleted"):
        store.set_label(pid, wrong, "pos")


def test_undo_brings_a_deleted_text_back_with_its_label(store, pid):
    (text,) = _ids(store, pid, ["0.7"])
    store.set_label(pid, text, "neg")
    store.delete_texts(pid, [text])
    assert store.undo_text_change(pid) == "Restored the deleted sentence “0.7”."
    assert store.labelled(pid)[0][1:] == ("0.7", "neg")
    assert store.undo_text_change(pid) is None


def test_adding_a_deleted_text_again_brings_it_back_as_new(store, pid):
    (text,) = _ids(store, pid, ["0.5"])
    store.delete_texts(pid, [text])
    result = store.add_texts(pid, ["0.5"])
    assert (result.added, result.text_ids) == (1, [text])
    assert [r.text for r in store.texts(pid)] == ["0.5"]


def test_editing_keeps_the_label_changes_the_hash_and_drops_stale_predictions(store, pid):
    text, other = _ids(store, pid, ["godo film", "bad film"])
    store.set_label(pid, text, "pos")
    model_id = _predict(store, pid, [text, other])
    assert store.edit_text(pid, text, "  good film ") == "good film"
    assert store.labelled(pid)[0][1:] == ("good film", "pos")
    assert store.text_id(pid, "good film") == text
    (digest,) = store.db.execute("SELECT hash FROM texts WHERE id = ?", [text]).fetchone()
    assert digest == text_hash("good film")  # so the feature cache reads the new wording
    assert [p.text for p in store.predictions(model_id)] == ["bad film"]
    assert store.undo_text_change(pid) == "The sentence reads “godo film” again."
    assert store.labelled(pid)[0][1:] == ("godo film", "pos")


def test_an_edit_that_repeats_another_sentence_or_is_empty_is_refused(store, pid):
    text, _ = _ids(store, pid, ["good film", "bad film"])
    with pytest.raises(InputError, match="already has the sentence “bad film”"):
        store.edit_text(pid, text, "bad film")
    with pytest.raises(InputError, match="cannot be empty"):
        store.edit_text(pid, text, "   ")
    assert [r.text for r in store.texts(pid)] == ["good film", "bad film"]


def test_a_deleted_text_does_not_count_against_the_project_limit(tmp_path):
    from core.limits import Limits

    with Store.open(tmp_path / "w.db", limits=Limits(project_texts=2)) as store:
        pid = store.create_project("p", ["a", "b"]).id
        ids = _ids(store, pid, ["x", "y"])
        store.delete_texts(pid, ids[:1])
        assert store.add_texts(pid, ["z"]).added == 1


def test_a_version_2_workspace_migrates_and_keeps_its_texts_labels_and_models(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrate(db, MIGRATIONS[:2])
    now = "2026-11-01T00:00:00Z"
    db.execute("INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)",
               [now, now])
    for cid, name in ((1, "neg"), (2, "pos")):
        db.execute("INSERT INTO classes (id, project_id, name, position, created_at) "
                   "VALUES (?, 1, ?, ?, ?)", [cid, name, cid, now])
    db.execute("INSERT INTO texts (id, project_id, hash, text, source, created_at) "
               "VALUES (1, 1, ?, 'old text', 'typed', ?)", [text_hash("old text"), now])
    db.execute("INSERT INTO labels VALUES (1, 1, 2, ?)", [now])
    db.execute("INSERT INTO models (project_id, version, created_at, params, metrics, n_labels, "
               "state) VALUES (1, 1, ?, '{}', '{}', 1, x'')", [now])
    db.close()
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION
        assert store.labelled(1)[0][1:] == ("old text", "pos")
        assert [m.version for m in store.models(1)] == [1]
        store.delete_texts(1, [1])
        assert store.texts(1) == []
        store.undo_text_change(1)
        assert store.labelled(1)[0][1:] == ("old text", "pos")


def test_texts_deleted_together_come_back_together(store, pid):
    ids = _ids(store, pid, ["0.5", "0.7", "good film"])
    store.delete_texts(pid, ids[:1])
    store.delete_texts(pid, ids[1:])
    assert store.undo_text_change(pid) == "Restored 2 deleted sentences."
    assert [r.text for r in store.texts(pid)] == ["0.7", "good film"]


def test_a_deleted_text_leaves_the_pool_a_submit_predicts(store, pid):
    # a submit reads the pool as two columns (issue 14); a deleted text must not be in them
    ids = _ids(store, pid, ["0.5", "good film", "0.7", "bad film"])
    store.set_label(pid, ids[1], "pos")
    store.delete_texts(pid, [ids[0], ids[2]])
    assert store.unlabelled_columns(pid) == ([ids[3]], ["bad film"])
    assert [r.id for r in store.unlabelled(pid)] == [ids[3]]

