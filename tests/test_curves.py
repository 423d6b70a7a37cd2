"""Diagnostics on synthetic features: confusion counts, learning curve, labels needed,
layer profile, and the prompt comparison on the tiny real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.learn.curves import (LearningCurve, accuracy_range, clear_change, cv_confusion, encode_labels, fixed_head, labels_needed, layer_profile, learning_curve, saturating)
from core.errors import NotEnoughLabels
from tests.helpers import DictCache


def _blobs(n_per_class=20, n_classes=3, d=20, shift=1.5, seed=0):
    """Classes differ in one dimension each, buried among noise dimensions: accuracy
    grows with the number of labels instead of being perfect at two per class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    Z = rng.normal(size=(len(y), d))
    Z[:, :n_classes] += shift * np.eye(n_classes)[y]
    return Z, y


@pytest.fixture(scope="module")
def curve():
    Z, y = _blobs()
    return learning_curve(Z, y, fixed_head("l2", 1.0), seeds=2, n_sizes=5)


def test_encode_labels_follows_class_order():
    assert encode_labels(["b", "a", "b"], ["a", "b"]).tolist() == [1, 0, 1]


def test_confusion_matrix_counts_every_label_once():
    Z, y = _blobs(n_per_class=9, n_classes=3)
    cm = cv_confusion(Z, y, 3, fixed_head("l1", 1.0))
    assert cm.shape == (3, 3) and cm.sum() == len(y)
    assert cm.sum(1).tolist() == [9, 9, 9]  # rows are the true classes
    assert np.trace(cm) > len(y) / 3  # better than chance on separable data


def test_confusion_matrix_is_diagonal_when_classes_are_far_apart():
    Z, y = _blobs(n_per_class=6, n_classes=2, d=4, shift=20.0)
    assert cv_confusion(Z, y, 2, fixed_head("l2", 1.0)).tolist() == [[6, 0], [0, 6]]


def test_learning_curve_rises_on_separable_data(curve):
    assert curve.sizes[0] == 2 and np.all(np.diff(curve.sizes) > 0)
    assert curve.sizes[-1] <= 20 * 4 // 5  # never more than the training folds hold
    assert curve.scores.shape == (len(curve.sizes), 2 * 5)
    # monotone-ish: the end is clearly above the start, and no step drops by much
    assert curve.mean[-1] > curve.mean[0] + 0.15
    assert np.all(np.diff(curve.mean) > -0.08)
    assert curve.counts == (20, 20, 20)


def test_learning_curve_refuses_too_few_labels():
    Z, y = _blobs(n_per_class=2, n_classes=2)
    with pytest.raises(NotEnoughLabels, match="at least 3 labels in every class"):
        learning_curve(Z, y, fixed_head("l2", 1.0))


def _known_curve(noise=0.01):
    """acc(n) = 0.9 - 0.5 n^-0.7 at 2..16 labels per class, 6 noisy runs; 16 labels per class now."""
    sizes = np.array([2, 4, 8, 16])
    rng = np.random.default_rng(0)
    runs = saturating(sizes.astype(float), 0.9, 0.5, 0.7)[:, None] + rng.normal(0, noise, (4, 6))
    return LearningCurve(sizes, runs, (16, 16))


def test_labels_needed_recovers_a_known_curve():
    # 0.85 = 0.9 - 0.5 n^-0.7  ->  n = 10^(1/0.7) = 26.8 per class -> 2 * (27 - 16) = 22 more
    est = labels_needed(_known_curve(), 0.85)
    assert not est.reached and est.method == "saturating"
    assert est.finite and 10 < est.extra < 40
    assert est.low <= est.extra <= est.high and est.low < est.high
    assert est.plateau == pytest.approx(0.9, abs=0.03)
    # the fitted curve reaches the target at the per-class count it names
    assert saturating(est.per_class, *est.params) == pytest.approx(0.85, abs=1e-6)
    assert est.extra == sum(max(0, math.ceil(est.per_class) - c) for c in (16, 16))


def test_labels_needed_is_finite_and_positive_below_target(curve):
    est = labels_needed(curve, float(curve.mean.max()) + 0.03, n_boot=30)
    assert not est.reached and est.finite and est.extra > 0


def test_labels_needed_is_zero_once_reached(curve):
    est = labels_needed(curve, float(curve.mean.max()) - 0.01)
    assert est.reached and est.extra == 0 and est.low == 0 and est.high == 0


