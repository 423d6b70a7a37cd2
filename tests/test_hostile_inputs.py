"""Broken and hostile files: uploads (CSV, TSV, TXT, JSONL) and model bundles.

An upload must end in one of two ways: an ``InputError`` whose message is plain
language (no exception names, no tracebacks, no byte reprs), or an import that
accounts for every row, imported or skipped with a reason. Inputs come from a
hand-written list with exact expectations, from seeded mutations of valid files,
and from hypothesis round trips where the expected rows are known. A sample goes
through the Data page too. Bundles must never run code from the file, and any
change to a bundle is refused before its contents are used.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.io as core_io
from core.errors import BundleError, InputError
from core.limits import DEFAULT_LIMITS as LIMITS
from core.io import columns_of, read_records
from tests.helpers import record_figures

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
_JARGON = re.compile(r"Traceback|File \"|\b\w*(Error|Exception)\b|<class |\bb'|\bb\"|\\x[0-9a-f]{2}")
_TALLY = {"hand": 0, "mutated": 0, "generated": 0, "refused": 0, "partial": 0, "failures": []}
_PAGE_TALLY: list[str] = []
_BUNDLE_TALLY = {"tried": 0, "refused": 0, "identical": 0, "tests": set()}
MUTATED = 240


# --- the oracle ---------------------------------------------------------------------------

def is_plain(message: str) -> bool:
    return bool(message) and len(message) < 600 and not _JARGON.search(message)


def check_upload(data: bytes, name: str) -> tuple[str, object]:
    """Read an upload and check the outcome's invariants; ('refused', message) or
    ('imported', ImportResult). Any other exception, or a broken invariant, is a failure."""
    try:
        result = read_records(data, name)
    except InputError as err:
        assert is_plain(str(err)), f"not a plain message: {str(err)[:300]!r}"
        try:  # the Data page's column picker reads the same file
            columns_of(data, name)
        except InputError as again:
            assert is_plain(str(again)), f"not a plain message: {str(again)[:300]!r}"
        return "refused", str(err)
    texts, labels = result.texts, result.labels
    assert all(isinstance(t, str) and t and t == t.strip() for t in texts)
    assert all(len(t) <= LIMITS.text_chars and "\x00" not in t for t in texts)
    assert labels is None or len(labels) == len(texts)
    n_lines = max(1, len(data.splitlines()))
    assert all(isinstance(line, int) and 1 <= line for line, _ in result.skipped)
    assert all(is_plain(why) for _, why in result.skipped), result.skipped[:3]
    assert all(is_plain(w) for w in result.warnings), result.warnings
    # a row comes from one line or more, so rows can never outnumber lines
    decoded_lines = max(n_lines, len(core_io.decode_bytes(data, name)[0].splitlines()))
    assert len(texts) + len(result.skipped) <= decoded_lines
    if any(len(t) == LIMITS.text_chars for t in texts):
        assert any("cut to" in w for w in result.warnings)
    assert read_records(data, name) == result, "reading the same file twice differed"
    return "imported", result


def _tally(kind: str, data: bytes, name: str) -> tuple[str, object] | None:
    _TALLY[kind] += 1
    try:
        outcome = check_upload(data, name)
    except Exception as err:  # collected, so every input is tried and reported
        _TALLY["failures"].append(f"{kind} {name} {data[:60]!r}: {type(err).__name__}: {err}"[:400])
        return None
    _TALLY["refused" if outcome[0] == "refused" else "partial"] += 1
    return outcome


@pytest.fixture(scope="module", autouse=True)
def _record_module_figures(tmp_path_factory):
    """At the module's end, record each section whose tests all ran."""
    yield
    if min(_TALLY["hand"], _TALLY["mutated"], _TALLY["generated"]) > 0:
        total = _TALLY["hand"] + _TALLY["mutated"] + _TALLY["generated"]
        record_figures(tmp_path_factory, "hostile_inputs",
                       f"{total:,} inputs ({_TALLY['hand']} hand-written, {_TALLY['mutated']} "
                       f"mutated, {_TALLY['generated']} generated): {_TALLY['refused']} refused "
                       f"with a plain message, {_TALLY['partial']} imported with every row "
                       "accounted for", len(_TALLY["failures"]))
    if len(_PAGE_TALLY) == len(PAGE_CASES):
        record_figures(tmp_path_factory, "upload_page", f"{len(PAGE_CASES)} broken uploads: no "
                       "exception, a plain message each, stored rows unchanged until Import", 0)
    if _CLI_TALLY["tried"] == len(CLI_CASES):
        record_figures(tmp_path_factory, "cli_inputs",
                       f"{_CLI_TALLY['tried']} command lines: {_CLI_TALLY['refused']} refused with "
                       f"exit 2 and a plain message, files and workspace unchanged; "
                       f"{_CLI_TALLY['skipped']} finished with exit 3 naming every skipped line; "
                       f"{_CLI_TALLY['done']} accepted with plain notes; no traceback",
                       len(_CLI_TALLY["failures"]))
    if len(_BUNDLE_TALLY["tests"]) == 4:
        record_figures(tmp_path_factory, "bundles",
                       f"{_BUNDLE_TALLY['tried']} bundles: {_BUNDLE_TALLY['refused']} refused with "
                       f"a plain message, {_BUNDLE_TALLY['identical']} single-byte changes in unused "
                       "zip fields loaded unchanged; no pickled code ran", 0)


