"""Class (label set) changes and their undo.

Each add, rename, merge or delete writes one row to ``schema_events``; labels it
moves or removes are written to ``label_events`` tagged with that event's id.
``undo_schema_change`` reverts the most recent change that is not yet undone.
It restores a touched label only where the text still carries the value the
change gave it, so a label the user set afterwards is kept.
"""

from typing import Any

from core.errors import InputError, StoreError
from core.store.connection import StoreBase, transactional
from core.store.codec import dump_json, load_json, utc_now

__all__ = ["ClassesMixin", "clean_class_name", "clean_class_names"]

_MIN_CLASSES = 2


def clean_class_name(name: object) -> str:
    """Return ``name`` stripped of surrounding whitespace; InputError if nothing is left."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"A class name must be non-empty text, but got {name!r}.")
    return name.strip()


def clean_class_names(names: list[str]) -> list[str]:
    """Strip and check a new project's class names: at least two, none repeated."""
    if isinstance(names, str):
        raise InputError(f"Class names must be a list of names, but got the text {names!r}.")
    cleaned = [clean_class_name(n) for n in names]
    repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if repeated:
        raise InputError(
            f"Class names must be different, but {', '.join(map(repr, repeated))} "
            "appears more than once. Remove the repeats."
        )
    if len(cleaned) < _MIN_CLASSES:
        raise InputError(
            f"A project needs at least {_MIN_CLASSES} classes, but got {len(cleaned)} "
            f"({', '.join(map(repr, cleaned)) or 'none'}). Add another class name."
        )
    return cleaned


