"""Multi-label files (issue 16, item 9): label sets from CSV and JSONL, each kind of bad
input with its plain message or listed treatment, nothing half-imported, and export."""

import csv
import io
import json

import numpy as np
import pytest

from core.errors import InputError
from core.io import read_records
from core.multilabel_io import (SetRow, check_classes, import_label_sets, label_sets_of,
                                looks_multi_label, set_rows, sets_to_csv, sets_to_jsonl, split_cell)
from core.store import Store

CLASSES = ["staff", "waiting time", "food; drink"]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "w.db") as opened:
        yield opened


@pytest.fixture
def pid(store):
    return store.create_project("comments", CLASSES, task_type="multi_label").id


def _csv(rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows([("text", "labels"), *rows])
    return buf.getvalue().encode()


def _read(data: bytes, name="f.csv", classes=CLASSES):
    return label_sets_of(read_records(data, name, label_lists=True), classes)


def test_csv_sets_none_of_these_and_unlabelled():
    parsed = _read(_csv([("rude nurse", "staff;waiting time"), ("fine", "none of these"),
                         ("ok", "[]"), ("later", "")]))
    assert parsed.sets == [("staff", "waiting time"), (), (), None]
    assert (parsed.n_none, parsed.n_unlabelled, parsed.unknown) == (2, 1, {})
    assert parsed.summary() == "4 texts: 1 with classes, 2 “none of these”, 1 unlabelled."
    assert parsed.notes == ["1 row (line 5) had an empty labels cell and came in unlabelled "
                            "(write “none of these” for a sentence that has none of the classes)."]


def test_jsonl_lists_with_none_and_null():
    lines = [{"text": "a", "labels": ["staff", "food; drink"]}, {"text": "b", "labels": []},
             {"text": "c", "labels": None}, {"text": "d"}, {"text": "e", "labels": "staff;waiting time"}]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    parsed = _read(data, "f.jsonl")
    assert parsed.sets == [("staff", "food; drink"), (), None, None, ("staff", "waiting time")]
    assert parsed.notes == []


def test_duplicated_names_in_a_cell_count_once_and_are_listed():
    parsed = _read(_csv([("a", "staff;staff"), ("b", "staff")]))
    assert parsed.sets == [("staff",), ("staff",)]
    assert parsed.notes == ["1 row (line 2) named a class twice in one cell; it was counted once."]


def test_a_class_holding_the_separator_is_matched_whole_and_listed():
    assert split_cell("food; drink;staff", CLASSES) == (["food; drink", "staff"], ["food; drink"], 0)
    assert split_cell("staff; waiting time ;;") == (["staff", "waiting time"], [], 2)
    parsed = _read(_csv([("a", "staff;food; drink"), ("b", "staff;;")]))
    assert parsed.sets == [("staff", "food; drink"), ("staff",)]
    assert any("holds the separator “;”" in n and "line 2" in n for n in parsed.notes)
    assert any("empty name between separators" in n and "line 3" in n for n in parsed.notes)


def test_unknown_names_are_refused_with_their_lines_and_nothing_is_written(store, pid):
    parsed = _read(_csv([("a", "staff"), ("b", "noise;staff"), ("c", "noise")]))
    assert parsed.unknown == {"noise": [3, 4]}
    with pytest.raises(InputError, match=r"'noise' \(lines 3, 4\).*Nothing was added"):
        import_label_sets(store, pid, parsed, source="f.csv")
    assert store.texts(pid) == [] and store.classes(pid) == CLASSES
    added = import_label_sets(store, pid, parsed, source="f.csv", add_classes=True)
    assert added.added == 3 and store.classes(pid) == [*CLASSES, "noise"]
    assert [r.labels for r in store.label_sets(pid)] == [("staff",), ("staff", "noise"), ("noise",)]


def test_a_new_class_name_holding_the_separator_is_refused(store, pid):
    data = json.dumps({"text": "a", "labels": ["sun; rain"]}).encode()
    parsed = _read(data, "f.jsonl")
    with pytest.raises(InputError, match="'sun; rain' with “;” inside.*Nothing was added"):
        check_classes(parsed, CLASSES, add_classes=True)


def test_odd_lists_and_none_with_classes_come_in_unlabelled_and_are_listed():
    lines = [{"text": "a", "labels": ["staff", {"x": 1}]}, {"text": "b", "labels": ["staff", ""]}]
    parsed = _read("\n".join(json.dumps(x) for x in lines).encode(), "f.jsonl")
    assert parsed.sets == [None, ("staff",)]
    assert any("other than names" in n for n in parsed.notes)
    parsed = _read(_csv([("a", "staff;none of these")]))
    assert parsed.sets == [None] and "together with classes" in parsed.notes[0]


def test_multi_label_files_are_detected():
    assert looks_multi_label(read_records(_csv([("a", "staff;food")]), "f.csv", label_lists=True).labels)
    assert looks_multi_label(read_records(b'{"text": "a", "labels": ["x"]}', "f.jsonl",
                                          label_lists=True).labels)
    assert not looks_multi_label(read_records(_csv([("a", "staff")]), "f.csv", label_lists=True).labels)


def test_export_imports_back_the_same_sets(store, pid):
    rows = [SetRow(1, "=cmd", ("staff", "food; drink"), None, None), SetRow(2, "fine", (), None, None),
            SetRow(3, "unread", None, ("waiting time",), {"staff": 0.1, "waiting time": 0.9,
                                                           "food; drink": 0.2})]
    data = sets_to_csv(rows, CLASSES)
    assert b"'=cmd" in data  # a formula cell is neutralised
    parsed = _read(data)
    assert parsed.sets == [("staff", "food; drink"), (), None]
    back = [json.loads(line) for line in sets_to_jsonl(rows, CLASSES).decode().splitlines()]
    assert [r["labels"] for r in back] == [["staff", "food; drink"], [], None]
    assert back[2]["predicted"] == ["waiting time"] and back[2]["probs"]["waiting time"] == 0.9


def test_export_rows_hold_human_sets_and_predicted_sets(store, pid):
    ids = store.add_texts(pid, ["a", "b", "c"]).text_ids
    store.set_label_set(pid, ids[0], ["staff"])
    store.set_label_set(pid, ids[1], [])
    version = store.save_model(pid, params={"classes": CLASSES, "head": {"thresholds_": [0.5, 0.5, 0.5]}},
                               metrics={}, state={"w": np.zeros(1)}, n_labels=2)
    model = store.model(pid, version)
    store.save_probabilities(model.id, [ids[2]], CLASSES, np.array([[0.7, 0.2, 0.6]]))
    project = store.project(pid)
    rows = set_rows(store, project, model)
    assert [(r.row_id, r.labels, r.predicted) for r in rows] == [
        (ids[0], ("staff",), None), (ids[1], (), None), (ids[2], None, ("staff", "food; drink"))]
    assert [r.row_id for r in set_rows(store, project, model, include="predictions")] == [ids[2]]
    assert [r.row_id for r in set_rows(store, project, None, include="labels")] == ids[:2]