# --- hand-written inputs, each with its exact expected outcome ------------------------------

def _xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/worksheets/sheet1.xml", "<worksheet><sheetData/></worksheet>")
    return buf.getvalue()


GOOD_CSV = "text,label\ngood movie,pos\nbad film,neg\n"
# (name, data, expected): ("refused", regex) or ("imported", texts, number of skipped rows)
HAND = [
    ("empty.csv", b"", ("refused", "is empty")),
    ("blank.txt", b" \n\t\r\n  ", ("refused", "is empty")),
    ("random.csv", random.Random(1).randbytes(3000), ("refused", "binary")),
    ("sheet.csv", _xlsx(), ("refused", r"zip or Excel \(\.xlsx\) file")),
    ("sheet.xlsx", _xlsx(), ("refused", "unsupported file type")),
    ("notes.pdf", b"%PDF-1.4 hello", ("refused", "unsupported file type")),
    ("noextension", b"text\nhello\n", ("refused", "unsupported file type")),
    ("data.csv.gz", gzip.compress(GOOD_CSV.encode()), ("refused", "unsupported file type")),
    ("gzipped.csv", gzip.compress(GOOD_CSV.encode()), ("refused", "binary")),
    ("nul.csv", b"text\nhello\x00world\n", ("refused", "binary")),
    ("late-nul.txt", b"ok line\n" * 10_000 + b"bad\x00line\n", ("refused", "binary")),
    ("utf16le.csv", GOOD_CSV.encode("utf-16-le"), ("refused", "UTF-16 without a byte-order mark")),
    ("utf16be.csv", GOOD_CSV.encode("utf-16-be"), ("refused", "UTF-16 without a byte-order mark")),
    ("utf16-bad.csv", b"\xff\xfe" + "text\n".encode("utf-16-le") + b"\x00\xd8",
     ("refused", "says it is UTF-16")),
    ("utf16bom.csv", "text\ncafé\n".encode("utf-16"), ("imported", ["café"], 0)),
    ("utf32.csv", "text\ncafé\n".encode("utf-32"), ("imported", ["café"], 0)),
    ("latin1.csv", "text\ncafé crème\n".encode("latin-1"), ("imported", ["café crème"], 0)),
    ("bom.csv", b"\xef\xbb\xbftext\nhello\n", ("imported", ["hello"], 0)),
    ("ragged.csv", b"text,label\nok one,pos\nbad,row,extra\nshort\nok two,neg\n",
     ("imported", ["ok one", "ok two"], 2)),
    ("all-ragged.csv", b"text,label\na,b,c\nd,e,f\n", ("refused", "No row of all-ragged.csv matches")),
    ("unclosed-mid.csv", b'text,label\nfine,pos\n"never closed,neg\nlost,pos\n',
     ("refused", r"quote \(\"\) on line 3 that is never closed")),
    ("unclosed-end.csv", b'text\nfine\n"never closed', ("refused", "never closed")),
    ("one-column-unclosed.csv", b'text\n"abc\nfoo\nbar\n', ("refused", "never closed")),
    ("multiline-cell.csv", b'text,label\n"two\nlines",pos\nnext,neg\n',
     ("imported", ["two\nlines", "next"], 0)),
    ("stray-quote.csv", b'text,label\nhe said "hi" twice,pos\n',
     ("imported", ['he said "hi" twice'], 0)),
    ("no-text-column.csv", b"a,b\n1,2\n", ("refused", "no column named 'text'. Pick one of: a, b")),
    ("header-only.csv", b"text,label\n", ("imported", [], 0)),
    ("empty-header.csv", b",,\n1,2,3\n", ("refused", "empty header row")),
    ("semicolon.csv", "text;label\nbon film, vraiment;pos\n".encode(),
     ("imported", ["bon film, vraiment"], 0)),
    ("tabs.csv", b"text\tlabel\na, b\tpos\n", ("imported", ["a, b"], 0)),
    ("one-column.csv", b"text\nhello, world\n\"quoted, too\"\n",
     ("imported", ["hello, world", "quoted, too"], 0)),
    ("crlf.csv", b"text,label\r\ngood,pos\r\nbad,neg\r\n", ("imported", ["good", "bad"], 0)),
    ("old-mac.csv", b"text,label\rgood,pos\rbad,neg\r", ("imported", ["good", "bad"], 0)),
    ("blank-text.csv", b"text,label\n   ,pos\nok,neg\n", ("imported", ["ok"], 1)),
    ("wide.csv", (",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("x" * 5000) + "\n").encode(),
     ("refused", "Pick one of: c0, c1, .* and 4,988 more")),
    ("giant-cell.csv", b"text\n" + b"a" * 300_000 + b"\n", ("imported", ["a" * LIMITS.text_chars], 0)),
    ("giant-line.txt", b"b" * 300_000, ("imported", ["b" * LIMITS.text_chars], 0)),
    ("giant.jsonl", json.dumps({"text": "c" * 300_000}).encode(), ("imported", ["c" * LIMITS.text_chars], 0)),
    ("sniffer-bomb.csv", (',"a' * 21_000).encode(), ("refused", "no column named 'text'")),
    ("sniffer-bomb2.csv", ("text\n" + ",'" * 32_000).encode(), ("imported", [",'" * 2500], 0)),
    ("broken.jsonl", b'{"text": "good", "label": "pos"}\n{broken\n{"text": "bad"}\n[1, 2]\n',
     ("imported", ["good", "bad"], 2)),
    ("all-broken.jsonl", b"{\n}\nnot json\n", ("refused", "No line of all-broken.jsonl is a JSON object")),
    ("array.json", b'[{"text": "a"},\n {"text": "b"}]\n', ("refused", "one object per line")),
    ("nested.jsonl", b"[" * 100_000 + b"\n" + b'{"text": "ok"}\n', ("imported", ["ok"], 1)),
    ("long-number.jsonl", b"1" * 5000 + b'\n{"text": "ok"}\n', ("imported", ["ok"], 1)),
    ("odd-values.jsonl", b'{"text": ["a"]}\n{"label": "x"}\n{"text": true}\n{"text": 42}\n',
     ("imported", ["42"], 3)),
    ("line-separator.jsonl", '{"text": "one\u2028two"}\n'.encode(), ("imported", ["one\u2028two"], 0)),
    ("strings.jsonl", b'"just a string"\n"another"\n', ("imported", ["just a string", "another"], 0)),
    ("bad-utf8.txt", b"caf\xe9 \xed\xa0\x80 ok\n", ("imported", ["café í\xa0€ ok"], 0)),
    ("controls.txt", "ansi \x1b[31mred\x1b[0m and \u202eevil\n".encode(),
     ("imported", ["ansi \x1b[31mred\x1b[0m and \u202eevil"], 0)),
    ("../../etc/passwd.csv", b"text\nsafe\n", ("imported", ["safe"], 0)),
    ("formula.csv", b"text\n=cmd|' /C calc'!A0\n", ("imported", ["=cmd|' /C calc'!A0"], 0)),
]


@pytest.mark.parametrize("name, data, expected", HAND, ids=[h[0] for h in HAND])
def test_hand_written_bad_inputs(name, data, expected):
    outcome = _tally("hand", data, name)
    assert outcome is not None, _TALLY["failures"][-1]
    kind, value = outcome
    assert kind == expected[0], value
    if kind == "refused":
        assert re.search(expected[1], value), value
    else:
        assert value.texts == expected[1]
        assert len(value.skipped) == expected[2], value.skipped


def test_over_the_size_limit_is_refused_before_reading():
    data = b"text\n" + b"x" * LIMITS.upload_bytes
    outcome = _tally("hand", data, "big.csv")
    assert outcome == ("refused", f"big.csv is {len(data):,} bytes; the limit is 25 MB "
                                  f"({LIMITS.upload_bytes:,} bytes). Split it into smaller files.")


# --- seeded mutations of valid files ------------------------------------------------------

SEEDS = {
    "csv": ('text,label\n"great, really great",pos\n"two\nlines",neg\nplain,\n'
            '"say ""hi""",pos\nlast one,neg\n').encode(),
    "tsv": b"text\tlabel\ngood one\tpos\nbad one\tneg\n",
    "jsonl": ('{"text": "café", "label": "pos"}\n{"text": "bad", "label": "neg"}\n'
              '{"text": "x", "label": null}\n').encode(),
    "txt": "first sentence\nsecond, with a comma\n\nthird \"quoted\"\n".encode(),
}
INSERTS = [b'"', b",", b"\n", b"\r", b"\x00", b"\xff", b"{", b"}", b"\t", b"\\", b"\xef\xbb\xbf",
           "\u2028".encode(), b"PK\x03\x04", b"[" * 50, b";", b"|"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    op = rng.randrange(10)
    at = rng.randrange(len(data) + 1)
    if op == 0 and data:
        return data[:at] + bytes([data[at % len(data)] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    if op == 1:
        return data[:at] + rng.choice(INSERTS) + data[at:]
    if op == 2:
        return data[:at] + data[at + rng.randrange(1, 20):]
    if op == 3:
        return data[:at]
    if op == 4:
        return data[:at] + data[at:at + 30] * rng.randrange(2, 300) + data[at:]
    if op == 5:
        text = data.decode("utf-8", "replace")
        codec = rng.choice(["utf-16-le", "utf-16-be", "utf-16", "utf-32", "latin-1", "cp1252"])
        return text.encode(codec, "replace")
    if op == 6:
        return rng.choice([b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"%PDF-1.7\n", b"\xff\xfe"]) + data
    if op == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    if op == 8:
        return data[:at] + b"z" * rng.choice([LIMITS.text_chars + 1, 200_000]) + data[at:]
    return data + data[:at]


def test_mutated_files_fail_plainly_or_account_for_their_rows():
    rng = random.Random(5)
    for i in range(MUTATED):
        fmt = list(SEEDS)[i % len(SEEDS)]
        data = SEEDS[fmt]
        for _ in range(rng.randrange(1, 4)):
            data = _mutate(rng, data)
        # now and then the extension lies about the content
        ext = fmt if rng.random() < 0.8 else rng.choice(["csv", "txt", "jsonl", "tsv", "json"])
        _tally("mutated", data, f"mutant{i}.{ext}")
    assert _TALLY["failures"] == []


# --- generated files whose rows are known: exact accounting --------------------------------

# any printable text, with the characters that structure a file made frequent; control
# characters are left out because a file full of them is refused as binary
_PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffd")
_CELL = st.text(st.one_of(_PRINTABLE, st.sampled_from('\t\r\n",;| \'{}[]\\\u2028')), max_size=25)
_LINE = st.text(st.one_of(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                                        blacklist_characters="\ufffd"),
                          st.sampled_from('\t",;| \'{}')), max_size=40)


def _generated(data: bytes, name: str) -> tuple[str, object]:
    outcome = _tally("generated", data, name)
    assert outcome is not None, _TALLY["failures"][-1]
    return outcome


@settings(max_examples=120, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(_CELL, _CELL, st.booleans()), max_size=12),
       sep=st.sampled_from([",", ";", "\t", "|"]), quote_all=st.booleans())
def test_csv_rows_are_imported_or_skipped_never_lost(rows, sep, quote_all):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["text", "label"])
    texts, labels, ragged, kept = [], [], 0, 0
    for text, label, is_ragged in rows:
        writer.writerow([text, label, "extra"] if is_ragged else [text, label])
        if is_ragged:
            ragged += 1
        elif text.strip() or label.strip():
            kept += 1
            if text.strip():
                texts.append(text.strip())
                labels.append(label.strip() or None)
    kind, result = _generated(buf.getvalue().encode(), "rows.csv")
    if ragged and not kept:
        assert kind == "refused" and "matches its header" in result
        return
    assert kind == "imported", result
    assert result.texts == texts and result.labels == labels
    assert len(result.texts) + len(result.skipped) == ragged + kept


@settings(max_examples=80, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(_CELL, st.one_of(st.none(), _CELL),
                               st.sampled_from(["ok", "broken", "array", "blank"])), max_size=12),
       ascii_only=st.booleans())
