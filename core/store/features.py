"""The feature cache table: pooled hidden states of texts, shared by every project.

Features are cached per (backbone fingerprint, prompt hash, pooling, text hash),
so they are shared by every project that holds the same text. Each entry is the
per-layer pooled hidden state, stored as little-endian float32 bytes of shape
``(n_layers, hidden_size)``.
"""


import numpy as np

from core.errors import InputError
from core.hashing import prompt_hash
from core.store.codec import utc_now
from core.store.connection import StoreBase, transactional

__all__ = ["FeatureCacheMixin"]

_FEATURE_DTYPE = "<f4"
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
        self, fingerprint: str, prompt: str | None, pooling: str, items: dict[str, np.ndarray]
    ) -> None:
        """Cache ``{text hash: array of shape (n_layers, hidden_size)}``, replacing old entries."""
        key = [fingerprint, prompt_hash(prompt), pooling]
        now = utc_now()
        rows = []
        for text_hash, value in items.items():
            array = np.ascontiguousarray(value, dtype=_FEATURE_DTYPE)
            if array.ndim != 2 or 0 in array.shape:
                raise InputError(
                    f"Features for text {text_hash[:12]} must have shape (n_layers, hidden_size), "
                    f"but got shape {array.shape}."
                )
            rows.append([*key, text_hash, *array.shape, _FEATURE_DTYPE, array.tobytes(), now])
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO features (fingerprint, prompt_hash, pooling, text_hash, "
            "n_layers, hidden_size, dtype, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
