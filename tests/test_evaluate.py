"""Evaluation machinery: fixed draws and test rows shared by every method, JSON report."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from core.model.backbone import Backbone
from core.learn.classifier import Settings
from core.errors import InputError
from core.evaluate import evaluate, prepare, run_method, summarise, tfidf_method, zero_shot_method
from core.learn.zeroshot import ZeroShotUnsupported, zero_shot_predict
from tests.helpers import make_tokenizer

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy", "superb movie",
       "the best film", "a fine plot"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad", "poor movie",
       "the worst film", "a dull plot"]
TEST = [("very good film", "pos"), ("good plot", "pos"), ("very bad film", "neg"),
        ("awful movie", "neg"), ("great", "pos"), ("terrible", "neg")]


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


@pytest.fixture
def data_dir(tmp_path):
    _write(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    _write(tmp_path / "test.csv", TEST)
    return tmp_path


@pytest.fixture(scope="module")
def tied_backbone():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      tie_word_embeddings=True, attn_implementation="eager")).eval()
    return Backbone("tiny-tied", lm.model, tok, "tiny-tied-fp")


def test_prepare_fixes_draws_and_test_rows(data_dir):
    a = prepare(data_dir, shots=[2, 4], seeds=2, max_test=4)
    b = prepare(data_dir, shots=[2, 4], seeds=2, max_test=4)
    assert a.test_texts == b.test_texts and len(a.test_texts) == 4
    assert sorted(a.test_labels) == ["neg", "neg", "pos", "pos"]
    assert list(a.draws) == [(2, 0), (2, 1), (4, 0), (4, 1)]
    for (k, _), idx in a.draws.items():
        assert np.array_equal(idx, b.draws[(k, _)])
        assert sorted(a.train_labels[i] for i in idx) == ["neg"] * k + ["pos"] * k
    assert a.needed() == sorted(set(np.concatenate(list(a.draws.values())).tolist()))
    with pytest.raises(InputError, match="at least 1 seed"):
        prepare(data_dir, shots=[2], seeds=0)


def test_every_method_sees_the_same_draws(data_dir):
    data = prepare(data_dir, shots=[2, 3], seeds=2, max_test=None)
    seen = []

    def spy(d):
        def fit_predict(idx, seed):
            seen.append((tuple(idx), seed))
            return list(d.test_labels), {"note": 1}
        return fit_predict

    runs = run_method(data, spy)
    assert seen == [(tuple(idx), s) for (_, s), idx in data.draws.items()]
    assert all(r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["note"] == 1 for r in runs)


def test_summarise_gives_mean_and_population_std():
    runs = [{"shots": 8, "accuracy": a, "macro_f1": f} for a, f in ((0.5, 0.4), (0.7, 0.6))]
    m = summarise(runs)["8"]
    assert m["accuracy"] == pytest.approx(0.6) and m["accuracy_std"] == pytest.approx(0.1)
    assert m["macro_f1"] == pytest.approx(0.5) and m["macro_f1_std"] == pytest.approx(0.1) and m["n"] == 2


def test_tfidf_method_predicts_known_classes(data_dir):
    data = prepare(data_dir, shots=[3], seeds=1)
    (run,) = run_method(data, tfidf_method())
    assert 0 <= run["accuracy"] <= 1 and run["train_seconds"] > 0


def test_zero_shot_is_the_same_on_every_draw_and_matches_the_scorer(data_dir, tied_backbone):
    data = prepare(data_dir, shots=[2, 4], seeds=2)
    runs = run_method(data, zero_shot_method(tied_backbone, prompt="review : {text} {classes} :"))
    expected = zero_shot_predict(tied_backbone, data.test_texts, data.classes, prompt="review : {text} {classes} :")
    acc = np.mean([p == t for p, t in zip(expected, data.test_labels)])
    assert [r["accuracy"] for r in runs] == pytest.approx([acc] * 4)


def test_evaluate_report_with_baselines_and_zero_shot(data_dir, tied_backbone):
    report = evaluate(data_dir, tied_backbone, Settings(backbone="tiny", prompt=None, mode="layer"), shots=[2, 4],
                      seeds=2, max_test=4, baselines=True, zero_shot=True)
    assert set(report["mean"]) == {"2", "4"} and report["classes"] == ["neg", "pos"]
    assert {"accuracy", "macro_f1", "accuracy_std", "macro_f1_std"} <= set(report["mean"]["2"])
    assert set(report["baselines"]) == {"tfidf_lr", "zero_shot", "zero_shot_calibrated"}
    zs = report["baselines"]["zero_shot"]
    assert zs["reduce"] == "sum" and "{classes}" in zs["prompt"] and not zs["calibrated"]
    assert report["baselines"]["zero_shot_calibrated"]["calibrated"]
    assert zs["mean"]["2"]["accuracy_std"] == 0.0  # no labels used: identical on every draw
    for base in report["baselines"].values():
        assert [(r["shots"], r["seed"]) for r in base["runs"]] == [(r["shots"], r["seed"]) for r in report["runs"]]


def test_zero_shot_refusal_comes_before_training(data_dir, tiny_backbone):
    with pytest.raises(ZeroShotUnsupported, match="does not tie"):
        evaluate(data_dir, tiny_backbone, Settings(backbone="tiny", prompt=None, mode="layer"), shots=[2], seeds=1,
                 zero_shot=True)


def test_evaluate_reports_every_setting_it_trained_with(data_dir, tiny_backbone):
    # issue 12: `tenshot eval` runs the app's defaults; its report says exactly which
    settings = Settings(backbone="tiny", prompt=None)  # otherwise the defaults (auto, L2)
    report = evaluate(data_dir, tiny_backbone, settings, shots=[2], seeds=1, max_test=4)
    assert report["settings"] == settings.to_dict()
    assert report["settings"]["penalty"] == Settings().penalty == "l2"
    assert report["settings"]["mode"] == Settings().mode
