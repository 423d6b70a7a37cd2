"""Feature caches: where pooled features of texts are kept between forward passes.

``embed`` reads and writes through any object with ``get_features`` /
``put_features`` (``FeatureCache``): the store (``core.store.Store``, persistent) or a
``MemoryCache`` (an LRU in RAM, optionally in front of the store). Keys are
(``cache_key`` of the backbone, prompt, pooling, text hash).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import numpy as np

__all__ = ["FeatureCache", "MemoryCache", "cache_key", "persistent"]


class FeatureCache(Protocol):
    def get_features(self, fingerprint: str, prompt: str | None, pooling: str,
                     text_hashes: list[str]) -> dict[str, np.ndarray]: ...

    def put_features(self, fingerprint: str, prompt: str | None, pooling: str,
                     items: dict[str, np.ndarray]) -> None: ...


class MemoryCache:
    """An in-memory LRU in front of a persistent feature cache (the Store).

    SQLite connections are bound to a thread, so the app builds a MemoryCache per
    rerun around the rerun's Store and a process-wide ``items`` dict it keeps alive;
    a retrain then reads features from RAM. ``max_items`` bounds memory (one SmolLM2
    text is ~71 kB per pooling). ``store_dtype="float16"`` writes compact entries to the
    backing store (``Store.put_features``'s dtype); RAM keeps what was computed.
    """

    def __init__(self, backing=None, *, items: OrderedDict | None = None, max_items: int = 20_000,
                 store_dtype: str = "float32"):
        self.backing = backing
        self.max_items = max_items
        self.store_dtype = store_dtype
        self._items: OrderedDict = items if items is not None else OrderedDict()

    def get_features(self, fingerprint, prompt, pooling, text_hashes):
        hits, missing = {}, []
        for h in text_hashes:
            key = (fingerprint, prompt, pooling, h)
            try:  # several app sessions share the items; tolerate a concurrent eviction
                hits[h] = self._items[key]
                self._items.move_to_end(key)
            except KeyError:
                missing.append(h)
        if missing and self.backing is not None:
            found = self.backing.get_features(fingerprint, prompt, pooling, missing)
            self._remember(fingerprint, prompt, pooling, found)
            hits.update(found)
        return hits

    def put_features(self, fingerprint, prompt, pooling, items):
        if self.backing is not None and self.store_dtype != "float32":
            self.backing.put_features(fingerprint, prompt, pooling, items, dtype=self.store_dtype)
        elif self.backing is not None:
            self.backing.put_features(fingerprint, prompt, pooling, items)
        self._remember(fingerprint, prompt, pooling, items)

    def _remember(self, fingerprint, prompt, pooling, items):
        for h, v in items.items():
            self._items[(fingerprint, prompt, pooling, h)] = v
        while len(self._items) > self.max_items:
            try:
                self._items.popitem(last=False)
            except KeyError:
                break


def cache_key(backbone, max_length: int) -> str:
    """The feature-cache key part for the backbone: weights and truncation length."""
    return f"{backbone.fingerprint}|max{max_length}"


def persistent(cache):
    """The cache behind a ``MemoryCache`` (or the cache itself): for reading many texts once,
    e.g. a whole 100,000-text pool, without evicting everything the LRU holds."""
    backing = getattr(cache, "backing", None) if isinstance(cache, MemoryCache) else None
    return backing if backing is not None else cache
