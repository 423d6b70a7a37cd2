"""Tables of labels and predictions: the rows the Predictions page shows and edits, what
changed between two model versions, and the CSV / JSONL files the Export page writes.

Every function takes plain rows from the store (``Label``, ``Prediction``) and returns
plain rows or bytes, so it is tested without a model. CSV cells that a spreadsheet
would run as a formula are neutralised with a leading apostrophe; JSONL is written
as-is, because no spreadsheet opens it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = ["FORMULA_PREFIXES", "SORTS", "Change", "file_stem", "ExportRow", "neutralise",
           "filter_predictions", "prediction_changes", "labels_from_choices", "export_rows",
           "to_csv", "to_jsonl", "columns", "needs_human", "PREDICTION_COLUMNS", "NEEDS_HUMAN"]

# Spreadsheet programs run a cell that starts with one of these as a formula
# (OWASP "CSV injection"); tab and carriage return are in OWASP's list too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
SORTS = ("Least confident first", "Most confident first", "By predicted class", "As added")
# after the id column (text_id, or line for `tenshot predict`) and before one p_<class> per class
PREDICTION_COLUMNS = ("text", "label", "predicted", "confidence")
# after confidence, only when a confidence threshold is set (core.learn.coverage): "yes" for a
# prediction below it, "no" above, empty for a row without a prediction
NEEDS_HUMAN = "needs_human"


def neutralise(value: object) -> object:
    """A CSV-safe cell: text that starts with a formula prefix gets a leading apostrophe.

    Numbers and None pass unchanged. Example: ``"=1+1" -> "'=1+1"``, ``"ok" -> "ok"``.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def file_stem(name: str, *, fallback: str = "tenshot") -> str:
    """A safe file-name stem from a project name: 'Café reviews/2024' -> 'cafe-reviews-2024'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:60].strip("-")
    return stem or fallback


def filter_predictions(preds: Sequence, *, search: str = "", classes: Iterable[str] | None = None,
                       confidence: tuple[float, float] = (0.0, 1.0),
                       sort: str = "Least confident first") -> list:
    """The predictions to show, filtered and sorted.

    search: case-insensitive substring of the text ('' keeps all); classes: predicted
    classes to keep (None keeps all); confidence: inclusive (low, high) range;
    sort: one of ``SORTS``. The input is not modified.
    """
    if sort not in SORTS:
        raise ValueError(f"Unknown sort {sort!r}; choose one of {SORTS}.")
    needle = search.strip().casefold()
    keep = None if classes is None else set(classes)
    low, high = confidence
    rows = [p for p in preds
            if (not needle or needle in p.text.casefold())
            and (keep is None or p.label in keep)
            and low - 1e-9 <= p.confidence <= high + 1e-9]
    if sort == SORTS[0]:
        rows.sort(key=lambda p: (p.confidence, p.text_id))
    elif sort == SORTS[1]:
        rows.sort(key=lambda p: (-p.confidence, p.text_id))
    elif sort == SORTS[2]:
        rows.sort(key=lambda p: (p.label, -p.confidence, p.text_id))
    else:
        rows.sort(key=lambda p: p.text_id)
    return rows


@dataclass(frozen=True)
class Change:
    """A text whose predicted class differs between two model versions."""

    text_id: int
    text: str
    before: str
    after: str
    confidence_before: float
    confidence_after: float


def prediction_changes(old: Sequence, new: Sequence) -> list[Change]:
    """The texts predicted by both models whose predicted class flipped, by text id.

    Texts only one model predicted (labelled in between, or added since) are skipped:
    there is nothing to compare. Example: old {1: a, 2: b}, new {1: a, 2: a, 3: b}
    -> [Change(2, ..., before="b", after="a")].
    """
    before = {p.text_id: p for p in old}
    out = []
    for p in sorted(new, key=lambda p: p.text_id):
        q = before.get(p.text_id)
        if q is not None and q.label != p.label:
            out.append(Change(p.text_id, p.text, q.label, p.label, float(q.confidence),
                              float(p.confidence)))
    return out


def labels_from_choices(shown: Sequence, chosen: Mapping[int, str],
                        accepted: Iterable[int] = ()) -> list[tuple[int, str]]:
    """The (text_id, label) pairs a review table's choices ask for, in row order.

    shown: the predictions in the table's row order; chosen: {row position: the label
    picked for it}; accepted: row positions whose predicted class is kept as the label.
    A chosen label wins over acceptance; positions outside ``shown`` are skipped.
    Example: shown=[p0 (pred "pos"), p1], chosen={1: "neg"}, accepted={0, 1}
    -> [(p0.text_id, "pos"), (p1.text_id, "neg")].
    """
    out = []
    for pos in sorted(set(chosen) | set(accepted)):
        if 0 <= pos < len(shown):
            label = chosen[pos] if pos in chosen else shown[pos].label
            out.append((shown[pos].text_id, str(label)))
    return out


@dataclass(frozen=True)
class ExportRow:
    """One row of a labels-and-predictions file (see ``columns``).

    text_id: the text's id in the workspace (the CLI puts the input file's line number
    here); label: the human label, None when nobody labelled the text; predicted: the
    model's class, None when the text was not predicted; probs: {class: probability}.
    """

    text_id: int
    text: str
    label: str | None
    predicted: str | None
    confidence: float | None
    probs: dict[str, float] | None

    @property
    def source(self) -> str:
        """'human' for a labelled row, 'model' for a prediction only."""
        return "human" if self.label is not None else "model"


def columns(classes: Sequence[str], *, id_column: str = "text_id", marker: bool = False) -> list[str]:
    """The one column vocabulary of the Export page's files and ``tenshot predict --out``.

    A predicted class is never written under ``label``, so importing the file again
    (Data page, ``tenshot train``) brings back human labels only. ``marker`` adds
    ``needs_human`` after ``confidence`` (a confidence threshold was set).
    Example: ['pos', 'neg'] -> [text_id, text, label, predicted, confidence, p_pos, p_neg].
    """
    return [id_column, *PREDICTION_COLUMNS, *([NEEDS_HUMAN] if marker else []),
            *(f"p_{c}" for c in classes)]


def needs_human(row: ExportRow, threshold: float) -> bool | None:
    """True when the row's prediction is less confident than ``threshold``; None without one."""
    if row.predicted is None or row.confidence is None:
        return None
    return row.confidence < threshold - 1e-9


