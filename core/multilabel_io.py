"""Multi-label files: label sets read from CSV/JSONL, checked, and written back out.

A multi-label file has a labels column holding several class names: ``;``-separated in
a CSV cell (``staff;waiting time``), a list in JSONL (``["staff", "waiting time"]``).
The answer "none of these" is written ``none of these`` (or ``[]``) in a CSV cell and
``[]`` in JSONL; an empty cell (or a missing / null value) leaves the text unlabelled.

Bad input never half-imports: ``label_sets_of`` reads every row first and returns the
treatment of each oddity as a plain sentence for the import summary (``notes``):

- a name that is not a class: refused by ``check_classes`` with the names and lines,
  unless the caller lets new classes be added (they are then listed);
- an empty labels cell: the text comes in unlabelled (listed);
- a name twice in one cell: counted once (listed);
- a class whose name holds the separator: matched whole in a CSV cell, before the cell
  is split (listed); a new class name with the separator in it is refused, since no
  CSV cell could hold it;
- an empty item (``a;;b``), a list item that is not text, or "none of these" together
  with classes: the item is dropped, or for the last two the row's labels (listed).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Sequence

from core.errors import InputError
from core.export import neutralise

__all__ = ["NONE_MARKERS", "SEPARATOR", "LabelSetImport", "SetRow", "check_classes", "import_label_sets",
           "label_sets_of", "looks_multi_label", "set_rows", "sets_to_csv", "sets_to_jsonl", "split_cell"]

SEPARATOR = ";"
#: CSV cells meaning "none of these" (compared case-insensitively, after stripping)
NONE_MARKERS = ("none of these", "[]")
_LISTED = 5


@dataclass
class LabelSetImport:
    """A multi-label file read and checked: ``texts``, ``sets`` and ``lines`` are aligned.

    sets: per text a tuple of class names (``()``: none of these) or None (unlabelled).
    names: every class name met, first seen first; unknown: {name: lines} of names that
    are not classes (empty when no classes were given); notes: the import summary's
    plain sentences, one per kind of oddity met; dropped: lines whose labels could not be
    used (odd list items, "none of these" with classes), imported unlabelled.
    """

    texts: list[str]
    sets: list[tuple[str, ...] | None]
    lines: list[int]
    names: list[str] = field(default_factory=list)
    unknown: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # lines whose labels were unusable

    @property
    def n_none(self) -> int:
        return sum(1 for s in self.sets if s == ())

    @property
    def n_unlabelled(self) -> int:
        return sum(1 for s in self.sets if s is None)

    def summary(self) -> str:
        """One line: how many texts came with classes, with none of these, unlabelled."""
        with_sets = len(self.sets) - self.n_none - self.n_unlabelled
        return (f"{len(self.texts):,} texts: {with_sets:,} with classes, {self.n_none:,} "
                f"“none of these”, {self.n_unlabelled:,} unlabelled.")


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_LISTED]))
    more = f" and {len(lines) - _LISTED:,} more" if len(lines) > _LISTED else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def split_cell(cell: str, classes: Sequence[str] = (), separator: str = SEPARATOR
               ) -> tuple[list[str], list[str], int]:
    """(names, classes matched whole, empty items) of one CSV labels cell.

    Class names that contain the separator are matched whole first, so with classes
    ["food; drink", "staff"] the cell "food; drink;staff" gives ["food; drink", "staff"].
    Example: "staff; waiting ;;" -> (["staff", "waiting"], [], 2).
    """
    whole = sorted(((c, [p.strip() for p in c.split(separator)]) for c in classes if separator in c),
                   key=lambda item: len(item[1]), reverse=True)
    parts = [p.strip() for p in cell.split(separator)]
    names, matched, empty, i = [], [], 0, 0
    while i < len(parts):
        hit = next((c for c, pieces in whole if parts[i:i + len(pieces)] == pieces), None)
        if hit is not None:
            names.append(hit)
            matched.append(hit)
            i += len(hit.split(separator))
            continue
        if parts[i]:
            names.append(parts[i])
        else:
            empty += 1
        i += 1
    return names, matched, empty


def looks_multi_label(labels: Sequence[object] | None, separator: str = SEPARATOR) -> bool:
    """Whether a file's raw label cells (``read_records(..., label_lists=True)``) hold sets:
    a JSON list, or a CSV cell with the separator or a "none of these" marker."""
    return any(isinstance(v, (tuple, list)) or (isinstance(v, str) and (
        separator in v or v.strip().casefold() in NONE_MARKERS)) for v in labels or ())


def label_sets_of(rows, classes: Sequence[str] = (), *, separator: str = SEPARATOR) -> LabelSetImport:
    """Read the label sets of an ``ImportResult`` read with ``label_lists=True``.

    classes: the project's classes (names matched whole when they hold the separator;
    names not among them are listed in ``unknown``). Empty for a new project.
    """
    out = LabelSetImport(list(rows.texts), [], list(rows.lines))
    seen: dict[str, None] = {}
    odd: dict[str, list[int]] = {k: [] for k in ("empty", "repeat", "whole", "blank", "item", "mixed")}
    for line, cell in zip(out.lines, rows.labels or [None] * len(out.texts)):
        labels = _one_set(cell, classes, separator, line, odd)
        out.sets.append(labels)
        for name in labels or ():
            seen.setdefault(name)
            if classes and name not in classes:
                out.unknown.setdefault(name, []).append(line)
    out.names = list(seen)
    out.notes = _notes(odd, separator)
    out.dropped = sorted(odd["item"] + odd["mixed"])
    return out


def _one_set(cell, classes, separator, line, odd) -> tuple[str, ...] | None:
    if cell is None:
        return None
    if isinstance(cell, (tuple, list)):
        if any(not isinstance(v, (str, int, float)) or isinstance(v, bool) for v in cell):
            odd["item"].append(line)
            return None
        names = [str(v).strip() for v in cell]
        if any(not n for n in names):
            odd["blank"].append(line)
        names = [n for n in names if n]
    elif not str(cell).strip():
        odd["empty"].append(line)
        return None
    elif str(cell).strip().casefold() in NONE_MARKERS:
        return ()
    else:
        names, matched, blank = split_cell(str(cell), classes, separator)
        if matched:
            odd["whole"].append(line)
        if blank:
            odd["blank"].append(line)
        if any(n.casefold() in NONE_MARKERS for n in names):
            odd["mixed"].append(line)
            return None
    unique = tuple(dict.fromkeys(names))
    if len(unique) < len(names):
        odd["repeat"].append(line)
    return unique


def _notes(odd: dict[str, list[int]], separator: str) -> list[str]:
    texts = {
        "empty": "had an empty labels cell and came in unlabelled (write “none of these” for a "
                 "sentence that has none of the classes)",
        "repeat": "named a class twice in one cell; it was counted once",
        "whole": f"named a class whose name holds the separator “{separator}”; it was matched "
                 "whole before the cell was split",
        "blank": "had an empty name between separators; it was ignored",
        "item": "had a labels list holding something other than names; the row came in unlabelled",
        "mixed": "said “none of these” together with classes; the row came in unlabelled",
    }
    return [f"{len(lines):,} row{'s' if len(lines) > 1 else ''} ({_lines(lines)}) {texts[k]}."
            for k, lines in odd.items() if lines]


def check_classes(parsed: LabelSetImport, classes: Sequence[str], *, add_classes: bool,
                  name: str = "The file", separator: str = SEPARATOR) -> list[str]:
    """The classes to add for a file's names that are not classes yet.

    Refused (InputError, nothing written) when there are such names and ``add_classes``
    is False, or when a new name holds the separator (no CSV cell could carry it).
    """
    new = [n for n in parsed.names if n not in classes]
    if not new:
        return []
    cut = [n for n in new if separator in n]
    if cut:
        raise InputError(f"{name} names class(es) {', '.join(map(repr, cut[:_LISTED]))} with "
                         f"“{separator}” inside, the separator of a labels cell, so no CSV could "
                         "hold them. Rename them in the file (or create the class first). "
                         "Nothing was added.")
    if not add_classes:
        listed = "; ".join(f"{n!r} ({_lines(parsed.unknown.get(n, []))})" for n in new[:_LISTED])
        more = f" and {len(new) - _LISTED:,} more" if len(new) > _LISTED else ""
        raise InputError(f"{name} has labels that are not classes of the project "
                         f"({', '.join(map(repr, classes))}): {listed}{more}. Fix them in the "
                         "file, or let them be added as new classes. Nothing was added.")
    return new


@dataclass(frozen=True)
class SetRow:
    """One exported row: a human label set and/or a predicted set with its probabilities."""

    row_id: int
    text: str
    labels: tuple[str, ...] | None
    predicted: tuple[str, ...] | None
    probs: dict[str, float] | None


def _cell(labels: tuple[str, ...] | None, separator: str) -> str:
    if labels is None:
        return ""
    return separator.join(labels) if labels else NONE_MARKERS[0]


def sets_to_csv(rows: Sequence[SetRow], classes: Sequence[str], *, id_column: str = "text_id",
                separator: str = SEPARATOR) -> bytes:
    """UTF-8 CSV (BOM) with columns id, text, labels, predicted, p_<class>...; formula cells
    neutralised. ``labels`` and ``predicted`` are ``;``-joined (``none of these`` for the
    empty set), so the file imports back as a multi-label file (human labels only)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([neutralise(h) for h in [id_column, "text", "labels", "predicted",
                                              *(f"p_{c}" for c in classes)]])
    for r in rows:
        probs = [("" if r.probs is None or r.probs.get(c) is None else round(r.probs[c], 6))
                 for c in classes]
        writer.writerow([r.row_id, neutralise(r.text), neutralise(_cell(r.labels, separator)),
                         neutralise(_cell(r.predicted, separator)), *probs])
    return buf.getvalue().encode("utf-8-sig")


