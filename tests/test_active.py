"""Which sentence to label next: random before a model, then uncertain and diverse."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.active import (TableRow, balance_need, entropy_uncertainty, filter_rows, margin_uncertainty, next_for_project, pick,
                         suggest, text_vectors)
from core.active_space import band_density, compact, typicality
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


def _clusters(centres: int, per: int, dim: int = 8, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in ``centres`` tight, well-separated groups: (vectors (n, dim), group (n,))."""
    rng = np.random.default_rng(seed)
    means = np.eye(dim)[:centres] * 5
    group = np.repeat(np.arange(centres), per)
    V = means[group] + rng.normal(scale=0.3, size=(len(group), dim))
    return V / np.linalg.norm(V, axis=1, keepdims=True), group


def test_compact_keeps_groups_apart_in_few_unit_directions():
    rng = np.random.default_rng(1)
    V, group = _clusters(3, 20, dim=3)
    # head inputs with one "massive activation" column of noise, 1000x the others' scale
    Z = np.hstack([V, rng.normal(size=(60, 1)) * 1000]).astype(np.float32)
    C = compact(Z, dim=2)  # three groups span two directions once centred
    assert C.shape == (60, 2)
    assert_allclose(np.linalg.norm(C, axis=1), 1.0, rtol=1e-5)
    sims = C @ C.T
    same = sims[group[:, None] == group[None, :]].mean()
    other = sims[group[:, None] != group[None, :]].mean()
    assert same > 0.8 and other < 0.2


def test_typicality_ranks_a_lone_text_last():
    V, _ = _clusters(2, 10)
    lone = np.zeros((1, V.shape[1]))
    lone[0, -1] = 1.0
    t = typicality(np.vstack([V, lone]), k=5)
    assert t.argmin() == 20
    assert t[:20].min() > t[20] + 0.5


def test_cold_start_picks_cover_every_cluster_before_repeating_one():
    # issue 12 item 5: margin picks at a few labels per class came from one corner of the pool
    V, group = _clusters(5, 12)
    candidates = [(i, f"text {i}") for i in range(len(V))]
    probs = {i: {"neg": 0.5, "pos": 0.5} for i in range(len(V))}  # the model knows nothing yet
    labelled = [0]  # one label, in group 0
    for _ in range(4):
        left = [c for c in candidates if c[0] not in labelled]
        space = (V[[i for i, _ in left]], V[labelled])
        pick_ = suggest(left, probs, counts={"neg": 1, "pos": 0}, space=space, cold=8)[0]
        assert pick_.reason == "a kind of text with no label yet"
        labelled.append(pick_.text_id)
    assert sorted(group[labelled]) == [0, 1, 2, 3, 4]


def test_past_the_cold_start_typical_uncertain_texts_beat_lone_ones_and_balance_is_kept():
    V, group = _clusters(2, 10)
    lone = np.eye(V.shape[1])[-1:]
    V = np.vstack([V, lone])
    candidates = [(i, f"text {i}") for i in range(len(V))]
    probs = {i: {"neg": 0.9, "pos": 0.1} for i in range(len(V))}
    probs[3] = {"neg": 0.55, "pos": 0.45}   # typical and unsure
    probs[20] = {"neg": 0.5, "pos": 0.5}     # alone and a little more unsure
    space = (V, V[[0, 11]])
    even = {"neg": 20, "pos": 20}
    assert suggest(candidates, probs, counts=even, space=space, typical=0.0)[0].text_id == 20
    assert suggest(candidates, probs, counts=even, space=space, typical=1.0)[0].text_id == 3
    # class balance still wins when one class has most labels (issue 15 item 7)
    probs[12] = {"neg": 0.2, "pos": 0.8}
    picked = suggest(candidates, probs, counts={"neg": 40, "pos": 2}, space=space, typical=1.0)[0]
    assert probs[picked.text_id]["pos"] >= 0.8


def test_band_density_ranks_a_lone_unsure_text_last():
    V, _ = _clusters(2, 5)
    lone = np.eye(V.shape[1])[-1:]
    rank = band_density(np.vstack([V, lone]), V[:2])
    assert rank.shape == (11,) and rank.max() == 1.0
    assert rank[10] == pytest.approx(1 / 11)


