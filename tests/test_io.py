"""File import: every bad input becomes a plain InputError or a partial import that says why."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputError
from core.limits import DEFAULT_LIMITS as LIMITS
from core.io import read_records


def test_csv_with_text_and_label_columns():
    data = 'text,label\n"great, really great",pos\nawful,neg\nno label yet,\n'.encode()
    r = read_records(data, "x.csv")
    assert r.texts == ["great, really great", "awful", "no label yet"]
    assert r.labels == ["pos", "neg", None]
    assert (r.text_column, r.label_column) == ("text", "label")


def test_ragged_rows_are_skipped_with_their_line_numbers():
    data = b"text,label\nok one,pos\nbad,row,extra\nok two,neg\n"
    r = read_records(data, "x.csv")
    assert r.texts == ["ok one", "ok two"]
    assert r.skipped == [(3, "has 3 cells but the header has 2")]


def test_missing_text_column_names_the_columns():
    with pytest.raises(InputError, match="no column named 'text'. Pick one of: a, b"):
        read_records(b"a,b\n1,2\n", "x.csv")
    with pytest.raises(InputError, match="no column called 'body'"):
        read_records(b"a,b\n1,2\n", "x.csv", text_column="body")


def test_utf16_with_bom_is_read():
    r = read_records("text\ncafé crème\n".encode("utf-16"), "x.csv")
    assert r.texts == ["café crème"]


def test_latin1_falls_back_with_a_warning():
    r = read_records("text\ncafé\n".encode("latin-1"), "x.csv")
    assert r.texts == ["café"]
    assert "not UTF-8" in r.warnings[0]


@pytest.mark.parametrize("data,name,message", [
    (b"", "x.csv", "is empty"),
    (b"   \n\n", "x.txt", "is empty"),
    (b"PK\x03\x04rest-of-a-zip", "sheet.csv", "Excel"),
    (b"text\nhello\x00world\n", "x.csv", "binary"),
    (b"hello", "x.pdf", "unsupported file type"),
    (b'{"text": 1\n[1,2]\n', "x.jsonl", "No line of x.jsonl is a JSON object"),
])
def test_bad_files_get_plain_messages(data, name, message):
    with pytest.raises(InputError, match=message):
        read_records(data, name)


def test_oversized_upload_states_the_limit():
    with pytest.raises(InputError, match="the limit is 25 MB"):
        read_records(b"x" * (LIMITS.upload_bytes + 1), "big.txt")


def test_jsonl_broken_lines_are_skipped_and_reported():
    lines = [json.dumps({"text": "good", "label": "pos"}), "{broken", json.dumps({"text": "bad"})]
    r = read_records("\n".join(lines).encode(), "x.jsonl")
    assert r.texts == ["good", "bad"] and r.labels == ["pos", None]
    assert r.skipped[0][0] == 2 and "not valid JSON" in r.skipped[0][1]


def test_giant_line_is_cut_with_a_warning():
    r = read_records(("text\n" + "a" * (LIMITS.text_chars + 10)).encode(), "x.csv")
    assert len(r.texts[0]) == LIMITS.text_chars
    assert "was cut" in r.warnings[0]


def test_txt_is_one_sentence_per_line():
    assert read_records(b"one\n\ntwo\r\nthree", "x.txt").texts == ["one", "two", "three"]


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=400), ext=st.sampled_from(["csv", "txt", "jsonl", "tsv"]))
def test_random_bytes_never_raise_anything_but_input_error(data, ext):
    try:
        r = read_records(data, f"f.{ext}")
    except InputError as err:
        assert str(err)
        return
    assert all(isinstance(t, str) and t for t in r.texts)
    assert r.labels is None or len(r.labels) == len(r.texts)


def test_limits_come_from_the_environment_and_bad_values_are_refused():
    from core.limits import Limits

    assert Limits.from_env({}) == LIMITS
    assert Limits.from_env({"TENSHOT_MAX_PROJECT_TEXTS": "12"}) == Limits(project_texts=12)
    with pytest.raises(InputError, match="TENSHOT_MAX_TEXT_CHARS must be a whole number above 0"):
        Limits.from_env({"TENSHOT_MAX_TEXT_CHARS": "lots"})


def test_a_giant_cell_is_read_and_the_csv_module_limit_is_put_back():
    # regression: reading a CSV raised csv.field_size_limit for the whole process, for good
    import csv

    before = csv.field_size_limit()
    r = read_records(b"text\n" + b"a" * (before + 10) + b"\n", "big-cell.csv")
    assert r.texts == ["a" * LIMITS.text_chars]
    assert csv.field_size_limit() == before


def test_limits_are_passed_not_global():
    from core.limits import Limits

    small = Limits(text_chars=4, upload_bytes=100)
    assert read_records(b"text\nabcdefgh\n", "x.csv", limits=small).texts == ["abcd"]
    with pytest.raises(InputError, match="the limit is"):
        read_records(b"x" * 101, "x.txt", limits=small)
    assert read_records(b"text\nabcdefgh\n", "x.csv").texts == ["abcdefgh"]


def test_every_text_keeps_the_line_its_row_starts_on():
    data = b'text,label\none,pos\n\n"two\nlines",neg\nbad,row,extra\nthree,\n'
    r = read_records(data, "x.csv")
    assert r.texts == ["one", "two\nlines", "three"] and r.lines == [2, 4, 7]
    assert r.skipped == [(6, "has 3 cells but the header has 2")]
    assert read_records(b"a\n\nb\n", "x.txt").lines == [1, 3]


def test_labels_that_are_not_class_names_are_reported_by_line():
    # regression: list/object/boolean labels were dropped without naming the rows
    lines = [json.dumps({"text": "a", "label": "pos"}), json.dumps({"text": "b", "label": ["pos"]}),
             json.dumps({"text": "c", "label": False})]
    r = read_records("\n".join(lines).encode(), "x.jsonl")
    assert r.labels == ["pos", None, None] and r.dropped_labels == [2, 3]
    assert "2 rows (lines 2, 3) had a label that is not a single class name" in r.warnings[0]


def test_a_text_column_of_numbers_gets_a_warning():
    # issue 15 item 8: a wrong-column import ("0.5", "0.7", ...) went in without a word
    data = b"score,review\n0.5,great phone\n0.7,awful battery\n1e3,fine\n"
    wrong = read_records(data, "r.csv", text_column="score")
    assert any("'score' holds mostly numbers (0.5, 0.7, 1e3" in w for w in wrong.warnings)
    right = read_records(data, "r.csv", text_column="review")
    assert not any("numbers" in w for w in right.warnings)