def sets_to_jsonl(rows: Sequence[SetRow], classes: Sequence[str], *, id_column: str = "text_id") -> bytes:
    """One JSON object per row: id, text, labels (a list, [] for none of these, null when
    unlabelled), predicted (a list or null) and probs ({class: p} or null)."""
    lines = []
    for r in rows:
        record = {id_column: r.row_id, "text": r.text,
                  "labels": None if r.labels is None else list(r.labels),
                  "predicted": None if r.predicted is None else list(r.predicted),
                  "probs": None if r.probs is None else {c: r.probs.get(c) for c in classes}}
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n" if lines else "").encode("utf-8")


def import_label_sets(store, project_id: int, parsed: LabelSetImport, *, source: str,
                      add_classes: bool = False, session: str | None = None):
    """Add a checked file's texts with their sets to a multi-label project, all or nothing.

    Returns ``Store.add_labelled_sets``'s ``AddResult``; refusals as ``check_classes``.
    """
    new = check_classes(parsed, store.classes(project_id), add_classes=add_classes, name=source)
    return store.add_labelled_sets(project_id, parsed.texts, parsed.sets, source=source,
                                   new_classes=new, session=session)


def set_rows(store, project, model=None, *, include: str = "both") -> list[SetRow]:
    """The Export page's rows of a multi-label project, by text id: human sets ('labels'),
    the model's predicted sets of the other texts ('predictions'), or 'both'."""
    from core.multilabel import set_predictions

    if include not in ("labels", "predictions", "both"):
        raise InputError(f"include must be 'labels', 'predictions' or 'both', not {include!r}.")
    human = {r.text_id: r for r in store.label_sets(project.id)}
    rows = [SetRow(r.text_id, r.text, r.labels, None, None)
            for r in human.values()] if include != "predictions" else []
    if include != "labels" and model is not None:
        rows += [SetRow(p.text_id, p.text, None, p.labels, dict(p.probs))
                 for p in set_predictions(store, project, model) if p.text_id not in human]
    return sorted(rows, key=lambda r: r.row_id)
