"""Reading user files (CSV, TSV, TXT, JSONL) into texts and optional labels.

Everything a user uploads passes through ``read_records``: it never raises
anything but ``InputError`` with a plain-language message, and a partial import
always says which rows were skipped and why.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["LIMITS", "Limits", "ImportResult", "read_records", "read_path", "decode_bytes"]


@dataclass(frozen=True)
class Limits:
    """Maximums shown in the UI and enforced on import."""

    upload_bytes: int = 25 * 1024 * 1024
    text_chars: int = 5_000
    project_texts: int = 100_000


LIMITS = Limits()
_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl"}


@dataclass
class ImportResult:
    """texts and labels are aligned; labels is None when the file has no label column."""

    texts: list[str]
    labels: list[str | None] | None
    columns: list[str] = field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    warnings: list[str] = field(default_factory=list)


def decode_bytes(data: bytes, name: str = "the file") -> tuple[str, list[str]]:
    """Bytes -> text. UTF-8 (with or without BOM) and UTF-16 with a BOM are read as such;
    other bytes fall back to Windows-1252 with a warning. Binary files are refused."""
    if not data.strip():
        raise InputError(f"{name} is empty: there is nothing to import.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as err:
            raise InputError(f"{name} says it is UTF-16 but is not readable as UTF-16 ({err.reason}).")
    if data[:4] == b"PK\x03\x04":
        raise InputError(f"{name} is a zip or Excel (.xlsx) file, not plain text. "
                         "In your spreadsheet program use 'Save as' > CSV (UTF-8), then upload that.")
    if b"\x00" in data[:65536]:
        raise InputError(f"{name} looks like a binary file (it contains NUL bytes), not text. "
                         "Upload a CSV, TXT or JSONL file saved as UTF-8.")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), [
            f"{name} is not UTF-8; it was read as Windows-1252 (Latin-1). "
            "If accents look wrong, save it as UTF-8 and upload it again."]


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], role: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"There is no column called '{wanted}' for the {role}. "
                             f"The columns are: {', '.join(columns) or '(none)'}.")
        return wanted
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[d] for d in defaults if d in lower), None)


def _clean(value, line: int, result: ImportResult) -> str | None:
    text = "" if value is None else str(value).strip()
    if not text:
        result.skipped.append((line, "empty text"))
        return None
    if len(text) > LIMITS.text_chars:
        result.warnings.append(f"Line {line}: the text had {len(text):,} characters and was cut to "
                               f"{LIMITS.text_chars:,}.")
        text = text[: LIMITS.text_chars]
    return text


def _from_rows(rows: list[tuple[int, dict]], columns: list[str], text_column, label_column,
               result: ImportResult) -> ImportResult:
    result.columns = columns
    result.text_column = _pick(columns, text_column, ("text", "sentence", "content", "body"), "text")
    if result.text_column is None:
        if len(columns) != 1:
            raise InputError("Could not tell which column holds the text: there is no column "
                             f"named 'text'. Pick one of: {', '.join(columns)}.")
        result.text_column = columns[0]
    result.label_column = _pick(columns, label_column, ("label", "labels", "class", "category"), "labels")
    labels = [] if result.label_column else None
    for line, row in rows:
        text = _clean(row.get(result.text_column), line, result)
        if text is None:
            continue
        result.texts.append(text)
        if labels is not None:
            lab = row.get(result.label_column)
            labels.append(str(lab).strip() or None if lab is not None else None)
    result.labels = labels
    return result


def _read_csv(text: str, name: str, text_column, label_column, result: ImportResult) -> ImportResult:
    sample = text[:65536]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if name.endswith(".tsv") else csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = [h.strip() for h in next(reader)]
        body = list(reader)
    except (csv.Error, StopIteration) as err:
        raise InputError(f"{name} is not a readable CSV file ({err}).")
    if not any(header):
        raise InputError(f"{name} has an empty header row; the first row must name the columns.")
    rows = []
    for i, cells in enumerate(body, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            result.skipped.append((i, f"has {len(cells)} cells but the header has {len(header)}"))
            continue
        rows.append((i, dict(zip(header, cells))))
    if body and not rows and result.skipped:
        raise InputError(f"No row of {name} matches its header ({len(header)} columns); "
                         "check the separator and the quotes.")
    return _from_rows(rows, header, text_column, label_column, result)


def _read_jsonl(text: str, name: str, text_column, label_column, result: ImportResult) -> ImportResult:
    rows, columns = [], {}
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            result.skipped.append((i, f"is not valid JSON ({err.msg})"))
            continue
        if isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            result.skipped.append((i, "is not a JSON object"))
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((i, {k: v if isinstance(v, (str, int, float)) else None for k, v in obj.items()}))
    if not rows:
        raise InputError(f"No line of {name} is a JSON object like "
                         '{"text": "...", "label": "..."}.')
    return _from_rows(rows, list(columns), text_column, label_column, result)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.3g} MB"


def read_records(data: bytes, name: str, *, text_column: str | None = None,
                 label_column: str | None = None) -> ImportResult:
    """Parse an uploaded file. ``name`` decides the format by its extension."""
    if len(data) > LIMITS.upload_bytes:
        raise InputError(f"{name} is {_mb(len(data))}; the limit is {_mb(LIMITS.upload_bytes)}. "
                         "Split it into smaller files.")
    fmt = _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise InputError(f"{name}: unsupported file type. Upload a .csv, .tsv, .txt or .jsonl file.")
    text, warnings = decode_bytes(data, name)
    result = ImportResult([], None, warnings=warnings)
    if fmt == "txt":
        rows = [(i, {"text": line}) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return _from_rows(rows, ["text"], None, None, result)
    reader = _read_csv if fmt == "csv" else _read_jsonl
    return reader(text, name, text_column, label_column, result)


def read_path(path: str | Path, **kwargs) -> ImportResult:
    """Read a file from disk (the CLI's entry point); see read_records."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No file at '{path}'.")
    if path.stat().st_size > LIMITS.upload_bytes:
        raise InputError(f"{path.name} is {_mb(path.stat().st_size)}; the limit is "
                         f"{_mb(LIMITS.upload_bytes)}. Split it into smaller files.")
    return read_records(path.read_bytes(), path.name, **kwargs)
