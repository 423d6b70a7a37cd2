"""Tests of core.store against real SQLite files under tmp_path (no mocks)."""

import io
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlite_utils import Database

from core.errors import InputError, StoreError, UnknownProject
from core.store import SCHEMA_VERSION, Store
from core.store.codec import pack_arrays, unpack_arrays
from core.hashing import prompt_hash, text_hash
from core.store.connection import transactional
from core.store.schema import MIGRATIONS, migrate, schema_version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "work.db"


@pytest.fixture
def store(path):
    with Store.open(path) as opened:
        yield opened


@pytest.fixture
def pid(store):
    return store.create_project("reviews", ["neg", "pos"]).id


def _count(store, table):
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# --- opening, pragmas, migrations -------------------------------------------------


def test_open_sets_wal_foreign_keys_synchronous_and_version(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert schema_version(store.db) == SCHEMA_VERSION == len(MIGRATIONS)


def test_memory_store_round_trips():
    with Store.open(":memory:") as store:
        project = store.create_project("m", ["a", "b"])
        assert store.project("m") == project


def test_migrate_applies_a_new_migration_and_keeps_rows(path):
    with Store.open(path) as store:
        store.create_project("old", ["a", "b"])

    def v_next(db):
        db.execute("ALTER TABLE projects ADD COLUMN colour TEXT NOT NULL DEFAULT 'blue'")

    db = Database(sqlite3.connect(path, isolation_level=None))
    assert migrate(db, (*MIGRATIONS, v_next)) == SCHEMA_VERSION + 1
    assert schema_version(db) == SCHEMA_VERSION + 1
    assert db.execute("SELECT name, colour FROM projects").fetchall() == [("old", "blue")]
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store.open(path)  # this code does not know the new migration


def test_failed_migration_leaves_the_file_unchanged(path):
    Store.open(path).close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    db = Database(sqlite3.connect(path, isolation_level=None))
    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(db, (*MIGRATIONS, broken))
    assert schema_version(db) == SCHEMA_VERSION
    assert "half_done" not in db.table_names()
    db.close()


@pytest.mark.parametrize("step", range(1, SCHEMA_VERSION))
def test_a_real_migration_that_fails_after_its_script_leaves_the_file_unchanged(path, step):
    # sqlite3's own executescript COMMITs an open transaction first; the migrations rely on
    # sqlite_utils running a script's statements inside BEGIN IMMEDIATE instead
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrate(db, MIGRATIONS[:step])
    before = sorted(db.execute("SELECT type, name FROM sqlite_master").fetchall())

    def fails_after(db):
        MIGRATIONS[step](db)
        raise RuntimeError("killed after the script")

    with pytest.raises(RuntimeError, match="killed after the script"):
        migrate(db, (*MIGRATIONS[:step], fails_after))
    assert not db.conn.in_transaction
    assert schema_version(db) == step
    assert sorted(db.execute("SELECT type, name FROM sqlite_master").fetchall()) == before
    db.close()
    Store.open(path).close()  # and the full migration still runs on it afterwards


def test_configure_accepts_wal_switched_on_by_another_process_meanwhile(path, monkeypatch):
    # seen once with five processes opening a new file together: one checked the journal
    # mode, another switched the file to WAL, and the first one's switch stayed locked
    from core.store.schema import configure

    def raced(self):
        other = sqlite3.connect(path)  # the other process wins the race
        other.execute("PRAGMA journal_mode=wal")
        other.close()
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Database, "enable_wal", raced)
    db = Database(sqlite3.connect(path, isolation_level=None))
    configure(db, wal=True)
    assert db.journal_mode == "wal"
    db.close()

    def locked(self):
        raise sqlite3.OperationalError("database is locked")

    other = str(path) + ".other"
    monkeypatch.setattr(Database, "enable_wal", locked)
    monkeypatch.setattr("core.store.schema._BUSY_TIMEOUT_MS", 200)
    db = Database(sqlite3.connect(other, isolation_level=None))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        configure(db, wal=True)  # still not WAL: the lock is reported, not hidden
    db.close()


def test_configure_waits_out_a_wal_switch_refused_at_once(path, monkeypatch):
    # seen with five processes opening a new file on a busy box: SQLite refused one's
    # switch to WAL at once, without the busy handler, while no one had switched yet
    from core.store.schema import configure

    real, refusals = Database.enable_wal, []

    def refused_twice(self):
        if len(refusals) < 2:
            refusals.append(self.journal_mode)
            raise sqlite3.OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(Database, "enable_wal", refused_twice)
    db = Database(sqlite3.connect(path, isolation_level=None))
    configure(db, wal=True)
    assert refusals == ["delete", "delete"]
    assert db.journal_mode == "wal"
    db.close()


def test_open_creates_the_schema_in_an_empty_file_and_reopening_writes_nothing(path):
    sqlite3.connect(path).close()  # an existing, empty SQLite file is schema version 0
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION
        assert "label_events" in store.db.table_names()
    with Store.open(path) as store:
        # opening a current file must stay cheap: no migration, no write
        assert store.db.conn.total_changes == 0


def test_newer_schema_version_is_refused(path):
    Store.open(path).close()
    conn = sqlite3.connect(path)
    newer = str(SCHEMA_VERSION + 1)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [newer])
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="written by a newer tenshot"):
        Store.open(path)


