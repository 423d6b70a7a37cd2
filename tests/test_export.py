"""Label/prediction tables and files: formula neutralising, round trips, filters, changes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from core.export import (export_rows, file_stem, filter_predictions, labels_from_choices, neutralise, prediction_changes, to_csv, to_jsonl)
from pages._views import labels_from_edits
from core.store.rows import Label, Prediction

CLASSES = ["neg", "pos"]
NASTY = ["=cmd|' /C calc'!A0", 'a "quoted", comma, text', "two\nlines\r\nthree", "@SUM(A1)",
         "+1", "-2", "plain text", "ünïcödé ✓"]


def _pred(text_id, text, label, conf):
    other = [c for c in CLASSES if c != label][0]
    return Prediction(text_id, text, label, conf, {label: conf, other: 1 - conf})


def _read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_neutralise_prefixes_formula_cells_only():
    assert neutralise("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert neutralise("@x") == "'@x" and neutralise("+x") == "'+x" and neutralise("-x") == "'-x"
    assert neutralise("a=b") == "a=b"
    assert neutralise(0.5) == 0.5 and neutralise(None) is None


def test_csv_neutralises_formulas_and_round_trips_other_text():
    labelled = [Label(i, t, "pos") for i, t in enumerate(NASTY)]
    rows = _read_csv(to_csv(export_rows(labelled, []), CLASSES))
    got = {int(r["text_id"]): r["text"] for r in rows}
    assert got[0] == "'=cmd|' /C calc'!A0"
    assert got[3] == "'@SUM(A1)" and got[4] == "'+1" and got[5] == "'-2"
    # commas, quotes, newlines and non-ASCII survive exactly
    for i in (1, 2, 6, 7):
        assert got[i] == NASTY[i]
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())


def test_csv_neutralises_formula_class_names_too():
    labelled = [Label(1, "x", "=HYPERLINK(1)")]
    (row,) = _read_csv(to_csv(export_rows(labelled, []), ["=HYPERLINK(1)", "b"]))
    assert row["label"] == "'=HYPERLINK(1)"


def test_jsonl_round_trips_everything():
    labelled = [Label(1, NASTY[0], "neg")]
    preds = [_pred(i + 2, t, "pos", 0.75) for i, t in enumerate(NASTY)]
    rows = export_rows(labelled, preds)
    back = [json.loads(line) for line in to_jsonl(rows, CLASSES).decode().splitlines()]
    assert [r["text"] for r in back] == [NASTY[0], *NASTY]
    assert back[0] == {"text_id": 1, "text": NASTY[0], "label": "neg", "predicted": None,
                       "confidence": None, "probs": None}
    assert back[1]["probs"] == {"neg": 0.25, "pos": 0.75}
    assert back[1]["predicted"] == "pos" and back[1]["label"] is None


def test_export_rows_choose_labels_predictions_or_both_and_never_duplicate():
    labelled = [Label(1, "a", "neg")]
    preds = [_pred(1, "a", "pos", 0.9), _pred(2, "b", "pos", 0.6)]
    assert [r.text_id for r in export_rows(labelled, preds, include="labels")] == [1]
    assert [(r.text_id, r.source) for r in export_rows(labelled, preds, include="predictions")] == [(2, "model")]
    both = export_rows(labelled, preds)
    assert [(r.text_id, r.label, r.predicted, r.source) for r in both] == [
        (1, "neg", None, "human"), (2, None, "pos", "model")]
    with pytest.raises(ValueError, match="include must be"):
        export_rows(labelled, preds, include="all")


def test_csv_prediction_columns_hold_probabilities():
    rows = _read_csv(to_csv(export_rows([], [_pred(5, "b", "pos", 0.8)]), CLASSES))
    # issue 15 item 11: a predicted class goes under 'predicted', never under 'label'
    assert rows == [{"text_id": "5", "text": "b", "label": "", "predicted": "pos",
                     "confidence": "0.8", "p_neg": "0.2", "p_pos": "0.8"}]


def test_prediction_changes_finds_exactly_the_flipped_rows():
    old = [_pred(1, "a", "pos", 0.9), _pred(2, "b", "neg", 0.6), _pred(3, "c", "neg", 0.7),
           _pred(4, "gone", "neg", 0.5)]
    new = [_pred(1, "a", "pos", 0.8), _pred(2, "b", "pos", 0.55), _pred(3, "c", "pos", 0.51),
           _pred(5, "new", "pos", 0.9)]
    changes = prediction_changes(old, new)
    assert [(c.text_id, c.before, c.after) for c in changes] == [(2, "neg", "pos"), (3, "neg", "pos")]
    assert changes[0].confidence_before == 0.6 and changes[0].confidence_after == 0.55
    assert prediction_changes(new, new) == []


def test_filter_predictions_by_search_class_and_confidence():
    preds = [_pred(1, "Great film", "pos", 0.9), _pred(2, "awful plot", "neg", 0.55),
             _pred(3, "great? maybe", "neg", 0.7), _pred(4, "fine", "pos", 0.6)]
    assert [p.text_id for p in filter_predictions(preds, search="GREAT")] == [3, 1]
    assert [p.text_id for p in filter_predictions(preds, classes=["pos"])] == [4, 1]
    assert [p.text_id for p in filter_predictions(preds, confidence=(0.6, 0.7))] == [4, 3]
    assert [p.text_id for p in filter_predictions(preds, sort="Most confident first")] == [1, 3, 4, 2]
    assert [p.text_id for p in filter_predictions(preds, sort="As added")] == [1, 2, 3, 4]
    assert filter_predictions(preds, classes=[]) == []


def test_labels_from_edits_prefers_a_chosen_label_over_accept():
    shown = [_pred(10, "a", "pos", 0.9), _pred(11, "b", "neg", 0.6), _pred(12, "c", "neg", 0.6)]
    edits = {"0": {"accept": True}, 1: {"label": "pos", "accept": True}, 2: {"accept": False},
             7: {"label": "pos"}}
    assert labels_from_edits(shown, edits, label_column="label", accept_column="accept") == [
        (10, "pos"), (11, "pos")]


def test_labels_from_choices_takes_plain_rows_and_skips_unknown_positions():
    shown = [_pred(10, "a", "pos", 0.9), _pred(11, "b", "neg", 0.6)]
    assert labels_from_choices(shown, {1: "pos", 5: "neg"}, [0, 1, -1]) == [(10, "pos"), (11, "pos")]
    assert labels_from_choices(shown, {}) == []


def test_file_stem_is_safe_for_any_project_name():
    assert file_stem("Café reviews/2024") == "cafe-reviews-2024"
    assert file_stem("../../etc/passwd") == "etc-passwd"
    assert file_stem("日本語") == "tenshot"
