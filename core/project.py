"""Project workflows shared by the app, the CLI and the Python API.

``retrain`` is what runs on every submit: labelled texts -> cached features ->
(reused or re-selected) feature spec -> head with C chosen by CV -> a new model
version in the store -> predictions for every unlabelled text.

Two retrains of one project may run at once (two browser tabs labelling) and finish
out of order; the store keeps a head only when no saved version was trained on newer
labels (``Store.save_model``'s ``label_generation``), so "the latest model" never goes
back to older data.

Feature selection is restricted to the hidden states every pool text keeps
(``core.model.cache.band_layers``, each backbone of a group its own band): the
embedding job caches a large pool compactly, so a head reading any other layer could
not predict it without embedding the pool again. Labelled texts are embedded only up
to the band's deepest row (the layers above it do not run), and not again when they
lack the other layers: those are never read.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from core.learn.classifier import Classifier, Settings, default_prompt, features_for, train
from core.learn.curves import clear_change
from core.errors import InputError
from core.learn.features import FeatureSpec
from core.learn.head import labels_missing, not_enough_labels
from core.learn.multilabel import classifier_from_state
from core.learn.pool import PoolMatrix
from core.model.cache import band_rows, in_band, pool_rows
from core.model.device import new_project_backbone
from core.multilabel import predict_sets, retrain_multi_label
from core.outcome import AccuracyChange, TrainOutcome

__all__ = ["AccuracyChange", "TrainOutcome", "accuracy_change", "in_band", "load_classifier",
           "new_project_settings", "pool_rows", "predict_texts", "retrain", "settings_of"]

# Re-select layers/mode by CV when the label count has grown by this factor since the
# last selection; in between, a submit only refits the head (fast).
_RESELECT_GROWTH = 1.25


def accuracy_change(before, after) -> AccuracyChange | None:
    """The change between two model versions (``ModelVersion``s, oldest first); None
    when either has no cross-validated accuracy."""
    old, new = before.metrics.get("cv_accuracy"), after.metrics.get("cv_accuracy")
    if old is None or new is None:
        return None
    return AccuracyChange((new - old) * 100,
                          clear_change((old, before.n_labels), (new, after.n_labels)))


def new_project_settings(backbone: str | None = None) -> dict:
    """Settings for a new project, the same in the app, the CLI and the Python API:
    ``backbone``, else $TENSHOT_BACKBONE, else the backbone for this hardware
    (``core.model.device.new_project_backbone``), with that backbone's default prompt.

    Pass them to ``Store.create_project``: a project stored without settings keeps the
    defaults from before issue 12 (SmolLM2 alone, elastic-net; ``Settings.from_dict``).
    """
    name = backbone or new_project_backbone()
    return Settings(backbone=name, prompt=default_prompt(name)).to_dict()


def settings_of(project) -> Settings:
    return Settings.from_dict(project.settings).check()


def load_classifier(model_version) -> Classifier:
    """A stored ModelVersion (with state) -> Classifier, or a ``MultiLabelClassifier`` for a
    multi-label project's model (``clf.multi_label`` is True on those)."""
    return classifier_from_state(model_version.params, model_version.state)


def _reusable_spec(previous, settings: Settings, classes: list[str], n_labels: int,
                   n_states: int) -> FeatureSpec | None:
    if previous is None:
        return None
    params = previous.params
    if params.get("settings") != settings.to_dict() or params.get("classes") != classes:
        return None
    selected_at = previous.metrics.get("selected_at_labels", 0)
    if n_labels > selected_at * _RESELECT_GROWTH:
        return None
    spec = FeatureSpec.from_json(params["spec"])
    # a head selected before the band existed may read a layer the pool does not keep
    return spec if set(spec.layers) <= set(pool_rows(settings, n_states)) else None