def test_labels_needed_is_infinite_when_the_curve_levels_off_below_target():
    sizes = np.array([2, 4, 8, 16])
    flat = 0.6 - 0.2 * sizes.astype(float) ** -1.0
    curve = LearningCurve(sizes, np.repeat(flat[:, None], 4, 1), (20, 20))
    est = labels_needed(curve, 0.9, n_boot=20)
    assert est.plateau == pytest.approx(0.6, abs=0.01)
    assert not est.finite and not est.reached


def test_layer_profile_finds_the_informative_layer():
    Z, y = _blobs(n_per_class=10, n_classes=2, d=8, shift=4.0)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=Z.shape)
    X = np.stack([noise, Z, noise], axis=1)  # (n, layers=3, hidden)
    prof = layer_profile({"mean": X, "max": X[:, ::-1]}, y, penalty="l2")
    assert prof["mean"].shape == (3,)
    assert prof["mean"][1] > 0.9 and prof["mean"][1] > prof["mean"][0] + 0.2
    assert prof["max"][1] == prof["mean"][1]


def test_layer_profile_progress_names_a_real_layer():
    # issue 15 bug 3: the progress read "Layer 40/93" on a 30-layer model
    from core.learn.curves import PROFILE_POOLINGS, profile_position

    assert profile_position(40, 93) == ("last", 8, 30)
    assert profile_position(1, 93) == ("mean", 0, 30) and profile_position(93, 93) == ("max", 30, 30)
    Z, y = _blobs(n_per_class=6, n_classes=2, d=4, shift=4.0)
    X = np.stack([Z, Z, Z, Z], axis=1)  # 3 layers and the embedding layer
    seen = []
    layer_profile({p: X for p in PROFILE_POOLINGS}, y, penalty="l2",
                  progress=lambda d, t: seen.append(profile_position(d, t)))
    assert seen == [(p, layer, 3) for p in PROFILE_POOLINGS for layer in range(4)]




POS = ["good movie", "great film", "i love it", "wonderful plot", "the best film", "superb movie"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "the worst film", "poor movie"]



def test_compare_prompts_embeds_with_each_prompt_and_scores_both(tiny_backbone):
    from core.learn.classifier import Settings
    from core.learn.curves import compare_prompts

    cache = DictCache()
    settings = Settings(backbone="tiny", prompt=None, mode="layer")
    results = compare_prompts(tiny_backbone, POS + NEG, ["pos"] * 6 + ["neg"] * 6, ["neg", "pos"],
                              settings, ["", "review : {text} sentiment :"], cache=cache)
    assert [r.prompt for r in results] == [None, "review : {text} sentiment :"]
    assert all(0 <= r.cv_accuracy <= 1 and r.n_labels == 12 for r in results)
    assert {k[1] for k in cache.data} == {None, "review : {text} sentiment :"}


def test_compare_prompts_refuses_a_template_without_text(tiny_backbone):
    from core.learn.classifier import Settings
    from core.learn.curves import compare_prompts
    from core.errors import InputError

    with pytest.raises(InputError, match="exactly once"):
        compare_prompts(tiny_backbone, POS, ["pos"] * 6, ["neg", "pos"], Settings(backbone="tiny"),
                        ["no placeholder"])


def test_diagnose_uses_every_label_of_the_model_classes(tiny_backbone):
    from core.learn.classifier import Settings, features_for, train
    from core.learn.curves import diagnose

    settings = Settings(backbone="tiny", prompt=None, mode="layer")
    texts, labels = POS + NEG, ["pos"] * 6 + ["neg"] * 6
    X = features_for(tiny_backbone, texts + ["a delight"], settings)
    clf = train(X[:-1], labels, ["neg", "pos"], settings)
    # a label of a class added after training is skipped, not an error
    diag = diagnose(clf, X, labels + ["meh"], seeds=1)
    assert diag.skipped == 1 and diag.classes == ["neg", "pos"]
    assert diag.confusion.sum() == 12 and diag.confusion.sum(1).tolist() == [6, 6]
    assert diag.curve is not None and diag.curve.counts == (6, 6)


def test_accuracy_noise_shrinks_with_more_labels():
    from core.learn.curves import accuracy_noise

    assert accuracy_noise(0.8, 100) == pytest.approx(0.08)
    assert accuracy_noise(0.8, 400) < accuracy_noise(0.8, 100)


def test_plot_text_escapes_plotly_markup():
    from core.figures import plot_text

    assert plot_text("<a href='x'>b</a> & c") == "&lt;a href='x'&gt;b&lt;/a&gt; &amp; c"


