"""The feature cache table: pooled hidden states of texts, shared by every project.

Features are cached per (backbone fingerprint, prompt hash, pooling, text hash),
so they are shared by every project that holds the same text. Each entry is the
per-layer pooled hidden state, stored as little-endian bytes of shape
``(n_layers, hidden_size)``: float32 (exact, the default), or float16 when the caller
asks for compact storage (bulk embedding of a large pool: 36 kB instead of 71 kB a text
for SmolLM2, relative error about 5e-4). Entries are always read back as float32.

An entry may hold only some of the rows (``layers``: the pool's band, see
``core.learn.features.band_layers``): it is read back at its full shape with NaN in
the rows it does not hold, so feature selection can tell which layers every text has
and a head that reads a missing row gives NaN, never a wrong number.
"""

import json
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError
from core.hashing import prompt_hash
from core.store.codec import utc_now
from core.store.connection import StoreBase, transactional

__all__ = ["FeatureCacheMixin"]

_DTYPES = {"float32": "<f4", "float16": "<f2"}
# a float16 entry must stay finite: rows with larger values are kept in float32
_FLOAT16_MAX = 6.0e4
# stays under SQLite's oldest default limit of 999 bound variables per statement
_CHUNK = 900


class FeatureCacheMixin(StoreBase):
    """``get_features`` / ``put_features``: the store as a ``core.model.cache.FeatureCache``."""

    def get_features(
        self, fingerprint: str, prompt: str | None, pooling: str, text_hashes: list[str]
    ) -> dict[str, np.ndarray]:
        """Return the cached features among ``text_hashes``: ``{text hash: array}``, hits only.

        Each array is float32 of shape ``(n_layers, hidden_size)`` and writable.
        """
        key = [fingerprint, prompt_hash(prompt), pooling]
        wanted = list(dict.fromkeys(text_hashes))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            rows = self._all(
                "SELECT text_hash, n_layers, hidden_size, dtype, layers, data FROM features "
                "WHERE fingerprint = ? AND prompt_hash = ? AND pooling = ? "
                f"AND text_hash IN ({', '.join('?' * len(chunk))})",
                key + chunk,
            )
            for text_hash, n_layers, hidden_size, dtype, layers, data in rows:
                found[text_hash] = _decoded(n_layers, hidden_size, dtype, layers, data)
        return found

    @transactional
    def put_features(
        self, fingerprint: str, prompt: str | None, pooling: str, items: dict[str, np.ndarray],
        *, dtype: str = "float32", layers: Callable[[int], Sequence[int]] | None = None,
    ) -> None:
        """Cache ``{text hash: array of shape (n_layers, hidden_size)}``, replacing old entries.

        dtype: "float32" (bit-exact) or "float16" (half the bytes; an array with values
        beyond float16's range is stored as float32 anyway).
        layers: keep only these rows, given the entry's row count (e.g. ``band_layers``);
        None keeps every row. Rows that are NaN already (a compact entry read back) are
        never stored as if they were features.
        """
        if dtype not in _DTYPES:
            raise InputError(f"Features are stored as {' or '.join(_DTYPES)}, not {dtype!r}.")
        key = [fingerprint, prompt_hash(prompt), pooling]
        now = utc_now()
        rows = []
        for text_hash, value in items.items():
            array = np.ascontiguousarray(value, dtype=np.float32)
            if array.ndim != 2 or 0 in array.shape:
                raise InputError(
                    f"Features for text {text_hash[:12]} must have shape (n_layers, hidden_size), "
                    f"but got shape {array.shape}."
                )
            kept = _kept_rows(array, layers)
            stored = array if kept is None else array[kept]
            code = _DTYPES[dtype]
            if code == "<f2" and not np.abs(stored).max() < _FLOAT16_MAX:
                code = "<f4"
            rows.append([*key, text_hash, *array.shape, code,
                         None if kept is None else json.dumps(kept),
                         stored.astype(code).tobytes(), now])
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO features (fingerprint, prompt_hash, pooling, text_hash, "
            "n_layers, hidden_size, dtype, layers, data, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _kept_rows(array: np.ndarray, layers) -> list[int] | None:
    """The rows of ``array`` to store, ascending; None for every row."""
    present = np.isfinite(array).all(1)
    wanted = set(range(len(array))) if layers is None else {int(i) for i in layers(len(array))}
    kept = [i for i in sorted(wanted) if 0 <= i < len(array) and present[i]]
    if not kept:
        raise InputError("A feature entry must keep at least one complete layer.")
    return None if len(kept) == len(array) else kept


def _decoded(n_layers: int, hidden_size: int, dtype: str, layers: str | None,
             data: bytes) -> np.ndarray:
    """A stored entry as float32 (n_layers, hidden_size), NaN in the rows it lacks."""
    values = np.frombuffer(data, dtype=np.dtype(dtype))
    if layers is None:
        return values.reshape(n_layers, hidden_size).astype(np.float32)
    rows = json.loads(layers)
    array = np.full((n_layers, hidden_size), np.nan, np.float32)
    array[rows] = values.reshape(len(rows), hidden_size)
    return array