def retrain(store, project, backbone, *, cache=None, pool: PoolMatrix | None = None,
            reselect: bool = False, progress: Callable[[int, int], None] | None = None,
            random_state: int = 0) -> TrainOutcome:
    """Train a new model version on the project's labels and predict its unlabelled texts.

    Raises NotEnoughLabels (with per-class counts) when a class has fewer than 2 labels.
    ``cache`` defaults to the store itself; pass a MemoryCache over it to keep features in RAM.
    ``pool``: keep it between calls (with a state dict that outlives it) so a submit that
    reuses the feature spec predicts the unlabelled texts without reading their features.
    A multi-label project is trained by ``core.multilabel.retrain_multi_label`` (one head
    per class; its outcome has the same fields, its headline score is macro-F1).
    """
    if project.multi_label:
        return retrain_multi_label(store, project, backbone, cache=cache, pool=pool,
                                   reselect=reselect, progress=progress, random_state=random_state)
    start = time.perf_counter()
    cache = cache if cache is not None else store
    settings = settings_of(project)
    classes = store.classes(project.id)
    # read before the labels: a label that lands in between makes the model newer than
    # its generation says, never older
    generation = store.label_generation(project.id)
    labelled = store.labelled(project.id)
    counts = store.label_counts(project.id)
    if not labelled:
        raise not_enough_labels(labels_missing(counts))
    # only the band is read, so the layers above its deepest row need not run
    X = in_band(features_for(backbone, [r.text for r in labelled], settings, cache=cache, progress=progress,
                             rows=band_rows(backbone)), settings)
    previous = store.latest_model(project.id)
    spec = None if reselect else _reusable_spec(previous, settings, classes, len(labelled), X.shape[1])
    clf = train(X, [r.label for r in labelled], classes, settings, spec=spec, random_state=random_state)
    clf.metrics["selected_at_labels"] = (previous.metrics.get("selected_at_labels", len(labelled))
                                         if spec is not None else len(labelled))
    clf.metrics["counts"] = counts
    params, arrays = clf.to_state()
    version = store.save_model(project.id, params=params, metrics=clf.metrics, state=arrays,
                               n_labels=len(labelled), label_generation=generation)
    if version is None:
        newer = store.latest_model(project.id)
        return TrainOutcome(newer.version, newer.metrics,
                            previous.metrics.get("cv_accuracy") if previous else None,
                            counts, 0, spec is None, time.perf_counter() - start, superseded=True,
                            previous_labels=previous.n_labels if previous else None)
    model_id = store.model(project.id, version).id
    n_predicted = _predict_unlabelled(store, project, backbone, clf, model_id, cache,
                                      pool if pool is not None else PoolMatrix(),
                                      [r.text_id for r in labelled], ([r.text for r in labelled], X))
    return TrainOutcome(version, clf.metrics,
                        previous.metrics.get("cv_accuracy") if previous else None,
                        counts, n_predicted, spec is None, time.perf_counter() - start,
                        previous_labels=previous.n_labels if previous else None)


def _predict_unlabelled(store, project, backbone, clf: Classifier, model_id: int, cache,
                        pool: PoolMatrix, labelled_ids: list[int], labelled) -> int:
    ids, probs = pool.predict_unlabelled(store, project.id, backbone, clf, labelled_ids, cache=cache,
                                         labelled=labelled)
    if not len(ids):
        return 0
    store.save_probabilities(model_id, ids, clf.classes, probs)
    return len(ids)


def predict_texts(backbone, clf: Classifier, texts: list[str], *, cache=None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[str], np.ndarray]:
    """(predicted class names, probabilities (n, n_classes)) for arbitrary texts.

    For a multi-label classifier the first item is each text's predicted set (a tuple
    of class names; ``core.multilabel.predict_sets``)."""
    if getattr(clf, "multi_label", False):
        return predict_sets(backbone, clf, texts, cache=cache, progress=progress)
    if not texts:
        raise InputError("There are no texts to predict.")
    probs = clf.predict_proba(backbone, texts, cache=cache, progress=progress)
    return [clf.classes[i] for i in probs.argmax(1)], probs
