"""Bootstrap stability: reproducibility, resample rules, out-of-bag scoring, feature
statistics, token-rank stability and the store round trip. Synthetic features only."""

import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from core.learn.classifier import Classifier, Settings, features_for, train
from core.model.embed import token_states
from core.errors import InputError, NotEnoughLabels
from core.explain.attributions import token_contributions
from core.figures import sign_figure
from core.learn.features import FeatureSpec, select_group_features
from core.model.group import Part
from core.model.tokens import pooled_positions
from core.learn.head import Head
from core.explain.stability import Stability, bootstrap, load_stability, project_inputs, save_stability
from core.explain.token_stability import MODERATE, STABLE, UNSTABLE, token_rank_stability
from core.store import Store


def _data(n=40, d=6, K=2, strength=2.0, seed=0, noise=1.0):
    """X (n, 2, d) float32: layer 1 neuron 0 carries the class (k * strength), the rest noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    X = (noise * rng.normal(size=(n, 2, d))).astype(np.float32)
    X[:, 1, 0] += strength * y
    return X, y


def _clf(X, y, *, C=None, penalty="l1", spec=None):
    spec = spec or FeatureSpec("layer", (1,), "single", tuple(X.shape[1:]))
    head = Head(penalty).fit(spec.transform(X), y, C=C)
    return Classifier([f"c{k}" for k in range(int(y.max()) + 1)], Settings(), spec, head)


def _fields_equal(a: Stability, b: Stability):
    for f in dataclasses.fields(Stability):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype, f.name
            assert_array_equal(va, vb, err_msg=f.name)
        else:
            assert va == vb, f.name


def test_same_seed_is_bitwise_identical_with_threads_and_other_seed_differs():
    X, y = _data(strength=1.0)
    clf = _clf(X, y, penalty="elasticnet")
    one = bootstrap(clf, X, y, X_other=X[:7] + 0.5, B=24, seed=3, n_jobs=1)
    _fields_equal(one, bootstrap(clf, X, y, X_other=X[:7] + 0.5, B=24, seed=3, n_jobs=2))
    other = bootstrap(clf, X, y, B=24, seed=4, n_jobs=2)
    assert not np.array_equal(one.samples, other.samples)
    assert not np.array_equal(one.refit_coef, other.refit_coef)


def test_every_resample_holds_two_distinct_rows_of_every_class():
    # class 2 has only 2 rows of 14: most plain bootstrap draws would miss one of them
    X, _ = _data(n=14, K=2)
    y = np.array([0, 1] * 6 + [2, 2])
    X[-2:, 1, 1] += 4.0
    stab = bootstrap(_clf(X, y), X, y, B=40, seed=0)
    for rows in stab.samples:
        assert len(rows) == len(y) and np.all(np.diff(rows) >= 0)
        assert np.bincount(y[np.unique(rows)], minlength=3).min() >= 2
    assert np.all(stab.n_oob[-2:] == 0) and np.all(np.isnan(stab.agreement[-2:]))


def test_oob_accuracy_counts_only_out_of_bag_rows():
    # separable clusters far apart plus one row labelled 1 that sits inside cluster 0:
    # every refit gets it "wrong" exactly when it is out of bag, and right on nothing else
    rng = np.random.default_rng(1)
    y = np.arange(30) % 2
    X = rng.normal(scale=0.3, size=(30, 2, 3)).astype(np.float32)
    X[:, 1, 0] += np.where(y == 1, 5.0, -5.0)
    bad = 29
    X[bad, 1] = [-5.0, 0.0, 0.0]  # the centre of cluster 0: no hyperplane can single it out
    clf = _clf(X, y, C=1.0)
    stab = bootstrap(clf, X, y, X_other=np.concatenate([X[:2], X[:2] * 3]), B=30, seed=0)
    oob = np.ones((30, 30), dtype=bool)
    oob[np.arange(30)[:, None], stab.samples] = False
    n_oob = oob.sum(1)
    assert_allclose(stab.oob_accuracy, np.where(oob[:, bad], (n_oob - 1) / n_oob, 1.0))
    assert_array_equal(stab.n_oob, oob.sum(0))
    assert stab.pred[bad] == 0 and stab.oob_correct[bad] == 0 and stab.agreement[bad] == 1
    good = np.flatnonzero(stab.n_oob > 0)
    good = good[good != bad]
    assert_array_equal(stab.agreement[good], 1.0)
    assert_array_equal(stab.other_pred, [0, 1, 0, 1])
    assert_array_equal(stab.other_agreement, 1.0)


def test_informative_feature_is_selected_more_often_than_noise():
    X, y = _data(n=60, d=12, strength=1.2, seed=2)
    stab = bootstrap(_clf(X, y), X, y, B=30, seed=0)
    freq = stab.selection_frequency
    assert freq.shape == (12,) and freq[0] == 1.0
    assert freq[1:].max() < freq[0] and freq[1:].mean() < 0.5
    assert not stab.empty_refits.any()
    assert_array_equal(stab.sign_stability[0], [1.0, 1.0])
    assert np.all(0 <= stab.oob_accuracy) and np.all(stab.oob_accuracy <= 1)
    assert stab.refit_coef.shape == (30, 12, 2) and stab.refit_intercept.shape == (30, 2)


def _no_refits(spec):
    """A one-refit Stability of ``spec`` whose weights are all zero: only its labels matter."""
    d = spec.n_features
    return Stability(["a", "b"], spec, 1, 0, 1.0, "l1", *[np.zeros(1)] * 11,
                     coef=np.zeros((d, 2)), intercept=np.zeros(2),
                     refit_coef=np.zeros((1, d, 2)), refit_intercept=np.zeros((1, 2)))


@pytest.mark.parametrize("spec", [
    FeatureSpec("fusion", (1, 2), "concat", (3, 4)),
    FeatureSpec("fusion", (1, 2), "mean", (3, 4)),
    FeatureSpec("stc", (0, 2), "concat", (3, 4), ((1, 3), (0, 2, 3))),
])
def test_feature_origin_matches_back_project(spec):
    stab = _no_refits(spec)
    V = spec.back_project(np.eye(spec.n_features))  # (3, 4, d): where each column lands
    for j, (layer, neuron) in enumerate(zip(stab.feature_layer, stab.feature_neuron)):
        layers = spec.layers if layer == -1 else (layer,)
        assert set(zip(*np.nonzero(V[..., j]))) == {(int(l), int(neuron)) for l in layers}


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_feature_origin_names_the_part_and_its_layer_in_a_fused_model(combine):
    # regression: a fused (multi) spec had no branch, so its features got the (layer, neuron)
    # labels of one padded backbone, not the ones of the part they read
    a, b = Part("tiny-a", 0, 3, 4), Part("tiny-b", 3, 2, 6)
    spec = FeatureSpec("multi", (1, 3, 4), "concat", (5, 6), parts=(
        (a, FeatureSpec("stc", (1,), "concat", (3, 4), ((0, 2),))),
        (b, FeatureSpec("fusion", (0, 1), combine, (2, 6)))))
    stab = _no_refits(spec)
    d = spec.n_features
    assert stab.feature_layer.shape == stab.feature_neuron.shape == (d,)
    assert list(stab.feature_part) == ["tiny-a"] * 2 + ["tiny-b"] * (d - 2)
    V = spec.back_project(np.eye(d))  # (5, 6, d): where each column lands in the padded X
    parts = {p.name: (p, sub) for p, sub in spec.parts}
    for j, (name, layer, neuron) in enumerate(zip(stab.feature_part, stab.feature_layer,
                                                  stab.feature_neuron)):
        part, sub = parts[name]
        layers = sub.layers if layer == -1 else (layer,)
        assert 0 <= neuron < part.width and all(0 <= l < part.n_states for l in layers)
        assert set(zip(*np.nonzero(V[..., j]))) == {(part.offset + int(l), int(neuron)) for l in layers}


def test_single_backbone_features_name_no_part():
    stab = _no_refits(FeatureSpec("layer", (1,), "single", (3, 4)))
    assert list(stab.feature_part) == [""] * 4


def test_sign_figure_of_a_fused_model_names_each_backbone():
    # regression (same bug): the hover said "layer l, neuron j" of the padded X, not of a part
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = rng.normal(size=(40, 5, 6)).astype(np.float32)
    X[:, :3, 4:] = 0  # tiny-a is 4 wide: the rest of its rows is padding
    X[:, 1, 0] += 3 * y  # tiny-a, layer 1, neuron 0
    X[:, 4, 2] += 3 * y  # tiny-b (rows 3-4), layer 1, neuron 2
    spec, _ = select_group_features(X, y, [Part("tiny-a", 0, 3, 4), Part("tiny-b", 3, 2, 6)],
                                    mode="layer")
    fig = sign_figure(bootstrap(_clf(X, y, spec=spec), X, y, B=8))
    hover = {(str(row[2]), int(row[0]), int(row[1]))
             for trace in fig.data if trace.customdata is not None for row in trace.customdata}
    assert ("tiny-a", 1, 0) in hover and ("tiny-b", 1, 2) in hover
    assert {name for name, _, _ in hover} == {"tiny-a", "tiny-b"}
    assert all(t.hovertemplate.startswith("%{customdata[2]}: layer") for t in fig.data)


def _hand_made(refit_sign):
    """A Stability whose every refit is refit_sign * the full model (3 layers x 5 neurons)."""
    rng = np.random.default_rng(0)
    spec = FeatureSpec("fusion", (1, 2), "concat", (3, 5))
    coef = rng.normal(size=(10, 2))
    B = 6
    return Stability(["a", "b"], spec, B, 0, 1.0, "l1", *[np.zeros(1)] * 11, coef=coef,
                     intercept=np.zeros(2), refit_coef=np.repeat(refit_sign * coef[None], B, 0),
                     refit_intercept=np.zeros((B, 2))), rng


def test_token_rank_stability_is_one_when_refits_equal_the_full_model():
    stab, rng = _hand_made(1.0)
    hidden = rng.normal(size=(3, 9, 5)).astype(np.float32)
    pooled = np.arange(9) > 0
    user = np.zeros(9, bool)
    user[2:7] = True
    out = token_rank_stability(stab, hidden, pooled, 1, user=user, k=3)
    assert_array_equal(out["spearman"], 1.0)
    assert_array_equal(out["topk_overlap"], 1.0)
    assert out["badge"] == STABLE and out["k"] == 3
    assert_array_equal(out["positions"], np.arange(2, 7))
    expected = token_contributions(hidden, pooled, stab.full_weights()[0])[2:7, 1]
    assert_allclose(out["full"], expected)
    assert_array_equal(np.sort(out["in_topk"])[-3:], 1.0)


def _one_part(hidden, spans):
    """``sentence_states`` of one backbone, from its hidden (n_states, n_tokens, hidden)
    and per-token spans in the user's text."""
    from core.model.embed import PartStates, TokenStates
    from core.model.tokens import Encoded

    encoded = Encoded(tuple(range(len(spans))), tuple(spans), False)
    return [PartStates(None, TokenStates(hidden, encoded, [str(i) for i in range(len(spans))]))]


