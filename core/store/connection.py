"""The base of ``Store``: opening, transactions, lock retries and lookups every table group uses.

A ``Store`` wraps one ``sqlite3`` connection, which is bound to the thread that
opened it: open one per Streamlit rerun or per worker thread, never share one.
The connection runs in autocommit mode (``isolation_level=None``); every public
method that writes is wrapped by :func:`transactional`, which opens exactly one
``BEGIN IMMEDIATE`` transaction per call and returns only after ``COMMIT``.
"""

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlite_utils import Database

from core.errors import InputError, StoreError, UnknownProject
from core.limits import DEFAULT_LIMITS, Limits
from core.store.schema import configure, is_locked, migrate

__all__ = ["StoreBase", "transactional"]

_CONNECT_TIMEOUT_S = 5.0
# extra waits after SQLite's own busy timeout gave up (WAL recovery, checkpoints)
_RETRY_DELAYS_S = (0.1, 0.2, 0.4)

F = TypeVar("F", bound=Callable[..., Any])


def transactional(method: F) -> F:
    """Run a ``Store`` method in one write transaction, retrying while the file is locked.

    A call made while a transaction is already open joins it, so public
    methods can be composed without nesting transactions. Errors from SQLite
    come out as StoreError with a plain message.
    """

    @functools.wraps(method)
    def wrapper(self: "StoreBase", *args: Any, **kwargs: Any) -> Any:
        if self.db.conn.in_transaction:
            return method(self, *args, **kwargs)
        # the last pass (delay None) either returns or raises, so the loop never falls through
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                with self._write_transaction():
                    return method(self, *args, **kwargs)
            except sqlite3.OperationalError as err:
                if not is_locked(err):
                    raise StoreError(f"The database refused the change: {err}.") from err
                if delay is None:
                    raise StoreError(
                        f"The workspace {self.path} stayed locked by another program or "
                        "tab. Wait for it to finish (or close it) and try again."
                    ) from err
                time.sleep(delay)
            except sqlite3.Error as err:
                raise StoreError(f"The database refused the change: {err}.") from err

    return wrapper  # type: ignore[return-value]


class StoreBase:
    """Connection handling and lookups shared by the ``Store`` mixins."""

    def __init__(self, db: Database, path: str, limits: Limits = DEFAULT_LIMITS):
        self.db = db
        self.path = path
        self.limits = limits

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Open or create the workspace at ``path`` (``":memory:"`` for a throwaway one).

        limits: what the workspace accepts (``limits.project_texts`` per project).

        Sets WAL mode, synchronous=NORMAL, a 5 s busy timeout and foreign keys,
        then applies pending migrations; on an up-to-date file that costs a few
        pragmas and one read. Raises StoreError if the file cannot be opened, is
        not a tenshot workspace, or was written by a newer tenshot.
        """
        memory = str(path) == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=_CONNECT_TIMEOUT_S, isolation_level=None)
            db = Database(conn, execute_plugins=False)
            configure(db, wal=not memory)
            migrate(db)
        except BaseException as err:
            if conn is not None:
                conn.close()
            if isinstance(err, sqlite3.OperationalError) and is_locked(err):
                raise StoreError(
                    f"The workspace {path} stayed locked by another program or tab for more "
                    f"than {_CONNECT_TIMEOUT_S:.0f} s. Wait for it to finish (or close it) and "
                    "try again."
                ) from err
            if isinstance(err, sqlite3.Error):
                raise StoreError(
                    f"Could not open the workspace {path}: {err}. Check that it is a "
                    "tenshot workspace file and that its folder is writable."
                ) from err
            raise
        return cls(db, str(path), limits)

    def close(self) -> None:
        """Close the connection; committed work is already on disk."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a reader can never be
        # refused an upgrade to writer halfway through a user action
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise

    def _one(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple | None:
        return self.db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def _project_name(self, project_id: int) -> str:
        """Return the project's name, or raise UnknownProject."""
        row = self._one("SELECT name FROM projects WHERE id = ?", [project_id])
        if row is None:
            raise UnknownProject(
                f"There is no project with id {project_id}; it may have been deleted. "
                "Pick a project from the list."
            )
        return row[0]

    def _live_classes(self, project_id: int) -> list[tuple[int, str]]:
        """Return ``(class_id, name)`` of the project's classes in position order."""
        return self._all(
            "SELECT id, name FROM classes WHERE project_id = ? AND deleted_at IS NULL "
            "ORDER BY position, id",
            [project_id],
        )

    def _class_id(self, project_id: int, name: str) -> int:
        """Return the id of a live class, or raise InputError naming the classes there are."""
        live = self._live_classes(project_id)
        for class_id, class_name in live:
            if class_name == name:
                return class_id
        self._project_name(project_id)
        known = ", ".join(repr(n) for _, n in live)
        raise InputError(f"There is no class {name!r} in this project; its classes are {known}.")

    def _check_text(self, project_id: int, text_id: int) -> None:
        if self._one(
            "SELECT 1 FROM texts WHERE id = ? AND project_id = ? AND deleted_at IS NULL",
            [text_id, project_id],
        ):
            return
        raise InputError(
            f"Text {text_id} is not in project {self._project_name(project_id)!r}; "
            "it may have been deleted or added to another project."
        )