def test_foreign_sqlite_file_is_refused(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a tenshot workspace.*invoices"):
        Store.open(path)


def test_second_store_sees_the_first_stores_writes(path, store, pid):
    with Store.open(path) as other:
        text_id = other.add_texts(pid, ["seen by both"]).text_ids[0]
        other.set_label(pid, text_id, "pos")
    assert store.labelled(pid) == [(text_id, "seen by both", "pos")]


def test_label_survives_kill_9(path, store, pid):
    text_id = store.add_texts(pid, ["keep me"]).text_ids[0]
    store.close()
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from core.store import Store
        store = Store.open({str(path)!r})
        store.set_label({pid}, {text_id}, "pos")
        print("ok", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "ok"
    with Store.open(path) as reopened:
        assert reopened.labelled(pid) == [(text_id, "keep me", "pos")]
        assert reopened.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_write_retries_while_another_connection_holds_the_lock(path, store, pid):
    store.db.execute("PRAGMA busy_timeout = 0")  # make the retry loop, not SQLite, do the waiting
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.15, blocker.rollback).start()
    assert store.add_texts(pid, ["after the lock"]).added == 1
    blocker.close()


def test_write_gives_up_with_a_plain_message_when_locked_for_long(path, store, pid):
    store.db.execute("PRAGMA busy_timeout = 0")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="stayed locked"):
        store.add_texts(pid, ["never"])
    blocker.rollback()
    blocker.close()
    assert store.texts(pid) == []


class _FailingStore(Store):
    @transactional
    def add_then_fail(self, project_id):
        self.add_texts(project_id, ["half"])  # joins this method's transaction
        raise InputError("stopped halfway")


def test_an_error_halfway_through_an_action_writes_nothing(path, store, pid):
    with _FailingStore.open(path) as failing:
        with pytest.raises(InputError, match="stopped halfway"):
            failing.add_then_fail(pid)
        assert failing.texts(pid) == []
    assert store.texts(pid) == []


def test_row_types_are_hashable(store, pid):
    # frozen rows with dict fields must still work as set members and cache keys
    assert len({store.project(pid), store.project(pid)}) == 1


# --- projects ----------------------------------------------------------------------


def test_project_round_trip(store):
    created = store.create_project("  news ", [" world", "sport "], settings={"layer": 12})
    assert created.name == "news" and created.task_type == "single_label"
    assert created.settings == {"layer": 12}
    assert store.project("news") == created == store.project(created.id)
    assert store.classes(created.id) == ["world", "sport"]
    other = store.create_project("other", ["x", "y"])
    assert store.projects() == [created, other]


@pytest.mark.parametrize(
    ("name", "classes", "message"),
    [
        ("  ", ["a", "b"], "project name must be non-empty"),
        ("p", ["a"], "at least 2 classes, but got 1"),
        ("p", "ab", "must be a list of names, but got the text 'ab'"),
        ("p", ["a", " "], "class name must be non-empty"),
        ("p", ["a", "b", " a"], "'a' appears more than once"),
        ("reviews", ["a", "b"], "A project called 'reviews' already exists"),
    ],
)
def test_create_project_refusals(store, pid, name, classes, message):
    with pytest.raises(InputError, match=message):
        store.create_project(name, classes)
    assert [p.name for p in store.projects()] == ["reviews"]


def test_unknown_project_lists_existing_names(store, pid):
    with pytest.raises(UnknownProject, match="called 'nope'; the projects are 'reviews'"):
        store.project("nope")
    with pytest.raises(UnknownProject, match="no project with id 99"):
        store.project(99)
    with pytest.raises(UnknownProject, match="id 99"):
        store.classes(99)


def test_rename_project(store, pid):
    store.create_project("taken", ["a", "b"])
    assert store.rename_project(pid, " films ").name == "films"
    assert store.project("films").id == pid
    with pytest.raises(InputError, match="'taken' already exists"):
        store.rename_project(pid, "taken")


def test_update_settings_merges(store, pid):
    store.update_settings(pid, {"layer": 3, "prompt": "p"})
    store.update_settings(pid, {"layer": 7})
    assert store.project(pid).settings == {"layer": 7, "prompt": "p"}


def test_delete_project_cascades_but_keeps_shared_features(store, pid):
    keep = store.create_project("keep", ["a", "b"]).id
    ids = store.add_texts(pid, ["x", "y"], labels=["pos", "neg"]).text_ids
    store.add_texts(keep, ["z"], labels=["a"])
    store.add_class(pid, "mid")  # leaves a schema event to cascade
    model_id = _save_model(store, pid).id
    store.save_predictions(model_id, [(ids[0], "pos", 0.9, {"neg": 0.1, "pos": 0.9})])
    store.start_job(pid, "embed", 2)
    store.put_features("fp", None, "mean", {text_hash("x"): np.ones((2, 3), np.float32)})
    store.delete_project(pid)
    assert [p.name for p in store.projects()] == ["keep"]
    counts = {t: _count(store, t) for t in ["classes", "texts", "labels", "label_events"]}
    assert counts == {"classes": 2, "texts": 1, "labels": 1, "label_events": 1}
    for table in ["models", "predictions", "jobs", "schema_events"]:
        assert _count(store, table) == 0
    assert _count(store, "features") == 1
    with pytest.raises(UnknownProject):
        store.delete_project(pid)


# --- texts ---------------------------------------------------------------------------