def export_rows(labelled: Sequence, predictions: Sequence, *, include: str = "both") -> list[ExportRow]:
    """Rows of human labels and/or model predictions, by text id.

    include: 'labels', 'predictions' or 'both'. A text with a human label is never
    also exported as a prediction.
    """
    if include not in ("labels", "predictions", "both"):
        raise ValueError(f"include must be 'labels', 'predictions' or 'both', not {include!r}.")
    rows: list[ExportRow] = []
    if include in ("labels", "both"):
        rows += [ExportRow(r.text_id, r.text, r.label, None, None, None) for r in labelled]
    if include in ("predictions", "both"):
        human = {r.text_id for r in labelled}
        rows += [ExportRow(p.text_id, p.text, None, p.label, float(p.confidence), dict(p.probs))
                 for p in predictions if p.text_id not in human]
    return sorted(rows, key=lambda r: r.text_id)


def _record(r: ExportRow, classes: Sequence[str], threshold: float | None) -> list:
    probs = [None if r.probs is None else r.probs.get(c) for c in classes]
    marker = []
    if threshold is not None:
        flag = needs_human(r, threshold)
        marker = [None if flag is None else ("yes" if flag else "no")]
    return [r.text_id, r.text, r.label, r.predicted, r.confidence, *marker, *probs]


def to_csv(rows: Sequence[ExportRow], classes: Sequence[str], *, id_column: str = "text_id",
           threshold: float | None = None) -> bytes:
    """UTF-8 CSV (with a BOM, so Excel reads accents right) with formula cells neutralised.

    Columns: ``columns(classes, id_column=..., marker=threshold is not None)``; empty
    cells where a value does not apply. The Data page and ``tenshot train`` import it
    back (text, label).
    """
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = columns(classes, id_column=id_column, marker=threshold is not None)
    writer.writerow([neutralise(h) for h in header])
    for r in rows:
        writer.writerow(["" if v is None else neutralise(_number(v))
                         for v in _record(r, classes, threshold)])
    return buf.getvalue().encode("utf-8-sig")


def _number(v):
    return round(v, 6) if isinstance(v, float) else v


def to_jsonl(rows: Sequence[ExportRow], classes: Sequence[str], *, id_column: str = "text_id",
             threshold: float | None = None) -> bytes:
    """One JSON object per line with the same fields as the CSV; probs as a nested object,
    needs_human as true / false / null."""
    lines = []
    for r in rows:
        record = {id_column: r.text_id, "text": r.text, "label": r.label, "predicted": r.predicted,
                  "confidence": r.confidence}
        if threshold is not None:
            record[NEEDS_HUMAN] = needs_human(r, threshold)
        record["probs"] = None if r.probs is None else {c: r.probs.get(c) for c in classes}
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
