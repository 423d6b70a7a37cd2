"""`tenshot` CLI smoke tests on tiny CSVs written here, with a tiny model folder as backbone."""

from __future__ import annotations

import csv
import json

import pytest

from core.cli import main
from core.store import Store
from tests.helpers import make_tiny_model, make_tokenizer

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy", "superb movie"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad", "poor movie"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tok = make_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_train_predict_export_and_bundle_predict(tmp_path, model_dir, capsys):
    db = str(tmp_path / "w.db")
    data = _write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG]
                      + [("very good", ""), ("=1+1 formula", "")])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    assert "model v1: CV accuracy" in capsys.readouterr().out
    with Store.open(db) as store:
        p = store.project("p")
        assert store.classes(p.id) == ["pos", "neg"]
        assert store.label_counts(p.id) == {"pos": 6, "neg": 6}
        assert len(store.predictions(store.latest_model(p.id).id)) == 2
    new = _write_csv(tmp_path / "new.csv", [("a good film",), ("awful plot",), ("=cmd",)], header=("text",))
    assert main(["--db", db, "predict", "--project", "p", "--data", new, "--out", str(tmp_path / "o.csv")]) == 0
    assert main(["--db", db, "export", "--project", "p", "--out", str(tmp_path / "m.tenshot")]) == 0
    assert main(["--db", db, "predict", "--bundle", str(tmp_path / "m.tenshot"), "--data", new,
                 "--out", str(tmp_path / "o2.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["text"] for r in rows] == ["a good film", "awful plot", "'=cmd"]
    assert {r["prediction"] for r in rows} <= {"pos", "neg"}
    assert rows == list(csv.DictReader(open(tmp_path / "o2.csv")))


def test_too_few_labels_is_a_plain_error(tmp_path, model_dir, capsys):
    data = _write_csv(tmp_path / "t.csv", [("good movie", "pos"), ("great film", "pos"), ("bad", "neg")])
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
    _write_csv(d / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    _write_csv(d / "test.csv", [("very good film", "pos"), ("good plot", "pos"), ("very bad film", "neg"),
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
    _write_csv(d / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    _write_csv(d / "test.csv", [("very good film", "pos"), ("good plot", "pos"), ("very bad film", "neg"),
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
    data = _write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
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


def test_a_new_label_name_becomes_a_class_unless_the_file_is_refused(tmp_path, model_dir, capsys,
                                                                       monkeypatch):
    db = str(tmp_path / "w.db")
    data = _write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", model_dir,
                 "--prompt", "", "--mode", "layer"]) == 0
    more = _write_csv(tmp_path / "more.csv", [("so so", "meh"), ("fine i guess", "meh"), ("ok", "meh")])
    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "13")
    assert main(["--db", db, "train", "--project", "p", "--data", more]) != 0
    assert "Nothing was added" in capsys.readouterr().err
    with Store.open(db) as store:
        assert store.classes(store.project("p").id) == ["pos", "neg"]
    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "100")
    assert main(["--db", db, "train", "--project", "p", "--data", more]) == 0
    with Store.open(db) as store:
        p = store.project("p")
        assert store.classes(p.id) == ["pos", "neg", "meh"]
        assert store.label_counts(p.id)["meh"] == 3