def test_add_texts_strips_dedups_and_aligns_ids(store, pid):
    first = store.add_texts(pid, ["b"], source="csv")
    result = store.add_texts(pid, ["  a ", "", "b", "a", "   ", "c"])
    assert (result.added, result.duplicates, result.empty) == (2, 2, 2)
    assert result.text_ids == [first.text_ids[0] + 1, first.text_ids[0], first.text_ids[0] + 2]
    assert store.texts(pid) == [(1, "b"), (2, "a"), (3, "c")]
    assert store.text_id(pid, " a") == 2 and store.text_id(pid, "zzz") is None
    sources = store.db.execute("SELECT source FROM texts ORDER BY id").fetchall()
    assert sources == [("csv",), ("typed",), ("typed",)]


def test_count_new_texts_counts_as_add_texts_does_and_writes_nothing(store, pid):
    # issue 15 bug 5: the import button must say what the import will do
    store.add_texts(pid, ["b"])
    texts = ["  a ", "", "b", "a", "   ", "c"]
    preview = store.count_new_texts(pid, texts)
    assert store.texts(pid) == [(1, "b")]
    result = store.add_texts(pid, texts)
    assert (preview.added, preview.duplicates, preview.empty) == (result.added, result.duplicates,
                                                                 result.empty) == (2, 2, 2)
    assert store.count_new_texts(pid, texts).added == 0


def test_same_text_in_two_projects_is_two_rows_with_one_hash(store, pid):
    other = store.create_project("other", ["a", "b"]).id
    store.add_texts(pid, ["shared"])
    store.add_texts(other, ["shared"])
    hashes = store.db.execute("SELECT DISTINCT hash FROM texts").fetchall()
    assert hashes == [(text_hash("shared"),)]
    assert text_hash("hi").startswith("8f434346")


def test_add_texts_with_labels(store, pid):
    store.add_texts(pid, ["old"])
    result = store.add_texts(pid, ["new", "old", "plain", "new"], labels=["pos", "neg", None, None])
    assert result.added == 2
    assert store.labelled(pid) == [(1, "old", "neg"), (2, "new", "pos")]
    assert store.unlabelled(pid) == [(3, "plain")]


def test_add_texts_refuses_unknown_labels_before_writing(store, pid):
    with pytest.raises(InputError, match="Unknown label.*'meh'.*classes are 'neg', 'pos'"):
        store.add_texts(pid, ["x", "y"], labels=["pos", "meh"])
    with pytest.raises(InputError, match="2 texts but 1 labels"):
        store.add_texts(pid, ["x", "y"], labels=["pos"])
    assert store.texts(pid) == []


# --- labels and undo -------------------------------------------------------------------


def test_labels_round_trip_and_counts(store, pid):
    ids = store.add_texts(pid, ["t1", "t2", "t3"]).text_ids
    assert store.label_counts(pid) == {"neg": 0, "pos": 0}
    store.set_label(pid, ids[1], "pos")
    store.set_labels(pid, [ids[0], ids[2]], "neg")
    assert store.labelled(pid) == [(1, "t1", "neg"), (2, "t2", "pos"), (3, "t3", "neg")]
    assert store.label_counts(pid) == {"neg": 2, "pos": 1}
    store.set_label(pid, ids[0], None)
    assert store.unlabelled(pid) == [(1, "t1")]
    assert list(store.label_counts(pid).values()) == [1, 1]


def test_set_label_refusals(store, pid):
    other = store.create_project("other", ["a", "b"]).id
    foreign = store.add_texts(other, ["elsewhere"]).text_ids[0]
    mine = store.add_texts(pid, ["here"]).text_ids[0]
    with pytest.raises(InputError, match="no class 'maybe'.*'neg', 'pos'"):
        store.set_label(pid, mine, "maybe")
    with pytest.raises(InputError, match=f"Text {foreign} is not in project 'reviews'"):
        store.set_labels(pid, [mine, foreign], "pos")
    assert store.labelled(pid) == []  # the bulk call wrote nothing


def test_undo_last_label_walks_back_in_order(store, pid):
    a, b = store.add_texts(pid, ["a", "b"]).text_ids
    store.set_label(pid, a, "pos")
    store.set_label(pid, b, "neg")
    store.set_label(pid, a, "neg")
    store.set_label(pid, a, "neg")  # unchanged: records nothing to undo
    assert store.undo_last_label(pid) == (a, "pos")
    assert store.undo_last_label(pid) == (b, None)
    assert store.undo_last_label(pid) == (a, None)
    assert store.undo_last_label(pid) is None
    assert store.labelled(pid) == []


def test_undo_reverts_only_the_labellers_own_changes(store, pid):
    # regression: undo took the project's newest event, so one tab undid another's label
    a1, a2, b1 = store.add_texts(pid, ["a1", "a2", "b1"]).text_ids
    store.set_label(pid, a1, "pos", session="tab-a")
    store.set_label(pid, a2, "neg", session="tab-a")
    store.set_label(pid, b1, "pos", session="tab-b")
    store.set_label(pid, b1, "pos")  # unchanged: the API's labeller has nothing to undo
    assert store.undo_last_label(pid) is None
    assert store.undo_last_label(pid, session="tab-a") == (a2, None)
    assert {r.text: r.label for r in store.labelled(pid)} == {"a1": "pos", "b1": "pos"}
    assert store.undo_last_label(pid, session="tab-c") is None
    assert store.undo_last_label(pid, session="tab-b") == (b1, None)
    assert store.undo_last_label(pid, session="tab-a") == (a1, None)
    assert store.labelled(pid) == []


