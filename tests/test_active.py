"""Which sentence to label next: random before a model, then uncertain and diverse."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.active import (TableRow, balance_need, entropy_uncertainty, filter_rows, margin_uncertainty, next_for_project, pick,
                         suggest, text_vectors)
from core.learn.head import labels_missing
from core.store import Store

CANDIDATES = [(i, f"sentence number {i}") for i in range(1, 41)]


def test_margin_and_entropy_uncertainty():
    assert_allclose(margin_uncertainty(np.array([[0.5, 0.5], [0.9, 0.1]])), [1.0, 0.2])
    assert_allclose(margin_uncertainty(np.array([[0.6, 0.3, 0.1]])), [0.7])
    assert_allclose(entropy_uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])), [1.0, 0.0], atol=1e-9)


def test_random_order_without_a_model_is_seeded_and_reproducible():
    first = [s.text_id for s in suggest(CANDIDATES, None, n=10, random_state=7)]
    again = [s.text_id for s in suggest(CANDIDATES, None, n=10, random_state=7)]
    other = [s.text_id for s in suggest(CANDIDATES, None, n=10, random_state=8)]
    assert first == again
    assert first != other
    assert first != list(range(1, 11)), "not random: it just took the first candidates"
    assert len(set(first)) == 10
    assert all(s.uncertainty is None for s in suggest(CANDIDATES, None, n=3))


def test_most_uncertain_comes_first_once_there_is_a_model():
    probs = {i: {"neg": 0.95, "pos": 0.05} for i, _ in CANDIDATES}
    probs[17] = {"neg": 0.52, "pos": 0.48}
    probs[30] = {"neg": 0.30, "pos": 0.70}
    picked = suggest(CANDIDATES, probs, n=3, diversity=0.0)
    assert [s.text_id for s in picked] == [17, 30, 1]
    assert picked[0].uncertainty == pytest.approx(0.96)


def test_texts_the_model_has_not_predicted_count_as_uncertain():
    probs = {i: {"neg": 0.9, "pos": 0.1} for i, _ in CANDIDATES if i != 40}
    assert suggest(CANDIDATES, probs, n=1)[0].text_id == 40


def test_text_vectors_see_near_duplicates():
    v = text_vectors(["Great phone!", "great   phone", "The plot is dull."])
    assert v.shape == (3, 1024)
    assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > 0.8
    assert v[0] @ v[2] < 0.3


def test_diversity_changes_picks_among_near_duplicates():
    texts = ["the battery died after one day", "the battery died after one day!",
             "the battery died after 1 day", "the soundtrack is lovely", "shipping was slow"]
    candidates = list(enumerate(texts))
    probs = {0: [0.50, 0.50], 1: [0.51, 0.49], 2: [0.52, 0.48], 3: [0.60, 0.40], 4: [0.65, 0.35]}
    probs = {i: {"neg": p[0], "pos": p[1]} for i, p in probs.items()}
    plain = [s.text_id for s in suggest(candidates, probs, n=3, diversity=0.0)]
    diverse = [s.text_id for s in suggest(candidates, probs, n=3, diversity=0.5)]
    assert plain == [0, 1, 2]
    assert diverse == [0, 3, 4]
    # a near-duplicate of a just-labelled text is passed over for the next pick
    after = suggest(candidates[1:], probs, ["the battery died after one day"], n=1)
    assert after[0].text_id == 3


def test_pick_with_no_recent_and_diversity_zero_is_uncertainty_order():
    u = np.array([0.1, 0.9, 0.5])
    assert pick(u, np.eye(3), n=3, diversity=0.0) == [1, 2, 0]


def test_labels_missing():
    assert labels_missing({"neg": 3, "pos": 1, "neutral": 0}) == {"pos": 1, "neutral": 2}
    assert labels_missing({"neg": 2, "pos": 2}) == {}


@pytest.fixture
def project_store():
    store = Store.open(":memory:")
    project = store.create_project("p", ["neg", "pos"])
    ids = store.add_texts(project.id, [f"text {i}" for i in range(10)]).text_ids
    yield store, project, ids
    store.close()


def test_next_for_project_random_then_model_guess_and_skip(project_store):
    store, project, ids = project_store
    first = next_for_project(store, project.id, random_state=3)
    assert first == next_for_project(store, project.id, random_state=3)
    assert first[0].guess is None
    skipped = next_for_project(store, project.id, skip=[first[0].text_id], random_state=3)
    assert skipped[0].text_id != first[0].text_id
    assert next_for_project(store, project.id, prefer=ids[4])[0].text_id == ids[4]
    model_id = _fake_model(store, project.id, {ids[2]: 0.55})
    picked = next_for_project(store, project.id, n=2)
    assert picked[0].text_id == ids[2]
    assert picked[0].guess == "neg" and picked[0].confidence == pytest.approx(0.55)
    assert model_id


def test_skipped_texts_come_back_when_nothing_else_is_left(project_store):
    store, project, ids = project_store
    assert next_for_project(store, project.id, skip=ids)[0].text_id in ids


def test_table_rows_and_filters(project_store):
    store, project, ids = project_store
    store.set_label(project.id, ids[0], "pos")
    _fake_model(store, project.id, {ids[1]: 0.55, ids[2]: 0.95})
    rows = {r.text_id: r for r in _rows(store, project.id)}
    assert rows[ids[0]].label == "pos" and rows[ids[0]].predicted is None
    assert rows[ids[1]].predicted == "neg" and rows[ids[1]].confidence == pytest.approx(0.55)
    all_rows = list(rows.values())
    assert [r.text_id for r in filter_rows(all_rows, show="labelled")] == [ids[0]]
    unlabelled = filter_rows(all_rows)
    assert len(unlabelled) == 9
    assert [r.text_id for r in unlabelled[:2]] == [ids[1], ids[2]], "least confident first"
    assert [r.text_id for r in filter_rows(all_rows, search="TEXT 1", show="all")] == [ids[1]]
    narrow = filter_rows(all_rows, confidence=(0.5, 0.6))
    assert [r.text_id for r in narrow] == [ids[1]]
    assert filter_rows(all_rows, predicted=["pos"]) == []
    assert isinstance(all_rows[0], TableRow)


def _rows(store, project_id):
    from core.active import table_rows

    return table_rows(store, project_id)


def _fake_model(store, project_id, confident: dict[int, float]) -> int:
    """Save a model whose predictions say 'neg' with the given confidences (0.99 elsewhere)."""
    store.save_model(project_id, params={"classes": ["neg", "pos"]}, metrics={"cv_accuracy": 0.5},
                     state={"w": np.zeros(1)}, n_labels=4)
    model_id = store.latest_model(project_id).id
    rows = [(r.id, "neg", confident.get(r.id, 0.99),
             {"neg": confident.get(r.id, 0.99), "pos": 1 - confident.get(r.id, 0.99)})
            for r in store.unlabelled(project_id)]
    store.save_predictions(model_id, rows)
    return model_id


def test_balance_need_is_expected_shortfall_and_imbalance():
    need, imbalance = balance_need({7: {"a": 0.1, "b": 0.1, "c": 0.8}}, {"a": 20, "b": 20, "c": 2})
    assert need[7] == pytest.approx(0.8)
    assert imbalance == pytest.approx(0.9)
    assert balance_need({1: {"a": 0.5, "b": 0.5}}, {"a": 5, "b": 5}) == ({1: 0.0}, 0.0)


def test_suggestions_favour_classes_with_few_labels_when_two_are_full():
    # issue 15 item 7: 29 of 70 suggestions were skipped because two classes were already full
    rng = np.random.default_rng(0)
    classes = ["sport", "politics", "science", "arts"]
    probs = {i: dict(zip(classes, rng.dirichlet(np.ones(4) * 0.7))) for i, _ in CANDIDATES}
    counts = {"sport": 20, "politics": 20, "science": 3, "arts": 2}

    def scarce(picked):
        return sum(max(probs[s.text_id], key=probs[s.text_id].get) in ("science", "arts")
                   for s in picked)

    balanced = suggest(CANDIDATES, probs, n=10, counts=counts)
    plain = suggest(CANDIDATES, probs, n=10)
    assert scarce(balanced) >= 8
    assert scarce(balanced) > scarce(plain)
    even = {c: 10 for c in classes}  # even labels: plain uncertainty order
    assert [s.text_id for s in suggest(CANDIDATES, probs, n=10, counts=even)] == \
        [s.text_id for s in plain]


def test_ordinary_overlap_with_recent_texts_is_not_penalised_only_near_duplicates_are():
    # issue 12 item 5: a penalty on every trigram overlap favoured short, odd texts (few
    # common trigrams) over equally uncertain ordinary sentences; it cost accuracy per label
    recent = ["the acting is wooden and the story drags on", "a warm and funny film about the family",
              "the director never finds the right tone for the story"]
    candidates = [(1, "the plot of the film is thin but the actors are charming"), (2, "meh !!")]
    v = text_vectors([c[1] for c in candidates] + recent)
    overlap = (v[:2] @ v[2:].T).max(1)
    assert 0.2 < overlap[0] < 0.55 and overlap[1] < 0.1, "ordinary overlap vs none"
    probs = {1: {"neg": 0.52, "pos": 0.48}, 2: {"neg": 0.56, "pos": 0.44}}
    assert suggest(candidates, probs, recent, n=1)[0].text_id == 1
    # a near-duplicate of a recent text is still passed over
    dup = [(3, "the acting is wooden and the story drags on!"), (4, "meh !!")]
    probs = {3: {"neg": 0.52, "pos": 0.48}, 4: {"neg": 0.56, "pos": 0.44}}
    assert suggest(dup, probs, recent, n=1)[0].text_id == 4
