"""The feature cache table: pooled hidden states of texts, shared by every project.

Features are cached per (backbone fingerprint, prompt hash, pooling, text hash),
so they are shared by every project that holds the same text. Each entry is the
per-layer pooled hidden state, stored as little-endian bytes of shape
``(n_layers, hidden_size)``: float32 (exact, the default), or float16 when the caller
asks for compact storage (bulk embedding of a large pool: 36 kB instead of 71 kB a text
for SmolLM2, relative error about 5e-4). Entries are always read back as float32.
"""


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
                "SELECT text_hash, n_layers, hidden_size, dtype, data FROM features "
                "WHERE fingerprint = ? AND prompt_hash = ? AND pooling = ? "
                f"AND text_hash IN ({', '.join('?' * len(chunk))})",
                key + chunk,
            )
            for text_hash, n_layers, hidden_size, dtype, data in rows:
                array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(n_layers, hidden_size)
                found[text_hash] = array.astype(np.float32)
        return found

    @transactional
    def put_features(
        self, fingerprint: str, prompt: str | None, pooling: str, items: dict[str, np.ndarray],
        *, dtype: str = "float32",
    ) -> None:
        """Cache ``{text hash: array of shape (n_layers, hidden_size)}``, replacing old entries.

        dtype: "float32" (bit-exact) or "float16" (half the bytes; an array with values
        beyond float16's range is stored as float32 anyway).
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
            code = _DTYPES[dtype]
            if code == "<f2" and not np.abs(array).max() < _FLOAT16_MAX:
                code = "<f4"
            rows.append([*key, text_hash, *array.shape, code, array.astype(code).tobytes(), now])
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO features (fingerprint, prompt_hash, pooling, text_hash, "
            "n_layers, hidden_size, dtype, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
