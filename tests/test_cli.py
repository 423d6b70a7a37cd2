"""`tenshot` CLI smoke tests on tiny CSVs written here, with a tiny model folder as backbone."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from core.cli import main
from core.store import Store
from tests.helpers import make_tiny_model, make_tokenizer, write_csv

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy", "superb movie"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad", "poor movie"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tok = make_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_train_predict_export_and_bundle_predict(tmp_path, model_dir, capsys):
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG]
                      + [("very good", ""), ("=1+1 formula", "")])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    assert "model v1: CV accuracy" in capsys.readouterr().out
    with Store.open(db) as store:
        p = store.project("p")
        assert store.classes(p.id) == ["pos", "neg"]
        assert store.label_counts(p.id) == {"pos": 6, "neg": 6}
        assert len(store.predictions(store.latest_model(p.id).id)) == 2
    new = write_csv(tmp_path / "new.csv", [("a good film",), ("awful plot",), ("=cmd",)], header=("text",))
    assert main(["--db", db, "predict", "--project", "p", "--data", new, "--out", str(tmp_path / "o.csv")]) == 0
    assert main(["--db", db, "export", "--project", "p", "--out", str(tmp_path / "m.tenshot")]) == 0
    assert main(["--db", db, "predict", "--bundle", str(tmp_path / "m.tenshot"), "--data", new,
                 "--out", str(tmp_path / "o2.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["text"] for r in rows] == ["a good film", "awful plot", "'=cmd"]
    assert {r["predicted"] for r in rows} <= {"pos", "neg"}
    assert rows == list(csv.DictReader(open(tmp_path / "o2.csv")))


def test_too_few_labels_is_a_plain_error(tmp_path, model_dir, capsys):
    data = write_csv(tmp_path / "t.csv", [("good movie", "pos"), ("great film", "pos"), ("bad", "neg")])
    code = main(["--db", str(tmp_path / "w.db"), "train", "--project", "p", "--data", data,
                 "--backbone", model_dir, "--prompt", ""])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: Label 1 more “neg”" in err and "Traceback" not in err


def test_missing_file_and_unknown_project(tmp_path, capsys):
    db = str(tmp_path / "w.db")
    assert main(["--db", db, "train", "--project", "p", "--data", str(tmp_path / "nope.csv")]) == 2
    assert "No file at" in capsys.readouterr().err
    assert main(["--db", db, "predict", "--project", "ghost", "--data", "x", "--out", "y"]) == 2
    assert "ghost" in capsys.readouterr().err


def test_eval_writes_the_documented_json(tmp_path, model_dir):
    d = tmp_path / "set"
    d.mkdir()
    write_csv(d / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    write_csv(d / "test.csv", [("very good film", "pos"), ("good plot", "pos"), ("very bad film", "neg"),
                                ("awful movie", "neg"), ("great", "pos"), ("terrible", "neg")])
    out = tmp_path / "r.json"
    assert main(["--db", str(tmp_path / "w.db"), "eval", "--data", str(d), "--shots", "2,4", "--seeds", "2",
                 "--backbone", model_dir, "--prompt", "", "--mode", "layer", "--max-test", "4",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == "set" and report["mode"] == "layer"
    assert [(r["shots"], r["seed"]) for r in report["runs"]] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    for r in report["runs"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["train_seconds"] > 0
    assert set(report["mean"]) == {"2", "4"}
    assert report["n_test"] == 4


def _eval_dir(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    write_csv(d / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    write_csv(d / "test.csv", [("very good film", "pos"), ("good plot", "pos"), ("very bad film", "neg"),
                                ("awful movie", "neg")])
    return str(d)


def test_eval_zero_shot_adds_a_baseline_on_the_same_draws(tmp_path, capsys):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(0)
    folder = tmp_path / "tied-model"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
                     ).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "r.json"
    assert main(["--db", str(tmp_path / "w.db"), "eval", "--data", _eval_dir(tmp_path), "--shots", "2",
                 "--seeds", "2", "--backbone", str(folder), "--prompt", "", "--mode", "layer", "--baselines",
                 "--zero-shot", "--zero-shot-prompt", "review : {text} {classes} :", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["baselines"]) == {"tfidf_lr", "zero_shot", "zero_shot_calibrated"}
    assert report["baselines"]["zero_shot"]["prompt"] == "review : {text} {classes} :"
    assert len(report["baselines"]["zero_shot"]["runs"]) == 2
    assert "zero_shot\t2 shots\taccuracy" in capsys.readouterr().out


def test_eval_zero_shot_on_an_untied_backbone_is_a_plain_error(tmp_path, model_dir, capsys):
    code = main(["--db", str(tmp_path / "w.db"), "eval", "--data", _eval_dir(tmp_path), "--shots", "2",
                 "--backbone", model_dir, "--zero-shot", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "error: The backbone" in err and "zero-shot" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_max_length_is_saved_and_an_out_of_range_one_is_refused(tmp_path, model_dir, capsys):
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer", "--max-length", "32"]) == 0
    with Store.open(db) as store:
        p = store.project("p")
        assert p.settings["max_length"] == 32
        assert store.latest_model(p.id).params["settings"]["max_length"] == 32
    code = main(["--db", db, "train", "--project", "p", "--data", data, "--max-length", "5"])
    assert code != 0
    assert "between 8 and 4096 tokens; got 5" in capsys.readouterr().err
    with Store.open(db) as store:  # the refused run changed nothing
        assert store.project("p").settings["max_length"] == 32


def test_a_new_label_name_becomes_a_class_only_when_asked_and_the_file_is_accepted(tmp_path, model_dir,
                                                                                    capsys, monkeypatch):
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    more = write_csv(tmp_path / "more.csv", [("so so", "meh"), ("fine i guess", "meh"), ("ok", "meh")])
    # issue 17 item 6: without --add-classes an unknown label is refused, not made a class
    assert main(["--db", db, "train", "--project", "p", "--data", more]) == 2
    assert "--add-classes" in capsys.readouterr().err
    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "13")
    assert main(["--db", db, "train", "--project", "p", "--data", more, "--add-classes"]) != 0
    assert "Nothing was added" in capsys.readouterr().err
    with Store.open(db) as store:
        assert store.classes(store.project("p").id) == ["pos", "neg"]
    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "100")
    assert main(["--db", db, "train", "--project", "p", "--data", more, "--add-classes"]) == 0
    with Store.open(db) as store:
        p = store.project("p")
        assert store.classes(p.id) == ["pos", "neg", "meh"]
        assert store.label_counts(p.id)["meh"] == 3


# --- issue 17, items 6-10: refusals change nothing, skips are reported, outputs are safe --------

def _dump(db) -> list[str]:
    """Everything the workspace holds, as SQL text: equal dumps mean nothing was written."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _trained(tmp_path, model_dir) -> str:
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    return db


