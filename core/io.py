"""Reading user files (CSV, TSV, TXT, JSONL) into texts and optional labels.

Everything a user uploads passes through ``read_records``: it never raises
anything but ``InputError`` with a plain-language message, and a partial import
always says which rows were skipped and why, so the imported rows plus the
skipped rows account for every non-blank row of the file.

Shortcuts: a CSV's separator is the one its header row uses most (``csv.Sniffer``
is not used: it takes minutes on some 64 KB inputs), and the quote character is
always ``"``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError
from core.limits import DEFAULT_LIMITS, Limits

__all__ = ["ImportResult", "read_records", "read_path", "decode_bytes",
           "columns_of", "is_number"]

_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl"}
_SEPARATORS = (",", "\t", ";", "|")
_CSV_LIMIT_LOCK = threading.Lock()
# a one-column file is read with a separator it does not contain: each line is one cell
_NO_SEPARATOR = ("\x1f", "\x1e", "\x1d", "\x1c")
_QUOTED = re.compile(r'"[^"]*"')
# appended as a last line: if it comes back inside a cell, a quote was never closed
_END = "tenshot end of file 7d1c"
_LISTED_LINES = 5
_NUMERIC_SHARE = 0.5  # more numbers than this among the texts: likely the wrong column
# control characters that text files do not hold (tab, line breaks, form feed and ESC
# are allowed), and the replacement character of undecodable bytes
_BINARY = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")


@dataclass
class ImportResult:
    """texts, labels and lines are aligned; labels is None when the file has no label column.

    lines: where each text's row starts in the file (1 = the first line); skipped: (line,
    reason) of every non-blank row that gave no text; dropped_labels: lines whose label was
    a list, an object or true/false, so their text came in unlabelled.
    """

    texts: list[str]
    labels: list[str | None] | None
    columns: list[str] = field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    dropped_labels: list[int] = field(default_factory=list)


def decode_bytes(data: bytes, name: str = "the file") -> tuple[str, list[str]]:
    """Bytes -> text. UTF-8 (with or without BOM) and UTF-16/32 with a BOM are read as such;
    other bytes fall back to Windows-1252 with a warning. Binary files are refused."""
    if not data.strip():
        raise InputError(f"{name} is empty: there is nothing to import.")
    if data[:4] == b"PK\x03\x04":
        raise InputError(f"{name} is a zip or Excel (.xlsx) file, not plain text. "
                         "In your spreadsheet program use 'Save as' > CSV (UTF-8), then upload that.")
    text, warnings = _decode(data, name)
    if "\x00" in text:
        half = data[1::2] if data[1:2] == b"\x00" else data[0::2]
        if half.count(0) > 0.9 * len(half):
            raise InputError(f"{name} is saved as UTF-16 without a byte-order mark, which cannot "
                             "be read reliably. Save it as UTF-8 (or 'CSV UTF-8') and upload it again.")
        raise InputError(f"{name} looks like a binary file (it contains NUL bytes), not text. "
                         "Upload a CSV, TXT or JSONL file saved as UTF-8.")
    sample = text[:65536]
    if len(_BINARY.findall(sample)) > 0.05 * len(sample):
        raise InputError(f"{name} looks like a binary file (it is full of control characters), "
                         "not text. Upload a CSV, TXT or JSONL file saved as UTF-8.")
    return text, warnings


def _decode(data: bytes, name: str) -> tuple[str, list[str]]:
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                       (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec), []
            except UnicodeDecodeError as err:
                raise InputError(f"{name} says it is {codec.upper()} but is not readable as "
                                 f"{codec.upper()} ({err.reason}). Save it as UTF-8 and upload it again.")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), [
            f"{name} is not UTF-8; it was read as Windows-1252 (Latin-1). "
            "If accents look wrong, save it as UTF-8 and upload it again."]


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], role: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"There is no column called '{wanted:.60}' for the {role}. "
                             f"The columns are: {_listed(columns)}.")
        return wanted
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[d] for d in defaults if d in lower), None)


def _listed(names: list[str], most: int = 12) -> str:
    """'a, b, c' for an error message: long names are cut and long lists end in 'and N more'."""
    shown = [(n if len(n) <= 40 else n[:39] + "…") or "(blank)" for n in names[:most]]
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return (", ".join(shown) or "(none)") + more


def _text_of(row: dict, column: str) -> tuple[str | None, str]:
    """The row's text, or None and why it has none."""
    if column not in row or row[column] is None:
        return None, f"has no '{column:.60}' value"
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, f"its '{column:.60}' value is {_kind(value)}, not text"
    text = str(value).strip()
    return (text, "") if text else (None, "empty text")


def _kind(value: object) -> str:
    return {list: "a list", dict: "an object", bool: "true or false"}.get(type(value), "not text")