def test_sentence_stability_compares_words_not_subword_tokens():
    """A word split into three tokens is one unit, scored by its tokens' summed (centred)
    contributions, and named by the word itself."""
    from core.explain.sentence import sentence_stability

    stab, rng = _hand_made(1.0)
    text = "Tsunami hits town"
    # sink, prompt token, then T|sun|ami, " hits", " town"
    spans = [None, None, (0, 1), (1, 4), (4, 7), (7, 12), (12, 17)]
    hidden = rng.normal(size=(3, len(spans), 5)).astype(np.float32)
    reference = rng.normal(size=(3, 5))
    out = sentence_stability(stab, _one_part(hidden, spans), 1, text=text, reference=reference)
    assert out["labels"] == ["Tsunami", "hits", "town"]
    tokens = token_contributions(hidden.astype(np.float64) - reference[:, None, :], np.arange(7) > 0,
                                 stab.full_weights()[0])[:, 1]
    assert_allclose(out["full"], [tokens[2:5].sum(), tokens[5], tokens[6]])
    assert out["refits"].shape == (stab.B, 3)
    by_token = sentence_stability(stab, _one_part(hidden, spans), 1)
    assert "labels" not in by_token and by_token["refits"].shape == (stab.B, 5)


def test_token_rank_stability_flags_reversed_refits_as_unstable():
    stab, rng = _hand_made(-1.0)
    hidden = rng.normal(size=(3, 8, 5)).astype(np.float32)
    out = token_rank_stability(stab, hidden, np.arange(8) > 0, 0, k=20)
    assert_allclose(out["spearman"], -1.0)
    assert out["k"] == 7 and out["badge"] == UNSTABLE
    with pytest.raises(InputError, match="class_index must be 0..1"):
        token_rank_stability(stab, hidden, np.arange(8) > 0, 2)