def test_unknown_labels_are_refused_with_suggestions_and_the_project_is_not_stuck(tmp_path, model_dir,
                                                                                   capsys):
    # regression: joyful/SAD/sadd became three new classes, then every later train failed
    db = _trained(tmp_path, model_dir)
    before = _dump(db)
    capsys.readouterr()
    odd = write_csv(tmp_path / "odd.csv", [("so happy today", "joyful"), ("so so", "NEG"),
                                            ("meh film", "negg"), ("fine film", "pos")])
    assert main(["--db", db, "train", "--project", "p", "--data", odd]) == 2
    err = capsys.readouterr().err
    assert "'joyful'" in err and "'NEG' (did you mean 'neg'?)" in err and "'negg' (did you mean 'neg'?)" in err
    assert "--add-classes" in err and "Traceback" not in err
    assert _dump(db) == before
    more = write_csv(tmp_path / "more.csv", [("a superb plot", "pos")])
    assert main(["--db", db, "train", "--project", "p", "--data", more]) == 0
    with Store.open(db) as store:
        assert store.classes(store.project("p").id) == ["pos", "neg"]


def test_add_classes_adds_them_only_when_each_gets_enough_labels(tmp_path, model_dir, capsys):
    db = _trained(tmp_path, model_dir)
    before = _dump(db)
    one = write_csv(tmp_path / "one.csv", [("so happy today", "joyful")])
    assert main(["--db", db, "train", "--project", "p", "--data", one, "--add-classes"]) == 2
    assert "Label 1 more “joyful”" in capsys.readouterr().err
    assert _dump(db) == before
    two = write_csv(tmp_path / "two.csv", [("so happy today", "joyful"), ("a joyful film", "joyful")])
    assert main(["--db", db, "train", "--project", "p", "--data", two, "--add-classes"]) == 0
    with Store.open(db) as store:
        p = store.project("p")
        assert store.classes(p.id) == ["pos", "neg", "joyful"]
        assert store.latest_model(p.id).version == 2


