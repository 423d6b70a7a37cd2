"""Issue 14 at small scale: a pool cached with only the band of layers, the submit path on it.

Features are synthetic, of a 30-layer backbone's depth (31 hidden states, 16 wide), written
into a real SQLite feature cache; a stand-in backbone gives only the cache key, so no
model runs. The class signal is strongest at layer 29, outside the band: a selection
that is not restricted to the band picks it.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.hashing import text_hash
from core.learn.classifier import Settings, train
from core.learn.pool import PoolMatrix
from core.model.cache import MemoryCache, band_layers, cache_key
from core.project import load_classifier, retrain
from core.store import Store

SHAPE = (31, 16)
BAND = band_layers(SHAPE[0])
N_LABELLED, N_POOL = 12, 40


class StandIn:
    """What retrain needs of a backbone when every feature is cached: a key."""

    fingerprint = "synthetic-31-states"
    n_layers, hidden_size = SHAPE


def _features(rng, signs: np.ndarray) -> np.ndarray:
    """(n, 31, 16) float32: noise, plus a class signal (sign +-1) in every layer, 4x at layer 29."""
    X = rng.standard_normal((len(signs),) + SHAPE).astype(np.float32)
    strength = np.full(SHAPE[0], 0.8, np.float32)
    strength[29] = 4.0
    X[:, :, :4] += strength[None, :, None] * signs[:, None, None].astype(np.float32)
    return X


@pytest.fixture
def workspace(tmp_path):
    """(store, project, {text: full float32 features}): labelled texts cached with every
    layer (typed in and embedded at a submit), the pool as the embedding job caches an
    upload (float16, band only)."""
    store = Store.open(tmp_path / "w.db")
    p = store.create_project("p", ["neg", "pos"], settings={"prompt": None, "mode": "layer"})
    rng = np.random.default_rng(0)
    labelled = [f"labelled {i}" for i in range(N_LABELLED)]
    pool = [f"pool {i}" for i in range(N_POOL)]
    signs = np.array([1 if i % 2 else -1 for i in range(N_LABELLED + N_POOL)])
    X = _features(rng, signs)
    store.add_texts(p.id, labelled + pool,
                    labels=[("pos" if s > 0 else "neg") for s in signs[:N_LABELLED]] + [None] * N_POOL)
    key = cache_key(StandIn, Settings().max_length)
    features = dict(zip(labelled + pool, X))
    store.put_features(key, None, "mean", {text_hash(t): features[t] for t in labelled})
    MemoryCache(store, store_dtype="float16").put_features(
        key, None, "mean", {text_hash(t): features[t] for t in pool})
    yield store, p, features
    store.close()


def _stored(store, project_id) -> dict[int, list[float]]:
    model = store.latest_model(project_id)
    return {x.text_id: [x.probs[c] for c in ("neg", "pos")] for x in store.predictions(model.id)}


def _full_pass(store, project_id, features) -> tuple[list[int], np.ndarray]:
    """(ids, probabilities) of the unlabelled texts from their full features (float16-rounded
    as stored), with the latest model: what a submit must have stored."""
    clf = load_classifier(store.latest_model(project_id))
    rows = store.unlabelled(project_id)
    X = np.stack([features[r.text] for r in rows]).astype(np.float16).astype(np.float32)
    return [r.id for r in rows], clf.predict_proba_features(X)


def test_the_pool_is_cached_with_only_the_band_and_a_submit_predicts_it_exactly(workspace):
    # issue 14: the 100,000-text pool cached all 31 layers (3.75 GB in float16)
    store, p, features = workspace
    lengths = {n for (n,) in store.db.execute(
        "SELECT length(data) FROM features WHERE dtype = '<f2'")}
    assert lengths == {len(BAND) * SHAPE[1] * 2}
    outcome = retrain(store, p, StandIn(), pool=PoolMatrix({}))
    clf = load_classifier(store.latest_model(p.id))
    assert outcome.reselected and set(clf.spec.layers) <= set(BAND)  # not layer 29
    ids, expected = _full_pass(store, p.id, features)
    stored = _stored(store, p.id)
    assert sorted(stored) == ids and outcome.n_predicted == N_POOL
    assert_allclose([stored[i] for i in ids], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["layer", "stc", "fusion"])
def test_labelled_pool_texts_keep_the_band_and_reselection_still_works(workspace, mode):
    store, p, features = workspace
    store.update_settings(p.id, {"mode": mode})
    pool = PoolMatrix({})
    retrain(store, store.project(p.id), StandIn(), pool=pool)
    for row in store.unlabelled(p.id)[:6]:  # band-only texts become labelled
        store.set_label(p.id, row.id, "pos" if features[row.text][29, 0] > 0 else "neg")
    outcome = retrain(store, store.project(p.id), StandIn(), pool=pool, reselect=True)
    clf = load_classifier(store.latest_model(p.id))
    assert outcome.reselected and set(clf.spec.layers) <= set(BAND)
    assert clf.metrics["cv_accuracy"] > 0.8
    ids, expected = _full_pass(store, p.id, features)
    stored = _stored(store, p.id)
    assert sorted(stored) == ids and len(ids) == N_POOL - 6
    assert_allclose([stored[i] for i in ids], expected, rtol=1e-5, atol=1e-7)


def test_a_head_selected_outside_the_band_is_selected_again(workspace):
    # a workspace from before the band: its latest head reads layer 29, which the pool lacks
    store, p, features = workspace
    labelled = store.labelled(p.id)
    settings = Settings.from_dict(p.settings)
    old = train(np.stack([features[r.text] for r in labelled]), [r.label for r in labelled],
                ["neg", "pos"], settings)
    assert old.spec.layers == (29,)
    old.metrics["selected_at_labels"] = len(labelled)
    params, arrays = old.to_state()
    store.save_model(p.id, params=params, metrics=old.metrics, state=arrays, n_labels=len(labelled))
    store.set_label(p.id, store.unlabelled(p.id)[0].id, "pos")  # 13 labels < 1.25 x 12
    outcome = retrain(store, p, StandIn(), pool=PoolMatrix({}))
    clf = load_classifier(store.latest_model(p.id))
    assert outcome.reselected and set(clf.spec.layers) <= set(BAND)
    ids, expected = _full_pass(store, p.id, features)
    assert np.isfinite(expected).all()
    stored = _stored(store, p.id)
    assert_allclose([stored[i] for i in ids], expected, rtol=1e-5, atol=1e-7)


def test_head_only_submits_keep_the_texts_in_ram_and_follow_edits_and_deletions(workspace):
    # issue 14: every submit read the 100,000 pool texts from SQLite again
    store, p, features = workspace
    state: dict = {}
    retrain(store, p, StandIn(), pool=PoolMatrix(state))
    kept = state["texts"]
    rows = store.unlabelled(p.id)
    store.set_label(p.id, rows[0].id, "pos")
    assert not retrain(store, p, StandIn(), pool=PoolMatrix(state)).reselected
    assert state["texts"] is kept  # a label changed, no text: nothing read again
    features["pool 1, edited"] = features[rows[1].text]
    features["a new text"] = features[rows[3].text]
    key = cache_key(StandIn, Settings().max_length)
    MemoryCache(store, store_dtype="float16").put_features(
        key, None, "mean", {text_hash(t): features[t] for t in ("pool 1, edited", "a new text")})
    store.edit_text(p.id, rows[1].id, "pool 1, edited")
    store.delete_texts(p.id, [rows[2].id])
    store.add_texts(p.id, ["a new text"])
    store.set_label(p.id, rows[4].id, "neg")
    outcome = retrain(store, p, StandIn(), pool=PoolMatrix(state))
    assert not outcome.reselected and state["texts"] is not kept
    ids, expected = _full_pass(store, p.id, features)
    stored = _stored(store, p.id)
    assert sorted(stored) == ids and outcome.n_predicted == N_POOL - 2 - 1 + 1  # labelled, deleted, added
    assert rows[1].id in ids and rows[2].id not in ids
    assert_allclose([stored[i] for i in ids], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_layers", [6, 12, 24, 28, 30])
def test_the_band_holds_the_default_fusion_layers_of_every_depth(n_layers):
    # the default head (fixed fusion, issue 12) must be computable on a band-only pool;
    # the packaged backbones have 6 (MiniLM) to 30 (SmolLM2) layers
    from core.learn.features import _fusion_layers

    assert set(_fusion_layers(n_layers, None)) <= set(band_layers(n_layers + 1))


def test_a_pool_text_of_the_default_backbone_fits_issue_14s_workspace_budget(tmp_path):
    # 100,000 pool texts in <= 2 GB: each text's cached features (every part of the
    # default backbone, float16, band only, as the embedding job writes an upload) must
    # stay under 20 kB in the SQLite file, page and index overhead included; the band of
    # a layer every tenth of the depth took 37 kB on the fused default
    import os

    from core.model.group import group_parts, is_fused
    from core.model.registry import DEFAULT_BACKBONE, REGISTRY

    shapes = ([(p.name, p.n_states, p.width) for p in group_parts(DEFAULT_BACKBONE)]
              if is_fused(DEFAULT_BACKBONE) else
              [(DEFAULT_BACKBONE, REGISTRY[DEFAULT_BACKBONE].layers + 1, REGISTRY[DEFAULT_BACKBONE].hidden)])
    path, n = tmp_path / "w.db", 400
    store = Store.open(path)
    rng = np.random.default_rng(0)

    def size() -> int:
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(path)

    before = size()
    for name, n_states, width in shapes:
        X = rng.standard_normal((n, n_states, width)).astype(np.float32)
        store.put_features(f"synthetic-{name}|max256", None, "mean",
                           {text_hash(f"pool {i}"): x for i, x in enumerate(X)},
                           dtype="float16", layers=band_layers)
    per_text = (size() - before) / n
    store.close()
    assert per_text <= 20_000, f"{per_text:.0f} bytes of features per pool text"
