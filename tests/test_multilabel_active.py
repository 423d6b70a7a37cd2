"""Active learning for multi-label projects (issue 16, item 4): uncertainty over per-class
probabilities near their thresholds, with class balance and diversity."""

import numpy as np
import pytest

from core.multilabel_active import (class_need, next_for_multilabel, suggest_sets,
                                    table_rows_multilabel, threshold_uncertainty)
from core.store import Store


def test_threshold_uncertainty_is_closeness_to_each_classes_threshold():
    got = threshold_uncertainty([[0.5, 0.9], [1.0, 0.0]], [0.5, 0.5], top=1)
    assert got.tolist() == [1.0, 0.0]
    # a threshold of 0.2: 0.2 is the most uncertain, 1.0 the least
    got = threshold_uncertainty([[0.2], [0.6], [1.0]], [0.2])
    assert got.tolist() == pytest.approx([1.0, 0.5, 0.0])
    # the mean of the closest classes: two undecided classes beat one
    two, one = threshold_uncertainty([[0.5, 0.5, 0.99], [0.5, 0.01, 0.99]], [0.5] * 3, top=2)
    assert two > one


def test_class_need():
    assert class_need({"a": 20, "b": 2, "c": 11}) == {"a": 0.0, "b": 1.0, "c": 0.5}


def test_suggestions_prefer_texts_near_thresholds_then_scarce_classes():
    candidates = [(1, "clear text one"), (2, "borderline words here"), (3, "a rare class maybe")]
    probs = {1: {"a": 0.99, "b": 0.01}, 2: {"a": 0.31, "b": 0.01}, 3: {"a": 0.01, "b": 0.9}}
    thresholds = {"a": 0.3, "b": 0.5}
    assert suggest_sets(candidates, probs, thresholds, n=1)[0].text_id == 2
    # "b" has 1 positive, "a" 30: the likely "b" text comes first
    first = suggest_sets(candidates, probs, thresholds, n=1, counts={"a": 30, "b": 1})[0]
    assert first.text_id == 3
    # no model: a seeded random order
    order = [s.text_id for s in suggest_sets(candidates, None, None, n=3, random_state=1)]
    assert sorted(order) == [1, 2, 3]


def test_project_suggestions_and_table_rows_carry_sets(tmp_path):
    with Store.open(tmp_path / "w.db") as store:
        p = store.create_project("p", ["a", "b"], task_type="multi_label")
        ids = store.add_texts(p.id, ["one", "two", "three"]).text_ids
        store.set_label_set(p.id, ids[0], [])
        assert {s.text_id for s in next_for_multilabel(store, p.id, n=5)} == set(ids[1:])
        version = store.save_model(p.id, params={"classes": ["a", "b"], "head": {"thresholds_": [0.5, 0.2]}},
                                   metrics={}, state={"w": np.zeros(1)}, n_labels=1)
        model = store.model(p.id, version)
        store.save_probabilities(model.id, ids[1:], ["a", "b"], np.array([[0.9, 0.1], [0.4, 0.3]]))
        picked = next_for_multilabel(store, p.id, n=2)
        assert [s.text_id for s in picked] == [ids[2], ids[1]]  # 0.4 and 0.3 sit near 0.5 and 0.2
        assert picked[0].guess == ("b",) and picked[1].guess == ("a",)
        rows = table_rows_multilabel(store, p.id)
        assert [(r.labels, r.predicted) for r in rows] == [((), None), (None, ("a",)), (None, ("b",))]