def test_a_new_project_refuses_labels_outside_its_classes_and_is_not_created(tmp_path, model_dir, capsys):
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "t.csv", [(t, "pos") for t in POS] + [(t, "Neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--classes", "pos,neg",
                 "--backbone", model_dir, "--prompt", ""]) == 2
    assert "'Neg' (did you mean 'neg'?)" in capsys.readouterr().err
    assert not (tmp_path / "w.db").exists()  # a refused first command leaves no workspace behind


def _jsonl(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_predict_gives_every_row_an_output_row_or_a_reported_skip(tmp_path, model_dir, capsys):
    # regression: 5 JSONL lines (one broken) gave 3 predictions and a ragged CSV lost rows, exit 0
    db = _trained(tmp_path, model_dir)
    capsys.readouterr()
    data = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "good movie"}), json.dumps({"text": "bad film"}),
                                          "{broken", json.dumps({"text": ""}), json.dumps({"text": "i love it"})])
    out = tmp_path / "o.csv"
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "skipped line 3:" in err and "skipped line 4: empty text" in err
    assert "2 of 5 rows were skipped" in err
    rows = list(csv.DictReader(open(out, encoding="utf-8-sig")))
    assert [r["line"] for r in rows] == ["1", "2", "5"]
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,id\ngood movie,1\nbad,film,2\ni hate it,3\na,b,c,d\n")
    assert main(["--db", db, "predict", "--project", "p", "--data", str(ragged), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "skipped line 3: has 3 cells but the header has 2" in err and "skipped line 5" in err
    assert [r["line"] for r in csv.DictReader(open(out, encoding="utf-8-sig"))] == ["2", "4"]
    clean = write_csv(tmp_path / "c.csv", [("good movie",)], header=("text",))
    assert main(["--db", db, "predict", "--project", "p", "--data", clean, "--out", str(out)]) == 0


def test_train_reports_skipped_lines_with_the_same_exit_code(tmp_path, model_dir, capsys):
    db = _trained(tmp_path, model_dir)
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\ngood film,pos\nbad,film,neg\n")
    assert main(["--db", db, "train", "--project", "p", "--data", str(ragged)]) == 3
    err = capsys.readouterr().err
    assert "skipped line 3: has 3 cells but the header has 2" in err and "1 of 2 rows were skipped" in err


def test_predict_never_overwrites_its_input_or_the_workspace(tmp_path, model_dir, capsys, monkeypatch):
    # regression: --out equal to --data overwrote the input file
    db = _trained(tmp_path, model_dir)
    data = write_csv(tmp_path / "in.csv", [("good movie",), ("bad film",)], header=("text",))
    original = open(data, "rb").read()
    monkeypatch.chdir(tmp_path)
    for out in (data, "./in.csv", db):
        before = _dump(db)
        assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", out]) == 2
        err = capsys.readouterr().err
        assert "error: --out" in err and "Traceback" not in err
        assert open(data, "rb").read() == original and _dump(db) == before


def test_predict_checks_the_out_folder_before_computing_anything(tmp_path, model_dir, capsys):
    # regression: a missing --out folder failed only after every prediction was computed
    import shutil

    backbone = shutil.copytree(model_dir, tmp_path / "model")
    db = _trained(tmp_path, str(backbone))
    shutil.rmtree(backbone)  # predicting would now fail on the backbone, after the out check
    data = write_csv(tmp_path / "in.csv", [("good movie",)], header=("text",))
    capsys.readouterr()
    assert main(["--db", db, "predict", "--project", "p", "--data", data,
                 "--out", str(tmp_path / "no-such-folder" / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "no-such-folder" in err and "does not exist" in err
    (tmp_path / "a-file").write_text("x")
    assert main(["--db", db, "predict", "--project", "p", "--data", data,
                 "--out", str(tmp_path / "a-file" / "o.csv")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_predict_replaces_the_out_file_atomically(tmp_path, model_dir):
    db = _trained(tmp_path, model_dir)
    data = write_csv(tmp_path / "in.csv", [("good movie",)], header=("text",))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "o.csv").write_text("old content")
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out_dir / "o.csv")]) == 0
    assert [p.name for p in out_dir.iterdir()] == ["o.csv"]  # no temporary file left behind
    assert "good movie" in (out_dir / "o.csv").read_text(encoding="utf-8-sig")


def test_a_workspace_in_a_missing_folder_is_refused(tmp_path, model_dir, capsys):
    # regression: --db in a missing folder silently created the folder and an empty workspace
    data = write_csv(tmp_path / "t.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    db = tmp_path / "typo" / "w.db"
    assert main(["--db", str(db), "train", "--project", "p", "--data", data, "--backbone", model_dir]) == 2
    assert "typo" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    assert main(["--db", str(tmp_path / "none.db"), "projects"]) == 2
    assert "No workspace at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    assert main(["--db", str(tmp_path / "new.db"), "train", "--project", "p", "--data", data,
                 "--backbone", model_dir, "--prompt", "", "--mode", "layer"]) == 0
    assert "created a new workspace" in capsys.readouterr().err


def test_a_header_only_file_is_refused_without_retraining(tmp_path, model_dir, capsys):
    # regression: a header-only file "imported 0 texts" and retrained anyway
    db = _trained(tmp_path, model_dir)
    before = _dump(db)
    header = tmp_path / "h.csv"
    header.write_text("text,label\n")
    assert main(["--db", db, "train", "--project", "p", "--data", str(header)]) == 2
    assert "no rows" in capsys.readouterr().err
    assert _dump(db) == before
    assert main(["--db", db, "predict", "--project", "p", "--data", str(header),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "no rows" in capsys.readouterr().err and not (tmp_path / "o.csv").exists()


def test_cut_texts_and_dropped_labels_are_said_in_plain_words(tmp_path, model_dir, capsys):
    # regression: a 6,000-character text was cut with only a raw TruncationWarning line, and
    # JSONL labels that were lists, objects or booleans were dropped without a word
    db = _trained(tmp_path, model_dir)
    capsys.readouterr()
    data = _jsonl(tmp_path / "t.jsonl", [json.dumps({"text": "good " * 1199 + "good!", "label": "pos"}),
                                         json.dumps({"text": "a delight", "label": ["pos"]}),
                                         json.dumps({"text": "so dull", "label": True}),
                                         json.dumps({"text": "the best", "label": {"c": "pos"}})])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--max-length", "16"]) == 3
    err = capsys.readouterr().err
    assert "Line 1: the text had 6,000 characters and was cut to 5,000" in err
    assert "lines 2, 3, 4" in err and "imported without a label" in err
    assert "longer than 16 tokens" in err
    assert "Warning" not in err and "warnings.warn" not in err and ".py:" not in err


def test_predictions_and_the_app_export_share_one_schema_that_train_reads_back(tmp_path, model_dir,
                                                                               capsys):
    # issue 15 item 11: the CLI wrote 'prediction', the app 'label'; a predicted class must not
    # come back as a human label when the file is imported again
    from core.export import ExportRow, to_csv

    db = _trained(tmp_path, model_dir)
    data = write_csv(tmp_path / "in.csv", [("very good film", ""), ("awful plot", "neg")])
    out = tmp_path / "o.csv"
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8-sig")))
    assert list(rows[0]) == ["line", "text", "label", "predicted", "confidence", "p_pos", "p_neg"]
    assert [r["label"] for r in rows] == ["", "neg"] and {r["predicted"] for r in rows} <= {"pos", "neg"}
    app = to_csv([ExportRow(1, "x", None, "pos", 0.9, {"pos": 0.9, "neg": 0.1})], ["pos", "neg"])
    assert app.decode("utf-8-sig").splitlines()[0] == "text_id,text,label,predicted,confidence,p_pos,p_neg"
    with Store.open(db) as store:
        before = store.label_counts(store.project("p").id)
    assert main(["--db", db, "train", "--project", "p", "--data", str(out)]) == 0
    with Store.open(db) as store:
        after = store.label_counts(store.project("p").id)
    assert after == {**before, "neg": before["neg"] + 1}  # only the human label came back


def test_an_empty_prompt_on_an_existing_project_clears_its_prompt(tmp_path, model_dir):
    # regression: --prompt '' was read as "no option given", so the old prompt stayed
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "review : {text}", "--mode", "layer"]) == 0
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--prompt", ""]) == 0
    with Store.open(db) as store:
        assert store.project("p").settings["prompt"] is None


def test_predict_threshold_marks_rows_that_need_a_human_and_prints_the_estimate(tmp_path, model_dir, capsys):
    # issue 15 item 12: predict took no threshold; confidence alone told a user nothing to act on
    db = _trained(tmp_path, model_dir)
    data = write_csv(tmp_path / "in.csv", [(t,) for t in ["very good film", "awful plot", "a film",
                                                            "i love it", "so boring"]], header=("text",))
    out, bundle = tmp_path / "o.csv", tmp_path / "m.tenshot"
    capsys.readouterr()
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out),
                 "--threshold", "0.6"]) == 0
    said = capsys.readouterr().out
    rows = list(csv.DictReader(open(out, encoding="utf-8-sig")))
    assert list(rows[0]) == ["line", "text", "label", "predicted", "confidence", "needs_human", "p_pos", "p_neg"]
    assert [r["needs_human"] for r in rows] == ["yes" if float(r["confidence"]) < 0.6 else "no" for r in rows]
    cleared = sum(r["needs_human"] == "no" for r in rows)
    assert f"{cleared} of 5 predictions" in said and "at least 60% confidence" in said
    assert "estimated accuracy" in said or "Too few of your labels" in said
    # a bundle carries the calibration: the same marks and the same estimate
    assert main(["--db", db, "export", "--project", "p", "--out", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["--db", db, "predict", "--bundle", str(bundle), "--data", data, "--out",
                 str(tmp_path / "o2.csv"), "--threshold", "0.6"]) == 0
    assert capsys.readouterr().out == said
    assert rows == list(csv.DictReader(open(tmp_path / "o2.csv", encoding="utf-8-sig")))


def test_predict_refuses_a_bad_threshold_or_an_unreachable_target_and_writes_nothing(tmp_path, model_dir,
                                                                                       capsys):
    db = _trained(tmp_path, model_dir)
    data = write_csv(tmp_path / "in.csv", [("very good film",)], header=("text",))
    out = tmp_path / "o.csv"
    capsys.readouterr()
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out),
                 "--threshold", "80"]) == 2
    assert "--threshold must be a share between 0 and 1, got 80 (give 0.8 for 80%)" in capsys.readouterr().err
    assert main(["--db", db, "predict", "--project", "p", "--data", data, "--out", str(out),
                 "--target-accuracy", "0.999"]) == 2
    err = capsys.readouterr().err
    assert "No confidence threshold can promise 100% accuracy" in err and "Nothing was written" in err
    assert not out.exists()


