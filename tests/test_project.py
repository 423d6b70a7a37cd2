"""The retrain loop, the Python API and bundles, on a tiny real model and a real SQLite file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.learn.bundle import bundle_bytes, load_bundle, save_bundle
from core.learn.classifier import Settings, features_for
from core.errors import BundleError, NotEnoughLabels
from core.model.cache import MemoryCache
from core.learn.pool import PoolMatrix
from core.project import load_classifier, retrain
from core.store import Store
from tests.helpers import NEG, POS, PLAIN_UNLABELLED as UNLABELLED


@pytest.fixture
def project(tmp_path):
    store = Store.open(tmp_path / "w.db")
    p = store.create_project("p", ["neg", "pos"], settings={"prompt": None, "mode": "layer"})
    ids = store.add_texts(p.id, POS + NEG + UNLABELLED).text_ids
    yield store, p, ids
    store.close()


def _label(store, p, ids, n_per_class):
    for i in range(n_per_class):
        store.set_label(p.id, ids[i], "pos")
        store.set_label(p.id, ids[len(POS) + i], "neg")


def test_too_few_labels_are_refused_with_per_class_counts(project, tiny_backbone):
    store, p, ids = project
    store.set_label(p.id, ids[0], "pos")
    with pytest.raises(NotEnoughLabels, match=r"2 more “neg”.*1 more “pos”") as err:
        retrain(store, p, tiny_backbone)
    assert err.value.missing == {"neg": 2, "pos": 1}
    assert store.latest_model(p.id) is None


def test_retrain_stores_a_version_and_predicts_every_unlabelled_text(project, tiny_backbone):
    store, p, ids = project
    _label(store, p, ids, 4)
    first = retrain(store, p, tiny_backbone)
    assert first.version == 1 and first.reselected and first.previous_accuracy is None
    assert first.counts == {"neg": 4, "pos": 4}
    preds = store.predictions(store.latest_model(p.id).id)
    assert len(preds) == first.n_predicted == len(store.unlabelled(p.id)) == 8 + 3
    assert all(abs(sum(x.probs.values()) - 1) < 1e-6 for x in preds)
    store.set_label(p.id, ids[4], "pos")
    second = retrain(store, p, tiny_backbone)
    assert second.version == 2 and not second.reselected  # 9 labels < 1.25 x 8
    assert second.previous_accuracy == first.metrics["cv_accuracy"]


def test_a_stored_model_predicts_like_the_bundle_and_the_original(project, tiny_backbone, tmp_path):
    store, p, ids = project
    _label(store, p, ids, 5)
    retrain(store, p, tiny_backbone)
    clf = load_classifier(store.latest_model(p.id))
    X = features_for(tiny_backbone, UNLABELLED, clf.settings)
    stored = {x.text: x.probs for x in store.predictions(store.latest_model(p.id).id)}
    expected = np.array([[stored[t][c] for c in clf.classes] for t in UNLABELLED])
    assert_allclose(clf.predict_proba_features(X), expected, rtol=1e-6)
    again = load_bundle(save_bundle(clf, tmp_path / "m.tenshot"))
    assert again.classes == clf.classes
    assert_allclose(again.predict_proba_features(X), expected, rtol=1e-6)


def test_tampered_or_foreign_bundles_are_refused(project, tiny_backbone, tmp_path):
    store, p, ids = project
    _label(store, p, ids, 3)
    retrain(store, p, tiny_backbone)
    raw = bundle_bytes(load_classifier(store.latest_model(p.id)))
    # flip one byte inside the zip's arrays member: the checksum must catch it
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "arrays.npz":
                data = data[:-40] + bytes([data[-40] ^ 1]) + data[-39:]
            dst.writestr(item, data)
    with pytest.raises(BundleError, match="does not match its checksum"):
        load_bundle(buf.getvalue())
    with pytest.raises(BundleError, match="not a tenshot model bundle"):
        load_bundle(b"just some text")


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_malicious_pickle_named_like_a_bundle_is_refused_unexecuted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.tenshot").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "model.tenshot")
    assert not (tmp_path / "PWNED").exists()


def test_memory_cache_serves_repeats_from_ram(project, tiny_backbone):
    store, p, _ = project
    cache = MemoryCache(store)
    s = Settings(prompt=None)
    a = features_for(tiny_backbone, POS, s, cache=cache)
    fresh = MemoryCache(None, items=cache._items)  # no backing store at all
    b = features_for(tiny_backbone, POS, s, cache=fresh)
    assert_allclose(a, b)
    assert len(cache._items) == len(POS)


def test_train_outcome_calls_a_change_only_beyond_the_noise():
    # issue 15 item 6: "−23 pts" was flashed for a swing within the noise of 30 labels
    from core.project import TrainOutcome

    def outcome(before, after, n):
        return TrainOutcome(2, {"cv_accuracy": after, "n_labels": n + 1}, before, {}, 0, False,
                            0.1, previous_labels=n)

    noisy = outcome(0.54, 0.31, 30).change
    assert (round(noisy.points), noisy.clear, str(noisy)) == (-23, False, "no clear change")
    real = outcome(0.40, 0.60, 200).change
    assert (real.clear, str(real)) == (True, "+20 pts")


class _CountingCache:
    """The store as a feature cache that records which texts each call asked for."""

    def __init__(self, store):
        self.store, self.asked = store, []

    def get_features(self, fingerprint, prompt, pooling, text_hashes):
        self.asked.append(len(text_hashes))
        return self.store.get_features(fingerprint, prompt, pooling, text_hashes)

    def put_features(self, fingerprint, prompt, pooling, items):
        self.store.put_features(fingerprint, prompt, pooling, items)


def test_a_head_only_submit_reads_no_pool_features_and_predicts_like_a_full_pass(
        project, tiny_backbone):
    # issue 14: every submit re-read every unlabelled text's features (100k rows at scale)
    store, p, ids = project
    _label(store, p, ids, 4)
    pool = PoolMatrix({})
    retrain(store, p, tiny_backbone, pool=pool)
    store.set_label(p.id, ids[4], "pos")
    cache = _CountingCache(store)
    outcome = retrain(store, p, tiny_backbone, cache=cache, pool=pool)
    assert not outcome.reselected
    assert cache.asked == [9]  # the labelled texts only
    clf = load_classifier(store.latest_model(p.id))
    rows = store.unlabelled(p.id)
    full = clf.predict_proba(tiny_backbone, [r.text for r in rows])  # a fresh, full pass
    stored = {x.text_id: x.probs for x in store.predictions(store.latest_model(p.id).id)}
    assert_allclose([[stored[r.id][c] for c in clf.classes] for r in rows], full, rtol=1e-5, atol=1e-7)


def test_the_pool_matrix_follows_new_texts_labels_and_a_new_spec(project, tiny_backbone):
    store, p, ids = project
    _label(store, p, ids, 4)
    pool = PoolMatrix({})
    retrain(store, p, tiny_backbone, pool=pool)
    store.add_texts(p.id, ["a brand new sentence"])
    store.set_label(p.id, ids[4], "pos")
    cache = _CountingCache(store)
    retrain(store, p, tiny_backbone, cache=cache, pool=pool)
    assert cache.asked == [9, 1]  # labelled texts, then only the new unlabelled one
    cache.asked.clear()
    store.update_settings(p.id, {"mode": "fusion"})  # a new spec: the pool is read again
    p = store.project(p.id)
    outcome = retrain(store, p, tiny_backbone, cache=cache, pool=pool)
    assert outcome.reselected and cache.asked[-1] == len(store.unlabelled(p.id))
    clf = load_classifier(store.latest_model(p.id))
    texts = [r.text for r in store.unlabelled(p.id)]
    assert_allclose(pool.predict_proba(tiny_backbone, clf, texts),
                    clf.predict_proba(tiny_backbone, texts), rtol=1e-5, atol=1e-7)


def test_stored_settings_without_backbone_or_penalty_keep_the_defaults_they_were_saved_under():
    # issue 12 changed the defaults (SmolLM2 + mpnet, L2): a project saved with a partial
    # settings dict must not switch backbone or head by itself
    old = Settings.from_dict({"prompt": None, "mode": "layer"})
    assert (old.backbone, old.penalty, old.mode) == ("smollm2-135m", "elasticnet", "layer")
    assert Settings.from_dict(Settings().to_dict()) == Settings()
    assert Settings().backbone == "smollm2-135m+mpnet" and Settings().penalty == "l2"


def test_the_pool_holds_every_texts_head_inputs_after_a_submit(project, tiny_backbone):
    # issue 12 item 5: suggestions compare unlabelled texts with labelled ones in the head's space
    store, p, ids = project
    _label(store, p, ids, 4)
    pool = PoolMatrix({})
    texts = [r.text for r in store.texts(p.id)]
    assert pool.held(texts) is None
    retrain(store, p, tiny_backbone, pool=pool)
    clf = load_classifier(store.latest_model(p.id))
    expected = clf.spec.transform(features_for(tiny_backbone, texts, clf.settings))
    assert_allclose(pool.held(texts), expected, rtol=1e-5, atol=1e-6)
    assert pool.held(texts + ["a text the project does not have"]) is None


def test_the_readme_python_example_runs_and_gives_the_new_project_defaults(tmp_path, monkeypatch,
                                                                           tiny_model_dir):
    # the Python API's first steps as README.md shows them, run as written (the
    # backbone for this machine is the tiny model, as in the app tests)
    import re
    from pathlib import Path

    from core.project import new_project_settings

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                  if "create_project" in block]
    monkeypatch.setenv("TENSHOT_BACKBONE", tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    with Store.open(tmp_path / "tenshot.db") as store:
        (project,) = store.projects()
        assert project.settings == new_project_settings()
        assert len(store.models(project.id)) == 1
    # what it guards against: the same call without settings means the old defaults
    assert Settings.from_dict({}).backbone == "smollm2-135m"
    assert Settings.from_dict(new_project_settings("smollm2-135m+mpnet")).penalty == "l2"
