"""Depth-limited forward passes (issue 12: the fused default within 2 minutes per 1,000
texts on 2 cores): a submit reads only the band's rows, so the layers above its deepest
row must not run, and the rows it reads must equal the full pass's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from core.errors import InputError
from core.hashing import text_hash
from core.learn.classifier import Settings, features_for, train
from core.learn.features import FeatureSpec
from core.model.backbone import Backbone
from core.model.cache import band_layers, band_rows, cache_key
from core.model.capture import layer_stack
from core.model.embed import embed, embed_many
from core.project import in_band, pool_rows, retrain
from core.store import Store
from tests.helpers import DictCache, make_tiny_model, make_tokenizer

TEXTS = ["a good movie", "the worst film i hate it", "great", "boring and dull plot .",
         "i love this film , it was very good !", "awful"]


def _encoder(kind: str, layers: int = 4):
    """A tiny BERT or MPNet (an encoder: layers at model.encoder.layer)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, f"{kind}Config")(
        vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    return getattr(transformers, f"{kind}Model")(config).eval()


@pytest.fixture(params=["llama", "Bert", "MPNet"])
def deep(request):
    """A 4-layer backbone of each kind the band is cut from: a decoder (final state normed)
    and two encoders."""
    model = make_tiny_model(64, layers=4) if request.param == "llama" else _encoder(request.param)
    return Backbone(request.param, model, None, f"fp-{request.param}")


def _batch():
    ids = torch.randint(2, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row
    return ids, mask


class _Counter:
    """Counts the runs of every layer of a model (forward hooks, removed by ``close``)."""

    def __init__(self, model):
        self.runs = [0] * len(layer_stack(model))
        self._hooks = [layer.register_forward_hook(lambda *_, i=i: self._count(i))
                       for i, layer in enumerate(layer_stack(model))]

    def _count(self, i):
        self.runs[i] += 1

    def close(self):
        for hook in self._hooks:
            hook.remove()


def test_a_depth_limited_pass_equals_the_full_pass_and_runs_only_the_layers_below(deep):
    ids, mask = _batch()
    full = deep.hidden_states(ids, mask)
    assert len(full) == deep.n_layers == 5
    for depth in range(deep.n_layers):
        counter = _Counter(deep.model)
        try:
            states = deep.hidden_states(ids, mask, depth=depth)
        finally:
            counter.close()
        assert len(states) == depth + 1
        for r, state in enumerate(states):
            assert_allclose(state.numpy(), full[r].numpy(), rtol=1e-6, atol=1e-6, err_msg=f"row {r}")
        ran = 4 if depth == 4 else max(depth, 1)  # the last row (normed on a decoder) needs all
        assert counter.runs == [1] * ran + [0] * (4 - ran), f"depth {depth}"


def test_a_depth_outside_the_states_is_refused(deep):
    ids, mask = _batch()
    with pytest.raises(ValueError, match="depth must lie in 0..4"):
        deep.hidden_states(ids, mask, depth=5)


def test_a_batch_out_of_memory_is_halved_at_the_same_depth(deep):
    ids, mask = _batch()
    full = deep.hidden_states(ids, mask)

    def refuse_batches(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise RuntimeError("CPU out of memory: tried to allocate 4 GiB")

    hook = deep.model.register_forward_pre_hook(refuse_batches, with_kwargs=True)
    try:
        states = deep.hidden_states(ids, mask, depth=2)
    finally:
        hook.remove()
    assert len(states) == 3
    for r, state in enumerate(states):
        assert_allclose(state.numpy(), full[r].numpy(), rtol=1e-6, atol=1e-6)


def test_another_thread_running_the_same_model_is_not_stopped(deep):
    # the hooks read a thread-local job: a retrain in another thread sees the full model
    import threading

    from core.model.capture import Job, capturing

    ids, mask = _batch()
    full, seen = deep.hidden_states(ids, mask), []
    with capturing(deep.model, Job({1}, 1, {})):  # this thread's hooks stay registered
        worker = threading.Thread(target=lambda: seen.append(deep.hidden_states(ids, mask)))
        worker.start()
        worker.join()
    assert len(seen[0]) == 5
    assert_allclose(seen[0][-1].numpy(), full[-1].numpy(), rtol=1e-6, atol=1e-6)


# --- embed_many(rows=...) ---------------------------------------------------------------


class CountingBackbone(Backbone):
    """Counts texts run and the depth each batch was asked for."""

    texts_run = 0
    depths: list = []

    def hidden_states(self, input_ids, attention_mask, depth=None):
        type(self).texts_run += input_ids.shape[0]
        type(self).depths.append(depth)
        return super().hidden_states(input_ids, attention_mask, depth=depth)


@pytest.fixture
def counting():
    tok = make_tokenizer()
    bb = CountingBackbone("tiny-4", make_tiny_model(len(tok), layers=4), tok, "fp-tiny-4")
    CountingBackbone.texts_run, CountingBackbone.depths = 0, []
    return bb


def test_embed_with_rows_equals_the_full_embedding_there_and_is_nan_above(counting):
    full = embed(counting, TEXTS)
    got = embed(counting, TEXTS, rows=[1, 2])
    assert got.shape == full.shape
    np.testing.assert_array_equal(got[:, :3], full[:, :3])  # the same layers, the same numbers
    assert np.isnan(got[:, 3:]).all()
    assert set(CountingBackbone.depths) == {None, 2}


def test_rows_outside_the_states_are_refused(counting):
    with pytest.raises(InputError, match=r"rows must lie in 0..4"):
        embed(counting, TEXTS, rows=[2, 5])


def test_a_cached_entry_lacking_a_needed_row_is_computed_again(counting):
    cache = DictCache()
    embed(counting, TEXTS, rows=[1], cache=cache)
    key = cache_key(counting, 256)
    stored = cache.data[(key, None, "mean", text_hash(TEXTS[0]))]
    assert np.isnan(stored[2:]).all() and not np.isnan(stored[:2]).any()  # only what ran

    CountingBackbone.texts_run = 0
    embed(counting, TEXTS, rows=[0, 1], cache=cache)
    assert CountingBackbone.texts_run == 0  # a hit: it holds both rows

    full = embed(counting, TEXTS)  # no cache
    CountingBackbone.texts_run = 0
    got = embed(counting, TEXTS, rows=[3], cache=cache)
    assert CountingBackbone.texts_run == len(TEXTS)  # row 3 was missing
    np.testing.assert_array_equal(got[:, :4], full[:, :4])
    CountingBackbone.texts_run = 0
    embed(counting, TEXTS, rows=[1, 3], cache=cache)
    assert CountingBackbone.texts_run == 0


def test_a_compact_store_entry_serves_the_rows_it_holds(counting, tmp_path):
    store = Store.open(tmp_path / "w.db")
    key = cache_key(counting, 256)
    full = embed(counting, TEXTS)
    store.put_features(key, None, "mean", {text_hash(t): x for t, x in zip(TEXTS, full)},
                       dtype="float16", layers=lambda n: [2, 3])
    CountingBackbone.texts_run = 0
    got = embed(counting, TEXTS, rows=[2, 3], cache=store)
    assert CountingBackbone.texts_run == 0
    assert_allclose(got[:, [2, 3]], full[:, [2, 3]], rtol=2e-3, atol=2e-3)
    got = embed(counting, TEXTS, rows=[1, 2], cache=store)
    assert CountingBackbone.texts_run == len(TEXTS) and CountingBackbone.depths[-1] == 2
    np.testing.assert_array_equal(got[:, :3], full[:, :3])
    # the new entry keeps the row above its depth from the one it replaced
    entry = store.get_features(key, None, "mean", [text_hash(TEXTS[0])])[text_hash(TEXTS[0])]
    assert not np.isnan(entry[:4]).any() and np.isnan(entry[4]).all()
    store.close()


def test_embed_many_without_rows_runs_every_layer(counting):
    embed_many(counting, TEXTS, poolings=("mean", "max"))
    assert set(CountingBackbone.depths) == {None}


@pytest.mark.parametrize("mode", ["layer", "fusion"])
def test_predict_runs_only_up_to_the_deepest_row_the_head_reads(counting, mode):
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    settings = Settings(backbone="tiny-4", prompt=None, mode=mode)
    X = features_for(counting, TEXTS, settings)
    clf = train(X, labels, ["neg", "pos"], settings)
    CountingBackbone.depths = []
    got = clf.predict_proba(counting, TEXTS)
    assert set(CountingBackbone.depths) == {max(clf.spec.layers)}
    assert_allclose(got, clf.predict_proba_features(X), rtol=1e-6, atol=1e-6)


# --- the band and what a submit computes ------------------------------------------------


def test_the_band_stops_at_the_deepest_fusion_depth():
    # issue 12: the band was (8, 10, 15, 20, 22, 30) and (3, 4, 6, 8, 9, 12), so a submit
    # ran all 30 + 12 layers of the fused default for rows it did not need
    assert band_layers(31) == (8, 10, 15, 20)
    assert band_layers(13) == (3, 4, 6, 8)
    assert band_layers(3) == (1,)
    assert pool_rows(Settings(backbone="smollm2-135m+mpnet"), 44) == [8, 10, 15, 20, 34, 35, 37, 39]
    assert pool_rows(Settings(backbone="smollm2-135m"), 31) == [8, 10, 15, 20]


@pytest.mark.parametrize("mode", ["auto", "fusion", "layer"])
def test_a_fused_models_band_features_are_bit_identical_to_the_full_pass(tiny_group, mode):
    # what retrain reads (the band, in_band) must not change by a bit when the layers
    # above it stop running: the default head is then exactly what it was
    s = Settings(backbone=tiny_group.name, prompt="review : {text}", mode=mode)
    rows = band_rows(tiny_group)
    assert rows == pool_rows(s, tiny_group.n_layers) == [1, 4, 5]  # loaded or from the spec
    full = features_for(tiny_group, TEXTS, s)
    got = features_for(tiny_group, TEXTS, s, rows=rows)
    np.testing.assert_array_equal(in_band(got, s), in_band(full, s))
    np.testing.assert_array_equal(got[:, rows], full[:, rows])
    for part in tiny_group.parts:  # NaN above each part's deepest band row, within its width
        above = range(part.offset + max(band_layers(part.n_states)) + 1, part.rows.stop)
        assert len(above) and np.isnan(got[:, above, :part.width]).all()


def test_a_submit_never_runs_the_layers_above_the_band(tmp_path, counting):
    store = Store.open(tmp_path / "w.db")
    project = store.create_project("p", ["neg", "pos"], settings={"backbone": "tiny-4", "prompt": None,
                                                                  "mode": "auto"})
    pos, neg = ["a good movie", "great", "i love it"], ["awful", "boring and dull plot .", "i hate it"]
    ids = store.add_texts(project.id, pos + neg + ["a film"]).text_ids
    for text_id, label in zip(ids, ["pos"] * 3 + ["neg"] * 3):
        store.set_label(project.id, text_id, label)
    _submit_runs_only_the_band(store, project, counting)
    store.close()


def _submit_runs_only_the_band(store, project, counting) -> None:
    """A submit of ``project`` on the 4-layer counting model predicts its one unlabelled
    text and never runs a layer above the band's deepest (3 of 4 layers)."""
    counter = _Counter(counting.model)
    try:
        outcome = retrain(store, project, counting)
    finally:
        counter.close()
    assert outcome.n_predicted == 1
    depth = max(band_layers(counting.n_layers))
    assert counter.runs[depth:] == [0] * (4 - depth) and min(counter.runs[:depth]) > 0


def test_a_multi_label_submit_never_runs_the_layers_above_the_band(tmp_path, counting):
    store = Store.open(tmp_path / "w.db")
    project = store.create_project("p", ["plot", "acting"], task_type="multi_label",
                                   settings={"backbone": "tiny-4", "prompt": None, "mode": "auto"})
    sets = [("plot",), ("plot",), ("acting",), ("acting",), ("plot", "acting"), (), ()]
    texts = ["a dull plot", "the story drags", "wooden acting", "great cast", "good plot , bad acting",
             "i went on monday", "popcorn", "a film"]
    ids = store.add_texts(project.id, texts).text_ids
    for text_id, labels in zip(ids, sets):
        store.set_label_set(project.id, text_id, labels)
    _submit_runs_only_the_band(store, project, counting)
    clf = store.latest_model(project.id)
    assert set(FeatureSpec.from_json(clf.params["spec"]).layers) <= set(pool_rows(
        Settings.from_dict(project.settings), counting.n_layers))
    store.close()


def test_the_layer_profile_reads_every_layer_of_texts_a_submit_cached(tiny_group):
    # a submit caches its texts only up to the band; the Model page's profile of a fused
    # model (one pooling per features_for call) must not read those entries' NaN rows
    from core.learn.classifier import train
    from core.learn.curves import profile_layers

    s = Settings(backbone=tiny_group.name, prompt="review : {text}", mode="layer", penalty="l2")
    labels, cache = ["pos", "neg"] * 3, DictCache()
    X = features_for(tiny_group, TEXTS, s, cache=cache, rows=band_rows(tiny_group))
    clf = train(in_band(X, s), labels, ["neg", "pos"], s)
    profile = profile_layers(tiny_group, TEXTS, labels, clf, cache=cache)
    assert all(len(accs) == tiny_group.n_layers and np.isfinite(accs).all() for accs in profile.values())


@pytest.mark.slow
def test_the_packaged_defaults_band_features_are_bit_identical_to_the_full_pass():
    # issue 12 item 4 on the real models: SmolLM2 stops after layer 20 of 30, mpnet
    # (BERT-like, layers at encoder.layer) after 8 of 12; the default head reads the same bits
    from core.model.loading import load_backbone
    from core.model.registry import DEFAULT_BACKBONE

    group = load_backbone(DEFAULT_BACKBONE)
    s = Settings(backbone=group.name)
    texts = ["I loved this film, it was wonderful.", "A boring and tedious story.", "ok"]
    rows = band_rows(group)
    counters = [_Counter(bb.model) for bb in group.backbones]
    try:
        got = features_for(group, texts, s, rows=rows)
    finally:
        for counter in counters:
            counter.close()
    assert [sum(1 for n in c.runs if n) for c in counters] == [max(band_layers(p.n_states)) for p in group.parts]
    full = features_for(group, texts, s)
    np.testing.assert_array_equal(got[:, rows], full[:, rows])
    np.testing.assert_array_equal(in_band(got, s), in_band(full, s))