def test_jsonl_lines_are_imported_or_skipped_never_lost(rows, ascii_only):
    lines, texts, skipped = [], [], 0
    for text, label, kind in rows:
        line = json.dumps({"text": text, "label": label}, ensure_ascii=ascii_only)
        if kind == "broken":
            lines.append(line[:-1])
            skipped += 1
        elif kind == "array":
            lines.append(json.dumps([text]))
            skipped += 1
        elif kind == "blank":
            lines.append("   ")
        else:
            lines.append(line)
            if text.strip():
                texts.append(text.strip())
            else:
                skipped += 1
    kind, result = _generated("\n".join(lines).encode(), "rows.jsonl")
    if not any(k == "ok" for *_, k in rows):
        assert kind == "refused", result
        return
    assert kind == "imported", result
    assert result.texts == texts
    assert len(result.skipped) == skipped


@settings(max_examples=40, deadline=None, derandomize=True)
@given(lines=st.lists(_LINE, max_size=15), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_txt_lines_all_arrive(lines, newline):
    expected = [line.strip() for line in lines if line.strip()]
    kind, result = _generated(newline.join(lines).encode(), "lines.txt")
    if not expected:
        assert kind == "refused" and "is empty" in result
        return
    assert kind == "imported" and result.texts == expected and result.skipped == []


# --- a sample through the Data page ----------------------------------------------------

PAGE_CASES = [  # (name, data, what the page must show)
    ("sheet.csv", _xlsx(), ("error", "zip or Excel")),
    ("empty.csv", b"", ("error", "is empty")),
    ("random.txt", random.Random(2).randbytes(500), ("error", "binary")),
    ("utf16le.csv", GOOD_CSV.encode("utf-16-le"), ("error", "UTF-16 without a byte-order mark")),
    ("unclosed.csv", b'text,label\nfine,pos\n"never closed,neg\n', ("error", "never closed")),
    ("nested.jsonl", b"[" * 50_000 + b"\n{broken\n", ("error", "No line of nested.jsonl")),
    ("big.csv", b"text\n" + b"x" * 3000, ("error", "the limit is")),
    ("ragged.csv", b"text,label\nnew one,pos\nbad,row,extra\nnew two,neg\n", ("skipped", 1)),
    ("latin1.txt", "café neuf\n".encode("latin-1"), ("warning", "not UTF-8")),
    ("giant.txt", b"y" * 200_000 + b"\nshort new\n", ("warning", "was cut to 5,000")),
    ("sniffer-bomb.csv", ("text\n" + ",'" * 32_000).encode(), ("warning", "was cut to 5,000")),
]


@pytest.mark.parametrize("name, data, expected", PAGE_CASES, ids=[c[0] for c in PAGE_CASES])
def test_bad_uploads_on_the_data_page_lose_nothing(name, data, expected, fresh_workspace,
                                                   tiny_model_dir, whole_app_reruns, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.jobs as jobs
    from core.store import Store
    from tests.helpers import sql

    if name == "big.csv":  # the limit, made small so the test stays fast
        monkeypatch.setenv("TENSHOT_MAX_UPLOAD_BYTES", "2000")
    with Store.open(fresh_workspace) as store:
        pid = store.create_project("Reviews", ["neg", "pos"],
                                   settings={"backbone": tiny_model_dir, "prompt": None}).id
        store.add_texts(pid, ["good movie", "bad film"], labels=["pos", "neg"])
    before = sql(fresh_workspace, "SELECT id, text FROM texts"), sql(fresh_workspace, "SELECT * FROM labels")
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["project_id"] = pid
    at.switch_page("pages/data.py")
    at.run()
    at.file_uploader(key="upload_0").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    shown = {kind: [e.value.replace("\\", "") for e in getattr(at, kind)]
             for kind in ("error", "warning", "info")}
    assert not any("Traceback" in v or not is_plain(v) for vs in shown.values() for v in vs), shown
    kind, want = expected
    if kind in ("error", "warning"):
        assert any(want in v for v in shown[kind]), shown
    else:
        assert at.expander[0].label == f"{want} row{'s' * (want != 1)} will be skipped"
    assert (sql(fresh_workspace, "SELECT id, text FROM texts"),
            sql(fresh_workspace, "SELECT * FROM labels")) == before, "the upload alone wrote rows"
    if "import_btn" in [b.key for b in at.button] and not at.button(key="import_btn").disabled:
        n_new = int(re.search(r"Import ([\d,]+) sentence", at.button(key="import_btn").label)[1])
        at.button(key="import_btn").click().run()
        assert not at.exception
        assert sql(fresh_workspace, "SELECT COUNT(*) FROM texts") == [(len(before[0]) + n_new,)]
        with Store.open(fresh_workspace) as store:
            job = store.latest_job(pid, jobs.EMBED)
        assert job is None or jobs.wait(job.id, timeout=60)
    _PAGE_TALLY.append(name)


# --- the tenshot command: broken or hostile command lines -------------------------------------

_CLI_TALLY = {"tried": 0, "refused": 0, "skipped": 0, "done": 0, "failures": []}
_CLI_POS = ["good movie", "great film", "i love it", "wonderful plot", "superb movie"]
_CLI_NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "poor movie"]


def _cli_files(folder: Path) -> None:
    """The input files the command lines below name, written into ``folder``."""
    def rows(pairs, header="text,label"):
        return (header + "\n" + "".join(f"{t},{lab}\n" for t, lab in pairs)).encode()

    files = {
        "train.csv": rows([(t, "pos") for t in _CLI_POS] + [(t, "neg") for t in _CLI_NEG]),
        "in.csv": rows([("good film", ""), ("awful plot", "neg")]),
        "odd.csv": rows([("so glad", "joyful"), ("down", "NEG"), ("blue", "negg")]),
        "formula-label.csv": rows([("x y", "=cmd|' /C calc'!A0"), ("y z", "@SUM(A1)")]),
        "header.csv": b"text,label\n",
        "empty.csv": b"",
        "binary.csv": bytes(range(256)) * 4,
        "sheet.csv": _xlsx(),
        "notes.pdf": b"%PDF-1.4",
        "ragged.csv": b"text,id\ngood movie,1\nbad,film,2\ni hate it,3\na,b,c,d\n",
        "broken.jsonl": b'{"text": "good movie"}\n{broken\n{"text": ""}\n[1, 2]\n{"text": "bad film"}\n',
        "odd-labels.jsonl": "\n".join(json.dumps(r) for r in [
            {"text": "a delight", "label": ["pos"]}, {"text": "so dull", "label": True},
            {"text": "the best", "label": {"c": "pos"}}, {"text": "great plot", "label": "pos"}]).encode(),
        "control-label.jsonl": json.dumps({"text": "odd one", "label": "\x1b[31mred\x07"}).encode(),
        "long.csv": rows([("good " * 1199 + "good!", "pos")]),
        "html-label.csv": rows([("<b>x</b>", "<script>alert(1)</script>")]),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "out").mkdir()
    (folder / "a-file").write_text("x")


# (argv after --db, expected exit status, a phrase stderr must hold); {m}: the tiny model folder
CLI_CASES = [
    ("train --project p --data odd.csv", 2, "did you mean 'neg'?"),
    ("train --project p --data odd.csv --add-classes", 2, "Label 1 more"),
    ("train --project p --data formula-label.csv", 2, "--add-classes"),
    ("train --project p --data html-label.csv", 2, "'<script>alert(1)</script>'"),
    ("train --project p --data control-label.jsonl", 2, "'?[31mred?'"),
    ("train --project p --data header.csv", 2, "only a header"),
    ("train --project p --data empty.csv", 2, "is empty"),
    ("train --project p --data binary.csv", 2, "binary"),
    ("train --project p --data sheet.csv", 2, "Excel"),
    ("train --project p --data notes.pdf", 2, "unsupported file type"),
    ("train --project p --data missing.csv", 2, "No file at"),
    ("train --project p --data train.csv --text-column body", 2, "no column called 'body'"),
    ("train --project p --data train.csv --label-column text", 2, "--label-column"),
    ("train --project q --data train.csv --classes pos", 2, "at least 2 classes"),
    ("train --project q --data train.csv --classes pos,NEG", 2, "did you mean 'NEG'?"),
    ("train --project q --data in.csv --classes pos,neg", 2, "Label 2 more “pos” and 1 more “neg”"),
    ("train --project p --data train.csv --backbone {m}-gone", 2, "No model file or folder"),
    ("train --project p --data train.csv --backbone no-such-name", 2, "Unknown backbone"),
    ("train --project p --data train.csv --max-length 5", 2, "between 8 and 4096 tokens"),
    ("train --project p --data train.csv --prompt no-placeholder", 2, "{text}"),
    ("train --project p --data train.csv --mode bogus", 2, "invalid choice"),
    ("train --project p", 2, "required: --data"),
    ("train --project p --data ragged.csv", 3, "skipped line 3: has 3 cells"),
    ("train --project p --data odd-labels.jsonl", 3, "lines 1, 2, 3"),
    ("train --project p --data long.csv --max-length 16", 0, "was cut to 5,000"),
    ("predict --project p --data in.csv --out in.csv", 2, "same file as --data"),
    ("predict --project p --data in.csv --out ./in.csv", 2, "same file as --data"),
    ("predict --project p --data in.csv --out {db}", 2, "same file as --db"),
    ("predict --project p --data in.csv --out no-folder/o.csv", 2, "does not exist"),
    ("predict --project p --data in.csv --out out", 2, "is a folder"),
    ("predict --project p --data in.csv --out a-file/o.csv", 2, "not a folder"),
    ("predict --project ghost --data in.csv --out out/o.csv", 2, "ghost"),
    ("predict --bundle train.csv --data in.csv --out out/o.csv", 2, "not a tenshot model bundle"),
    ("predict --bundle nothing.zip --data in.csv --out out/o.csv", 2, "nothing.zip"),
    ("predict --project p --data header.csv --out out/o.csv", 2, "only a header"),
    ("predict --project p --data broken.jsonl --out out/o.csv", 3, "3 of 5 rows were skipped"),
    ("predict --project p --data ragged.csv --out out/o.csv", 3, "skipped line 5"),
    ("predict --project p --data in.csv --out out/o.jsonl", 0, "wrote 2 predictions"),
    ("export --project p --out {db}", 2, "same file as --db"),
    ("export --project p --out no-folder/m.zip", 2, "does not exist"),
    ("export --project ghost --out out/m.zip", 2, "ghost"),
    ("eval --data . --json no-folder/r.json", 2, "does not exist"),
    ("--db no-folder/w.db train --project p --data train.csv", 2, "does not exist"),
    ("--db out train --project p --data train.csv", 2, "is a folder"),
    ("--db new.db train --project p --data header.csv", 2, "only a header"),
    ("--db none.db projects", 2, "No workspace at"),
    ("--db none.db predict --project p --data in.csv --out out/o.csv", 2, "No workspace at"),
    ("TENSHOT_MAX_TEXT_CHARS=lots projects", 2, "whole number above 0"),
]


def _snapshot(folder: Path, db: Path) -> tuple:
    """The folder's files (bytes) and the workspace's content (SQL text): what a refusal
    must leave as it was. The workspace's own files are compared by content, not bytes."""
    import hashlib
    import sqlite3

    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(db.name)}
    conn = sqlite3.connect(db)
    try:
        return files, list(conn.iterdump())
    finally:
        conn.close()


