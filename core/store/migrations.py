"""The forward migrations of a tenshot workspace file: ``MIGRATIONS[i]`` upgrades a file
from schema version ``i`` to ``i + 1``.

A migration is a function of the open ``Database``; :func:`core.store.schema.migrate`
runs the pending ones in order inside one ``BEGIN IMMEDIATE`` transaction. Foreign keys
stay on, so a future migration that rebuilds a table must copy rows in dependency order.
A new migration is appended here; ``core.store.schema.SCHEMA_VERSION`` follows.

Design notes on the layout:

- ``classes`` are soft-deleted (``deleted_at``) so class ids stay valid in the label
  history and a deleted or merged class can be restored by undo. Live names are
  unique per project through a partial unique index.
- ``labels`` is keyed by (text_id, class_id) so a multi-label project needs no
  migration; single-label projects are held to one row per text by a trigger.
- Composite foreign keys ``(text_id, project_id)`` and ``(class_id, project_id)``
  make it impossible for a label to join a text and a class of different projects.
- ``texts`` are soft-deleted too (``deleted_at``, schema version 3): a deleted text
  keeps its id, label and history, hidden from every read, so undo can bring it back.
  ``text_events`` records deletions and edits (with the old wording) for that undo.
- ``features`` is keyed by text hash, not text id, so it is shared by all projects.
  Since schema version 6 an entry may hold only some hidden-state rows (``layers``,
  a JSON list; NULL: every row), so a 100,000-text pool keeps only the band of layers
  its feature selection reads.
"""

import json
from collections.abc import Callable

import numpy as np
from sqlite_utils import Database

from core.store.codec import pack_predictions, utc_now

__all__ = ["Migration", "MIGRATIONS", "KEPT_PREDICTION_VERSIONS"]

_V1_TABLES = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    task_type TEXT NOT NULL DEFAULT 'single_label'
        CHECK (task_type IN ('single_label', 'multi_label')),
    settings TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE classes (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL CHECK (length(trim(name)) > 0),
    position INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    deleted_at TEXT,
    UNIQUE (id, project_id)
);
CREATE UNIQUE INDEX classes_live_name ON classes(project_id, name) WHERE deleted_at IS NULL;
CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, hash),
    UNIQUE (id, project_id)
);
CREATE TABLE labels (
    project_id INTEGER NOT NULL,
    text_id INTEGER NOT NULL,
    class_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (text_id, class_id),
    FOREIGN KEY (text_id, project_id) REFERENCES texts(id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (class_id, project_id) REFERENCES classes(id, project_id) ON DELETE CASCADE
);
CREATE INDEX labels_project_class ON labels(project_id, class_id);
CREATE TRIGGER labels_single_label BEFORE INSERT ON labels
WHEN EXISTS (SELECT 1 FROM labels WHERE text_id = NEW.text_id)
    AND (SELECT task_type FROM projects WHERE id = NEW.project_id) = 'single_label'
BEGIN
    SELECT RAISE(ABORT, 'a text in a single-label project can have only one label');
END;
CREATE TABLE schema_events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('add', 'rename', 'merge', 'delete')),
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1))
);
CREATE INDEX schema_events_project ON schema_events(project_id, undone, id);
CREATE TABLE label_events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    text_id INTEGER NOT NULL,
    class_id INTEGER,
    previous_class_id INTEGER,
    schema_event_id INTEGER REFERENCES schema_events(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1)),
    FOREIGN KEY (text_id, project_id) REFERENCES texts(id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (class_id, project_id) REFERENCES classes(id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (previous_class_id, project_id)
        REFERENCES classes(id, project_id) ON DELETE CASCADE
);
CREATE INDEX label_events_project ON label_events(project_id, undone, id);
CREATE INDEX label_events_text ON label_events(text_id);
CREATE INDEX label_events_schema ON label_events(schema_event_id);
CREATE TABLE features (
    fingerprint TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    pooling TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    n_layers INTEGER NOT NULL CHECK (n_layers > 0),
    hidden_size INTEGER NOT NULL CHECK (hidden_size > 0),
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, prompt_hash, pooling, text_hash)
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version INTEGER NOT NULL CHECK (version > 0),
    created_at TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    n_labels INTEGER NOT NULL CHECK (n_labels >= 0),
    state BLOB NOT NULL,
    UNIQUE (project_id, version)
);
CREATE TABLE predictions (
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    text_id INTEGER NOT NULL REFERENCES texts(id) ON DELETE CASCADE,
    class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    confidence REAL NOT NULL,
    probs TEXT NOT NULL,
    PRIMARY KEY (model_id, text_id)
);
CREATE INDEX predictions_text ON predictions(text_id);
CREATE INDEX predictions_class ON predictions(class_id);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
    done INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    total INTEGER NOT NULL CHECK (total >= 0),
    message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_project_kind ON jobs(project_id, kind, id);
