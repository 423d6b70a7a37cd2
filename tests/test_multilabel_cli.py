"""`tenshot train/predict/eval/export` on small multi-label CSV and JSONL files written here
(issue 16), with a tiny model folder as backbone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.cli import main
from core.store import Store
from tests.helpers import write_csv

ROWS = [("good movie", "pos;film"), ("great film", "pos;film"), ("i love it", "pos"),
        ("wonderful plot", "pos"), ("bad movie", "neg;film"), ("awful film", "neg;film"),
        ("i hate it", "neg"), ("terrible plot", "neg"), ("the review", "none of these"),
        ("it is a review", "none of these"), ("very good", "")]


def _jsonl(path, rows) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _train(tmp_path, model_dir, data, *extra) -> tuple[int, str]:
    db = str(tmp_path / "w.db")
    return main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer", "--penalty", "l2", *extra]), db


def test_train_detects_a_multi_label_csv_then_predict_and_bundle_agree(tmp_path, tiny_model_dir, capsys):
    data = write_csv(tmp_path / "t.csv", ROWS, header=("text", "labels"))
    code, db = _train(tmp_path, tiny_model_dir, data)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "model v1: CV macro-F1" in out.out and "none of these=2" in out.out
    assert "1 unlabelled" in out.err
    with Store.open(db) as store:
        p = store.project("p")
        assert p.multi_label and store.classes(p.id) == ["pos", "film", "neg"]
        assert store.label_set(p.id, store.text_id(p.id, "good movie")) == ("pos", "film")
        assert store.label_set(p.id, store.text_id(p.id, "the review")) == ()
        assert [r.text for r in store.unlabelled(p.id)] == ["very good"]
    new = write_csv(tmp_path / "new.csv", [("a good film", "pos"), ("awful plot", ""), ("=cmd", "")])
    o1, o2, bundle = tmp_path / "o.csv", tmp_path / "o2.jsonl", tmp_path / "m.tenshot"
    assert main(["--db", db, "predict", "--project", "p", "--data", new, "--out", str(o1)]) == 0
    assert main(["--db", db, "export", "--project", "p", "--out", str(bundle)]) == 0
    assert main(["--db", db, "predict", "--bundle", str(bundle), "--data", new, "--out", str(o2)]) == 0
    rows = list(csv.DictReader(open(o1, encoding="utf-8-sig")))
    assert list(rows[0]) == ["line", "text", "labels", "predicted", "p_pos", "p_film", "p_neg"]
    assert [r["text"] for r in rows] == ["a good film", "awful plot", "'=cmd"]
    assert [r["labels"] for r in rows] == ["pos", "", ""]
    lines = [json.loads(x) for x in o2.read_text().splitlines()]
    # the bundle carries the classes and thresholds: it predicts the same sets
    assert [";".join(x["predicted"]) or "none of these" for x in lines] == [r["predicted"] for r in rows]
    assert [pytest.approx(float(r["p_film"]), abs=1e-6) for r in rows] == [x["probs"]["film"] for x in lines]


def test_train_on_jsonl_lists_and_retrain_adds_to_the_project(tmp_path, tiny_model_dir, capsys):
    rows = [{"text": t, "labels": ([] if lab == "none of these" else lab.split(";")) if lab else None}
            for t, lab in ROWS]
    code, db = _train(tmp_path, tiny_model_dir, _jsonl(tmp_path / "t.jsonl", rows))
    assert code == 0, capsys.readouterr().err
    more = _jsonl(tmp_path / "more.jsonl", [{"text": "very good", "labels": ["pos"]}])
    assert main(["--db", db, "train", "--project", "p", "--data", more]) == 0
    assert "model v2" in capsys.readouterr().out
    with Store.open(db) as store:
        p = store.project("p")
        assert store.label_set(p.id, store.text_id(p.id, "very good")) == ("pos",)


def test_multi_label_refusals_name_each_class_and_write_nothing(tmp_path, tiny_model_dir, capsys):
    data = write_csv(tmp_path / "t.csv", [("good movie", "pos;film"), ("bad film", "neg;film"),
                                          ("the review", "none of these")], header=("text", "labels"))
    code, db = _train(tmp_path, tiny_model_dir, data)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "1 more sentence with “pos”, 1 more without “film” and 1 more sentence with “neg”" in err
    assert "Nothing was added" in err
    assert not Path(db).exists()  # the refused run leaves no workspace behind


def test_unknown_names_in_an_existing_project_are_refused_with_lines(tmp_path, tiny_model_dir, capsys):
    code, db = _train(tmp_path, tiny_model_dir, write_csv(tmp_path / "t.csv", ROWS, header=("text", "labels")))
    assert code == 0
    bad = write_csv(tmp_path / "b.csv", [("so dull", "neg;boring")], header=("text", "labels"))
    assert main(["--db", db, "train", "--project", "p", "--data", bad]) == 2
    err = capsys.readouterr().err
    assert "'boring' (line 2)" in err and "Nothing was added" in err
    with Store.open(db) as store:
        assert store.text_id(store.project("p").id, "so dull") is None


def test_multi_label_flag_on_a_single_label_project_is_refused(tmp_path, tiny_model_dir, capsys):
    data = write_csv(tmp_path / "s.csv", [("good movie", "pos"), ("great film", "pos"),
                                          ("bad movie", "neg"), ("awful film", "neg")])
    code, db = _train(tmp_path, tiny_model_dir, data)
    assert code == 0
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--multi-label"]) == 2
    assert "is single-label" in capsys.readouterr().err


def test_eval_detects_multi_label_data_and_reports_both_f1s(tmp_path, tiny_model_dir, capsys):
    d = tmp_path / "set"
    d.mkdir()
    write_csv(d / "train.csv", ROWS[:10], header=("text", "labels"))
    write_csv(d / "test.csv", [("very good film", "pos;film"), ("good plot", "pos"),
                               ("very bad film", "neg;film"), ("awful movie", "neg;film")],
              header=("text", "labels"))
    out = tmp_path / "r.json"
    assert main(["--db", str(tmp_path / "w.db"), "eval", "--data", str(d), "--shots", "2", "--seeds", "2",
                 "--backbone", tiny_model_dir, "--prompt", "", "--mode", "layer", "--penalty", "l2",
                 "--baselines", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "multi_label" and report["classes"] == ["film", "neg", "pos"]
    assert [(r["method"], r["seed"]) for r in report["runs"]] == [
        ("tenshot", 0), ("tenshot", 1), ("tfidf", 0), ("tfidf", 1)]
    assert set(report["mean"]["tenshot"]["2"]) >= {"micro_f1", "macro_f1", "subset_accuracy"}
    assert "tfidf\t2 per class\tmicro-F1" in capsys.readouterr().out