def test_undo_refuses_to_overwrite_a_later_change_by_someone_else(store, pid):
    (text_id,) = store.add_texts(pid, ["shared"]).text_ids
    store.set_label(pid, text_id, "pos", session="tab-a")
    store.set_label(pid, text_id, "neg", session="tab-b")
    with pytest.raises(InputError, match="was changed since .* would overwrite that change"):
        store.undo_last_label(pid, session="tab-a")
    assert store.labelled(pid)[0].label == "neg"  # tab-b's acknowledged label stays
    assert store.undo_last_label(pid, session="tab-b") == (text_id, "pos")
    # tab-b's change is undone, so tab-a's own label is the one in effect again
    assert store.undo_last_label(pid, session="tab-a") == (text_id, None)


def test_label_generation_counts_every_change_of_the_labels(store, pid):
    a, b = store.add_texts(pid, ["a", "b"]).text_ids
    store.add_class(pid, "meh")
    seen = [store.label_generation(pid)]
    for change in (lambda: store.set_label(pid, a, "pos"), lambda: store.set_label(pid, a, "neg"),
                   lambda: store.undo_last_label(pid), lambda: store.set_labels(pid, [a, b], "neg"),
                   lambda: store.add_texts(pid, ["c"], labels=["pos"]),
                   lambda: store.delete_class(pid, "neg")):
        change()
        seen.append(store.label_generation(pid))
    assert all(later > earlier for earlier, later in zip(seen, seen[1:])), seen
    store.set_label(pid, a, None)  # a's label went with its class: nothing changes
    assert store.label_generation(pid) == seen[-1]


def test_add_texts_counts_only_labels_that_changed(store, pid):
    texts, labels = ["a", "b", "c"], ["pos", "neg", None]
    assert store.add_texts(pid, texts, labels=labels).labelled == 2
    assert store.add_texts(pid, texts, labels=labels).labelled == 0
    assert store.add_texts(pid, texts, labels=["pos", "pos", "neg"]).labelled == 2


def test_single_label_is_enforced_by_the_database(store, pid):
    text_id = store.add_texts(pid, ["one"], labels=["pos"]).text_ids[0]
    neg = store.class_ids(pid)["neg"]
    with pytest.raises(sqlite3.IntegrityError, match="only one label"):
        store.db.execute(
            "INSERT INTO labels (project_id, text_id, class_id, updated_at) "
            "VALUES (?, ?, ?, 'now')",
            [pid, text_id, neg],
        )


# --- classes and schema undo -------------------------------------------------------------


def test_add_and_rename_class_then_undo(store, pid):
    text_id = store.add_texts(pid, ["x"], labels=["pos"]).text_ids[0]
    store.add_class(pid, " mixed ")
    store.rename_class(pid, "pos", "positive")
    assert store.classes(pid) == ["neg", "positive", "mixed"]
    assert store.labelled(pid) == [(text_id, "x", "positive")]
    with pytest.raises(InputError, match="already has a class called 'neg'"):
        store.rename_class(pid, "mixed", "neg")
    assert store.undo_schema_change(pid) == "Renamed class 'positive' back to 'pos'."
    assert store.labelled(pid) == [(text_id, "x", "pos")]
    assert store.undo_schema_change(pid) == "Removed the added class 'mixed'."
    assert store.classes(pid) == ["neg", "pos"]
    assert store.undo_schema_change(pid) is None


def test_merge_carries_labels_and_undo_splits_them_back(store, pid):
    store.add_class(pid, "meh")
    ids = store.add_texts(pid, ["a", "b", "c"], labels=["meh", "neg", "pos"]).text_ids
    store.merge_classes(pid, ["meh"], "neg")
    assert store.classes(pid) == ["neg", "pos"]
    assert store.label_counts(pid) == {"neg": 2, "pos": 1}
    assert store.undo_schema_change(pid) == "Split 'meh' back out of 'neg' (1 labels)."
    assert store.labelled(pid) == [(ids[0], "a", "meh"), (ids[1], "b", "neg"), (ids[2], "c", "pos")]


def test_delete_class_removes_labels_and_undo_restores_them(store, pid):
    store.add_class(pid, "meh")
    ids = store.add_texts(pid, ["a", "b", "c"], labels=["meh", "meh", "pos"]).text_ids
    store.delete_class(pid, "meh")
    assert store.classes(pid) == ["neg", "pos"]
    assert store.unlabelled(pid) == [(ids[0], "a"), (ids[1], "b")]
    assert store.unlabelled_columns(pid) == ([ids[0], ids[1]], ["a", "b"])
    store.set_label(pid, ids[1], "neg")  # relabelled after the delete: undo must keep this
    assert store.undo_schema_change(pid) == "Restored class 'meh' (1 labels)."
    assert store.labelled(pid) == [(ids[0], "a", "meh"), (ids[1], "b", "neg"), (ids[2], "c", "pos")]


def test_class_changes_refuse_to_go_below_two_classes(store, pid):
    with pytest.raises(InputError, match="Cannot delete 'neg'.*leave 1 class"):
        store.delete_class(pid, "neg")
    with pytest.raises(InputError, match="Cannot merge 1 classes away.*leave 1 class"):
        store.merge_classes(pid, ["neg"], "pos")
    with pytest.raises(InputError, match="other than 'pos'"):
        store.merge_classes(pid, ["pos"], "pos")
    assert store.classes(pid) == ["neg", "pos"]


def test_deleted_class_name_can_be_reused(store, pid):
    store.add_class(pid, "meh")
    store.delete_class(pid, "meh")
    store.add_class(pid, "meh")
    assert store.classes(pid) == ["neg", "pos", "meh"]


