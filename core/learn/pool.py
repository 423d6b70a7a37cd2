"""The unlabelled pool's head inputs Z, kept in RAM so a submit predicts with one product.

A submit that only refits the head (the feature spec is reused) changes nothing about
the pool's features: ``PoolMatrix`` keeps Z = spec.transform(X) of every pool text,
keyed by the backbone, the settings that make X, and the spec, and on the next submit
reads features only for texts it has not seen. When the spec changes (re-selection,
other settings) Z is rebuilt once, reading the pool's features in chunks straight from
the persistent cache, so the RAM feature LRU is not filled with 100,000 texts.

The project's texts themselves (ids and strings, read from SQLite) are kept too, until
``Store.text_version`` says a text changed (``unlabelled``).

Memory: Z is float32 (n, d); d is 576 for one SmolLM2 layer, 4 x 576 for concatenated
fusion, a few hundred for STC (100,000 x 576 x 4 bytes = 230 MB).
"""

from __future__ import annotations

import json
import threading
from typing import Callable, Sequence

import numpy as np

from core.learn.classifier import Classifier, features_for
from core.learn.coverage import calibrate
from core.learn.solver import softmax
from core.model.cache import persistent

__all__ = ["PoolMatrix"]

# texts whose full features (n_layers x hidden float32) are held at once while Z is built
_CHUNK = 2000
_PREDICT_CHUNK = 8192


class PoolMatrix:
    """Z of the pool's texts for one (backbone, settings, spec); rebuilt when any changes.

    state: an optional dict that outlives this object (the app keeps one per project and
    process, the way it keeps ``MemoryCache`` items), so the next submit finds Z already
    built. Two tabs may submit at once: a lock kept in the dict makes them take turns.
    """

    def __init__(self, state: dict | None = None):
        self._state = state if state is not None else {}
        self._lock = self._state.setdefault("lock", threading.Lock())

    def unlabelled(self, store, project_id: int, labelled_ids) -> tuple[list[int], list[str]]:
        """(ids, texts) of the project's texts not in ``labelled_ids``, by text id.

        The project's texts are read from SQLite again only when one was added, edited or
        deleted since the last call (``Store.text_version``): 100,000 rows cost ~0.3 s, and
        a submit changes labels, not texts.
        """
        with self._lock:
            version = (store.path, project_id, store.text_version(project_id))
            if self._state.get("texts_version") != version:
                # the version is read first: a change landing between the two reads makes
                # the kept version look older than the texts, so the next call reads again
                self._state.update(texts=store.text_columns(project_id), texts_version=version)
            ids, texts = self._state["texts"]
        labelled = set(labelled_ids)
        keep = [i for i, text_id in enumerate(ids) if text_id not in labelled]
        return [ids[i] for i in keep], [texts[i] for i in keep]

    def matrix(self, backbone, clf: Classifier, texts: Sequence[str], *, cache=None,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Z: float32 (len(texts), d) equal to ``clf.spec.transform(features_for(...))``.

        Only texts not seen under this key have their features read (or computed).
        """
        Z, index = self._rows(backbone, clf, texts, cache=cache, progress=progress)
        return Z[index]

    def predict_proba(self, backbone, clf: Classifier, texts: Sequence[str], *, cache=None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Probabilities (n, n_classes), equal to ``clf.predict_proba(backbone, texts)``
        (calibrated by the model's temperature, when it has one).

        One product with the head's linear map on raw Z in float32 (Z's own precision:
        probabilities agree with the head's float64 path to about 1e-6), over every row
        kept; the texts' rows are picked from the result, so Z (up to 920 MB for 100,000
        texts under 4-layer fusion) is never copied or converted.
        """
        Z, index = self._rows(backbone, clf, texts, cache=cache, progress=progress)
        W, b = clf.head.linear_map()
        W = W.astype(np.float32)
        logits = np.empty((len(Z), len(b)), dtype=np.float64)
        for start in range(0, len(Z), _PREDICT_CHUNK):
            logits[start:start + _PREDICT_CHUNK] = Z[start:start + _PREDICT_CHUNK] @ W
        logits = logits[index] + b
        cal = clf.calibration  # the same temperature clf.predict_proba applies
        return softmax(logits) if cal is None else calibrate(logits, cal.temperature)

    def _rows(self, backbone, clf, texts, *, cache, progress) -> tuple[np.ndarray, np.ndarray]:
        """(Z of every kept row, the row of each text)."""
        with self._lock:
            key = json.dumps([backbone.fingerprint, clf.settings.to_dict(), clf.spec.to_json()])
            if self._state.get("key") != key:
                self._state.update(key=key, rows={},
                                   Z=np.zeros((0, clf.spec.n_features), np.float32))
            rows: dict[str, int] = self._state["rows"]
            new = [t for t in dict.fromkeys(texts) if t not in rows]
            if new:
                self._append(backbone, clf, new, persistent(cache), progress)
            if len(self._state["Z"]) > 2 * max(len(texts), _CHUNK):
                self._keep_only(texts)  # most of the pool was labelled since: drop their rows
            rows = self._state["rows"]
            return self._state["Z"], np.fromiter((rows[t] for t in texts), np.int64, len(texts))

    def _keep_only(self, texts: Sequence[str]) -> None:
        rows, keep = self._state["rows"], list(dict.fromkeys(texts))
        Z = self._state["Z"][[rows[t] for t in keep]]
        self._state.update(rows={t: i for i, t in enumerate(keep)}, Z=Z)

    def _append(self, backbone, clf, new: list[str], cache, progress) -> None:
        parts = [self._state["Z"]]
        for start in range(0, len(new), _CHUNK):
            X = features_for(backbone, new[start:start + _CHUNK], clf.settings, cache=cache)
            parts.append(clf.spec.transform(X))
            if progress is not None:
                progress(min(start + _CHUNK, len(new)), len(new))
        rows = self._state["rows"]
        for i, text in enumerate(new, start=len(parts[0])):
            rows[text] = i
        self._state["Z"] = np.concatenate(parts)