def _label_of(row: dict, column: str, lists: bool = False) -> tuple[str | tuple | None, bool]:
    """The row's label (None: unlabelled) and whether a value was there but unusable.

    lists: keep a JSON list as a tuple of its items (a multi-label file's label set; the
    items are checked by ``core.multilabel_io``), and an empty cell as "" (not None).
    """
    value = row.get(column)
    if value is None:
        return None, False
    if lists and isinstance(value, list):
        return tuple(value), False
    if lists and isinstance(value, str):
        return value.strip(), False
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, True
    return str(value).strip() or None, False


def _lines_listed(lines: list[int]) -> str:
    """'lines 2, 3, 4' (the first few, then 'and N more')."""
    listed = ", ".join(str(line) for line in lines[:_LISTED_LINES])
    more = f" and {len(lines) - _LISTED_LINES:,} more" if len(lines) > _LISTED_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {listed}{more}"


def _cut_warning(lines: list[tuple[int, int]], limit: int) -> str:
    if len(lines) == 1:
        line, n = lines[0]
        return f"Line {line}: the text had {n:,} characters and was cut to {limit:,}."
    return (f"{len(lines):,} texts were longer than {limit:,} characters and were cut to "
            f"{limit:,} ({_lines_listed([line for line, _ in lines])}).")


def is_number(text: str) -> bool:
    """True when a text is only a number, e.g. "0.5", "1,200", "30%"; never for a sentence."""
    try:
        float(text.replace(",", "").replace("%", ""))
    except ValueError:
        return False
    return True


def _numeric_warning(texts: list[str], column: str) -> str | None:
    """A warning when most texts are numbers: the wrong column was probably picked.

    Example: texts ["0.5", "0.7", "great"] from column "score" -> a warning naming "score".
    """
    numbers = [t for t in texts if is_number(t)]
    if not texts or len(numbers) < _NUMERIC_SHARE * len(texts):
        return None
    shown = ", ".join(numbers[:3])
    return (f"The text column '{column}' holds mostly numbers ({shown}, ...), not sentences. "
            "If that is the wrong column, pick the one with the sentences before importing.")


def _from_rows(rows: list[tuple[int, dict]], columns: list[str], text_column, label_column,
               result: ImportResult, limits: Limits, lists: bool = False) -> ImportResult:
    result.columns = columns
    result.text_column = _pick(columns, text_column, ("text", "sentence", "content", "body"), "text")
    if result.text_column is None:
        if len(columns) != 1:
            raise InputError("Could not tell which column holds the text: there is no column "
                             f"named 'text'. Pick one of: {_listed(columns)}.")
        result.text_column = columns[0]
    result.label_column = _pick(columns, label_column, ("label", "labels", "class", "category"), "labels")
    labels = [] if result.label_column else None
    cut = []
    for line, row in rows:
        text, why = _text_of(row, result.text_column)
        if text is None:
            result.skipped.append((line, why))
            continue
        if len(text) > limits.text_chars:
            cut.append((line, len(text)))
            text = text[: limits.text_chars]
        result.texts.append(text)
        result.lines.append(line)
        if labels is not None:
            label, unusable = _label_of(row, result.label_column, lists)
            labels.append(label)
            if unusable:
                result.dropped_labels.append(line)
    if cut:
        result.warnings.append(_cut_warning(cut, limits.text_chars))
    numeric = _numeric_warning(result.texts, result.text_column)
    if numeric:
        result.warnings.append(numeric)
    if result.dropped_labels:
        bad = result.dropped_labels
        many = len(bad) > 1
        result.warnings.append(f"{len(bad):,} row{'s' if many else ''} ({_lines_listed(bad)}) had "
                               "a label that is not a single class name (a list, an object or "
                               f"true/false); {'they were' if many else 'it was'} imported "
                               "without a label.")
    result.labels = labels
    return result


def _separator(text: str, name: str) -> str:
    """The separator the header row uses most (outside quotes); one absent from the text
    for a one-column file."""
    end = text.find("\n")
    header = _QUOTED.sub("", text if end < 0 else text[:end])
    order = ("\t", ",", ";", "|") if name.lower().endswith(".tsv") else _SEPARATORS
    count, best = max((header.count(s), -i) for i, s in enumerate(order))
    if count:
        return order[-best]
    return next((s for s in _NO_SEPARATOR if s not in text), ",")


@contextmanager
def _csv_cells_up_to(n_chars: int):
    """Let the csv module read cells of up to n_chars while the block runs.

    The csv module's field limit is process-wide; it is raised only for the parse and
    put back after, under a lock so two uploads parsed at once cannot undo each other.
    """
    with _CSV_LIMIT_LOCK:
        old = csv.field_size_limit(max(csv.field_size_limit(), n_chars))
        try:
            yield
        finally:
            csv.field_size_limit(old)