def _run_cli(line: str, folder: Path, db: Path, model: str, monkeypatch, capsys) -> tuple[int, str]:
    import shlex

    from core.cli import main

    words = shlex.split(line.format(m=model, db=db))
    env = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):  # NAME=value before the command: the environment
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = words if words[0] == "--db" else ["--db", str(db), *words]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    finally:
        for key in env:
            monkeypatch.delenv(key)
    return code, capsys.readouterr().err


def _check_cli(line, expected_code, phrase, folder, db, model, monkeypatch, capsys) -> None:
    before = _snapshot(folder, db)
    code, err = _run_cli(line, folder, db, model, monkeypatch, capsys)
    assert code == expected_code, (code, err[-500:])
    assert phrase in err, err[-500:]
    assert "Traceback" not in err and "Warning:" not in err, err[-500:]
    for message in (ln[len("error: "):] for ln in err.splitlines() if ln.startswith("error: ")):
        assert is_plain(message), message
    if code == 2:  # a refusal writes nothing: no file changed or added, the workspace as it was
        assert _snapshot(folder, db) == before
    _CLI_TALLY[{2: "refused", 3: "skipped"}.get(code, "done")] += 1


def test_broken_and_hostile_command_lines_refuse_plainly_and_change_nothing(
        tmp_path, tiny_model_dir, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.chdir(tmp_path)
    _cli_files(tmp_path)
    db = tmp_path / "w.db"
    assert main(["--db", str(db), "train", "--project", "p", "--data", "train.csv", "--backbone",
                 tiny_model_dir, "--prompt", "", "--mode", "layer"]) == 0
    capsys.readouterr()
    for line, code, phrase in CLI_CASES:
        _CLI_TALLY["tried"] += 1
        try:
            _check_cli(line, code, phrase, tmp_path, db, tiny_model_dir, monkeypatch, capsys)
        except Exception as err:  # collected, so every command line is tried and reported
            _CLI_TALLY["failures"].append(f"{line}: {type(err).__name__}: {err}"[:400])
    assert not _CLI_TALLY["failures"], "\n".join(_CLI_TALLY["failures"])


# --- model bundles ------------------------------------------------------------------------

MARKER = "tenshot-pwned-marker"


class _Boom:
    """Unpickling this creates the marker file: proof that pickled code ran."""

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({MARKER!r}).write_text('ran')",))


@pytest.fixture(scope="module")
def bundle():
    """A real bundle of a small trained classifier, and features to predict on."""
    from core.learn.bundle import bundle_bytes
    from core.learn.classifier import Settings, train

    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3, 8)).astype(np.float32)
    y = ["pos" if row[2, 0] > 0 else "neg" for row in X]
    y[:2] = ["pos", "neg"]
    clf = train(X, y, ["neg", "pos"], Settings(backbone="tiny", prompt=None, mode="layer"))
    return bundle_bytes(clf), X


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _resealed(members: dict[str, bytes]) -> bytes:
    """Recompute the manifest's checksums, as an attacker who edits a bundle would."""
    import hashlib

    manifest = json.loads(members["manifest.json"])
    manifest["sha256"] = {n: hashlib.sha256(members[n]).hexdigest() for n in ("params.json", "arrays.npz")}
    return _zip({**members, "manifest.json": json.dumps(manifest).encode()})


