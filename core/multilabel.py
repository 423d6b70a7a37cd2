"""Multi-label project workflows: retrain on submit, predicted sets, thresholds, "What changed".

``retrain_multi_label`` is ``core.project.retrain`` for a multi-label project (that
function hands over to it): label sets -> cached features -> feature spec (chosen on
the union of the classes) -> one head per class -> a new model version -> per-class
probabilities for every unlabelled text.

A submit is fast because it reuses what the last full fit chose: the feature spec,
each class's C and threshold; everything is re-chosen by CV when the labels have grown
by a quarter since (as ``core.project`` re-selects features), when the settings or the
classes changed, or when asked (``reselect=True``). The cross-validated scores shown
are those of the last full fit.

Thresholds: each model version stores the thresholds its CV chose; a user's own
threshold for a class (``set_threshold``) is kept in the project's settings under
``"thresholds"`` and wins over the chosen one in every predicted set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from core.errors import InputError
from core.learn.classifier import Settings, features_for
from core.learn.multilabel import (MultiLabelClassifier, is_multi_label_state, missing_per_class, not_enough_multilabel, sets_from_proba,
                                   train_multilabel)
from core.learn.features import FeatureSpec
from core.learn.pool import PoolMatrix
from core.model.cache import band_rows, in_band, pool_rows
from core.outcome import TrainOutcome

__all__ = ["MultiLabelOutcome", "SetChange", "SetPrediction", "changed_sets", "effective_thresholds",
           "predict_sets", "retrain_multi_label", "set_predictions", "set_threshold"]

_REFIT_GROWTH = 1.25
_THRESHOLDS = "thresholds"  # the project settings key of the user's own thresholds


@dataclass(frozen=True)
class MultiLabelOutcome(TrainOutcome):
    """What one multi-label retrain produced: ``TrainOutcome`` with the cross-validated
    macro-F1 (``metrics["cv_macro_f1"]``) as the headline score, so ``previous_accuracy``
    and ``accuracy_change`` are in macro-F1 too."""

    headline: ClassVar[str] = "cv_macro_f1"


@dataclass(frozen=True)
class SetPrediction:
    """One text's predicted set: class names in class order, and every class's probability."""

    text_id: int
    text: str
    labels: tuple[str, ...]
    probs: dict[str, float]


@dataclass(frozen=True)
class SetChange:
    """A text whose predicted set differs between the previous and the latest model."""

    text_id: int
    text: str
    before: tuple[str, ...]
    after: tuple[str, ...]


def _reusable(previous, settings: Settings, classes: list[str], n_labels: int, n_states: int) -> bool:
    if previous is None or not is_multi_label_state(previous.params):
        return False
    params, cv_at = previous.params, previous.metrics.get("cv_at_labels") or 0
    if not (params.get("settings") == settings.to_dict() and params.get("classes") == classes
            and n_labels <= cv_at * _REFIT_GROWTH):
        return False
    # a head selected before retrains read only the band may read a layer above it
    return set(FeatureSpec.from_json(params["spec"]).layers) <= set(pool_rows(settings, n_states))


def retrain_multi_label(store, project, backbone, *, cache=None, pool: PoolMatrix | None = None,
                        reselect: bool = False, progress: Callable[[int, int], None] | None = None,
                        random_state: int = 0) -> MultiLabelOutcome:
    """Train a new model version on a multi-label project's label sets; predict its pool.

    Raises NotEnoughLabels naming, per class, how many more texts with and without it
    are needed. Arguments as ``core.project.retrain``.
    """
    start = time.perf_counter()
    cache = cache if cache is not None else store
    settings = Settings.from_dict(project.settings).check()
    classes = store.classes(project.id)
    generation = store.label_generation(project.id)
    labelled = store.label_sets(project.id)
    counts = store.label_counts(project.id)
    if not labelled:
        raise not_enough_multilabel(missing_per_class(np.zeros((0, len(classes)), bool), classes))
    # only the band is read, as in a single-label submit (``core.project.retrain``)
    X = in_band(features_for(backbone, [r.text for r in labelled], settings, cache=cache, progress=progress,
                             rows=band_rows(backbone)), settings)
    previous = store.latest_model(project.id)
    reuse = not reselect and _reusable(previous, settings, classes, len(labelled), X.shape[1])
    old = MultiLabelClassifier.from_state(previous.params, previous.state) if reuse else None
    clf = train_multilabel(X, [r.labels for r in labelled], classes, settings,
                           spec=old.spec if old else None, Cs=old.head.C_ if old else None,
                           thresholds=old.thresholds if old else None, random_state=random_state)
    if old is not None:  # the CV scores and choices are those of the last full fit
        clf.metrics.update({k: v for k, v in previous.metrics.items()
                            if k.startswith("cv_") or k in ("per_class", "selection")})
    clf.metrics.update(counts=counts, n_none=store.none_count(project.id))
    params, arrays = clf.to_state()
    version = store.save_model(project.id, params=params, metrics=clf.metrics, state=arrays,
                               n_labels=len(labelled), label_generation=generation)
    before = previous.metrics.get("cv_macro_f1") if previous else None
    before_n = previous.n_labels if previous else None
    if version is None:
        newer = store.latest_model(project.id)
        return MultiLabelOutcome(newer.version, newer.metrics, before, counts, 0, old is None,
                                 time.perf_counter() - start, superseded=True, previous_labels=before_n)
    model_id = next(m.id for m in store.models(project.id) if m.version == version)
    ids, texts = store.unlabelled_columns(project.id)
    if ids:
        pool = pool if pool is not None else PoolMatrix()
        W, b = clf.head.linear_map()
        Z = pool.matrix(backbone, clf, texts, cache=cache)
        store.save_probabilities(model_id, ids, classes, _sigmoid(Z @ W.astype(np.float32) + b))
    return MultiLabelOutcome(version, clf.metrics, before, counts, len(ids), old is None,
                             time.perf_counter() - start, previous_labels=before_n)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def effective_thresholds(project, clf_or_model) -> dict[str, float]:
    """{class: threshold}: the user's own (project settings) over the model's chosen ones.

    clf_or_model: a MultiLabelClassifier or a stored ModelVersion of one.
    """
    if isinstance(clf_or_model, MultiLabelClassifier):
        classes, chosen = clf_or_model.classes, clf_or_model.thresholds.tolist()
    else:
        classes, chosen = clf_or_model.params["classes"], clf_or_model.params["head"]["thresholds_"]
    own = project.settings.get(_THRESHOLDS, {})
    return {c: float(own.get(c, t)) for c, t in zip(classes, chosen)}


def set_threshold(store, project, class_name: str, value: float | None):
    """Set the user's own threshold for one class (None: back to the chosen one); returns
    the updated project. Refused (InputError) outside (0, 1) or for an unknown class."""
    if class_name not in store.classes(project.id):
        raise InputError(f"There is no class {class_name!r}; the classes are "
                         f"{', '.join(store.classes(project.id))}.")
    own = dict(project.settings.get(_THRESHOLDS, {}))
    if value is None:
        own.pop(class_name, None)
    else:
        value = float(value)
        if not 0.0 < value < 1.0:
            raise InputError(f"A threshold is a probability between 0 and 1 (exclusive), but got "
                             f"{value:g}. Lower it to predict “{class_name}” more often.")
        own[class_name] = value
    return store.update_settings(project.id, {_THRESHOLDS: own})


def set_predictions(store, project, model) -> list[SetPrediction]:
    """The model version's predicted set of each unlabelled text (as stored), by text id."""
    thresholds = effective_thresholds(project, model)
    out = []
    for p in store.predictions(model.id):
        labels = tuple(c for c, t in thresholds.items() if p.probs.get(c, 0.0) >= t)
        out.append(SetPrediction(p.text_id, p.text, labels, p.probs))
    return out


def changed_sets(store, project) -> list[SetChange]:
    """Texts whose predicted set differs between the two newest model versions, by text id."""
    models = store.models(project.id)
    if len(models) < 2:
        return []
    old, new = (store.model(project.id, m.version) for m in models[-2:])
    before = {p.text_id: p.labels for p in set_predictions(store, project, old)}
    return [SetChange(p.text_id, p.text, before[p.text_id], p.labels)
            for p in set_predictions(store, project, new)
            if p.text_id in before and before[p.text_id] != p.labels]


def predict_sets(backbone, clf: MultiLabelClassifier, texts: list[str], *, thresholds=None, cache=None,
                 progress: Callable[[int, int], None] | None = None
                 ) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """(predicted sets, probabilities (n, K)) for arbitrary texts.

    thresholds: (K,) or {class: t}; default the classifier's chosen ones.
    """
    if not texts:
        raise InputError("There are no texts to predict.")
    if isinstance(thresholds, dict):
        thresholds = [thresholds.get(c, t) for c, t in zip(clf.classes, clf.thresholds)]
    probs = clf.predict_proba(backbone, texts, cache=cache, progress=progress)
    return sets_from_proba(probs, clf.classes, clf.thresholds if thresholds is None else thresholds), probs