def _csv_records(text: str, name: str) -> list[tuple[int, list[str]]]:
    """(line where the record starts, cells) of every record; refuses an unclosed quote."""
    reader = csv.reader(io.StringIO(f"{text}\n{_END}", newline=""), delimiter=_separator(text, name))
    records, line = [], 1
    try:
        # a single cell may be as long as the whole text; it is cut later, with a warning
        with _csv_cells_up_to(len(text) + 1):
            for cells in reader:
                records.append((line, cells))
                line = reader.line_num + 1
    except csv.Error as err:
        raise InputError(f"{name} is not a readable CSV file: line {line} could not be read ({err}).")
    last_line, last = records.pop()
    if last != [_END]:
        raise InputError(f"{name} has a quote (\") on line {last_line} that is never closed, so "
                         "everything after it would be read as one cell. Close or remove that "
                         "quote and upload the file again.")
    return records


def _read_csv(text: str, name: str, text_column, label_column, result: ImportResult,
              limits: Limits, lists: bool = False) -> ImportResult:
    records = _csv_records(text, name)
    if not records or not any(c.strip() for c in records[0][1]):
        raise InputError(f"{name} has an empty header row; the first row must name the columns.")
    header = [h.strip() for h in records[0][1]]
    rows, body = [], 0
    for line, cells in records[1:]:
        if not any(c.strip() for c in cells):
            continue
        body += 1
        if len(cells) != len(header):
            result.skipped.append((line, f"has {len(cells)} cells but the header has {len(header)}"))
            continue
        rows.append((line, dict(zip(header, cells))))
    if body and not rows:
        raise InputError(f"No row of {name} matches its header ({len(header)} columns); "
                         "check the separator and the quotes.")
    return _from_rows(rows, header, text_column, label_column, result, limits, lists)


def _json_line(line: str) -> tuple[object, str]:
    """The parsed line, or None and why it could not be parsed."""
    try:
        return json.loads(line), ""
    except json.JSONDecodeError as err:
        return None, f"is not valid JSON ({err.msg})"
    except RecursionError:
        return None, "is not usable JSON (it is nested too deeply)"
    except ValueError:
        return None, "is not usable JSON (a number in it is too long)"


def _read_jsonl(text: str, name: str, text_column, label_column, result: ImportResult,
                limits: Limits, lists: bool = False) -> ImportResult:
    rows, columns = [], {}
    # JSON Lines are separated by \n only: a JSON string may hold U+2028 and other breaks
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj, why = _json_line(line)
        if why:
            result.skipped.append((i, why))
            continue
        if isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            result.skipped.append((i, "is not a JSON object"))
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((i, obj))
    if not rows:
        raise InputError(f"No line of {name} is a JSON object like "
                         '{"text": "...", "label": "..."}. Write one object per line (JSON Lines).')
    return _from_rows(rows, list(columns), text_column, label_column, result, limits, lists)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.3g} MB"


def _format(name: str) -> str:
    fmt = _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise InputError(f"{name}: unsupported file type. Upload a .csv, .tsv, .txt or .jsonl file.")
    return fmt


def _check_size(n_bytes: int, name: str, limits: Limits) -> None:
    if n_bytes > limits.upload_bytes:
        raise InputError(f"{name} is {n_bytes:,} bytes; the limit is {_mb(limits.upload_bytes)} "
                         f"({limits.upload_bytes:,} bytes). Split it into smaller files.")


def read_records(data: bytes, name: str, *, text_column: str | None = None,
                 label_column: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 label_lists: bool = False) -> ImportResult:
    """Parse an uploaded file. ``name`` decides the format by its extension; ``limits``
    bounds the file's size and cuts over-long texts (with a warning).

    label_lists: a multi-label file: label cells come back raw (a JSON list as a tuple,
    a text cell as its stripped text, "" kept) for ``core.multilabel_io.label_sets_of``.
    """
    _check_size(len(data), name, limits)
    fmt = _format(name)
    text, warnings = decode_bytes(data, name)
    result = ImportResult([], None, warnings=warnings)
    if fmt == "txt":
        rows = [(i, {"text": line}) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return _from_rows(rows, ["text"], None, None, result, limits)
    reader = _read_csv if fmt == "csv" else _read_jsonl
    return reader(text, name, text_column, label_column, result, limits, label_lists)


def columns_of(data: bytes, name: str, *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """The column names of a CSV/TSV header or of the first JSONL object; [] for TXT.

    For letting a user pick the text column when ``read_records`` could not guess it.
    """
    _check_size(len(data), name, limits)
    fmt = _format(name)
    text, _ = decode_bytes(data, name)
    if fmt == "csv":
        records = _csv_records(text, name)
        return [h.strip() for h in records[0][1]] if records else []
    if fmt == "jsonl":
        for line in text.split("\n"):
            obj, why = _json_line(line) if line.strip() else (None, "blank")
            if isinstance(obj, dict):
                return list(obj)
    return []


def read_path(path: str | Path, **kwargs) -> ImportResult:
    """Read a file from disk (the CLI's entry point); see read_records."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No file at '{path}'.")
    _check_size(path.stat().st_size, path.name, kwargs.get("limits", DEFAULT_LIMITS))
    return read_records(path.read_bytes(), path.name, **kwargs)
