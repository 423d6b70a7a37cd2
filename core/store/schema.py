"""Connection settings and schema versioning of a tenshot workspace file.

Every workspace is one SQLite file. ``meta.schema_version`` records how many of
:data:`~core.store.migrations.MIGRATIONS` have been applied; :func:`migrate` applies the
missing ones in order, in one ``BEGIN IMMEDIATE`` transaction, and refuses a file written
by a newer tenshot. The table layout and the migrations themselves live in
:mod:`core.store.migrations`; ``MIGRATIONS`` and ``KEPT_PREDICTION_VERSIONS`` are
re-exported here.
"""

import sqlite3
import time
from collections.abc import Sequence

from sqlite_utils import Database

from core.errors import StoreError
from core.store.migrations import KEPT_PREDICTION_VERSIONS, MIGRATIONS, Migration

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "KEPT_PREDICTION_VERSIONS", "configure", "schema_version",
           "migrate", "is_locked"]

_BUSY_TIMEOUT_MS = 5000

#: The version a file has once every migration this code knows has run.
SCHEMA_VERSION = len(MIGRATIONS)


def configure(db: Database, *, wal: bool) -> None:
    """Set the per-connection pragmas: busy timeout, foreign keys, WAL and synchronous=NORMAL.

    WAL with synchronous=NORMAL keeps every committed transaction through a
    process kill; only a power cut can lose the last few. WAL is skipped for
    ``:memory:`` databases, which cannot use it.
    """
    db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    if wal:
        _switch_to_wal(db)
    db.execute("PRAGMA synchronous = NORMAL")


def _switch_to_wal(db: Database) -> None:
    """Put the file in WAL mode, waiting out other processes opening a new file at once.

    The switch needs the file to itself, and SQLite can refuse it at once ("database is
    locked") without calling the busy handler while another opener holds a lock; or
    another opener switched it between this one's check and its switch. Either way,
    look again until the busy timeout has passed.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as err:
            if not is_locked(err):
                raise
            try:
                if db.journal_mode == "wal":
                    return
            except sqlite3.OperationalError as again:
                if not is_locked(again):
                    raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def schema_version(db: Database) -> int:
    """Return the schema version recorded in the file: 0 for an empty file.

    Raises StoreError for an SQLite file with tables but no ``meta`` table: it
    belongs to some other program, and tenshot must not write into it.
    """
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in names:
        if names:
            raise StoreError(
                "This SQLite file is not a tenshot workspace (it has tables "
                f"{', '.join(sorted(names)[:5])} but no 'meta' table). "
                "Choose a new file name for the workspace."
            )
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file up to ``len(migrations)`` and return that version.

    Cheap when nothing is pending: one read and no write. Pending migrations run
    in order inside one ``BEGIN IMMEDIATE`` transaction together with the version
    bump, so a failure leaves the file exactly as it was.
    """
    target = len(migrations)
    current = _checked_version(db, target)
    if current == target:
        return current
    db.execute("BEGIN IMMEDIATE")
    try:
        # re-read under the write lock: another process may have migrated meanwhile
        current = _checked_version(db, target)
        for version in range(current, target):
            migrations[version](db)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(target)],
        )
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return target


def _checked_version(db: Database, target: int) -> int:
    current = schema_version(db)
    if current > target:
        raise StoreError(
            f"This workspace was written by a newer tenshot (schema version {current}; "
            f"this tenshot knows versions up to {target}). Upgrade tenshot to open it, "
            "or open a different workspace file."
        )
    return current


def is_locked(err: sqlite3.OperationalError) -> bool:
    """True when ``err`` means another connection holds the write lock."""
    text = str(err).lower()
    return "locked" in text or "busy" in text