"""


def _v1_initial(db: Database) -> None:
    """Create every table of the first released layout."""
    db.executescript(_V1_TABLES)


_V2_TABLES = """
CREATE TABLE explanations (
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (length(kind) > 0),
    key TEXT NOT NULL,
    params TEXT NOT NULL,
    arrays BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model_id, kind, key)
);
"""


def _v2_explanations(db: Database) -> None:
    """Results computed from one model version: SHAP values per text, bootstrap runs."""
    db.executescript(_V2_TABLES)


_V3_SESSIONS = """
ALTER TABLE label_events ADD COLUMN session TEXT;
CREATE INDEX label_events_session ON label_events(project_id, session, undone, id);
ALTER TABLE projects ADD COLUMN label_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN label_generation INTEGER;
CREATE TRIGGER labels_generation_insert AFTER INSERT ON labels BEGIN
    UPDATE projects SET label_generation = label_generation + 1 WHERE id = NEW.project_id;
END;
CREATE TRIGGER labels_generation_delete AFTER DELETE ON labels BEGIN
    UPDATE projects SET label_generation = label_generation + 1 WHERE id = OLD.project_id;
END;
CREATE TRIGGER labels_generation_update AFTER UPDATE ON labels BEGIN
    UPDATE projects SET label_generation = label_generation + 1 WHERE id = NEW.project_id;
END;
CREATE TABLE jobs_v3 (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'done', 'failed', 'cancelled', 'interrupted')),
    done INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    total INTEGER NOT NULL CHECK (total >= 0),
    message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    pid INTEGER,
    process_started REAL
);
INSERT INTO jobs_v3 (id, project_id, kind, status, done, total, message, created_at, updated_at)
    SELECT id, project_id, kind, status, done, total, message, created_at, updated_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