def test_label_undo_refuses_to_restore_a_deleted_class(store, pid):
    store.add_class(pid, "meh")
    text_id = store.add_texts(pid, ["a"], labels=["meh"]).text_ids[0]
    store.set_label(pid, text_id, "pos")
    store.delete_class(pid, "meh")
    with pytest.raises(InputError, match="class 'meh', which was deleted or merged"):
        store.undo_last_label(pid)


# --- features ----------------------------------------------------------------------------


def test_features_round_trip_bit_exact(store):
    rng = np.random.default_rng(0)
    items = {text_hash(f"t{i}"): rng.standard_normal((4, 6)).astype(np.float32) for i in range(3)}
    items[text_hash("t0")][0, 0] = np.float32(1e-45)  # a subnormal must survive too
    store.put_features("fp", None, "mean", items)
    got = store.get_features("fp", "", "mean", [*items, text_hash("missing")])
    assert set(got) == set(items)
    for key, array in items.items():
        assert got[key].dtype == np.float32 and got[key].shape == (4, 6)
        assert got[key].tobytes() == array.tobytes()
    assert store.get_features("fp", "other prompt", "mean", list(items)) == {}
    assert store.get_features("fp", None, "max", list(items)) == {}


def test_features_many_hits_load_fast(store):
    rng = np.random.default_rng(1)
    block = rng.standard_normal((1000, 31, 576), dtype=np.float32)
    items = {text_hash(str(i)): block[i] for i in range(1000)}
    store.put_features("fp", "prompt", "mean", items)
    start = time.perf_counter()
    got = store.get_features("fp", "prompt", "mean", list(items))
    elapsed = time.perf_counter() - start
    assert len(got) == 1000  # spans two query chunks
    assert np.array_equal(got[text_hash("999")], items[text_hash("999")])
    assert elapsed < 1.0


def test_put_features_refuses_wrong_shape(store):
    with pytest.raises(InputError, match=r"shape \(n_layers, hidden_size\), but got shape \(5,\)"):
        store.put_features("fp", None, "mean", {"h": np.zeros(5, np.float32)})


# --- arrays, models, predictions, jobs ---------------------------------------------------------


def test_pack_arrays_round_trip_without_pickle():
    # "file" would collide with np.savez's own argument name; pack_arrays must not care
    arrays = {"coef": np.arange(6.0).reshape(2, 3), "file": np.array([1, 2], np.int8)}
    blob = pack_arrays(arrays)
    back = unpack_arrays(blob)
    assert list(back) == ["coef", "file"]
    for key in arrays:
        assert back[key].dtype == arrays[key].dtype
        np.testing.assert_array_equal(back[key], arrays[key])
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # plain .npz format
        np.testing.assert_array_equal(npz["coef"], arrays["coef"])
    with pytest.raises(StoreError, match="holds Python objects"):
        pack_arrays({"bad": np.array([{}], dtype=object)})
    with pytest.raises(StoreError, match="damaged"):
        unpack_arrays(b"not a zip")


def _save_model(store, pid, **metrics):
    version = store.save_model(
        pid,
        params={"C": 0.5, "layers": [3, 4]},
        metrics={"accuracy": np.float64(0.75), **metrics},
        state={"coef": np.full((2, 3), 0.25, np.float32), "intercept": np.array([0.1, -0.1])},
        n_labels=12,
    )
    return store.model(pid, version)


def test_models_round_trip(store, pid):
    first = _save_model(store, pid)
    second = _save_model(store, pid, f1=np.int64(1))
    assert (first.version, second.version) == (1, 2)
    latest = store.latest_model(pid)
    assert (latest.id, latest.params, latest.metrics) == (second.id, {"C": 0.5, "layers": [3, 4]},
                                                          {"accuracy": 0.75, "f1": 1})
    assert latest.n_labels == 12
    np.testing.assert_array_equal(latest.state["coef"], np.full((2, 3), 0.25, np.float32))
    np.testing.assert_array_equal(latest.state["intercept"], [0.1, -0.1])
    assert [(m.version, m.state) for m in store.models(pid)] == [(1, None), (2, None)]
    with pytest.raises(StoreError, match=r"no model version 7; its versions are \[1, 2\]"):
        store.model(pid, 7)
    other = store.create_project("other", ["a", "b"]).id
    assert store.latest_model(other) is None


def test_a_model_trained_on_older_labels_is_not_published(store, pid):
    # regression: v13 (18 labels) was saved after v12 (19 labels) and became "the latest"
    def save(generation, n_labels):
        return store.save_model(pid, params={}, metrics={}, state={"c": np.zeros(1)},
                                n_labels=n_labels, label_generation=generation)

    assert save(19, 19) == 1
    assert save(18, 18) is None  # finished last, trained on older labels: not kept
    assert [(m.version, m.n_labels) for m in store.models(pid)] == [(1, 19)]
    assert store.latest_model(pid).n_labels == 19
    assert save(19, 19) == 2  # the same labels again (two tabs, one submit) are kept
    assert save(20, 20) == 3
    assert save(None, 5) == 4  # a caller that says nothing is published as before


