"""Feature caches: where pooled features of texts are kept between forward passes.

``embed`` reads and writes through any object with ``get_features`` /
``put_features`` (``FeatureCache``): the store (``core.store.Store``, persistent) or a
``MemoryCache`` (an LRU in RAM, optionally in front of the store). Keys are
(``cache_key`` of the backbone, prompt, pooling, text hash).

A large pool is cached compactly: float16, and only ``band_layers`` of each entry (4
of SmolLM2's 31 hidden states and 4 of mpnet's 13: 12 kB a text of the fused default,
where every layer in float32 took 111 kB). Feature selection of a
project is restricted to that band (``core.project.retrain``), so the pool always has
what the head reads, and a submit embeds its texts only up to the band's deepest row
(``band_rows``; the layers above it never run, ``core.model.capture``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import numpy as np

from core.model.group import group_parts, is_fused

__all__ = ["FUSION_DEPTHS", "FeatureCache", "MemoryCache", "band_layers", "band_rows", "cache_key",
           "in_band", "persistent", "pool_rows"]

# the fractions of the depth that the fixed fusion reads (core.learn.features imports
# them from here, so the pool's band always holds the default head's layers); the
# quarter depths were fusion's layers before issue 12, and those up to the deepest
# fusion depth stay in the band (auto mode, single layers and the layer profile choose
# among them). The band stops at the deepest fusion depth so a submit runs only the
# layers up to it (issue 12: the fused default within 2 minutes per 1,000 texts on 2
# cores); the last layer and the 3/4 depth left it then. A layer every tenth of the
# depth was in the band too until the fused default doubled the bytes per text: 40 kB
# at 100,000 texts is a 4 GB workspace (bench/scale.py, issue 14's 2 GB bar)
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
    """The hidden-state rows a compact entry keeps and a submit computes: the fusion
    depths and the quarter depths up to the deepest of them. Never the embedding row 0
    (token embeddings before any context); never a row past the deepest fusion depth,
    so the layers above it need not run.

    n_states: layers + 1 of one backbone (each part of a group has its own entries and
    so its own band). Examples: SmolLM2-135M (31 states) -> (8, 10, 15, 20);
    mpnet (13 states) -> (3, 4, 6, 8); a 2-layer model -> (1,).
    """
    n_layers = int(n_states) - 1
    if n_layers < 1:
        return (0,)
    fusion = {max(1, round(n_layers * q)) for q in FUSION_DEPTHS}
    quarters = {max(1, round(n_layers * q)) for q in _QUARTERS}
    return tuple(sorted(fusion | {r for r in quarters if r <= max(fusion)}))


def band_rows(backbone) -> list[int]:
    """The band's rows of features X (n, n_layers, hidden) on a loaded backbone:
    ``band_layers`` of a single backbone, or of each part of a group at that part's rows
    (``core.model.group.Part``; ``core.project.pool_rows`` is the same from a spec).

    Example: the fused default (31 + 13 states) -> [8, 10, 15, 20, 34, 35, 37, 39].
    """
    if is_fused(backbone):
        return [part.offset + i for part in backbone.parts for i in band_layers(part.n_states)]
    return list(band_layers(backbone.n_layers))


def pool_rows(settings, n_states: int) -> list[int]:
    """The hidden-state rows of X (n, n_states, hidden) that every pool text keeps: the
    band of the settings' backbone (``core.learn.classifier.Settings``; a name, so no
    model need be loaded), or of each part of a group at that part's rows."""
    if is_fused(settings.backbone):
        return [part.offset + i for part in group_parts(settings.backbone)
                for i in band_layers(part.n_states)]
    return list(band_layers(n_states))


def in_band(X: np.ndarray, settings) -> np.ndarray:
    """X (n, n_states, hidden) with NaN outside ``pool_rows``: feature selection then only
    reads the band (``core.learn.features`` selects among complete layers)."""
    kept = np.full(X.shape[1], np.nan, dtype=np.float32)
    kept[pool_rows(settings, X.shape[1])] = 1.0
    return X * kept[None, :, None]


def cache_key(backbone, max_length: int) -> str:
    """The feature-cache key part for the backbone: weights and truncation length."""
    return f"{backbone.fingerprint}|max{max_length}"


def persistent(cache):
    """The cache behind a ``MemoryCache`` (or the cache itself): for reading many texts once,
    e.g. a whole 100,000-text pool, without evicting everything the LRU holds."""
    backing = getattr(cache, "backing", None) if isinstance(cache, MemoryCache) else None
    return backing if backing is not None else cache