def test_confusion_figure_shows_class_names_as_text():
    from core.figures import confusion_figure
    from core.learn.curves import Diagnostics

    fig = confusion_figure(Diagnostics(["<b>yes</b>", "no"], np.array([[3, 1], [0, 4]]), None, 0))
    assert list(fig.data[0].x) == ["&lt;b&gt;yes&lt;/b&gt;", "no"]
    assert np.asarray(fig.data[0].z).sum() == 8


def test_curve_figure_marks_where_the_fit_reaches_the_target():
    from core.figures import curve_figure

    curve = _known_curve()
    est = labels_needed(curve, 0.85)
    names = [t.name for t in curve_figure(curve, est).data]
    assert names == ["± 1 std", "held-out accuracy", "fitted curve", "target reached"]
    star = curve_figure(curve, est).data[-1]
    assert star.x[0] == pytest.approx(est.per_class) and star.y[0] == 0.85


def test_curve_figure_of_a_perfect_curve_has_distinct_percent_ticks():
    # issue 15 screenshot (the report of the newcomer flow): every run at 100% made the
    # axis span 99-100%, and its whole-percent ticks read "100%, 100%, 100%, 99%, 99%"
    from core.figures import curve_figure

    curve = LearningCurve(np.array([2, 4, 8, 13]), np.ones((4, 6)), (13, 14, 13))
    fig = curve_figure(curve, labels_needed(curve, 0.99))
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= 0.1  # ten whole-percent steps at least
    assert -0.011 <= lo <= 0.99 and 1.0 <= hi <= 1.011  # the target and the curve are on it


def test_describe_estimate_says_how_and_how_sure():
    from core.figures import describe_estimate

    curve = _known_curve()
    text = describe_estimate(labels_needed(curve, 0.85, n_boot=20))
    assert "more labels" in text and "a − b·n^(−c)" in text and "percentile" in text
    assert "already reaches" in describe_estimate(labels_needed(curve, 0.5, n_boot=20))
    assert "levels off near" in describe_estimate(labels_needed(curve, 0.99, n_boot=20))


def test_labels_needed_is_reached_when_the_models_cv_accuracy_meets_the_target():
    # issue 15 bug 5: "19 more labels to reach 55%" while the model's CV accuracy was 56%
    # (the curve's points train on fewer labels than the model has, so they lie lower)
    from core.figures import describe_estimate

    curve = _known_curve()
    target = round(float(curve.mean.max()) + 0.02, 2)
    assert not labels_needed(curve, target, n_boot=20).reached
    est = labels_needed(curve, target, n_boot=20, current=target + 0.01)
    assert est.reached and est.extra == 0 and est.low == 0 and est.high == 0
    text = describe_estimate(est)
    assert "already reaches" in text and "more labels" not in text


def test_describe_estimate_never_says_at_least_zero():
    # issue 15 bug 5: "at least 0; some refits never reach the target"
    from core.figures import describe_estimate
    from core.learn.curves import LabelsNeeded

    est = LabelsNeeded(0.85, 12.0, 0.0, math.inf, 22.0, None, None, "log", False)
    text = describe_estimate(est)
    assert "at least 0" not in text and "About **12 more labels**" in text
    assert "some refits never reach the target" in text
    est = LabelsNeeded(0.85, 12.0, 4.0, math.inf, 22.0, None, None, "log", False)
    assert "at least 4" in describe_estimate(est)


def test_accuracy_range_is_a_wilson_interval_that_stays_inside_0_and_1():
    low, high = accuracy_range(0.54, 30)
    assert (round(low, 2), round(high, 2)) == (0.36, 0.71)
    assert accuracy_range(1.0, 4) == pytest.approx((0.5, 1.0))
    assert accuracy_range(0.0, 10)[0] == 0.0
    narrow, wide = accuracy_range(0.8, 400), accuracy_range(0.8, 40)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_a_change_is_clear_only_beyond_the_noise():
    # issue 15 item 6: 31 -> 54 -> 30 -> 47 % on consecutive labels was badged as real change
    jumps = [(0.31, 30), (0.54, 31), (0.30, 32), (0.47, 33)]
    assert not any(clear_change(a, b) for a, b in zip(jumps, jumps[1:]))
    assert clear_change((0.40, 200), (0.60, 201))
    assert clear_change((0.60, 201), (0.40, 200))