def test_predictions_round_trip(store, pid):
    ids = store.add_texts(pid, ["good", "bad"]).text_ids
    model_id = _save_model(store, pid).id
    rows = [
        (ids[1], "neg", 0.8, {"neg": 0.8, "pos": 0.2}),
        (ids[0], "pos", 0.6, {"neg": 0.4, "pos": 0.6}),
    ]
    store.save_predictions(model_id, rows)
    got = store.predictions(model_id)
    assert [(p.text_id, p.text, p.label, p.confidence, p.probs) for p in got] == [
        (ids[0], "good", "pos", 0.6, {"neg": 0.4, "pos": 0.6}),
        (ids[1], "bad", "neg", 0.8, {"neg": 0.8, "pos": 0.2}),
    ]
    bad = [(ids[0], "neg", 0.5, {}), (ids[1], "maybe", 0.5, {})]
    with pytest.raises(InputError, match="class 'maybe'"):
        store.save_predictions(model_id, bad)
    assert store.predictions(model_id)[0].label == "pos"  # the failed call changed nothing


def test_jobs_round_trip(store, pid):
    job_id = store.start_job(pid, "embed", 10)
    store.update_job(job_id, done=4, message="embedding")
    store.update_job(job_id, done=10, status="done")
    job = store.job(job_id)
    assert (job.kind, job.status, job.done, job.total) == ("embed", "done", 10, 10)
    assert job.message == "embedding"  # kept: the last update gave no message
    newer = store.start_job(pid, "embed", 3)
    store.start_job(pid, "shap", 1)
    assert store.latest_job(pid, "embed").id == newer
    assert store.latest_job(pid, "bootstrap") is None
    with pytest.raises(InputError, match="must be one of"):
        store.update_job(job_id, done=1, status="paused")
    with pytest.raises(StoreError, match="no job with id 999"):
        store.job(999)


def test_running_jobs_and_interrupt_job(store, pid):
    job_id = store.start_job(pid, "embed", 10, pid=4242, process_started=1234.5)
    done = store.start_job(pid, "embed", 1)
    store.update_job(done, done=1, status="done")
    running = store.running_jobs()
    assert [(j.id, j.pid, j.process_started) for j in running] == [(job_id, 4242, 1234.5)]
    assert store.interrupt_job(job_id, "stopped") is True
    assert store.interrupt_job(job_id, "again") is False  # only a running job is interrupted
    assert store.interrupt_job(done, "late") is False
    job = store.job(job_id)
    assert (job.status, job.message) == ("interrupted", "stopped")
    assert store.running_jobs() == []


def test_a_version_2_workspace_migrates_keeping_everything(path):
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    migrate(db, MIGRATIONS[:2])
    now = "2026-01-01T00:00:00+00:00"
    db.execute("INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)",
               [now, now])
    for class_id, name in ((1, "neg"), (2, "pos")):
        db.execute("INSERT INTO classes (id, project_id, name, position, created_at) "
                   "VALUES (?, 1, ?, ?, ?)", [class_id, name, class_id, now])
    db.execute("INSERT INTO texts (id, project_id, hash, text, source, created_at) "
               "VALUES (1, 1, 'h', 'good', 'typed', ?)", [now])
    db.execute("INSERT INTO labels VALUES (1, 1, 2, ?)", [now])
    db.execute("INSERT INTO label_events (project_id, text_id, class_id, created_at) "
               "VALUES (1, 1, 2, ?)", [now])
    db.execute("INSERT INTO models (project_id, version, created_at, params, metrics, n_labels, "
               "state) VALUES (1, 1, ?, '{}', '{}', 1, ?)", [now, pack_arrays({"c": np.ones(2)})])
    db.execute("INSERT INTO jobs (project_id, kind, status, done, total, created_at, updated_at) "
               "VALUES (1, 'embed', 'running', 3, 9, ?, ?)", [now, now])
    db.close()
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION >= 3
        assert store.classes(1) == ["neg", "pos"]
        assert [(r.text, r.label) for r in store.labelled(1)] == [("good", "pos")]
        assert store.latest_model(1).version == 1
        job = store.running_jobs()[0]
        assert (job.done, job.total, job.pid, job.process_started) == (3, 9, None, None)
        # an old event has no labeller: the API's (session None) undo reaches it
        assert store.undo_last_label(1, session="tab") is None
        assert store.undo_last_label(1) == (1, None)
        generation = store.label_generation(1)
        assert generation == 1  # the undo changed a label
        assert store.interrupt_job(job.id, "gone")  # the new status is allowed
        assert store.save_model(1, params={}, metrics={}, state={}, n_labels=0,
                                label_generation=generation) == 2


def _v3_workspace_with_predictions(path, n_models: int) -> None:
    """A version-3 file: 2 classes, 3 texts (1 labelled), n_models versions with old-style rows."""
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    migrate(db, MIGRATIONS[:3])
    now = "2026-01-01T00:00:00+00:00"
    db.execute("INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)",
               [now, now])
    for class_id, name in ((1, "neg"), (2, "pos")):
        db.execute("INSERT INTO classes (id, project_id, name, position, created_at) "
                   "VALUES (?, 1, ?, ?, ?)", [class_id, name, class_id, now])
    for text_id, text in ((1, "good"), (2, "bad"), (3, "meh")):
        db.execute("INSERT INTO texts (id, project_id, hash, text, source, created_at) "
                   "VALUES (?, 1, ?, ?, 'typed', ?)", [text_id, f"h{text_id}", text, now])
    db.execute("INSERT INTO labels (project_id, text_id, class_id, updated_at) VALUES (1, 1, 2, ?)",
               [now])
    for version in range(1, n_models + 1):
        db.execute("INSERT INTO models (id, project_id, version, created_at, params, metrics, "
                   "n_labels, state, label_generation) VALUES (?, 1, ?, ?, '{}', ?, 1, ?, ?)",
                   [version, version, now, f'{{"cv_accuracy": 0.{version}}}',
                    pack_arrays({"c": np.full(2, version)}), version])
        for text_id, class_id in ((2, 1), (3, 2)):
            p = 0.5 + version / 10
            db.execute("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)",
                       [version, text_id, class_id, p,
                        f'{{"neg": {p if class_id == 1 else 1 - p}, '
                        f'"pos": {p if class_id == 2 else 1 - p}}}'])
    db.close()


