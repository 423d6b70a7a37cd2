"""Label sets of multi-label projects: zero, one or many classes per text, and "none of these".

In a multi-label project a text is in one of three states: unlabelled (no row in
``labels`` nor in ``none_labels``), "none of these" (a row in ``none_labels``: a
negative for every class), or a non-empty set of classes (a row per class in
``labels``). A change of a text's set is one row of ``label_events`` holding the
whole set before and after (``previous_set`` / ``class_set``, sorted JSON lists of
class ids; NULL is unlabelled, ``[]`` none of these), so undo restores the previous
set in one step. Sets are passed and returned as tuples of class names in the
project's class order; ``None`` means unlabelled and ``()`` none of these.
"""

from collections.abc import Iterable, Sequence

from core.errors import InputError
from core.hashing import text_hash
from core.store.codec import dump_json, load_json, utc_now
from core.store.connection import StoreBase, transactional
from core.store.rows import AddResult, LabelSet

__all__ = ["LabelSetsMixin", "MULTI_LABEL", "SINGLE_LABEL", "TASK_TYPES"]

SINGLE_LABEL, MULTI_LABEL = "single_label", "multi_label"
TASK_TYPES = (SINGLE_LABEL, MULTI_LABEL)

ClassSet = frozenset[int] | None


class LabelSetsMixin(StoreBase):
    """Reading and changing the label sets of a multi-label project's texts."""

    def is_multi_label(self, project_id: int) -> bool:
        """Whether the project allows zero, one or many classes per text."""
        row = self._one("SELECT task_type FROM projects WHERE id = ?", [project_id])
        if row is None:
            self._project_name(project_id)
        return row[0] == MULTI_LABEL

    @transactional
    def set_label_set(self, project_id: int, text_id: int, labels: Iterable[str] | None, *,
                      session: str | None = None) -> bool:
        """Give one text of a multi-label project the set ``labels`` (``()``: none of these,
        ``None``: unlabelled) as one undoable change; False when it already had that set."""
        return self.set_label_sets(project_id, [text_id], labels, session=session) > 0

    @transactional
    def set_label_sets(self, project_id: int, text_ids: Sequence[int],
                       labels: Iterable[str] | None, *, session: str | None = None) -> int:
        """Give several texts the same label set in one transaction; return how many changed.

        Each text's change is its own event, so undo walks them back one text at a time.
        session: the labeller (see ``Store.set_labels``).
        """
        wanted = self._class_set(project_id, labels)
        for text_id in text_ids:
            self._check_text(project_id, text_id)
        return sum(self._change_set(project_id, text_id, wanted, session=session)
                   for text_id in dict.fromkeys(text_ids))

    def label_set(self, project_id: int, text_id: int) -> tuple[str, ...] | None:
        """The text's classes in class order, ``()`` for none of these, None if unlabelled."""
        self._check_text(project_id, text_id)
        return self._names(project_id, self._current_set(text_id))

    def label_sets(self, project_id: int) -> list[LabelSet]:
        """``(text_id, text, labels)`` of every labelled text by text id; ``labels`` is a
        tuple of class names in class order, ``()`` for none of these."""
        order = {class_id: i for i, (class_id, _) in enumerate(self._live_classes(project_id))}
        names = dict(self._live_classes(project_id))
        rows = self._all(
            "SELECT t.id, t.text, l.class_id FROM texts t JOIN labels l ON l.text_id = t.id "
            "WHERE t.project_id = ? AND t.deleted_at IS NULL "
            "UNION ALL SELECT t.id, t.text, NULL FROM texts t JOIN none_labels n ON n.text_id = t.id "
            "WHERE t.project_id = ? AND t.deleted_at IS NULL ORDER BY 1",
            [project_id, project_id],
        )
        sets: dict[int, tuple[str, set[int]]] = {}
        for text_id, text, class_id in rows:
            entry = sets.setdefault(text_id, (text, set()))
            if class_id in names:
                entry[1].add(class_id)
        return [LabelSet(text_id, text, tuple(names[c] for c in sorted(ids, key=order.get)))
                for text_id, (text, ids) in sets.items()]

    def none_count(self, project_id: int) -> int:
        """How many live texts are labelled "none of these"."""
        (count,) = self._one(
            "SELECT COUNT(*) FROM none_labels n JOIN texts t ON t.id = n.text_id "
            "WHERE n.project_id = ? AND t.deleted_at IS NULL", [project_id])
        return count

    @transactional
    def add_labelled_sets(self, project_id: int, texts: list[str],
                          labels: Sequence[Iterable[str] | None], *, source: str = "typed",
                          new_classes: Sequence[str] = (), session: str | None = None) -> AddResult:
        """``add_texts`` for a multi-label project: each text with a set of class names
        (``()``: none of these, None: leave unlabelled). Checked before anything is written;
        a text given twice keeps its last set that is not None."""
        if not self.is_multi_label(project_id):
            raise InputError("Label sets need a multi-label project; this one takes one class "
                             "per sentence. Give one label per text instead.")
        if len(labels) != len(texts):
            raise InputError(f"Got {len(texts)} texts but {len(labels)} label sets; "
                             "give one set (or None) per text.")
        for name in dict.fromkeys(new_classes):
            if name not in self.class_ids(project_id):
                self.add_class(project_id, name)
        wanted = [None if s is None else self._class_set(project_id, s) for s in labels]
        unique: dict[str, tuple[str, ClassSet]] = {}
        empty = 0
        for raw, class_set in zip(texts, wanted):
            if not isinstance(raw, str):
                raise InputError(f"Texts must be strings, but got {type(raw).__name__}: {raw!r:.60}.")
            clean = raw.strip()
            if not clean:
                empty += 1
                continue
            digest = text_hash(clean)
            previous = unique.get(digest, (clean, None))[1]
            unique[digest] = (clean, class_set if class_set is not None else previous)
        text_ids, added = self._insert_texts(project_id, {d: (t, None) for d, (t, _) in unique.items()},
                                             source)
        if added:
            self._refuse_over_limit(project_id, added)
        changed = sum(self._change_set(project_id, text_id, class_set, session=session)
                      for text_id, (_, class_set) in zip(text_ids, unique.values())
                      if class_set is not None)
        return AddResult(added, len(texts) - empty - added, empty, text_ids, changed)

    def _class_set(self, project_id: int, labels: Iterable[str] | None) -> ClassSet:
        """Class names -> a set of live class ids; repeats are one; unknown names refused."""
        if labels is None:
            return None
        if isinstance(labels, str):
            raise InputError(f"A label set must be a list of class names, but got the text "
                             f"{labels!r}. Write [{labels!r}] for a set of one class.")
        known = self.class_ids(project_id)
        names = list(labels)
        unknown = [n for n in dict.fromkeys(names) if n not in known]
        if unknown:
            raise InputError(
                f"Unknown class(es) {', '.join(map(repr, unknown))}; this project's classes are "
                f"{', '.join(map(repr, known))}. Add the class first or fix the labels.")
        return frozenset(known[n] for n in names)

    def _names(self, project_id: int, class_set: ClassSet) -> tuple[str, ...] | None:
        if class_set is None:
            return None
        return tuple(name for class_id, name in self._live_classes(project_id) if class_id in class_set)

    def _current_set(self, text_id: int) -> ClassSet:
        """The text's class ids, ``frozenset()`` for none of these, None when unlabelled."""
        ids = frozenset(r[0] for r in self._all("SELECT class_id FROM labels WHERE text_id = ?",
                                                [text_id]))
        if ids:
            return ids
        none = self._one("SELECT 1 FROM none_labels WHERE text_id = ?", [text_id])
        return frozenset() if none else None

    def _write_set(self, project_id: int, text_id: int, class_set: ClassSet) -> None:
        """Make ``class_set`` the text's labels, recording no event."""
        now = utc_now()
        self.db.execute("DELETE FROM labels WHERE text_id = ?", [text_id])
        self.db.execute("DELETE FROM none_labels WHERE text_id = ?", [text_id])
        if class_set is not None and not class_set:
            self.db.execute("INSERT INTO none_labels (project_id, text_id, updated_at) "
                            "VALUES (?, ?, ?)", [project_id, text_id, now])
        for class_id in sorted(class_set or ()):
            self.db.execute("INSERT INTO labels (project_id, text_id, class_id, updated_at) "
                            "VALUES (?, ?, ?, ?)", [project_id, text_id, class_id, now])

    def _change_set(self, project_id: int, text_id: int, class_set: ClassSet,
                    schema_event_id: int | None = None, *, session: str | None = None) -> bool:
        """Give a text a new set and append the change to ``label_events``; False if unchanged."""
        previous = self._current_set(text_id)
        if previous == class_set:
            return False
        self._write_set(project_id, text_id, class_set)
        self.db.execute(
            "INSERT INTO label_events (project_id, text_id, class_set, previous_set, "
            "schema_event_id, session, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [project_id, text_id, _dump_set(class_set), _dump_set(previous), schema_event_id,
             session, utc_now()])
        return True

    def _undo_set_event(self, project_id: int, event_id: int, text_id: int,
                        previous_json: str | None) -> tuple[int, tuple[str, ...] | None]:
        """Put back the set an event replaced (callers check nothing changed it since)."""
        previous = _load_set(previous_json)
        gone = [self._name_of(c) for c in sorted(previous or ()) if not self._class_is_live(c)]
        if gone:
            raise InputError(
                f"Cannot undo: text {text_id} would get back class(es) "
                f"{', '.join(map(repr, gone))}, which were deleted or merged. "
                "Undo that class change first.")
        self._write_set(project_id, text_id, previous)
        self.db.execute("UPDATE label_events SET undone = 1 WHERE id = ?", [event_id])
        return text_id, self._names(project_id, previous)

    def _class_is_live(self, class_id: int) -> bool:
        return self._one("SELECT 1 FROM classes WHERE id = ? AND deleted_at IS NULL",
                         [class_id]) is not None

    def _move_in_sets(self, project_id: int, class_id: int, into_id: int | None,
                      schema_event_id: int) -> None:
        """A class change in a multi-label project: ``class_id`` leaves every set it is in,
        replaced by ``into_id`` (merge) or by nothing (delete: a set left empty means none
        of these, since the labeller said no to every other class)."""
        rows = self._all("SELECT text_id FROM labels WHERE class_id = ?", [class_id])
        for (text_id,) in rows:
            current = self._current_set(text_id) or frozenset()
            moved = (current - {class_id}) | ({into_id} if into_id is not None else set())
            self._change_set(project_id, text_id, frozenset(moved), schema_event_id)

    def _restore_set(self, text_id: int, class_set_json: str, previous_json: str | None,
                     project_id: int) -> bool:
        """Undo of a class change: restore a set the change wrote, if nothing changed it since."""
        if self._current_set(text_id) != _load_set(class_set_json):
            return False
        self._write_set(project_id, text_id, _load_set(previous_json))
        return True


def _dump_set(class_set: ClassSet) -> str | None:
    return None if class_set is None else dump_json(sorted(class_set))


def _load_set(raw: str | None) -> ClassSet:
    return None if raw is None else frozenset(int(c) for c in load_json(raw))
