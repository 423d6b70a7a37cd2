"""Model versions and explanations kept per model version (predictions: ``predictions.py``)."""

from typing import Any

import numpy as np

from core.errors import StoreError
from core.store.codec import dump_json, load_json, pack_arrays, unpack_arrays, utc_now
from core.store.connection import StoreBase, transactional
from core.store.rows import ModelVersion

__all__ = ["ModelsMixin"]

_MODEL_COLUMNS = "id, version, created_at, params, metrics, n_labels"


class ModelsMixin(StoreBase):
    """Trained model versions and stored explanations."""

    @transactional
    def save_model(
        self,
        project_id: int,
        *,
        params: dict[str, Any],
        metrics: dict[str, Any],
        state: dict[str, np.ndarray],
        n_labels: int,
        label_generation: int | None = None,
    ) -> int | None:
        """Save a trained head as the project's next version and return that version number.

        label_generation: ``Store.label_generation`` read before the training labels.
        When a saved version was trained on newer labels (a higher generation), this
        head is not saved at all and None is returned: two retrains that finish out of
        order (two tabs labelling) must not make older data the latest model. The
        check and the insert run in one write transaction, so it holds across processes.
        """
        self._project_name(project_id)
        if label_generation is not None and self._one(
            "SELECT 1 FROM models WHERE project_id = ? AND label_generation > ? LIMIT 1",
            [project_id, int(label_generation)],
        ):
            return None
        (version,) = self._one(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE project_id = ?", [project_id]
        )
        self.db.execute(
            "INSERT INTO models "
            "(project_id, version, created_at, params, metrics, n_labels, state, label_generation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [project_id, version, utc_now(), dump_json(params), dump_json(metrics),
             int(n_labels), pack_arrays(state), label_generation],
        )
        return version

    def latest_model(self, project_id: int) -> ModelVersion | None:
        """Return the newest model version with its state, or None if none was trained."""
        row = self._one(
            f"SELECT {_MODEL_COLUMNS}, state FROM models WHERE project_id = ? "
            "ORDER BY version DESC LIMIT 1",
            [project_id],
        )
        return None if row is None else _model_row(row)

    def model(self, project_id: int, version: int) -> ModelVersion:
        """Return one model version with its state; StoreError if it does not exist."""
        row = self._one(
            f"SELECT {_MODEL_COLUMNS}, state FROM models WHERE project_id = ? AND version = ?",
            [project_id, version],
        )
        if row is None:
            versions = [m.version for m in self.models(project_id)]
            raise StoreError(
                f"Project {self._project_name(project_id)!r} has no model version {version}; "
                f"its versions are {versions or 'none yet (train one first)'}."
            )
        return _model_row(row)

    def models(self, project_id: int) -> list[ModelVersion]:
        """Return every model version, oldest first, with ``state=None`` to keep listing cheap."""
        rows = self._all(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE project_id = ? ORDER BY version",
            [project_id],
        )
        return [_model_row(row) for row in rows]

    @transactional
    def put_explanation(
        self, model_id: int, kind: str, key: str, params: dict[str, Any],
        arrays: dict[str, np.ndarray],
    ) -> None:
        """Keep a result computed from one model version, e.g. ``("shap", text hash)``.

        params must be JSON-able; arrays are stored as an npz without pickle. An entry
        with the same (model, kind, key) is replaced. Deleting the model deletes it.
        """
        if self._one("SELECT 1 FROM models WHERE id = ?", [model_id]) is None:
            raise StoreError(f"Model {model_id} does not exist (it may have been deleted).")
        self.db.execute(
            "INSERT OR REPLACE INTO explanations (model_id, kind, key, params, arrays, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [model_id, kind, key, dump_json(params), pack_arrays(arrays), utc_now()],
        )

    def get_explanation(
        self, model_id: int, kind: str, key: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Return ``(params, arrays)`` saved by ``put_explanation``, or None."""
        row = self._one(
            "SELECT params, arrays FROM explanations WHERE model_id = ? AND kind = ? AND key = ?",
            [model_id, kind, key],
        )
        return None if row is None else (load_json(row[0]), unpack_arrays(row[1]))

    def explanation_keys(self, model_id: int, kind: str) -> list[str]:
        """Keys of the saved results of one kind for a model version, oldest first."""
        rows = self._all(
            "SELECT key FROM explanations WHERE model_id = ? AND kind = ? ORDER BY created_at, key",
            [model_id, kind],
        )
        return [r[0] for r in rows]


def _model_row(row: tuple) -> ModelVersion:
    """Build a ModelVersion from ``_MODEL_COLUMNS`` (+ ``state`` when selected)."""
    state = unpack_arrays(row[6]) if len(row) > 6 else None
    return ModelVersion(
        id=row[0],
        version=row[1],
        created_at=row[2],
        params=load_json(row[3]),
        metrics=load_json(row[4]),
        n_labels=row[5],
        state=state,
    )