def test_a_version_3_workspace_migrates_keeping_labels_classes_and_every_model(path):
    # issue 14: predictions become one blob per model version, kept for the newest two
    _v3_workspace_with_predictions(path, n_models=3)
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION >= 4
        assert store.classes(1) == ["neg", "pos"]
        assert [(r.text, r.label) for r in store.labelled(1)] == [("good", "pos")]
        models = store.models(1)
        assert [(m.version, m.metrics) for m in models] == [
            (v, {"cv_accuracy": v / 10}) for v in (1, 2, 3)]
        np.testing.assert_array_equal(store.model(1, 1).state["c"], [1, 1])  # coefficients kept
        assert store.predictions(models[0].id) == []  # the oldest version's are dropped
        for m in models[1:]:
            p = 0.5 + m.version / 10
            got = [(x.text_id, x.text, x.label, x.confidence, x.probs) for x in store.predictions(m.id)]
            assert got == [(2, "bad", "neg", p, {"neg": p, "pos": 1 - p}),
                           (3, "meh", "pos", p, {"neg": 1 - p, "pos": p})]
        assert _count(store, "predictions") == 2
        assert store.label_generation(1) == 1 and store.save_model(
            1, params={}, metrics={}, state={}, n_labels=1, label_generation=3) == 4


def test_only_the_two_newest_versions_keep_predictions(store, pid):
    # issue 14: every submit stored a full copy of the pool's predictions per model version
    ids = store.add_texts(pid, ["good", "bad"]).text_ids
    model_ids = []
    for i in range(4):
        model_ids.append(_save_model(store, pid, cv_accuracy=i / 4).id)
        probs = np.array([[0.1 + i / 10, 0.9 - i / 10], [0.7, 0.3]])
        store.save_probabilities(model_ids[-1], ids, ["neg", "pos"], probs)
    assert [len(store.predictions(m)) for m in model_ids] == [0, 0, 2, 2]
    assert [m.metrics["cv_accuracy"] for m in store.models(pid)] == [0, 0.25, 0.5, 0.75]
    assert _count(store, "predictions") == 2
    latest = store.predictions(model_ids[-1])
    assert [(p.text_id, p.label) for p in latest] == [(ids[0], "pos"), (ids[1], "neg")]
    assert latest[0].confidence == pytest.approx(0.6) and latest[0].probs == pytest.approx(
        {"neg": 0.4, "pos": 0.6})


# --- explanation results -----------------------------------------------------------


def test_explanations_round_trip_replace_and_cascade(path):
    store = Store.open(path)
    project = store.create_project("p", ["a", "b"])
    version = store.save_model(project.id, params={}, metrics={}, state={"w": np.zeros(2)}, n_labels=0)
    model_id = store.model(project.id, version).id
    store.put_explanation(model_id, "shap", "h1", {"base": [0.5]}, {"values": np.arange(6.0).reshape(2, 3)})
    params, arrays = store.get_explanation(model_id, "shap", "h1")
    assert params == {"base": [0.5]}
    np.testing.assert_array_equal(arrays["values"], np.arange(6.0).reshape(2, 3))
    store.put_explanation(model_id, "shap", "h1", {"base": [1.0]}, {"values": np.ones(1)})
    assert store.get_explanation(model_id, "shap", "h1")[0] == {"base": [1.0]}
    assert store.get_explanation(model_id, "shap", "other") is None
    assert store.explanation_keys(model_id, "shap") == ["h1"]
    with pytest.raises(StoreError):
        store.put_explanation(model_id + 99, "shap", "h1", {}, {})
    store.delete_project(project.id)
    assert store.db.execute("SELECT COUNT(*) FROM explanations").fetchone()[0] == 0


def test_new_classes_are_created_with_the_texts_or_not_at_all(store, monkeypatch):
    from core.limits import Limits

    p = store.create_project("p", ["neg", "pos"])
    monkeypatch.setattr(store, "limits", Limits(project_texts=3))
    with pytest.raises(InputError, match="Nothing was added"):
        store.add_texts(p.id, ["a", "b", "c", "d"], labels=["meh", "pos", "wow", None],
                        new_classes=["meh", "wow"])
    assert store.classes(p.id) == ["neg", "pos"] and store.texts(p.id) == []
    result = store.add_texts(p.id, ["a", "b", "c"], labels=["meh", "pos", "meh"],
                             new_classes=["meh", "pos", "meh"])
    assert result.added == 3 and store.classes(p.id) == ["neg", "pos", "meh"]
    assert store.label_counts(p.id) == {"neg": 0, "pos": 1, "meh": 2}