class ClassesMixin(StoreBase):
    """Reading and changing a project's classes."""

    def classes(self, project_id: int) -> list[str]:
        """Return the project's class names in display order."""
        return list(self.class_ids(project_id))

    def class_ids(self, project_id: int) -> dict[str, int]:
        """Return ``{class name: class id}`` in display order; UnknownProject if there is none."""
        live = self._live_classes(project_id)
        if not live:
            self._project_name(project_id)
        return {name: class_id for class_id, name in live}

    @transactional
    def add_class(self, project_id: int, name: str) -> None:
        """Add a class after the existing ones."""
        name = self._unused_name(project_id, name)
        (position,) = self._one(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM classes WHERE project_id = ?",
            [project_id],
        )
        cursor = self.db.execute(
            "INSERT INTO classes (project_id, name, position, created_at) VALUES (?, ?, ?, ?)",
            [project_id, name, position, utc_now()],
        )
        self._schema_event(project_id, "add", {"class_id": cursor.lastrowid})

    @transactional
    def rename_class(self, project_id: int, old: str, new: str) -> None:
        """Rename a class; its labels follow it. Renaming to the same name does nothing."""
        class_id = self._class_id(project_id, old)
        if clean_class_name(new) == old:
            return
        new = self._unused_name(project_id, new)
        self.db.execute("UPDATE classes SET name = ? WHERE id = ?", [new, class_id])
        self._schema_event(project_id, "rename", {"class_id": class_id, "old": old, "new": new})

    @transactional
    def merge_classes(self, project_id: int, sources: list[str], into: str) -> None:
        """Fold the ``sources`` classes into ``into``: their labels move there, they disappear."""
        into_id = self._class_id(project_id, into)
        source_ids = list(dict.fromkeys(self._class_id(project_id, s) for s in sources))
        if not source_ids or into_id in source_ids:
            raise InputError(
                f"Merging needs one or more classes other than {into!r} to fold into it, "
                f"but got {sources!r}."
            )
        self._check_room(project_id, len(source_ids), f"merge {len(source_ids)} classes away")
        event_id = self._schema_event(
            project_id, "merge", {"sources": source_ids, "into": into_id}
        )
        for source_id in source_ids:
            if self.is_multi_label(project_id):
                self._move_in_sets(project_id, source_id, into_id, event_id)
                continue
            for text_id in self._texts_labelled(source_id):
                self._change_label(project_id, text_id, into_id, event_id)
        self._retire(source_ids)

    @transactional
    def delete_class(self, project_id: int, name: str) -> None:
        """Delete a class and remove its labels; ``undo_schema_change`` brings both back."""
        class_id = self._class_id(project_id, name)
        self._check_room(project_id, 1, f"delete {name!r}")
        event_id = self._schema_event(project_id, "delete", {"class_id": class_id})
        self._remove_class_labels(project_id, class_id, event_id)
        self._retire([class_id])

    @transactional
    def undo_schema_change(self, project_id: int) -> str | None:
        """Revert the project's latest class change; return what was undone, or None if nothing."""
        row = self._one(
            "SELECT id, kind, payload FROM schema_events WHERE project_id = ? AND undone = 0 "
            "ORDER BY id DESC LIMIT 1",
            [project_id],
        )
        if row is None:
            self._project_name(project_id)
            return None
        event_id, kind, payload = row[0], row[1], load_json(row[2])
        undo = {
            "add": self._undo_add,
            "rename": self._undo_rename,
            "merge": self._undo_merge,
            "delete": self._undo_delete,
        }[kind]
        message = undo(project_id, event_id, payload)
        self.db.execute("UPDATE schema_events SET undone = 1 WHERE id = ?", [event_id])
        return message

    def _undo_add(self, project_id: int, event_id: int, payload: dict[str, Any]) -> str:
        class_id = payload["class_id"]
        self._remove_class_labels(project_id, class_id, event_id)
        self._retire([class_id])
        return f"Removed the added class {self._name_of(class_id)!r}."

    def _undo_rename(self, project_id: int, event_id: int, payload: dict[str, Any]) -> str:
        self._revive(project_id, [payload["class_id"]], name=payload["old"])
        return f"Renamed class {payload['new']!r} back to {payload['old']!r}."

    def _undo_merge(self, project_id: int, event_id: int, payload: dict[str, Any]) -> str:
        self._revive(project_id, payload["sources"])
        restored = self._restore_labels(event_id)
        names = ", ".join(repr(self._name_of(i)) for i in payload["sources"])
        return f"Split {names} back out of {self._name_of(payload['into'])!r} ({restored} labels)."

    def _undo_delete(self, project_id: int, event_id: int, payload: dict[str, Any]) -> str:
        self._revive(project_id, [payload["class_id"]])
        restored = self._restore_labels(event_id)
        return f"Restored class {self._name_of(payload['class_id'])!r} ({restored} labels)."

    def _restore_labels(self, event_id: int) -> int:
        """Put back labels a class change moved, where nothing has changed them since."""
        events = self._all(
            "SELECT id, project_id, text_id, class_id, previous_class_id, class_set, previous_set "
            "FROM label_events WHERE schema_event_id = ? AND undone = 0 ORDER BY id DESC",
            [event_id],
        )
        restored = 0
        for _, project_id, text_id, class_id, previous, class_set, previous_set in events:
            if class_set is not None:  # a multi-label project's set change
                restored += self._restore_set(text_id, class_set, previous_set, project_id)
            elif self._current_class(text_id) == class_id:
                self._write_label(project_id, text_id, previous)
                restored += 1
        self.db.execute(
            "UPDATE label_events SET undone = 1 WHERE schema_event_id = ?", [event_id]
        )
        return restored

    def _unused_name(self, project_id: int, name: str) -> str:
        name = clean_class_name(name)
        if name in self.class_ids(project_id):
            raise InputError(
                f"This project already has a class called {name!r}; pick another name."
            )
        return name

    def _check_room(self, project_id: int, removing: int, action: str) -> None:
        left = len(self._live_classes(project_id)) - removing
        if left < _MIN_CLASSES:
            raise InputError(
                f"Cannot {action}: that would leave {left} class(es), and a project needs "
                f"at least {_MIN_CLASSES}. Add a class first."
            )

    def _schema_event(self, project_id: int, kind: str, payload: dict[str, Any]) -> int:
        cursor = self.db.execute(
            "INSERT INTO schema_events (project_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
            [project_id, kind, dump_json(payload), utc_now()],
        )
        return cursor.lastrowid

    def _remove_class_labels(self, project_id: int, class_id: int, event_id: int) -> None:
        """Take a deleted (or un-added) class off every text, as one event per text."""
        if self.is_multi_label(project_id):
            self._move_in_sets(project_id, class_id, None, event_id)
            return
        for text_id in self._texts_labelled(class_id):
            self._change_label(project_id, text_id, None, event_id)

    def _texts_labelled(self, class_id: int) -> list[int]:
        rows = self._all("SELECT text_id FROM labels WHERE class_id = ?", [class_id])
        return [r[0] for r in rows]

    def _retire(self, class_ids: list[int]) -> None:
        now = utc_now()
        for class_id in class_ids:
            self.db.execute("UPDATE classes SET deleted_at = ? WHERE id = ?", [now, class_id])

    def _revive(self, project_id: int, class_ids: list[int], *, name: str | None = None) -> None:
        """Make classes live again (optionally under ``name``), refusing a clash of live names."""
        live = self.class_ids(project_id)
        for class_id in class_ids:
            wanted = name or self._name_of(class_id)
            if live.get(wanted, class_id) != class_id:
                raise StoreError(
                    f"Cannot undo: the class name {wanted!r} is in use again. "
                    "Rename that class first, then undo."
                )
            self.db.execute(
                "UPDATE classes SET deleted_at = NULL, name = ? WHERE id = ?", [wanted, class_id]
            )

    def _name_of(self, class_id: int) -> str:
        return self._one("SELECT name FROM classes WHERE id = ?", [class_id])[0]
