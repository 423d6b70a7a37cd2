"""The unlabelled pool's head inputs Z, kept in RAM so a submit predicts with one product.

A submit that only refits the head (the feature spec is reused) changes nothing about
the pool's features: ``PoolMatrix`` keeps Z = spec.transform(X) of every pool text,
keyed by the backbone, the settings that make X, and the spec, and on the next submit
reads features only for texts it has not seen. When the spec changes (re-selection,
other settings) Z is rebuilt once, reading the pool's features in chunks straight from
the persistent cache, so the RAM feature LRU is not filled with 100,000 texts.

``predict_unlabelled`` also keeps the project's texts (ids and strings, read from SQLite
again only when ``Store.text_version`` says a text changed) and the Z row of each, so a
head-only submit on a 100,000-text pool does no per-text Python work: it picks the
unlabelled rows with numpy and multiplies.

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

    def predict_unlabelled(self, store, project_id: int, backbone, clf: Classifier, labelled_ids,
                           *, cache=None, progress: Callable[[int, int], None] | None = None,
                           labelled: tuple[Sequence[str], np.ndarray] | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """(text ids (n,), probabilities (n, n_classes)) of the project's texts that are not
        in ``labelled_ids``, by text id; the probabilities equal ``predict_proba``'s.

        The texts are read from the store only when one was added, edited or deleted
        since the last call, and features only for texts Z does not hold yet.
        labelled: (the labelled texts, their features X (n, n_states, hidden)) as the
        retrain just read them; Z then holds their rows too (for ``held``), read from X.
        """
        with self._lock:
            ids, texts = self._columns(store, project_id)
            keep = np.flatnonzero(~np.isin(ids, np.fromiter(labelled_ids, np.int64)))
            self._start(backbone, clf)
            where = self._placed(backbone, clf, texts, keep, persistent(cache), progress)
            probs = self._probabilities(clf, where[keep])
            if labelled is not None:
                self._remember(clf, *labelled)
            return ids[keep], probs

    def held(self, texts: Sequence[str]) -> np.ndarray | None:
        """Z's rows of ``texts`` (float32 (n, d)) when it holds every one of them, else None.

        Reads no features: what the last ``predict_unlabelled`` placed, the labelled texts
        it was given included (active learning compares unlabelled texts with labelled ones).
        """
        with self._lock:
            rows = self._state.get("rows")
            if rows is None or not all(t in rows for t in texts):
                return None
            return self._state["Z"][np.fromiter((rows[t] for t in texts), np.int64, len(texts))]

    def matrix(self, backbone, clf: Classifier, texts: Sequence[str], *, cache=None,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Z: float32 (len(texts), d) equal to ``clf.spec.transform(features_for(...))``.

        Only texts not seen under this key have their features read (or computed).
        """
        with self._lock:
            index = self._rows(backbone, clf, texts, cache=cache, progress=progress)
            return self._state["Z"][index]

    def predict_proba(self, backbone, clf: Classifier, texts: Sequence[str], *, cache=None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Probabilities (n, n_classes), equal to ``clf.predict_proba(backbone, texts)``
        (calibrated by the model's temperature, when it has one)."""
        with self._lock:
            index = self._rows(backbone, clf, texts, cache=cache, progress=progress)
            return self._probabilities(clf, index)

    def _remember(self, clf: Classifier, texts: Sequence[str], X: np.ndarray) -> None:
        """Add Z rows for those of ``texts`` (features X) that Z does not hold yet."""
        rows = self._state["rows"]
        new = [i for i, t in enumerate(texts) if t not in rows]
        if not new:
            return
        for i, at in zip(new, range(len(self._state["Z"]), len(self._state["Z"]) + len(new))):
            rows[texts[i]] = at
        # ``where`` keeps -1 for these texts: it is read for unlabelled texts only
        self._state["Z"] = np.concatenate([self._state["Z"], clf.spec.transform(X[new]).astype(np.float32)])

    def _probabilities(self, clf: Classifier, index: np.ndarray) -> np.ndarray:
        """Probabilities of Z's rows ``index``.

        One product with the head's linear map on raw Z in float32 (Z's own precision:
        probabilities agree with the head's float64 path to about 1e-6), over every row
        kept; the wanted rows are picked from the result, so Z (up to 920 MB for 100,000
        texts under 4-layer fusion) is never copied or converted.
        """
        Z = self._state["Z"]
        W, b = clf.head.linear_map()
        W = W.astype(np.float32)
        logits = np.empty((len(Z), len(b)), dtype=np.float64)
        for start in range(0, len(Z), _PREDICT_CHUNK):
            logits[start:start + _PREDICT_CHUNK] = Z[start:start + _PREDICT_CHUNK] @ W
        logits = logits[index] + b
        cal = clf.calibration  # the same temperature clf.predict_proba applies
        return softmax(logits) if cal is None else calibrate(logits, cal.temperature)

    def _columns(self, store, project_id: int) -> tuple[np.ndarray, list[str]]:
        """(ids (n,) int64, texts) of every live text of the project, kept until one changes."""
        version = (store.path, project_id, store.text_version(project_id))
        if self._state.get("texts_version") != version:
            # the version is read first: a change landing between the two reads makes the
            # kept version look older than the texts, so the next call reads again
            ids, texts = store.text_columns(project_id)
            self._state.update(texts=(np.array(ids, dtype=np.int64), texts), texts_version=version,
                               where_tag=None)
        return self._state["texts"]

    def _placed(self, backbone, clf, texts: list[str], keep: np.ndarray, cache,
                progress) -> np.ndarray:
        """The Z row of each of ``texts`` (-1 where Z has none), after adding rows for
        ``texts[keep]``; kept between calls while the texts and Z's rows stay put."""
        tag = (self._state["texts_version"], self._state["key"])
        if self._state.get("where_tag") != tag:
            rows = self._state["rows"]
            self._state.update(where=np.fromiter((rows.get(t, -1) for t in texts), np.int64,
                                                 len(texts)), where_tag=tag)
        where = self._state["where"]
        missing = keep[where[keep] < 0]
        if len(missing):
            self._append(backbone, clf, [texts[i] for i in missing], cache, progress)
            rows = self._state["rows"]
            where[missing] = [rows[texts[i]] for i in missing]
        if len(self._state["Z"]) > 2 * max(len(keep), _CHUNK):
            self._keep_only([texts[i] for i in keep])  # most of the pool was labelled since
            return self._placed(backbone, clf, texts, keep, cache, progress)
        return where

    def _start(self, backbone, clf) -> None:
        """Forget Z when the backbone, the settings or the spec changed."""
        key = json.dumps([backbone.fingerprint, clf.settings.to_dict(), clf.spec.to_json()])
        if self._state.get("key") != key:
            self._state.update(key=key, rows={}, Z=np.zeros((0, clf.spec.n_features), np.float32),
                               where_tag=None)

    def _rows(self, backbone, clf, texts, *, cache, progress) -> np.ndarray:
        """The Z row of each text, reading features for texts Z does not hold."""
        self._start(backbone, clf)
        rows: dict[str, int] = self._state["rows"]
        new = [t for t in dict.fromkeys(texts) if t not in rows]
        if new:
            self._append(backbone, clf, new, persistent(cache), progress)
        if len(self._state["Z"]) > 2 * max(len(texts), _CHUNK):
            self._keep_only(texts)  # most of the pool was labelled since: drop their rows
        rows = self._state["rows"]
        return np.fromiter((rows[t] for t in texts), np.int64, len(texts))

    def _keep_only(self, texts: Sequence[str]) -> None:
        rows, keep = self._state["rows"], list(dict.fromkeys(texts))
        Z = self._state["Z"][[rows[t] for t in keep]]
        self._state.update(rows={t: i for i, t in enumerate(keep)}, Z=Z, where_tag=None)

    def _append(self, backbone, clf, new: list[str], cache, progress) -> None:
        parts = [self._state["Z"]]
        for start in range(0, len(new), _CHUNK):
            # only the rows the head reads: a band-only pool entry serves them, and the
            # layers above the deepest need not run for a text not cached yet
            X = features_for(backbone, new[start:start + _CHUNK], clf.settings, cache=cache,
                             rows=clf.spec.layers)
            parts.append(clf.spec.transform(X))
            if progress is not None:
                progress(min(start + _CHUNK, len(new)), len(new))
        rows = self._state["rows"]
        for i, text in enumerate(new, start=len(parts[0])):
            rows[text] = i
        self._state["Z"] = np.concatenate(parts)
