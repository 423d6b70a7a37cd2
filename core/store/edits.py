"""Deleting and editing single texts, and undoing those changes.

A deleted text is soft-deleted (``texts.deleted_at``), as classes are: it keeps
its id, its label and its label history, and every read of texts, labels and
predictions leaves it out, so ``undo_text_change`` brings all of it back at once.
An edit rewrites the text and its hash in place: the label stays (it belongs to
the text id), the feature cache (keyed by hash) misses, so the new wording is read
again, and the text's predictions, made for the old wording, are dropped.
Each change appends rows to ``text_events`` under one ``step`` (the id of its first
row); undo reverts the latest step, e.g. all the texts one call deleted.
"""

from core.errors import InputError
from core.hashing import text_hash
from core.store.codec import utc_now
from core.store.connection import StoreBase, transactional

__all__ = ["TextEditsMixin"]


class TextEditsMixin(StoreBase):
    """Deleting, editing and restoring single texts."""

    @transactional
    def delete_texts(self, project_id: int, text_ids: list[int]) -> int:
        """Delete texts (their labels and predictions go with them); return how many.

        The whole call is one undo step of ``undo_text_change``.
        """
        for text_id in text_ids:
            self._check_text(project_id, text_id)
        now, step = utc_now(), None
        for text_id in dict.fromkeys(text_ids):
            (old,) = self._one("SELECT text FROM texts WHERE id = ?", [text_id])
            self.db.execute("UPDATE texts SET deleted_at = ? WHERE id = ?", [now, text_id])
            step = self._text_event(project_id, text_id, "delete", old, None, step)
        return len(dict.fromkeys(text_ids))

    @transactional
    def edit_text(self, project_id: int, text_id: int, new_text: str) -> str:
        """Change a text's wording, keeping its label; return the stored (stripped) text.

        Refused (InputError) for an empty text, or one the project already holds.
        """
        self._check_text(project_id, text_id)
        if not isinstance(new_text, str) or not new_text.strip():
            raise InputError("A sentence cannot be empty. To remove it, delete it instead.")
        clean = new_text.strip()[: self.limits.text_chars]
        (old,) = self._one("SELECT text FROM texts WHERE id = ?", [text_id])
        if clean == old:
            return old
        self._rewrite(project_id, text_id, clean)
        self._text_event(project_id, text_id, "edit", old, clean, None)
        return clean

    @transactional
    def undo_text_change(self, project_id: int) -> str | None:
        """Revert the latest deletion or edit not yet undone; return what was done, or None."""
        latest = self._one(
            "SELECT step FROM text_events WHERE project_id = ? AND undone = 0 "
            "ORDER BY id DESC LIMIT 1",
            [project_id],
        )
        if latest is None:
            self._project_name(project_id)
            return None
        rows = self._all(
            "SELECT text_id, kind, old_text FROM text_events WHERE step = ? ORDER BY id DESC",
            [latest[0]],
        )
        for text_id, kind, old in rows:
            if kind == "delete":
                self._restore(text_id)
            else:
                self._rewrite(project_id, text_id, old)
        self.db.execute("UPDATE text_events SET undone = 1 WHERE step = ?", [latest[0]])
        _, kind, old = rows[0]
        if kind == "edit":
            return f"The sentence reads “{old}” again."
        if len(rows) == 1:
            return f"Restored the deleted sentence “{old}”."
        return f"Restored {len(rows)} deleted sentences."

    def _restore(self, text_id: int) -> None:
        # a no-op when the same sentence was added again meanwhile (that revived it)
        self.db.execute("UPDATE texts SET deleted_at = NULL WHERE id = ?", [text_id])

    def _rewrite(self, project_id: int, text_id: int, text: str) -> None:
        """Give a text new wording and hash; drop its predictions, made for the old wording."""
        digest = text_hash(text)
        clash = self._one(
            "SELECT id, deleted_at FROM texts WHERE project_id = ? AND hash = ? AND id != ?",
            [project_id, digest, text_id],
        )
        if clash is not None and clash[1] is None:
            raise InputError(
                f"The project already has the sentence “{text}”. Change the wording, or "
                "delete one of the two."
            )
        if clash is not None:  # a deleted copy of the same wording: the edit replaces it
            self.db.execute("DELETE FROM texts WHERE id = ?", [clash[0]])
        self.db.execute(
            "UPDATE texts SET text = ?, hash = ? WHERE id = ?", [text, digest, text_id]
        )
        self._forget_text_predictions(project_id, text_id)

    def _text_event(
        self, project_id: int, text_id: int, kind: str, old: str, new: str | None,
        step: int | None,
    ) -> int:
        """Record one change; ``step`` None starts a new undo step. Return the step."""
        cursor = self.db.execute(
            "INSERT INTO text_events (project_id, text_id, kind, old_text, new_text, step, "
            "created_at) VALUES (?, ?, ?, ?, ?, COALESCE(?, 0), ?)",
            [project_id, text_id, kind, old, new, step, utc_now()],
        )
        if step is None:
            step = cursor.lastrowid
            self.db.execute("UPDATE text_events SET step = ? WHERE id = ?", [step, step])
        return step