def test_compact_features_round_trip_in_half_the_bytes(store):
    # issue 14: every text cached 31 x 576 float32 (71 kB) per pooling
    rng = np.random.default_rng(2)
    items = {text_hash(f"t{i}"): rng.standard_normal((31, 576)).astype(np.float32) * 30
             for i in range(3)}
    items[text_hash("huge")] = np.full((31, 576), 1e6, np.float32)  # beyond float16's range
    store.put_features("fp", None, "mean", items, dtype="float16")
    got = store.get_features("fp", None, "mean", list(items))
    for key, array in items.items():
        assert got[key].dtype == np.float32 and got[key].shape == (31, 576)
        np.testing.assert_allclose(got[key], array, rtol=1e-3, atol=1e-3)
    sizes = dict(store.db.execute("SELECT text_hash, length(data) FROM features").fetchall())
    assert sizes[text_hash("t0")] == 31 * 576 * 2 and sizes[text_hash("huge")] == 31 * 576 * 4
    with pytest.raises(InputError, match="float32 or float16"):
        store.put_features("fp", None, "mean", items, dtype="int8")


def test_band_only_features_round_trip_with_nan_in_the_rows_not_kept(store):
    # issue 14: a 100,000-text pool kept all 31 layers (36 kB a text in float16, 3.75 GB)
    rng = np.random.default_rng(3)
    items = {text_hash(f"t{i}"): rng.standard_normal((31, 576)).astype(np.float32) for i in range(3)}
    band = (3, 6, 8, 9, 12, 15, 18, 21, 22, 24, 27, 30)
    store.put_features("fp", None, "mean", items, dtype="float16", layers=lambda n: band)
    got = store.get_features("fp", None, "mean", list(items))
    others = [i for i in range(31) if i not in band]
    for key, array in items.items():
        assert got[key].shape == (31, 576) and got[key].dtype == np.float32
        np.testing.assert_allclose(got[key][list(band)], array[list(band)], rtol=1e-3, atol=1e-3)
        assert np.isnan(got[key][others]).all()
    sizes = {length for (length,) in store.db.execute("SELECT length(data) FROM features")}
    assert sizes == {len(band) * 576 * 2}
    # an entry read back compact and written again keeps its rows, never NaN as features
    key = text_hash("t0")
    store.put_features("fp", None, "mean", {key: got[key]})
    again = store.get_features("fp", None, "mean", [key])[key]
    np.testing.assert_array_equal(np.isnan(again), np.isnan(got[key]))
    np.testing.assert_allclose(again[list(band)], got[key][list(band)])
    with pytest.raises(InputError, match="at least one complete layer"):
        store.put_features("fp", None, "mean", items, layers=lambda n: (40,))


def _v5_workspace(path) -> None:
    """A version-5 file: 2 classes, 3 texts (1 labelled), 2 model versions with predictions
    and a full float32 feature entry (no ``layers`` column yet)."""
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    migrate(db, MIGRATIONS[:5])
    now = "2026-01-01T00:00:00+00:00"
    db.execute("INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)",
               [now, now])
    for class_id, name in ((1, "neg"), (2, "pos")):
        db.execute("INSERT INTO classes (id, project_id, name, position, created_at) "
                   "VALUES (?, 1, ?, ?, ?)", [class_id, name, class_id, now])
    for text_id, text in ((1, "good"), (2, "bad"), (3, "meh")):
        db.execute("INSERT INTO texts (id, project_id, hash, text, source, created_at) "
                   "VALUES (?, 1, ?, ?, 'typed', ?)", [text_id, f"h{text_id}", text, now])
    db.execute("INSERT INTO labels (project_id, text_id, class_id, updated_at) VALUES (1, 1, 2, ?)",
               [now])
    for version in (1, 2):
        db.execute("INSERT INTO models (id, project_id, version, created_at, params, metrics, "
                   "n_labels, state, label_generation) VALUES (?, 1, ?, ?, '{}', ?, 1, ?, 1)",
                   [version, version, now, f'{{"cv_accuracy": 0.{version}}}',
                    pack_arrays({"c": np.full(2, version)})])
    db.execute("INSERT INTO features (fingerprint, prompt_hash, pooling, text_hash, n_layers, "
               "hidden_size, dtype, data, created_at) VALUES ('fp', ?, 'mean', ?, 3, 2, '<f4', ?, ?)",
               [prompt_hash(None), text_hash("good"), np.arange(6, dtype="<f4").tobytes(), now])
    db.close()


def test_a_version_5_workspace_migrates_keeping_labels_models_and_full_features(path):
    # issue 14: schema v6 lets a feature entry keep only some layers and counts text changes
    _v5_workspace(path)
    with Store.open(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION >= 6
        assert store.classes(1) == ["neg", "pos"]
        assert [(r.text, r.label) for r in store.labelled(1)] == [("good", "pos")]
        assert [(m.version, m.metrics) for m in store.models(1)] == [
            (1, {"cv_accuracy": 0.1}), (2, {"cv_accuracy": 0.2})]
        np.testing.assert_array_equal(store.model(1, 2).state["c"], [2, 2])
        got = store.get_features("fp", None, "mean", [text_hash("good")])[text_hash("good")]
        np.testing.assert_array_equal(got, np.arange(6, dtype=np.float32).reshape(3, 2))
        assert store.text_columns(1) == ([1, 2, 3], ["good", "bad", "meh"])
        before = store.text_version(1)
        store.set_label(1, 2, "neg")
        assert store.text_version(1) == before  # a label is not a text change
        store.add_texts(1, ["new"])
        added = store.text_version(1)
        store.edit_text(1, 3, "meh!")
        edited = store.text_version(1)
        store.delete_texts(1, [2])
        assert len({before, added, edited, store.text_version(1)}) == 4
        assert store.text_columns(1) == ([1, 3, 4], ["good", "meh!", "new"])
