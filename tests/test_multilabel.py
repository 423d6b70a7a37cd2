"""Multi-label heads (issue 16): one-vs-rest heads with per-class thresholds, the scores,
retrain and predict on a multi-label project through the Python API, per-class exact
attributions and SHAP, and bundles; a tiny real model and a real SQLite file."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_score, recall_score

from core.errors import NotEnoughLabels
from core.explain.attributions import coefficient_attributions
from core.explain.shapley import shap_attributions
from core.learn.bundle import load_bundle, save_bundle
from core.learn.classifier import Settings, features_for
from core.learn.head import Head
from core.learn.multilabel import (MultiLabelClassifier, OneVsRestHead, choose_threshold,
                                   label_matrix, missing_per_class, not_enough_multilabel,
                                   train_multilabel)
from core.learn.multilabel_metrics import multilabel_scores, per_class_counts
from core.multilabel import changed_sets, predict_sets, set_predictions, set_threshold
from core.project import load_classifier, retrain
from core.store import Store

CLASSES = ["pos", "neg", "film"]
# (text, label set): "film" goes with either sentiment; () is "none of these"
LABELLED = [("good movie", ("pos", "film")), ("great film", ("pos", "film")),
            ("i love it", ("pos",)), ("wonderful plot", ("pos",)),
            ("bad movie", ("neg", "film")), ("awful film", ("neg", "film")),
            ("i hate it", ("neg",)), ("terrible plot", ("neg",)),
            ("the review", ()), ("it is a review", ())]
UNLABELLED = ["very good film", "very bad", "the plot", "excellent movie"]


def _blobs(n=120, K=3, d=20, seed=0):
    """Z (n, d) and Y (n, K): class k adds a direction to the texts that carry it."""
    rng = np.random.default_rng(seed)
    Y = rng.random((n, K)) < 0.3
    directions = rng.normal(size=(K, d)) * 2.0
    return rng.normal(size=(n, d)) + Y @ directions, Y


# --- labels, refusals, thresholds, scores ---------------------------------------------


def test_label_matrix_and_the_per_class_refusal():
    Y = label_matrix([("a",), (), ("a", "b")], ["a", "b", "c"])
    assert Y.tolist() == [[True, False, False], [False, False, False], [True, True, False]]
    missing = missing_per_class(Y, ["a", "b", "c"])
    assert missing == {"a": (0, 1), "b": (1, 0), "c": (2, 0)}
    err = not_enough_multilabel(missing)
    assert str(err).startswith("Label 1 more without “a”, 1 more sentence with “b” and "
                               "2 more sentences with “c” to train a first model")
    assert err.missing == {"a": 1, "b": 1, "c": 2}


def test_threshold_is_half_until_enough_labels_then_best_f1():
    y = np.array([True] * 4 + [False] * 10)
    assert choose_threshold(np.linspace(0, 1, 14), y) == 0.5  # 4 positives: too few
    y = np.array([True] * 6 + [False] * 10)
    proba = np.r_[np.full(6, 0.3), np.full(10, 0.2)]  # positives sit at 0.3, below 0.5
    t = choose_threshold(proba, y)
    assert 0.2 < t <= 0.3
    assert (proba >= t).tolist() == y.tolist()


def test_scores_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    T, P = rng.random((40, 4)) < 0.4, rng.random((40, 4)) < 0.4
    P[:, 3] = False  # a class never predicted: precision and F1 0
    got = multilabel_scores(T, P, ["a", "b", "c", "d"])
    assert got["micro_f1"] == pytest.approx(f1_score(T, P, average="micro", zero_division=0))
    assert got["macro_f1"] == pytest.approx(f1_score(T, P, average="macro", zero_division=0))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(T, P))
    assert got["hamming_loss"] == pytest.approx(hamming_loss(T, P))
    precision = precision_score(T, P, average=None, zero_division=0)
    recall = recall_score(T, P, average=None, zero_division=0)
    for k, c in enumerate("abcd"):
        row = got["per_class"][c]
        assert (row["precision"], row["recall"]) == pytest.approx((precision[k], recall[k]))
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 40
        assert row["support"] == T[:, k].sum()
    assert per_class_counts([[1, 0], [1, 1]], [[1, 1], [0, 1]]).tolist() == [[1, 0, 1, 0],
                                                                              [1, 1, 0, 0]]


# --- the one-vs-rest head ------------------------------------------------------------


def test_each_class_is_the_binary_head_of_that_class():
    Z, Y = _blobs()
    ovr = OneVsRestHead("l2").fit(Z, Y)
    for k in range(3):
        single = Head("l2", n_repeats=1).fit(Z, Y[:, k].astype(int))
        logits = single.decision_function(Z)
        assert_allclose(ovr.decision_function(Z)[:, k], logits[:, 1] - logits[:, 0], atol=1e-8)
        assert ovr.C_[k] == single.C_
    W, b = ovr.linear_map()
    assert_allclose(Z @ W + b, ovr.decision_function(Z), atol=1e-8)
    assert ovr.oof_proba_.shape == (120, 3) and ((ovr.thresholds_ > 0) & (ovr.thresholds_ < 1)).all()
    assert (ovr.predict(Z) == (ovr.predict_proba(Z) >= ovr.thresholds_)).all()
    assert f1_score(Y, ovr.predict(Z), average="macro") > 0.8


def test_refit_at_given_cs_keeps_thresholds_and_state_round_trips():
    Z, Y = _blobs(seed=1)
    ovr = OneVsRestHead("elasticnet").fit(Z, Y)
    again = OneVsRestHead("elasticnet").fit(Z, Y, Cs=ovr.C_, thresholds=ovr.thresholds_)
    # the same optimum, reached cold instead of along the C path: equal to solver tolerance
    assert_allclose(again.decision_function(Z), ovr.decision_function(Z), rtol=1e-3, atol=1e-3)
    assert_allclose(again.thresholds_, ovr.thresholds_)
    loaded = OneVsRestHead.from_state(*ovr.to_state())
    assert_allclose(loaded.decision_function(Z), ovr.decision_function(Z))
    assert_allclose(loaded.thresholds_, ovr.thresholds_)


def test_train_on_pooled_features_selects_one_spec_for_every_class():
    Z, Y = _blobs(seed=2)
    X = np.stack([np.random.default_rng(0).normal(size=Z.shape), Z, Z * 0.5], 1).astype(np.float32)
    sets = [tuple(c for c, hit in zip(CLASSES, row) if hit) for row in Y]
    clf = train_multilabel(X, sets, CLASSES, Settings(mode="layer", penalty="l2"))
    assert clf.spec.layers in ((1,), (2,))  # not the noise layer
    assert set(clf.metrics) >= {"cv_macro_f1", "cv_micro_f1", "cv_subset_accuracy",
                                "cv_hamming_loss", "per_class", "thresholds"}
    assert clf.metrics["cv_macro_f1"] > 0.7
    with pytest.raises(NotEnoughLabels, match="2 more sentences with “film”"):
        train_multilabel(X[:5], [("pos",), ("neg",), ("pos", "neg"), (), ("neg",)], CLASSES,
                         Settings(mode="layer"))


# --- a multi-label project through the Python API --------------------------------------


@pytest.fixture
def project(tmp_path):
    store = Store.open(tmp_path / "w.db")
    p = store.create_project("p", CLASSES, settings={"prompt": None, "mode": "layer",
                                                     "penalty": "l2"}, task_type="multi_label")
    store.add_texts(p.id, UNLABELLED)
    store.add_labelled_sets(p.id, [t for t, _ in LABELLED], [s for _, s in LABELLED])
    yield store, p
    store.close()


def test_retrain_and_predict_sets_through_the_api(project, tiny_backbone):
    store, p = project
    first = retrain(store, p, tiny_backbone)
    assert (first.version, first.reselected, first.n_predicted) == (1, True, 4)
    assert first.counts == {"pos": 4, "neg": 4, "film": 4} and first.metrics["n_none"] == 2
    model = store.latest_model(p.id)
    clf = load_classifier(model)
    assert isinstance(clf, MultiLabelClassifier) and clf.classes == CLASSES
    stored = {x.text: x for x in set_predictions(store, p, model)}
    X = features_for(tiny_backbone, UNLABELLED, clf.settings)
    probs = clf.predict_proba_features(X)
    assert_allclose([[stored[t].probs[c] for c in CLASSES] for t in UNLABELLED], probs, rtol=1e-5)
    sets, again = predict_sets(tiny_backbone, clf, UNLABELLED)
    assert [stored[t].labels for t in UNLABELLED] == sets
    assert_allclose(again, probs)
    # a submit reuses the spec, each class's C and threshold: no CV
    tid = store.text_id(p.id, "very bad")
    store.set_label_set(p.id, tid, ["neg"])
    second = retrain(store, p, tiny_backbone)
    assert (second.version, second.reselected) == (2, False)
    assert second.metrics["cv_macro_f1"] == first.metrics["cv_macro_f1"] == second.previous_accuracy
    assert_allclose(load_classifier(store.latest_model(p.id)).head.C_, clf.head.C_)


def test_a_users_threshold_changes_the_predicted_sets(project, tiny_backbone):
    store, p = project
    retrain(store, p, tiny_backbone)
    p = set_threshold(store, p, "film", 0.001)
    model = store.latest_model(p.id)
    assert all("film" in x.labels for x in set_predictions(store, p, model))
    p = set_threshold(store, p, "film", None)
    assert p.settings["thresholds"] == {}
    with pytest.raises(Exception, match="between 0 and 1"):
        set_threshold(store, p, "film", 1.5)


def test_what_changed_compares_predicted_sets(project, tiny_backbone):
    store, p = project
    retrain(store, p, tiny_backbone)
    assert changed_sets(store, p) == []
    store.set_label_set(p.id, store.text_id(p.id, "the plot"), [])
    p = set_threshold(store, p, "pos", 0.001)  # every text is "pos" now
    retrain(store, p, tiny_backbone)
    old = {x.text: x.labels for x in set_predictions(store, p, store.model(p.id, 1))}
    changes = changed_sets(store, p)
    # the user's threshold applies to both versions: only the model's change shows
    assert all(c.before == old[c.text] and c.before != c.after for c in changes)


def test_too_few_labels_name_each_class(tmp_path, tiny_backbone):
    with Store.open(tmp_path / "w.db") as store:
        p = store.create_project("p", CLASSES, settings={"prompt": None, "mode": "layer"},
                                 task_type="multi_label")
        store.add_labelled_sets(p.id, ["good movie", "bad film", "the review"],
                                [("pos", "film"), ("neg", "film"), ()])
        with pytest.raises(NotEnoughLabels, match="1 more sentence with “pos”.*1 more without “film”"):
            retrain(store, p, tiny_backbone)
        assert store.latest_model(p.id) is None


def test_per_class_attributions_are_exact_and_shap_is_additive(project, tiny_backbone):
    store, p = project
    retrain(store, p, tiny_backbone)
    clf = load_classifier(store.latest_model(p.id))
    text = "very good film"
    att = coefficient_attributions(tiny_backbone, clf, text)
    logits = clf.decision_features(features_for(tiny_backbone, [text], clf.settings))[0]
    assert att.values.shape[1] == len(CLASSES) and att.exact
    assert_allclose(att.values.sum(0) + att.constant, logits, atol=1e-5)  # every class's log-odds
    shap = shap_attributions(tiny_backbone, clf, text, max_evals=40)
    assert_allclose(shap.values.sum(0) + shap.base_values, shap.logits, atol=1e-5)
    assert_allclose(shap.logits, logits, atol=1e-5)


def test_a_bundle_predicts_the_same_sets(project, tiny_backbone, tmp_path):
    store, p = project
    retrain(store, p, tiny_backbone)
    clf = load_classifier(store.latest_model(p.id))
    again = load_bundle(save_bundle(clf, tmp_path / "m.tenshot"))
    assert isinstance(again, MultiLabelClassifier)
    assert_allclose(again.thresholds, clf.thresholds)
    assert again.predict(tiny_backbone, UNLABELLED) == clf.predict(tiny_backbone, UNLABELLED)
    X = features_for(tiny_backbone, UNLABELLED, clf.settings)
    assert_allclose(again.predict_proba_features(X), clf.predict_proba_features(X))


# --- per-class stability, report and learning curve --------------------------------------


def test_per_class_stability_and_report_run_on_the_class_view(project, tiny_backbone):
    from core.explain.stability import bootstrap
    from core.multilabel_explain import (ClassStore, class_inputs, class_model, class_report,
                                         load_class_stability, save_class_stability)

    store, p = project
    retrain(store, p, tiny_backbone)
    model = store.latest_model(p.id)
    clf = load_classifier(model)
    inputs = class_inputs(store, p.id, tiny_backbone, clf, "film")
    assert inputs["y"].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 0, 0]  # none of these is "not film"
    runs = {c: bootstrap(clf.class_classifier(c), **class_inputs(store, p.id, tiny_backbone, clf, c),
                         B=4, seed=1) for c in ("film", "pos")}
    for c, stability in runs.items():
        save_class_stability(store, model.id, c, stability)
    assert load_class_stability(store, model.id, "film").classes == ["not film", "film"]
    assert load_class_stability(store, model.id, "pos").classes == ["not pos", "pos"]
    assert load_class_stability(store, model.id, "neg") is None
    view = ClassStore(store, "film", {"film": 0.5})
    assert {r.label for r in view.labelled(p.id)} == {"film", "not film"}
    assert all(x.probs["film"] + x.probs["not film"] == pytest.approx(1) for x in view.predictions(model.id))
    row = model.metrics["per_class"]["film"]
    n = row["tp"] + row["fp"] + row["fn"] + row["tn"]
    assert class_model(model, "film").metrics["cv_accuracy"] == pytest.approx((row["tp"] + row["tn"]) / n)
    html = class_report(store, p, tiny_backbone, clf, model, "film", with_profile=False).decode()
    assert "not film" in html and "<script>alert" not in html


def test_learning_curve_uses_macro_f1(project, tiny_backbone):
    from core.learn.multilabel_curves import multilabel_learning_curve

    store, p = project
    retrain(store, p, tiny_backbone)
    clf = load_classifier(store.latest_model(p.id))
    sets = store.label_sets(p.id)
    X = features_for(tiny_backbone, [r.text for r in sets], clf.settings)
    curve = multilabel_learning_curve(clf, X, label_matrix([r.labels for r in sets], CLASSES),
                                      n_splits=2, n_sizes=2)
    assert curve.sizes.tolist() == [5] and curve.scores.shape == (1, 2)
    assert ((curve.scores >= 0) & (curve.scores <= 1)).all()
    assert curve.counts == (4, 4, 4)
