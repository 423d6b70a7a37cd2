"""Predictions of a model version: one blob per version, kept for the newest versions only.

A project of 100,000 unlabelled texts gets 100,000 predictions on every submit. They
are stored as one row per model version (text ids, predicted class ids, confidences
and a probability matrix, see ``core.store.codec.pack_predictions``), so a save is one
write, and only the :data:`~core.store.migrations.KEPT_PREDICTION_VERSIONS` newest versions
of a project keep theirs ("What changed" compares the latest with the one before);
older versions keep their metrics and coefficients in ``models``.
"""

import numpy as np

from core.errors import InputError, StoreError
from core.store.codec import dump_json, load_json, pack_predictions, unpack_predictions, utc_now
from core.store.connection import StoreBase, transactional
from core.store.migrations import KEPT_PREDICTION_VERSIONS
from core.store.rows import Prediction

__all__ = ["PredictionsMixin"]


class PredictionsMixin(StoreBase):
    """``save_predictions`` / ``save_probabilities`` and ``predictions``."""

    @transactional
    def save_predictions(
        self, model_id: int, rows: list[tuple[int, str, float, dict[str, float]]]
    ) -> None:
        """Store a model's ``(text_id, class name, confidence, probs)`` rows, replacing old ones."""
        project_id = self._model_project(model_id)
        names = list(dict.fromkeys(name for row in rows for name in row[3]))
        probs = np.array([[row[3].get(n, np.nan) for n in names] for row in rows], dtype=np.float64)
        labels = list(dict.fromkeys(row[1] for row in rows))
        index = {label: i for i, label in enumerate(labels)}
        self._put_predictions(project_id, model_id, np.array([r[0] for r in rows], dtype=np.int64),
                              labels, np.array([index[r[1]] for r in rows], dtype=np.int64),
                              np.array([r[2] for r in rows], dtype=np.float64),
                              names, probs.reshape(len(rows), len(names)))

    @transactional
    def save_probabilities(
        self, model_id: int, text_ids, classes: list[str], probs: np.ndarray
    ) -> None:
        """Store a model's predictions from its probabilities, replacing old ones.

        text_ids: n ids of the model's project's texts; classes: the head's class names;
        probs: float (n, len(classes)). The predicted class is each row's argmax, the
        confidence its probability.
        """
        project_id = self._model_project(model_id)
        probs = np.asarray(probs, dtype=np.float64).reshape(len(text_ids), len(classes))
        best = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
        self._put_predictions(project_id, model_id, np.asarray(text_ids, dtype=np.int64),
                              list(classes), best, probs.max(1, initial=0.0), list(classes), probs)

    def predictions(self, model_id: int) -> list[Prediction]:
        """Return a model's predictions with their texts, ordered by text id.

        Empty for a model whose predictions were dropped (older than the newest
        ``KEPT_PREDICTION_VERSIONS`` versions) or never saved.
        """
        row = self._one("SELECT m.project_id, p.prob_classes, p.arrays FROM predictions p "
                        "JOIN models m ON m.id = p.model_id WHERE p.model_id = ?", [model_id])
        if row is None:
            return []
        project_id, names, arrays = row[0], load_json(row[1]), unpack_predictions(row[2])
        texts = dict(self._all("SELECT id, text FROM texts WHERE project_id = ? AND deleted_at IS NULL",
                               [project_id]))
        class_names = dict(self._all("SELECT id, name FROM classes WHERE project_id = ?", [project_id]))
        out = []
        for i in np.argsort(arrays["text_id"], kind="stable"):
            text_id, class_id = int(arrays["text_id"][i]), int(arrays["class_id"][i])
            if text_id in texts and class_id in class_names:
                probs = {n: float(v) for n, v in zip(names, arrays["probs"][i]) if not np.isnan(v)}
                out.append(Prediction(text_id, texts[text_id], class_names[class_id],
                                      float(arrays["confidence"][i]), probs))
        return out

    def _forget_text_predictions(self, project_id: int, text_id: int) -> None:
        """Remove one text's rows from the project's stored predictions (an edited text's
        predictions were made for its old wording)."""
        rows = self._all("SELECT p.model_id, p.arrays FROM predictions p JOIN models m ON m.id = p.model_id "
                         "WHERE m.project_id = ?", [project_id])
        for model_id, blob in rows:
            arrays = unpack_predictions(blob)
            keep = arrays["text_id"] != text_id
            if keep.all():
                continue
            names = load_json(self._one("SELECT prob_classes FROM predictions WHERE model_id = ?",
                                        [model_id])[0])
            self.db.execute(
                "UPDATE predictions SET n_texts = ?, arrays = ? WHERE model_id = ?",
                [int(keep.sum()), pack_predictions(arrays["text_id"][keep], arrays["class_id"][keep],
                                                   arrays["confidence"][keep], names,
                                                   arrays["probs"][keep]), model_id])

    def _model_project(self, model_id: int) -> int:
        found = self._one("SELECT project_id FROM models WHERE id = ?", [model_id])
        if found is None:
            raise StoreError(f"There is no model with id {model_id}; save the model first.")
        return found[0]

    def _put_predictions(self, project_id: int, model_id: int, text_ids: np.ndarray,
                         labels: list[str], label_index: np.ndarray, confidence: np.ndarray,
                         names: list[str], probs: np.ndarray) -> None:
        """labels[label_index[i]] is row i's predicted class name (vectorised: 100k rows)."""
        # one string of every id, parsed in C: 100,000 rows fetched as tuples cost ~0.1 s a submit
        (joined,) = self._one("SELECT group_concat(id) FROM texts WHERE project_id = ?", [project_id])
        known = np.fromstring(joined or "", dtype=np.int64, sep=",")
        stray = text_ids[~np.isin(text_ids, known)]
        if len(stray):
            raise InputError(
                f"Text {int(stray[0])} is not in this model's project; predict its texts only.")
        class_ids = {name: class_id for class_id, name in self._live_classes(project_id)}
        used = np.unique(label_index)
        for i in used:
            if labels[i] not in class_ids:
                row = int(np.flatnonzero(label_index == i)[0])
                raise InputError(
                    f"Prediction for text {int(text_ids[row])} names class {labels[i]!r}, which "
                    f"the project does not have; its classes are {', '.join(map(repr, class_ids))}."
                )
        label_ids = np.array([class_ids.get(label, -1) for label in labels], dtype=np.int64)
        blob = pack_predictions(text_ids, label_ids[label_index] if len(labels) else label_index,
                                confidence, names, probs)
        self.db.execute(
            "INSERT OR REPLACE INTO predictions (model_id, n_texts, prob_classes, arrays, created_at) "
            "VALUES (?, ?, ?, ?, ?)", [model_id, len(text_ids), dump_json(names), blob, utc_now()])
        self._drop_old_predictions(project_id)

    def _drop_old_predictions(self, project_id: int) -> None:
        self.db.execute(
            "DELETE FROM predictions WHERE model_id IN (SELECT id FROM models WHERE project_id = ? "
            "ORDER BY version DESC LIMIT -1 OFFSET ?)", [project_id, KEPT_PREDICTION_VERSIONS])