def test_token_rank_stability_of_strong_signal_bootstrap_is_stable():
    X, y = _data(n=40, d=6, strength=6.0, noise=0.3)
    stab = bootstrap(_clf(X, y), X, y, B=20, seed=0)  # L1 keeps only neuron 0
    hidden = np.random.default_rng(5).normal(size=(2, 10, 6)).astype(np.float32)
    out = token_rank_stability(stab, hidden, np.arange(10) > 0, 1)
    assert out["median_spearman"] > 0.8 and out["badge"] in (STABLE, MODERATE)


def test_progress_and_input_errors():
    X, y = _data(n=20)
    clf = _clf(X, y)
    calls = []
    bootstrap(clf, X, y, B=5, n_jobs=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
    with pytest.raises(InputError, match="B, the number of bootstrap refits"):
        bootstrap(clf, X, y, B=0)
    with pytest.raises(InputError, match=r"one text id per row \(20\)"):
        bootstrap(clf, X, y, B=2, ids=[1, 2])
    with pytest.raises(NotEnoughLabels, match="more “c1”"):
        bootstrap(clf, X[:3], np.array([0, 0, 1]), B=2)


def test_unstable_lists_ids_least_stable_first():
    stab, _ = _hand_made(1.0)
    stab = dataclasses.replace(stab, ids=np.array([10, 11, 12, 13]),
                               agreement=np.array([0.9, 0.5, np.nan, 0.7]),
                               other_ids=np.array([7, 8]), other_agreement=np.array([0.6, 1.0]))
    assert_array_equal(stab.unstable(0.8), [11, 13])
    assert_array_equal(stab.unstable(0.8, other=True), [7])


def test_save_and_load_round_trip_through_the_store(tmp_path):
    X, y = _data(n=24, K=3)
    clf = _clf(X, y)
    stab = bootstrap(clf, X, y, X_other=X[:5], ids=np.arange(100, 124), other_ids=[1, 2, 3, 4, 5],
                     B=8, seed=7)
    with Store.open(tmp_path / "ws.db") as store:
        project = store.create_project("p", clf.classes)
        params, arrays = clf.to_state()
        store.save_model(project.id, params=params, metrics={}, state=arrays, n_labels=len(y))
        model_id = store.models(project.id)[0].id
        assert load_stability(store, model_id) is None
        save_stability(store, model_id, stab)
    with Store.open(tmp_path / "ws.db") as store:
        loaded = load_stability(store, model_id)
    _fields_equal(stab, loaded)
    assert loaded.spec == clf.spec and loaded.B == 8 and loaded.seed == 7


def test_project_inputs_feed_bootstrap_and_token_ranks(tiny_backbone, tmp_path):
    settings = Settings(backbone="tiny", prompt="review : {text}", mode="layer")
    texts = ["good movie", "great film", "bad movie", "awful plot", "the best", "it was fine",
             "boring"]
    labels = ["good", "good", "bad", "bad", "meh"]
    with Store.open(tmp_path / "ws.db") as store:
        project = store.create_project("p", ["good", "bad", "meh"])
        ids = store.add_texts(project.id, texts).text_ids
        for text_id, label in zip(ids, labels):
            store.set_label(project.id, text_id, label)
        X = features_for(tiny_backbone, texts, settings)
        clf = train(X[:4], labels[:4], ["good", "bad"], settings)
        inputs = project_inputs(store, project.id, tiny_backbone, clf)
    # the "meh" label is not a class of this model: that text is left out entirely
    assert inputs["ids"] == ids[:4] and inputs["other_ids"] == ids[5:]
    assert_array_equal(inputs["y"], [0, 0, 1, 1])
    assert_allclose(inputs["X"], X[:4], atol=1e-5)
    assert_allclose(inputs["X_other"], X[5:], atol=1e-5)
    stab = bootstrap(clf, **inputs, B=6)
    assert stab.other_agreement.shape == (2,)
    states = token_states(tiny_backbone, texts[0], prompt=settings.prompt)
    user = np.array([s is not None for s in states.encoded.user_spans])
    out = token_rank_stability(stab, states.hidden, pooled_positions(len(user)), 0, user=user)
    assert out["refits"].shape == (6, 2) and out["badge"] in (STABLE, MODERATE, UNSTABLE)


@pytest.mark.parametrize("prompt", [None, "review : {text}"])
def test_fused_sentence_stability_sums_each_word_over_both_backbones(tiny_group, prompt):
    # issue 12 follow-up: a fused model (the default) had no token states, so no
    # token-rank stability; now a word sums its tokens of every part, as on the Explain page
    from core.explain.attributions import group_attributions, reference_states
    from core.explain.sentence import merged_attribution, sentence_attribution, sentence_stability
    from core.explain.words import word_attributions
    from tests.helpers import NEG, POS

    s = Settings(backbone=tiny_group.name, prompt=prompt, mode="layer", penalty="l2")
    X = features_for(tiny_group, POS + NEG, s)
    clf = train(X, ["pos"] * len(POS) + ["neg"] * len(NEG), ["neg", "pos"], s)
    stab = bootstrap(clf, X, np.repeat([1, 0], [len(POS), len(NEG)]), B=8, seed=1)
    text = "the film was very good , not bad !"
    states, attr = sentence_attribution(tiny_group, clf, text)
    assert [one.part.name for one in states] == ["tiny-a", "tiny-enc"]
    out = sentence_stability(stab, states, 1, text=text, reference=reference_states(clf))
    assert out is not None and out["labels"] == text.split()
    # the full model's word scores are the Explain page's merged ones, which add up exactly
    merged = merged_attribution(group_attributions(tiny_group, clf, text))
    assert_allclose(out["full"], [p.score for p in word_attributions(merged, text, 1)], atol=1e-8)
    assert_allclose(out["full"].sum() + attr.prompt_total[1] + attr.constant[1], attr.logits[1], atol=1e-4)
    # and so do every refit's: its words + its prompt tokens + its constant == its own logit
    Z = clf.spec.transform(features_for(tiny_group, [text], s)).astype(np.float64)
    reference = reference_states(clf)
    for i in range(stab.B):
        V, b = stab.refit_weights(i)
        prompt_part = 0.0
        for one in states:
            rows, width = one.part.rows, one.part.width
            terms = token_contributions(one.states.hidden - reference[rows, :width][:, None, :],
                                        one.states.encoded.pool_mask(), V[rows, :width])
            prompt_part += terms[[sp is None for sp in one.states.encoded.user_spans], 1].sum()
        constant = b[1] + np.einsum("lh,lh->", reference, V[:, :, 1])
        assert_allclose(out["refits"][i].sum() + prompt_part + constant, (Z @ stab.refit_coef[i] + b)[0, 1],
                        atol=1e-4)
    assert (prompt is None) == (prompt_part == 0.0)  # an encoder part gets no prompt


@pytest.mark.parametrize("B", [4, 40])
def test_stability_histograms_count_in_whole_numbers(B):
    # issue 15 screenshot: the refits axis read 0.5, 1.5 ("1.5 refits") when the tallest bar was 2
    from core.figures import agreement_figure, oob_figure

    X, y = _data(n=40)
    stab = bootstrap(_clf(X, y), X, y, B=B)
    for fig, values in ((oob_figure(stab), [stab.oob_accuracy]),
                        (agreement_figure(stab), [stab.agreement, stab.other_agreement])):
        axis = fig.layout.yaxis
        tallest = max(int(np.histogram(v[np.isfinite(v)], bins=np.arange(22) * 0.05)[0].max())
                      for v in values if np.isfinite(v).any())
        if tallest <= 5:  # plotly's own steps would be 0.5
            assert (axis.tick0, axis.dtick) == (0, 1)
        else:  # plotly's own steps are whole numbers from here (a forced 1 would crowd the axis)
            assert axis.dtick is None


def test_sign_figure_of_a_fused_mean_model_has_no_layer_colour_scale():
    # issue 15 screenshot: on the fused default every feature is a mean over layers (layer -1),
    # and the colour bar read "layer -1.5 ... -0.5"
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = rng.normal(size=(40, 5, 6)).astype(np.float32)
    X[:, :3, 4:] = 0
    X[:, 1, 0] += 3 * y
    X[:, 4, 2] += 3 * y
    spec, _ = select_group_features(X, y, [Part("tiny-a", 0, 3, 4), Part("tiny-b", 3, 2, 6)],
                                    mode="fusion")
    stab = bootstrap(_clf(X, y, spec=spec), X, y, B=8)
    used = stab.selection_frequency > 0
    assert set(stab.feature_layer[used]) == {-1} and set(stab.feature_part[used]) == {"tiny-a", "tiny-b"}
    fig = sign_figure(stab)
    assert fig.layout.coloraxis.showscale is False
    assert all(t.marker.coloraxis is None for t in fig.data)