CREATE INDEX jobs_project_kind ON jobs(project_id, kind, id);
"""


def _v3_sessions(db: Database) -> None:
    """Who made each label change, what a model was trained on, which process runs a job.

    - ``label_events.session``: the labeller (a browser session's id; NULL for the
      Python API and the CLI, and for every event older than this migration), so undo
      reverts only the labeller's own changes.
    - ``projects.label_generation``: counts every change of the ``labels`` table
      (triggers, so no code path can forget it); ``models.label_generation`` is the
      count a model was trained on (NULL before this migration), so a retrain that
      finishes after one on newer labels is not published as the latest.
    - ``jobs.pid`` and ``jobs.process_started``: the process running a job, so a job
      whose process is gone is marked ``interrupted`` at once. The jobs table is
      rebuilt because its status CHECK gains ``interrupted``; nothing references it.
    """
    db.executescript(_V3_SESSIONS)


_V4_TABLES = """
ALTER TABLE texts ADD COLUMN deleted_at TEXT;
CREATE TABLE text_events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    text_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('delete', 'edit')),
    old_text TEXT NOT NULL,
    new_text TEXT,
    step INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1)),
    FOREIGN KEY (text_id, project_id) REFERENCES texts(id, project_id) ON DELETE CASCADE
);
CREATE INDEX text_events_project ON text_events(project_id, undone, id);
CREATE INDEX text_events_step ON text_events(step);
"""


def _v4_text_edits(db: Database) -> None:
    """Texts can be deleted (soft, like classes) and edited; both are undoable events."""
    db.executescript(_V4_TABLES)


_V5_PREDICTIONS = """
CREATE TABLE predictions_v5 (
    model_id INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    n_texts INTEGER NOT NULL CHECK (n_texts >= 0),
    prob_classes TEXT NOT NULL,
    arrays BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX texts_project_id ON texts(project_id, id);
"""

#: Model versions per project whose predictions are kept: the latest, and the one
#: before it for "What changed". Older versions keep their metrics and coefficients.
KEPT_PREDICTION_VERSIONS = 2


def _v5_prediction_sets(db: Database) -> None:
    """Predictions become one blob per model version, kept for the latest two versions only.

    Versions up to 4 stored a row (with a JSON dict of probabilities) per text and model version,
    so a 100,000-text project grew by 100,000 rows on every submit. The new
    ``predictions`` table holds one row per model version (``core.store.codec.
    pack_predictions``); the two newest versions of each project are carried over,
    older versions lose their predictions but keep their row in ``models``. The freed
    pages are reused; ``VACUUM`` (outside this transaction) would shrink the file.
    ``texts_project_id`` lets "the unlabelled texts, by id" (every submit) skip a sort.
    """
    db.executescript(_V5_PREDICTIONS)
    kept = db.execute(
        "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY project_id "
        "ORDER BY version DESC) AS newest FROM models) WHERE newest <= ?",
        [KEPT_PREDICTION_VERSIONS],
    ).fetchall()
    for (model_id,) in kept:
        rows = db.execute(
            "SELECT text_id, class_id, confidence, probs FROM predictions "
            "WHERE model_id = ? ORDER BY text_id", [model_id]).fetchall()
        if rows:
            _copy_prediction_rows(db, model_id, rows)
    db.execute("DROP TABLE predictions")
    db.execute("ALTER TABLE predictions_v5 RENAME TO predictions")


def _copy_prediction_rows(db: Database, model_id: int, rows: list[tuple]) -> None:
    dicts = [json.loads(r[3]) for r in rows]
    names = list(dict.fromkeys(name for d in dicts for name in d))
    probs = np.array([[d.get(name, np.nan) for name in names] for d in dicts], dtype=np.float64)
    blob = pack_predictions([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                            names, probs.reshape(len(rows), len(names)))
    db.execute(
        "INSERT INTO predictions_v5 (model_id, n_texts, prob_classes, arrays, created_at) "
        "VALUES (?, ?, ?, ?, ?)", [model_id, len(rows), json.dumps(names), blob, utc_now()])


_V6_COMPACT = """
ALTER TABLE features ADD COLUMN layers TEXT;
ALTER TABLE projects ADD COLUMN text_generation INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER texts_generation_insert AFTER INSERT ON texts BEGIN
    UPDATE projects SET text_generation = text_generation + 1 WHERE id = NEW.project_id;
END;
CREATE TRIGGER texts_generation_delete AFTER DELETE ON texts BEGIN
    UPDATE projects SET text_generation = text_generation + 1 WHERE id = OLD.project_id;
END;
CREATE TRIGGER texts_generation_update AFTER UPDATE ON texts BEGIN
    UPDATE projects SET text_generation = text_generation + 1 WHERE id = NEW.project_id;
END;
"""


def _v6_compact_pool(db: Database) -> None:
    """Feature entries may keep only some hidden-state rows; projects count text changes.

    ``features.layers``: the hidden-state rows an entry holds (JSON list), NULL for every
    row, which is what each existing entry holds, so every cached feature stays readable
    as before. ``projects.text_generation`` changes whenever a text is added, edited or
    deleted (with ``label_generation``: whenever the unlabelled pool may have changed), so
    a submit can keep the pool's 100,000 texts in RAM instead of reading them again.
    """
    db.executescript(_V6_COMPACT)


_V7_LABEL_SETS = """
CREATE TABLE none_labels (
    project_id INTEGER NOT NULL,
    text_id INTEGER NOT NULL PRIMARY KEY,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (text_id, project_id) REFERENCES texts(id, project_id) ON DELETE CASCADE
);
CREATE INDEX none_labels_project ON none_labels(project_id);
CREATE TRIGGER none_labels_multi_label_only BEFORE INSERT ON none_labels
WHEN (SELECT task_type FROM projects WHERE id = NEW.project_id) != 'multi_label'
BEGIN
    SELECT RAISE(ABORT, 'only a text in a multi-label project can be labelled none of these');
END;
CREATE TRIGGER none_labels_generation_insert AFTER INSERT ON none_labels BEGIN
    UPDATE projects SET label_generation = label_generation + 1 WHERE id = NEW.project_id;
END;
CREATE TRIGGER none_labels_generation_delete AFTER DELETE ON none_labels BEGIN
    UPDATE projects SET label_generation = label_generation + 1 WHERE id = OLD.project_id;
END;
ALTER TABLE label_events ADD COLUMN class_set TEXT;
ALTER TABLE label_events ADD COLUMN previous_set TEXT;
"""


def _v7_multi_label_sets(db: Database) -> None:
    """Multi-label projects: "none of these" as an answer, and a label set changed as one event.

    - ``none_labels``: a text of a multi-label project whose labeller chose none of
      the classes. It is labelled (a negative for every class), unlike a text with no
      row here and none in ``labels``. Only multi-label projects may hold rows (trigger),
      and every insert or delete counts in ``projects.label_generation`` like ``labels``.
    - ``label_events.class_set`` / ``previous_set``: in a multi-label project one event
      records a text's whole set of class ids after and before a change, as a sorted
      JSON list; ``[]`` is "none of these", NULL unlabelled. Single-label events leave
      both NULL and keep using ``class_id`` / ``previous_class_id``.
    Nothing existing changes: older projects are single-label and keep every row.
    """
    db.executescript(_V7_LABEL_SETS)


Migration = Callable[[Database], None]

#: ``MIGRATIONS[i]`` upgrades a file from schema version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Migration, ...] = (_v1_initial, _v2_explanations, _v3_sessions, _v4_text_edits,
                                     _v5_prediction_sets, _v6_compact_pool, _v7_multi_label_sets)