def test_predict_engine_ray_without_ray_says_how_to_install_it(tmp_path, model_dir, capsys,
                                                               monkeypatch):
    # issue 14: Ray is an optional extra; without it --engine ray must say what to do
    bundle = _trained_bundle(tmp_path, model_dir)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is absent
    new = write_csv(tmp_path / "new.csv", [("a good film",)], header=("text",))
    code = main(["--db", str(tmp_path / "w.db"), "predict", "--bundle", bundle, "--data", new,
                 "--out", str(tmp_path / "o.csv"), "--engine", "ray"])
    assert code == 2 and 'pip install "tenshot[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_predict_says_a_file_is_too_big_for_the_single_process_engine(tmp_path, model_dir, capsys,
                                                                      monkeypatch):
    # issue 14: a clear message when a file is too big for the chosen engine
    bundle = _trained_bundle(tmp_path, model_dir)
    monkeypatch.setenv("TENSHOT_MAX_UPLOAD_BYTES", "100")
    new = write_csv(tmp_path / "new.csv", [(f"sentence number {i}",) for i in range(20)],
                     header=("text",))
    code = main(["--db", str(tmp_path / "w.db"), "predict", "--bundle", bundle, "--data", new,
                 "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "single-process engine reads files up to" in err and "--engine ray" in err


def _trained_bundle(tmp_path, model_dir) -> str:
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    assert main(["--db", db, "export", "--project", "p", "--out", str(tmp_path / "m.tenshot")]) == 0
    return str(tmp_path / "m.tenshot")
