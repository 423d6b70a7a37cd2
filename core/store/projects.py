"""The projects table: creating, finding, renaming and deleting projects, and their settings."""

from typing import Any

from core.errors import InputError, UnknownProject
from core.store.classes import clean_class_names
from core.store.codec import dump_json, load_json, utc_now
from core.store.connection import StoreBase, transactional
from core.store.label_sets import SINGLE_LABEL, TASK_TYPES
from core.store.rows import Project

__all__ = ["ProjectsMixin"]

_PROJECT_COLUMNS = "id, name, task_type, settings"


class ProjectsMixin(StoreBase):
    """Projects and their settings."""

    @transactional
    def create_project(
        self, name: str, classes: list[str], *, settings: dict[str, Any] | None = None,
        task_type: str = SINGLE_LABEL,
    ) -> Project:
        """Create a project with at least two distinct class names.

        task_type: ``"single_label"`` (one class per text) or ``"multi_label"`` (zero, one
        or many; see ``core.store.label_sets``). It is fixed for the project's life.
        """
        if task_type not in TASK_TYPES:
            raise InputError(f"A project is {' or '.join(map(repr, TASK_TYPES))}, "
                             f"but got {task_type!r}.")
        name = _clean_project_name(name)
        class_names = clean_class_names(classes)
        settings = _checked_settings(settings or {})
        self._refuse_taken(name)
        now = utc_now()
        project_id = self.db.execute(
            "INSERT INTO projects (name, task_type, settings, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [name, task_type, dump_json(settings), now, now],
        ).lastrowid
        self.db.conn.executemany(
            "INSERT INTO classes (project_id, name, position, created_at) VALUES (?, ?, ?, ?)",
            [[project_id, c, i, now] for i, c in enumerate(class_names)],
        )
        return self.project(project_id)

    def project(self, name_or_id: str | int) -> Project:
        """Return a project by name or id; UnknownProject lists the names there are."""
        column = "id" if isinstance(name_or_id, int) else "name"
        key = name_or_id if column == "id" else str(name_or_id).strip()
        row = self._one(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE {column} = ?", [key])
        if row is not None:
            return _project_row(row)
        names = [p.name for p in self.projects()]
        known = f"the projects are {', '.join(map(repr, names))}" if names else "there are none yet"
        what = f"with id {key}" if column == "id" else f"called {key!r}"
        raise UnknownProject(f"There is no project {what}; {known}. Create it first.")

    def projects(self) -> list[Project]:
        """Return every project, oldest first."""
        rows = self._all(f"SELECT {_PROJECT_COLUMNS} FROM projects ORDER BY id")
        return [_project_row(r) for r in rows]

    @transactional
    def rename_project(self, project_id: int, new_name: str) -> Project:
        """Give a project a new, unused name."""
        old = self._project_name(project_id)
        new_name = _clean_project_name(new_name)
        if new_name != old:
            self._refuse_taken(new_name)
            self.db.execute(
                "UPDATE projects SET name = ?, updated_at = ? WHERE id = ?",
                [new_name, utc_now(), project_id],
            )
        return self.project(project_id)

    @transactional
    def delete_project(self, project_id: int) -> None:
        """Delete a project with its classes, texts, labels, models, predictions and jobs.

        Cached features stay: they are keyed by text hash and shared by projects.
        """
        self._project_name(project_id)
        self.db.execute("DELETE FROM projects WHERE id = ?", [project_id])

    @transactional
    def update_settings(self, project_id: int, settings: dict[str, Any]) -> Project:
        """Merge ``settings`` into the project's settings (top-level keys replace old ones)."""
        merged = {**self.project(project_id).settings, **_checked_settings(settings)}
        self.db.execute(
            "UPDATE projects SET settings = ?, updated_at = ? WHERE id = ?",
            [dump_json(merged), utc_now(), project_id],
        )
        return self.project(project_id)

    def _refuse_taken(self, name: str) -> None:
        if self._one("SELECT 1 FROM projects WHERE name = ?", [name]):
            raise InputError(
                f"A project called {name!r} already exists. Pick another name, "
                "or open the existing project."
            )


def _clean_project_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"A project name must be non-empty text, but got {name!r}.")
    return name.strip()


def _checked_settings(settings: object) -> dict[str, Any]:
    if not isinstance(settings, dict):
        raise InputError(f"Settings must be a dict, but got {type(settings).__name__}.")
    return settings


def _project_row(row: tuple) -> Project:
    return Project(id=row[0], name=row[1], task_type=row[2], settings=load_json(row[3]))