def test_past_the_cold_start_a_crowded_unsure_text_beats_a_lone_one_that_is_a_little_more_unsure():
    # issue 12 item 5: the margin alone spent labels on lone unsure texts (SST-2, SUBJ)
    V, group = _clusters(2, 10)
    V = np.vstack([V, np.eye(V.shape[1])[-1:]])
    candidates = [(i, f"text {i}") for i in range(len(V))]
    probs = {i: {"neg": 0.55 if group[i] == 0 else 0.95, "pos": 0.45 if group[i] == 0 else 0.05}
             for i in range(20)}
    probs[20] = {"neg": 0.5, "pos": 0.5}  # the lone text
    labelled = V[[0, 10]]
    even = {"neg": 20, "pos": 20}
    assert suggest(candidates, probs, counts=even)[0].text_id == 20
    held = lambda rows: (V[rows], labelled)  # noqa: E731
    crowded = suggest(candidates, probs, counts=even, held=held)[0]
    assert group[crowded.text_id] == 0
    assert suggest(candidates, probs, counts=even, held=lambda rows: None)[0].text_id == 20
    # during the cold start the first pick covers a region instead; the band is not used
    cold = suggest(candidates, probs, counts={"neg": 1, "pos": 1}, held=held,
                   space=(V, labelled), cold=8)[0]
    assert cold.reason == "a kind of text with no label yet"


class _HeldPool:
    """A pool that holds head inputs for some texts (the Label page passes a PoolMatrix)."""

    def __init__(self, rows: dict[str, np.ndarray]):
        self.rows = rows

    def held(self, texts):
        if not all(t in self.rows for t in texts):
            return None
        return np.array([self.rows[t] for t in texts])


def _three_regions(store, project, ids) -> dict:
    """Label texts 0 and 1, fake a model unsure of text 2, and give every text a vector in
    one of three regions: 0, 2, 3 with the "neg" label; 1, 4, 5 with the "pos" label;
    6-9 with none. Returns {text: vector}."""
    store.set_label(project.id, ids[0], "neg")
    store.set_label(project.id, ids[1], "pos")
    _fake_model(store, project.id, {ids[2]: 0.55})
    region = {0: 0, 2: 0, 3: 0, 1: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 2}
    return {f"text {i}": np.eye(3)[r] + 0.01 * np.r_[i % 3, i % 2, i % 5] for i, r in region.items()}


def test_next_for_project_covers_a_new_region_when_the_pool_holds_the_texts(project_store):
    store, project, ids = project_store
    rows = _three_regions(store, project, ids)
    plain = next_for_project(store, project.id)[0]
    covering = next_for_project(store, project.id, pool=_HeldPool(rows))[0]
    assert plain.text_id == ids[2], "without vectors: the most uncertain text"
    assert covering.text_id in ids[6:]
    assert covering.guess == "neg"
    missing = {k: v for k, v in rows.items() if k != "text 9"}
    assert next_for_project(store, project.id, pool=_HeldPool(missing))[0].text_id == ids[2]


def test_the_cold_start_geometry_reads_a_bounded_sample_of_a_large_pool(project_store, monkeypatch):
    # issue 14: on a 100,000-text pool the cold start's PCA and k-means over every
    # candidate would take seconds a label; they see a seeded sample of _SPACE_MAX
    import core.active as active

    store, project, ids = project_store
    rows = _three_regions(store, project, ids)
    seen, space = [], active._space
    monkeypatch.setattr(active, "_space", lambda pool, labelled, cands, rs: seen.append(len(cands))
                        or space(pool, labelled, cands, rs))
    monkeypatch.setattr(active, "_SPACE_MAX", 4)
    first = next_for_project(store, project.id, pool=_HeldPool(rows))[0]
    again = next_for_project(store, project.id, pool=_HeldPool(rows))[0]
    assert seen == [4, 4]
    assert first.text_id == again.text_id and first.text_id in ids[2:]  # seeded: the same pick


def test_next_for_project_past_the_cold_start_prefers_unsure_texts_with_unsure_neighbours(
        project_store, monkeypatch):
    import core.active as active

    store, project, ids = project_store
    rows = _three_regions(store, project, ids)
    _fake_model(store, project.id, {ids[2]: 0.55, **{ids[i]: 0.6 for i in range(6, 10)}})
    monkeypatch.setattr(active, "_COLD", 1.0)  # one label per class: past the cold start
    assert next_for_project(store, project.id)[0].text_id == ids[2], "the margin alone"
    crowded = next_for_project(store, project.id, pool=_HeldPool(rows))[0]
    assert crowded.text_id in ids[6:] and crowded.reason == "the model is unsure"
