"""Head: label checks, sklearn equivalence, the K=2 representation, exact linear map,
state round trip, C selection and its all-zero guard. Synthetic data only."""

import json
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression

from core.errors import InputError, NotEnoughLabels
from core.learn.head import Head, check_labels, min_c


def _data(n=60, d=12, K=2, signal=(0,), strength=1.5, seed=0):
    """Z (n, d) with uneven scales and offsets; class k shifts the `signal` columns by k."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    Z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(size=d)
    Z[:, list(signal)] += strength * y[:, None]
    return Z, y


def test_check_labels_names_every_short_class_and_count():
    y = np.array([1, 2, 2, 2])  # 0 'positive', 1 'negative', 2 'neutral'
    expected = ("Label 2 more “positive” and 1 more “negative” sentence to train a first "
                "model (every class needs at least 2 labels).")
    with pytest.raises(NotEnoughLabels, match=re.escape(expected)) as err:
        check_labels(y, ["positive", "negative", "neutral"])
    assert err.value.missing == {"positive": 2, "negative": 1}


def test_check_labels_plural_threshold_and_pass():
    with pytest.raises(NotEnoughLabels, match="Label 3 more “b” sentences") as err:
        check_labels([0, 0, 0, 0, 0], ["a", "b"], min_per_class=3)
    assert err.value.missing == {"b": 3}
    check_labels([0, 0, 1, 1], ["a", "b"])  # enough: no error
    with pytest.raises(InputError, match="at least 2 classes"):
        check_labels([0, 0], ["only"])


def test_fit_refuses_a_class_with_one_label():
    Z, _ = _data(n=5)
    with pytest.raises(NotEnoughLabels, match="1 more “class 1” sentence"):
        Head().fit(Z, np.array([0, 0, 0, 0, 1]))


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("penalty,l1_ratio,solver", [
    ("l1", 1.0, "saga"), ("elasticnet", 0.5, "saga"), ("l2", 0.0, "lbfgs")])
def test_probabilities_match_sklearn_at_the_same_C(K, penalty, l1_ratio, solver):
    Z, y = _data(K=K)
    C = 3 * min_c(Z, y)
    head = Head(penalty, tol=1e-10).fit(Z, y, C=C)
    Zs = (Z - Z.mean(0)) / Z.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's convergence chatter
        ref = LogisticRegression(C=C, l1_ratio=l1_ratio, solver=solver, class_weight="balanced",
                                 tol=1e-12, max_iter=100_000).fit(Zs, y)
    assert_allclose(head.predict_proba(Z), ref.predict_proba(Zs), atol=1e-5 if K == 2 else 5e-4)
    assert head.coef_.shape == (K, 12) and head.intercept_.shape == (K,)


def test_binary_is_two_symmetric_rows_matching_sklearn_coefficients():
    Z, y = _data()
    head = Head("l2", tol=1e-10).fit(Z, y, C=0.1)
    Zs = (Z - Z.mean(0)) / Z.std(0)
    ref = LogisticRegression(C=0.1, class_weight="balanced", tol=1e-12, max_iter=10_000).fit(Zs, y)
    assert_allclose(head.coef_[1], -head.coef_[0])
    assert_allclose(head.coef_[1] - head.coef_[0], ref.coef_[0], rtol=1e-4, atol=1e-6)
    assert_allclose(head.intercept_[1] - head.intercept_[0], ref.intercept_[0], atol=1e-6)
    logits = head.decision_function(Z)
    assert_allclose(logits[:, 1] - logits[:, 0], ref.decision_function(Zs), atol=1e-5)
    assert_array_equal(head.predict(Z), ref.predict(Zs))


@pytest.mark.parametrize("penalty,K", [("l1", 2), ("elasticnet", 4), ("l2", 3)])
def test_linear_map_reproduces_logits_on_raw_features(penalty, K):
    Z, y = _data(n=80, K=K, signal=(0, 3))
    head = Head(penalty).fit(Z, y)
    W, b = head.linear_map()
    assert W.shape == (12, K) and b.shape == (K,)
    assert_allclose(Z @ W + b, head.decision_function(Z), rtol=1e-10, atol=1e-10)
    assert_allclose(head.predict_proba(Z).sum(1), 1.0)


def test_state_round_trip_is_json_and_predicts_identically():
    Z, y = _data(n=60, K=3)
    head = Head("elasticnet", l1_ratio=0.7, random_state=3).fit(Z, y)
    params, arrays = head.to_state()
    params = json.loads(json.dumps(params))
    loaded = Head.from_state(params, {k: np.array(v) for k, v in arrays.items()})
    assert_array_equal(loaded.predict_proba(Z), head.predict_proba(Z))
    assert (loaded.C_, loaded.cv_accuracy_, loaded.cv_scores_) == (head.C_, head.cv_accuracy_,
                                                                   head.cv_scores_)
    with pytest.raises(InputError, match="Not a saved tenshot head"):
        Head.from_state({"format": "other"}, arrays)


def test_l1_selects_the_planted_columns_and_reports_cv():
    Z, y = _data(n=100, d=40, signal=(5, 17), strength=3.0)
    head = Head("l1").fit(Z, y)
    assert {5, 17} <= set(head.selected_features().tolist())
    assert len(head.selected_features()) < 20
    assert len(head.cv_scores_) == 6 and head.C_ in head.cv_scores_
    assert head.cv_accuracy_ == head.cv_scores_[head.C_]
    assert head.cv_accuracy_ > 0.8 and 0.8 < head.cv_macro_f1_ <= 1.0
    assert (head.predict(Z) == y).mean() > 0.85


def test_eight_labels_per_class_give_a_non_empty_useful_model():
    Z, y = _data(n=216, d=300, signal=(0, 1, 2), strength=2.5, seed=1)
    head = Head("l1").fit(Z[:16], y[:16])  # 8 labels per class, 300 features
    assert 0 < len(head.selected_features()) < 16
    assert (head.predict(Z[16:]) == y[16:]).mean() > 0.7  # chance is 0.5


def test_all_zero_model_falls_back_to_the_next_larger_C():
    # regression: on pure noise the empty model has the best CV log-loss; it must not win
    rng = np.random.default_rng(0)
    Z, y = rng.normal(size=(40, 10)), np.arange(40) % 2
    head = Head("l1", Cs=[1e-9, 1e-8, 1.0]).fit(Z, y)
    assert head.C_ == 1.0
    assert len(head.selected_features()) > 0


def test_fit_is_deterministic_and_seed_changes_folds():
    Z, y = _data(n=60, K=3, signal=(0, 1))
    a, b = Head(random_state=1).fit(Z, y), Head(random_state=1).fit(Z, y)
    assert_array_equal(a.coef_, b.coef_)
    assert a.cv_scores_ == b.cv_scores_


def test_bad_inputs_raise_input_errors():
    Z, y = _data()
    head = Head().fit(Z, y)
    with pytest.raises(InputError, match=r"shape \(n, 12\)"):
        head.predict(Z[:, :5])
    with pytest.raises(InputError, match="NaN"):
        Head().fit(np.where(Z > 2, np.nan, Z), y)
    with pytest.raises(InputError, match="penalty must be one of"):
        Head("lasso").fit(Z, y)
    with pytest.raises(InputError, match="not trained yet"):
        Head().predict(Z)


def test_zero_variance_columns_get_unit_scale():
    Z, y = _data()
    Z[:, 4] = 7.0
    head = Head("l2").fit(Z, y)
    assert head.scale_[4] == 1.0
    assert_allclose(head.coef_[:, 4], 0.0, atol=1e-12)
    assert np.isfinite(head.predict_proba(Z)).all()


@pytest.mark.parametrize("K", [2, 3])
def test_weight_counts_count_each_weight_once(K):
    # issue 12: the Model page says how many of the head's weights are non-zero
    Z, y = _data(K=K, signal=(0, 1))
    dense = Head("l2").fit(Z, y)
    rows = 1 if K == 2 else K  # a binary head's two stored rows are one set of weights
    assert dense.weight_counts() == (rows * Z.shape[1], rows * Z.shape[1])
    sparse = Head("l1").fit(Z, y)
    nonzero, total = sparse.weight_counts()
    assert total == rows * Z.shape[1] and 0 < nonzero < total
    assert nonzero == np.count_nonzero(sparse.coef_[-rows:])
