"""Feature caches: where pooled features of texts are kept between forward passes.

``embed`` reads and writes through any object with ``get_features`` /
``put_features`` (``FeatureCache``): the store (``core.store.Store``, persistent) or a
``MemoryCache`` (an LRU in RAM, optionally in front of the store). Keys are
(``cache_key`` of the backbone, prompt, pooling, text hash).

A large pool is cached compactly: float16, and only ``band_layers`` of each entry (6
of SmolLM2's 31 hidden states and 6 of mpnet's 13: 18 kB a text of the fused default,
where every layer in float32 took 111 kB). Feature selection of a
project is restricted to that band (``core.project.retrain``), so the pool always has
what the head reads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import numpy as np

__all__ = ["FUSION_DEPTHS", "FeatureCache", "MemoryCache", "band_layers", "cache_key", "persistent"]

# the fractions of the depth that the fixed fusion reads (core.learn.features imports
# them from here, so the pool's band always holds the default head's layers); the
# quarter depths were fusion's layers before issue 12 and stay in the band, so a model
# saved then can still be reused on a band-only pool (and auto mode, single layers and
# the layer profile keep the last layer and four depths to choose from). A layer every
# tenth of the depth was in the band too until the fused default doubled the bytes per
# text: 40 kB at 100,000 texts is a 4 GB workspace (bench/scale.py, issue 14's 2 GB bar)
FUSION_DEPTHS = (0.33, 0.5, 0.67)
_QUARTERS = (0.25, 0.5, 0.75, 1.0)


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
    backing store: float16 (``Store.put_features``'s dtype) and only the ``band_layers``
    rows; RAM keeps what was computed.
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
            self.backing.put_features(fingerprint, prompt, pooling, items, dtype=self.store_dtype,
                                      layers=band_layers)
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


def band_layers(n_states: int) -> tuple[int, ...]:
    """The hidden-state rows a compact entry keeps: the fusion depths and the quarter
    depths (the last layer among them); every layer of a backbone of 4 layers or fewer.
    Never the embedding row 0 (token embeddings before any context).

    n_states: layers + 1 of one backbone (each part of a group has its own entries and
    so its own band). Examples: SmolLM2-135M (31 states) -> (8, 10, 15, 20, 22, 30);
    mpnet (13 states) -> (3, 4, 6, 8, 9, 12).
    """
    n_layers = int(n_states) - 1
    if n_layers < 1:
        return (0,)
    return tuple(sorted({max(1, round(n_layers * q)) for q in FUSION_DEPTHS + _QUARTERS}))


def cache_key(backbone, max_length: int) -> str:
    """The feature-cache key part for the backbone: weights and truncation length."""
    return f"{backbone.fingerprint}|max{max_length}"


def persistent(cache):
    """The cache behind a ``MemoryCache`` (or the cache itself): for reading many texts once,
    e.g. a whole 100,000-text pool, without evicting everything the LRU holds."""
    backing = getattr(cache, "backing", None) if isinstance(cache, MemoryCache) else None
    return backing if backing is not None else cache