def _refused(source, match: str | None = None) -> str:
    from core.learn.bundle import load_bundle

    _BUNDLE_TALLY["tried"] += 1
    with pytest.raises(BundleError, match=match) as err:
        load_bundle(source)
    assert is_plain(str(err.value)), str(err.value)
    _BUNDLE_TALLY["refused"] += 1
    return str(err.value)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_pickles_in_any_place_are_refused_unexecuted(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw, _ = bundle
    members = _members(raw)
    evil = pickle.dumps(_Boom())
    path = tmp_path / "model-v1.tenshot.zip"
    path.write_bytes(evil)  # a pickle renamed to the bundle's file name
    assert "not a tenshot model bundle" in _refused(path)
    _refused(_resealed({**members, "arrays.npz": evil}), "damaged")  # checksums are valid
    with io.BytesIO() as buf:  # an object array inside a real npz is pickled by numpy
        np.savez(buf, coef_=np.array([_Boom()], dtype=object))
        object_npz = buf.getvalue()
    _refused(_resealed({**members, "arrays.npz": object_npz}), "damaged")
    _refused(_resealed({**members, "params.json": evil}), "damaged")
    assert not (tmp_path / MARKER).exists(), "code inside the file ran"
    _BUNDLE_TALLY["tests"].add("pickles")


def test_the_cli_refuses_a_pickle_bundle_with_a_plain_message(bundle, tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.tenshot.zip").write_bytes(pickle.dumps(_Boom()))
    (tmp_path / "in.txt").write_text("a sentence\n")
    code = main(["--db", str(tmp_path / "w.db"), "predict", "--bundle", "evil.tenshot.zip",
                 "--data", "in.txt", "--out", "out.csv"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: This file is not a tenshot model bundle"), err
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "out.csv").exists()
    _BUNDLE_TALLY["tests"].add("cli")


def test_tampered_foreign_and_oversized_bundles_are_refused(bundle, monkeypatch):
    import core.learn.bundle as core_bundle

    raw, _ = bundle
    members = _members(raw)
    arrays = bytearray(members["arrays.npz"])
    arrays[len(arrays) // 2] ^= 1
    _refused(_zip({**members, "arrays.npz": bytes(arrays)}), "arrays.npz' does not match its checksum")
    params = members["params.json"].replace(b'"pos"', b'"POS"')
    _refused(_zip({**members, "params.json": params}), "params.json' does not match its checksum")
    manifest = json.loads(members["manifest.json"])
    manifest["sha256"]["arrays.npz"] = "0" * 64
    _refused(_zip({**members, "manifest.json": json.dumps(manifest).encode()}), "does not match")
    del manifest["sha256"]
    _refused(_zip({**members, "manifest.json": json.dumps(manifest).encode()}), "does not match")
    _refused(_zip({**members, "manifest.json": b'{"format": "tenshot-bundle", "version": 99}'}),
             "format version 99")
    _refused(_zip({**members, "manifest.json": b"[1, 2]"}), "not a tenshot model bundle")
    _refused(_zip({**members, "manifest.json": b"{not json"}), "damaged")
    _refused(_xlsx(), "has no 'manifest.json'")
    _refused(_zip({"manifest.json": b'{"format": "other-tool"}'}), "not a tenshot model bundle")
    _refused(_zip({k: v for k, v in members.items() if k != "arrays.npz"}), "has no 'arrays.npz'")
    _refused(_resealed({**members, "params.json": b'{"classes": 1}'}), "damaged")
    _refused(_resealed({**members, "arrays.npz": _npz(coef_=np.zeros(3))}), "damaged")
    _refused(b"", "not a zip archive")
    _refused(Path("/nonexistent/model.tenshot.zip"), "No bundle file")
    monkeypatch.setattr(core_bundle, "_MAX_BUNDLE_BYTES", len(members["arrays.npz"]) - 1)
    _refused(raw, "would unpack to")
    _BUNDLE_TALLY["tests"].add("tampered")


def test_every_single_byte_change_is_refused_or_harmless(bundle):
    from core.learn.bundle import load_bundle

    raw, X = bundle
    expected = load_bundle(raw).predict_proba_features(X)
    rng = random.Random(3)
    for at in rng.sample(range(len(raw)), 150):
        changed = bytearray(raw)
        changed[at] ^= 1 << rng.randrange(8)
        _BUNDLE_TALLY["tried"] += 1
        try:
            clf = load_bundle(bytes(changed))
        except BundleError as err:
            assert is_plain(str(err)), str(err)
            _BUNDLE_TALLY["refused"] += 1
            continue
        # only bytes the loader does not use (zip timestamps, comments) may change
        np.testing.assert_array_equal(clf.predict_proba_features(X), expected)
        _BUNDLE_TALLY["identical"] += 1
    _BUNDLE_TALLY["tests"].add("flips")


# --- no pickle anywhere: a code scan ----------------------------------------------------------

def _sources() -> list[Path]:
    """The code that ships: the library, the app and its pages."""
    return sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"])


def _call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return "missing"


def unsafe_loading(source: str) -> list[str]:
    """Lines of ``source`` that could unpickle: pickle-family imports, np.load without
    allow_pickle=False, torch.load without weights_only=True, read_pickle, eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names]
            if any(n.split(".")[0] in {"pickle", "cPickle", "joblib", "dill", "cloudpickle",
                                       "shelve", "marshal"} for n in names):
                found.append(f"line {node.lineno}: imports {', '.join(names)}")
            if isinstance(node, ast.ImportFrom) and node.module == "numpy" and any(
                    a.name == "load" for a in node.names):
                found.append(f"line {node.lineno}: imports numpy.load by name")
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
                found.append(f"line {node.lineno}: {name} without allow_pickle=False")
            if name == "torch.load" and _keyword(node, "weights_only") is not True:
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
            if name.endswith("read_pickle") or name in ("eval", "exec"):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_the_scan_catches_unsafe_loading():
    bad = ("import joblib\nfrom numpy import load\nimport numpy as np\nnp.load(f)\n"
           "np.load(f, allow_pickle=True)\ntorch.load(p)\npd.read_pickle(p)\neval(s)\n")
    assert len(unsafe_loading(bad)) == 7
    assert unsafe_loading("np.load(f, allow_pickle=False)\ntorch.load(p, weights_only=True)\n") == []


def test_no_code_path_can_unpickle():
    found = {str(p.relative_to(ROOT)): unsafe_loading(p.read_text()) for p in _sources()}
    assert {k: v for k, v in found.items() if v} == {}
    assert any("np.load" in p.read_text() for p in _sources()), "the scan found no np.load to check"
