"""Explanations of a multi-label model, one class at a time (issue 16, item 7).

Coefficient attributions and SHAP need nothing special: ``coefficient_attributions`` and
``shap_attributions`` take a ``MultiLabelClassifier`` as they are and give one column per
class, its log-odds (values + constant = log-odds, exactly under mean pooling); a page
picks the class's column (``class_column``).

Stability and the report are per class: each class is a binary problem ("<class>" vs
"not <class>") with its own head, so ``clf.class_classifier(name)`` gives a single-label
view that the bootstrap (``core.explain.stability``) and the report
(``core.report.stakeholder_report``) run on unchanged. ``ClassStore`` is the matching
view of the store: the labelled texts as that binary problem ("none of these" counts as
"not <class>"), the predictions as that class's probability at its threshold, and every
stored explanation under a key of its own per class, so the classes' bootstrap runs do
not replace one another.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from core.explain.stability import Stability, load_stability, save_stability
from core.learn.classifier import features_for
from core.learn.multilabel import MultiLabelClassifier
from core.multilabel import effective_thresholds
from core.store.rows import Label, Prediction

__all__ = ["ClassStore", "class_column", "class_inputs", "class_model", "class_report",
           "load_class_stability", "not_name", "save_class_stability"]


def not_name(class_name: str) -> str:
    """The name of the other side of a class's binary view: 'staff' -> 'not staff'."""
    return f"not {class_name}"


def class_column(clf: MultiLabelClassifier, class_name: str) -> int:
    """The column of ``class_name`` in attributions, SHAP values and probabilities."""
    clf.class_classifier(class_name)  # refuses an unknown class with the class list
    return clf.classes.index(class_name)


class ClassStore:
    """A read view of a store for one class of a multi-label project (module docstring).

    Everything not overridden here is the store's own.
    """

    def __init__(self, store, class_name: str, thresholds: dict[str, float] | None = None):
        self._store, self.class_name = store, class_name
        self._threshold = (thresholds or {}).get(class_name, 0.5)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def labelled(self, project_id: int) -> list[Label]:
        """Every labelled text as ``<class>`` or ``not <class>``, by text id."""
        c = self.class_name
        return [Label(r.text_id, r.text, c if c in r.labels else not_name(c))
                for r in self._store.label_sets(project_id)]

    def predictions(self, model_id: int) -> list[Prediction]:
        """The class's side of each stored prediction: its probability against its threshold."""
        c, out = self.class_name, []
        for p in self._store.predictions(model_id):
            prob = float(p.probs.get(c, 0.0))
            label = c if prob >= self._threshold else not_name(c)
            out.append(Prediction(p.text_id, p.text, label, prob if label == c else 1.0 - prob,
                                  {not_name(c): 1.0 - prob, c: prob}))
        return out

    def _key(self, key: str) -> str:
        return f"{key}|class={self.class_name}"

    def put_explanation(self, model_id: int, kind: str, key: str, params, arrays) -> None:
        self._store.put_explanation(model_id, kind, self._key(key), params, arrays)

    def get_explanation(self, model_id: int, kind: str, key: str):
        return self._store.get_explanation(model_id, kind, self._key(key))


def class_inputs(store, project_id: int, backbone, clf: MultiLabelClassifier, class_name: str, *,
                 cache=None, progress: Callable[[int, int], None] | None = None) -> dict:
    """``bootstrap``'s keyword arguments for one class: use as
    ``bootstrap(clf.class_classifier(name), **class_inputs(store, pid, backbone, clf, name))``.

    y is 1 where a labelled text carries the class, 0 elsewhere ("none of these" included).
    """
    cache = cache if cache is not None else store
    clf.class_classifier(class_name)
    labelled = store.label_sets(project_id)
    others = store.unlabelled(project_id)
    X_all = features_for(backbone, [r.text for r in labelled] + [r.text for r in others],
                         clf.settings, cache=cache, progress=progress)
    n = len(labelled)
    return {"X": X_all[:n], "y": np.array([class_name in r.labels for r in labelled], dtype=np.int64),
            "ids": [r.text_id for r in labelled], "X_other": X_all[n:],
            "other_ids": [r.id for r in others]}


def save_class_stability(store, model_id: int, class_name: str, stability: Stability) -> None:
    """Keep one class's bootstrap with its model version, beside the other classes' runs."""
    save_stability(ClassStore(store, class_name), model_id, stability)


def load_class_stability(store, model_id: int, class_name: str) -> Stability | None:
    """One class's saved bootstrap, or None when it was not run."""
    return load_stability(ClassStore(store, class_name), model_id)


def class_model(model, class_name: str):
    """The stored ``ModelVersion`` as the report shows it for one class: its metrics are the
    class's cross-validated binary accuracy and the macro-F1 of "<class>" vs "not <class>"."""
    row = model.metrics.get("per_class", {}).get(class_name)
    k = list(model.params["classes"]).index(class_name)
    n_with = model.metrics.get("counts", {}).get(class_name, 0)
    metrics = {**model.metrics, "cv_accuracy": None, "cv_macro_f1": None,
               "C": float(model.params["head"]["heads"][k]["C_"]),
               "counts": {not_name(class_name): model.n_labels - n_with, class_name: n_with}}
    if row:
        total = row["tp"] + row["fp"] + row["fn"] + row["tn"]
        f1_not = 2 * row["tn"] / max(2 * row["tn"] + row["fn"] + row["fp"], 1)
        metrics.update(cv_accuracy=(row["tp"] + row["tn"]) / max(total, 1),
                       cv_macro_f1=(row["f1"] + f1_not) / 2)
    params = {**model.params, "classes": [not_name(class_name), class_name]}
    return replace(model, params=params, metrics=metrics)


def class_report(store, project, backbone, clf: MultiLabelClassifier, model, class_name: str,
                 **kwargs) -> bytes:
    """The stakeholder report (``core.report.stakeholder_report``) of one class of ``model``,
    with that class's examples, learning curve, stability and metrics."""
    from core.report import stakeholder_report

    view = ClassStore(store, class_name, effective_thresholds(project, model))
    return stakeholder_report(view, project, backbone, clf.class_classifier(class_name),
                              class_model(model, class_name), **kwargs)
