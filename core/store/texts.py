"""The texts, labels and label_events tables: adding texts, labelling, and undo.

Every label change is appended to ``label_events`` with the class it replaced and the
labeller who made it (``session``: a browser session's id, or None for the Python API
and the CLI), so ``undo_last_label`` can revert that labeller's own last change and
never another labeller's; changes made by class edits carry their schema event and are
reverted by ``undo_schema_change`` (core.store.classes).
"""

from typing import Sequence

from core.errors import InputError
from core.hashing import text_hash
from core.store.codec import utc_now
from core.store.connection import StoreBase, transactional
from core.store.rows import AddResult, Label, TextRow

__all__ = ["TextsMixin"]


class TextsMixin(StoreBase):
    """Texts and their labels."""

    @transactional
    def add_texts(
        self,
        project_id: int,
        texts: list[str],
        *,
        source: str = "typed",
        labels: list[str | None] | None = None,
        new_classes: Sequence[str] = (),
        session: str | None = None,
    ) -> AddResult:
        """Add texts, stripped and de-duplicated by hash; optionally label them (None: no label).

        new_classes: classes to create first (names the project already has are
        skipped), in the same transaction, so a refused import creates none of them.
        Labels are checked before any text is written. A text given twice keeps
        its last non-None label; a text the project already had is relabelled.
        Refused as a whole (InputError) when the project would hold more than
        ``self.limits.project_texts`` texts (``Store.open(..., limits=...)``).
        session: the labeller the label changes are recorded for (see ``set_labels``).
        ``AddResult.labelled`` counts only labels that changed.
        """
        if labels is not None and self.is_multi_label(project_id):
            return self.add_labelled_sets(project_id, texts, [
                None if label is None else [label] for label in labels], source=source,
                new_classes=new_classes, session=session)
        self._project_name(project_id)
        for name in dict.fromkeys(new_classes):
            if name not in self.class_ids(project_id):
                self.add_class(project_id, name)
        wanted = self._wanted_labels(project_id, texts, labels)
        unique: dict[str, tuple[str, str | None]] = {}
        empty = 0
        for raw, label in zip(texts, wanted):
            clean = _clean_text(raw)
            if not clean:
                empty += 1
                continue
            digest = text_hash(clean)
            previous_label = unique.get(digest, (clean, None))[1]
            unique[digest] = (clean, label if label is not None else previous_label)
        text_ids, added = self._insert_texts(project_id, unique, source)
        if added:
            self._refuse_over_limit(project_id, added)
        class_ids = self.class_ids(project_id)
        changed = sum(
            self._change_label(project_id, text_id, class_ids[label], session=session)
            for text_id, (_, label) in zip(text_ids, unique.values())
            if label is not None
        )
        return AddResult(added, len(texts) - empty - added, empty, text_ids, changed)

    def text_id(self, project_id: int, text: str) -> int | None:
        """Return the id of ``text`` (after stripping) in the project, or None."""
        row = self._one(
            "SELECT id FROM texts WHERE project_id = ? AND hash = ? AND deleted_at IS NULL",
            [project_id, text_hash(_clean_text(text))],
        )
        return None if row is None else row[0]

    def count_new_texts(self, project_id: int, texts: list[str]) -> AddResult:
        """What ``add_texts`` would count for ``texts``, writing nothing: new texts,
        duplicates (of the project's texts or of each other) and empty ones; no ids."""
        self._project_name(project_id)
        cleaned = [_clean_text(t) for t in texts]
        hashes = {text_hash(t) for t in cleaned if t}
        known = {r[0] for r in self._all("SELECT hash FROM texts WHERE project_id = ?", [project_id])}
        empty = cleaned.count("")
        added = len(hashes - known)
        return AddResult(added, len(texts) - empty - added, empty, [])

    def texts(self, project_id: int) -> list[TextRow]:
        """Return every ``(text_id, text)`` of the project in the order they were added."""
        rows = self._all(
            "SELECT id, text FROM texts WHERE project_id = ? AND deleted_at IS NULL ORDER BY id",
            [project_id],
        )
        return [TextRow(*r) for r in rows]

    @transactional
    def set_label(
        self, project_id: int, text_id: int, label: str | None, *, session: str | None = None
    ) -> None:
        """Label one text; ``None`` removes its label. Setting the current label records nothing."""
        self.set_labels(project_id, [text_id], label, session=session)

    @transactional
    def set_labels(
        self, project_id: int, text_ids: list[int], label: str | None, *, session: str | None = None
    ) -> None:
        """Give several texts the same label (``None``: unlabel them) in one transaction.

        session: who is labelling (the app passes its browser session's id); undo with
        the same ``session`` reverts these changes. None is the Python API's and the
        CLI's labeller, shared by every caller that passes none.
        """
        if self.is_multi_label(project_id):  # one class: the set of that class alone
            self.set_label_sets(project_id, text_ids, None if label is None else [label],
                                session=session)
            return
        class_id = None if label is None else self._class_id(project_id, label)
        for text_id in text_ids:
            self._check_text(project_id, text_id)
        for text_id in text_ids:
            self._change_label(project_id, text_id, class_id, session=session)

    @transactional
    def undo_last_label(
        self, project_id: int, *, session: str | None = None
    ) -> tuple[int, str | tuple[str, ...] | None] | None:
        """Revert ``session``'s latest label change not yet undone; return ``(text_id, restored label)``.

        In a multi-label project the restored label is the whole previous set (a tuple of
        class names, ``()`` for none of these, None for unlabelled).

        Only the changes recorded for ``session`` are candidates (None: those made
        without one, i.e. by the Python API, the CLI, or before labellers were
        recorded), so one labeller never undoes another's acknowledged label.
        Returns None when there is nothing to undo. Raises InputError when another
        labeller has changed that text's label since: undoing would overwrite theirs.
        Label changes made by class changes are reverted by ``undo_schema_change``.
        """
        row = self._one(
            "SELECT e.id, e.text_id, e.previous_class_id, c.name, c.deleted_at, "
            "e.class_set IS NOT NULL OR e.previous_set IS NOT NULL, e.previous_set "
            "FROM label_events e LEFT JOIN classes c ON c.id = e.previous_class_id "
            "WHERE e.project_id = ? AND e.session IS ? AND e.undone = 0 "
            "AND e.schema_event_id IS NULL ORDER BY e.id DESC LIMIT 1",
            [project_id, session],
        )
        if row is None:
            self._project_name(project_id)
            return None
        event_id, text_id, previous, previous_name, deleted_at, is_set, previous_set = row
        if self._changed_since(text_id, event_id):
            raise InputError(
                f"Cannot undo: the label of text {text_id} was changed since (in another tab, by "
                "someone else, or by a class change), and undo would overwrite that change. "
                "Set the label you want on the Label page's table instead."
            )
        if is_set:
            return self._undo_set_event(project_id, event_id, text_id, previous_set)
        if deleted_at is not None:
            raise InputError(
                f"Cannot undo: text {text_id} would go back to class {previous_name!r}, which "
                "was deleted or merged. Undo that class change first."
            )
        self._write_label(project_id, text_id, previous)
        self.db.execute("UPDATE label_events SET undone = 1 WHERE id = ?", [event_id])
        return text_id, previous_name

    def label_generation(self, project_id: int) -> int:
        """How many times the project's labels have changed (any way, undo included).

        A retrain reads it before the labels and saves it with the model, so of two
        models the one with the higher number was trained on newer labels.
        """
        row = self._one("SELECT label_generation FROM projects WHERE id = ?", [project_id])
        if row is None:
            self._project_name(project_id)
        return row[0]

    def text_version(self, project_id: int) -> tuple:
        """A value that changes whenever one of the project's texts is added, edited or
        deleted (labels aside), so a caller can keep ``text_columns`` in RAM."""
        row = self._one("SELECT text_generation, created_at FROM projects WHERE id = ?", [project_id])
        if row is None:
            self._project_name(project_id)
        return tuple(row)

    def text_columns(self, project_id: int) -> tuple[list[int], list[str]]:
        """Every live text of the project as two columns (ids, texts), by text id."""
        rows = self._all("SELECT id, text FROM texts WHERE project_id = ? AND deleted_at IS NULL "
                         "ORDER BY id", [project_id])
        if not rows:
            return [], []
        ids, texts = zip(*rows)
        return list(ids), list(texts)

    def labelled(self, project_id: int) -> list[Label]:
        """Return ``(text_id, text, class name)`` of every labelled text, by text id."""
        rows = self._all(
            "SELECT l.text_id, t.text, c.name FROM labels l JOIN texts t ON t.id = l.text_id "
            "JOIN classes c ON c.id = l.class_id WHERE l.project_id = ? AND t.deleted_at IS NULL "
            "ORDER BY l.text_id",
            [project_id],
        )
        return [Label(*r) for r in rows]

    def unlabelled(self, project_id: int) -> list[TextRow]:
        """Return ``(text_id, text)`` of every text without a label (nor "none of these"), by id."""
        rows = self._all(
            "SELECT t.id, t.text FROM texts t WHERE t.project_id = ? AND t.deleted_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.text_id = t.id) "
            "AND NOT EXISTS (SELECT 1 FROM none_labels n WHERE n.text_id = t.id) ORDER BY t.id",
            [project_id],
        )
        return [TextRow(*r) for r in rows]

    def unlabelled_columns(self, project_id: int) -> tuple[list[int], list[str]]:
        """``unlabelled`` as two columns (ids, texts), by text id: no row objects, for a
        submit that reads a 100,000-text pool (a third of the time went into TextRows)."""
        rows = self._all(
            "SELECT t.id, t.text FROM texts t WHERE t.project_id = ? AND t.deleted_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.text_id = t.id) "
            "AND NOT EXISTS (SELECT 1 FROM none_labels n WHERE n.text_id = t.id) ORDER BY t.id",
            [project_id],
        )
        if not rows:
            return [], []
        ids, texts = zip(*rows)
        return list(ids), list(texts)

    def label_counts(self, project_id: int) -> dict[str, int]:
        """Return ``{class name: number of labels}`` for every class in order, zeros included."""
        rows = self._all(
            "SELECT c.name, COUNT(l.text_id) FROM classes c "
            "LEFT JOIN labels l ON l.class_id = c.id "
            "AND l.text_id NOT IN (SELECT id FROM texts WHERE deleted_at IS NOT NULL) "
            "WHERE c.project_id = ? AND c.deleted_at IS NULL "
            "GROUP BY c.id ORDER BY c.position, c.id",
            [project_id],
        )
        if not rows:
            self._project_name(project_id)
        return dict(rows)

    def _refuse_over_limit(self, project_id: int, added: int) -> None:
        # runs after the inserts, inside the same transaction: raising rolls them back
        limit = self.limits.project_texts
        (total,) = self._one(
            "SELECT COUNT(*) FROM texts WHERE project_id = ? AND deleted_at IS NULL", [project_id]
        )
        if total > limit:
            room = max(0, limit - (total - added))
            raise InputError(
                f"A project holds at most {limit:,} sentences; this one has room for {room:,} "
                f"more, but got {added:,} new ones. Nothing was added: import fewer, or start "
                "another project."
            )

    def _wanted_labels(
        self, project_id: int, texts: list[str], labels: list[str | None] | None
    ) -> list[str | None]:
        """Check optional labels against the texts and the classes before anything is written."""
        if labels is None:
            return [None] * len(texts)
        if len(labels) != len(texts):
            raise InputError(
                f"Got {len(texts)} texts but {len(labels)} labels; "
                "give one label (or None) per text."
            )
        known = self.class_ids(project_id)
        unknown = sorted({l for l in labels if l is not None and l not in known})
        if unknown:
            raise InputError(
                f"Unknown label(s) {', '.join(map(repr, unknown))}; this project's classes are "
                f"{', '.join(map(repr, known))}. Add the class first or fix the labels."
            )
        return list(labels)

    def _insert_texts(
        self, project_id: int, unique: dict[str, tuple[str, str | None]], source: str
    ) -> tuple[list[int], int]:
        """Insert texts the project lacks; return the ids of all of them and how many were new.

        A text the user deleted comes back (with its id) and counts as new.
        """
        now = utc_now()
        text_ids, added = [], 0
        for digest, (text, _) in unique.items():
            revived = self.db.execute(
                "UPDATE texts SET deleted_at = NULL WHERE project_id = ? AND hash = ? "
                "AND deleted_at IS NOT NULL RETURNING id",
                [project_id, digest],
            ).fetchone()
            if revived is not None:
                text_ids.append(revived[0])
                added += 1
                continue
            cursor = self.db.execute(
                "INSERT INTO texts (project_id, hash, text, source, created_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (project_id, hash) DO NOTHING",
                [project_id, digest, text, source, now],
            )
            if cursor.rowcount == 1:
                text_ids.append(cursor.lastrowid)
                added += 1
            else:
                row = self._one(
                    "SELECT id FROM texts WHERE project_id = ? AND hash = ?", [project_id, digest]
                )
                text_ids.append(row[0])
        return text_ids, added

    def _changed_since(self, text_id: int, event_id: int) -> bool:
        """Whether a later change of the text's label (by anyone) is still in effect."""
        later = self._one(
            "SELECT 1 FROM label_events WHERE text_id = ? AND id > ? AND undone = 0 LIMIT 1",
            [text_id, event_id],
        )
        return later is not None

    def _current_class(self, text_id: int) -> int | None:
        row = self._one("SELECT class_id FROM labels WHERE text_id = ?", [text_id])
        return None if row is None else row[0]

    def _write_label(self, project_id: int, text_id: int, class_id: int | None) -> None:
        """Make ``class_id`` the text's only label (``None``: unlabelled), recording no event."""
        self.db.execute("DELETE FROM labels WHERE text_id = ?", [text_id])
        if class_id is not None:
            self.db.execute(
                "INSERT INTO labels (project_id, text_id, class_id, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [project_id, text_id, class_id, utc_now()],
            )

    def _change_label(
        self,
        project_id: int,
        text_id: int,
        class_id: int | None,
        schema_event_id: int | None = None,
        *,
        session: str | None = None,
    ) -> bool:
        """Relabel a text and append the change to ``label_events``; False if nothing changed."""
        previous = self._current_class(text_id)
        if previous == class_id:
            return False
        self._write_label(project_id, text_id, class_id)
        self.db.execute(
            "INSERT INTO label_events (project_id, text_id, class_id, previous_class_id, "
            "schema_event_id, session, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [project_id, text_id, class_id, previous, schema_event_id, session, utc_now()],
        )
        return True


def _clean_text(text: object) -> str:
    if not isinstance(text, str):
        raise InputError(f"Texts must be strings, but got {type(text).__name__}: {text!r:.60}.")
    return text.strip()
