"""SHAP token attributions: shap's Partition explainer with a Text masker.

The Text masker masks the user's text only; the prompt is put around every masked
string by the same tokenisation as training, and the masked strings' features come
from ``core.model.prefix.PrefixEmbedder`` (causal decoders: equal to ``features_for``'s to
float32 rounding, 2.5x faster in bench/BENCHMARKS.md) or ``features_for``. Results are
kept in the store per model version and text. Under echo embeddings every masked
string is wrapped twice by the same template (both copies masked alike) through
``features_for``. Shortcut admitted: the masker collapses whitespace inside partly
masked strings.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import InputError
from core.hashing import text_hash
from core.learn.classifier import features_for
from core.model import prefix
from core.model.cache import MemoryCache
from core.model.embed import embed
from core.model.group import is_fused, parts_of

__all__ = ["ShapResult", "SHAP_MAX_EVALS", "SHAP_BATCH_SIZE", "shap_attributions", "warm_up"]

# SHAP budget (masked strings per explanation) and batch (masked strings per model call),
# measured with `bench/explain.py --sweep 96,144 --sweep-batches 16,32,48 --sweep-n 10`
# on SmolLM2-135M, 10 SST-2 sentences of 18-22 tokens, 2 idle CPU cores. The full Owen
# tree took 316-468 strings. Spearman of the word ranking against the full tree
# (median / min over sentences; seconds per sentence with the shared-prefix path):
#   96 strings: 0.83 / 0.57 (2.0 s)     144, batch 16: 0.90 / 0.81 (2.8 s)
#   144, batch 32 or 48: 0.90 / 0.63 (2.7-2.8 s)
# (session 2, 4 sentences: 48 strings 0.80 / 0.34.) Partition drains its priority queue
# one batch at a time, so small batches spend the budget on the coalitions that move
# the logits most; larger batches were not faster. Efficiency (values + base == logits)
# holds at any budget.
SHAP_MAX_EVALS = 144
SHAP_BATCH_SIZE = 16
# bump when the SHAP computation changes, so stored results are not reused
_SHAP_VERSION = 1


@dataclass(frozen=True)
class ShapResult:
    """Partition-SHAP values of one text for every class logit.

    tokens: the Text masker's pieces of the user's text (a token with the spaces that
        follow it); spans: their (start, end) in the user's text.
    values: float64 (n_tokens, K); base_values: (K,) the logits with every token masked;
    logits: (K,) of the full text. values.sum(0) + base_values == logits: Partition
        SHAP is exactly efficient whatever the evaluation budget.
    max_evals: the budget; n_evals: masked strings embedded (at most max_evals).
    """

    tokens: list[str]
    spans: list[tuple[int, int]]
    values: np.ndarray
    base_values: np.ndarray
    logits: np.ndarray
    max_evals: int
    n_evals: int
    seconds: float
    cached: bool = False


def shap_attributions(backbone, clf, text: str, *, max_evals: int = SHAP_MAX_EVALS,
                      batch_size: int = SHAP_BATCH_SIZE, store=None, model_id: int | None = None,
                      cache=None, progress: Callable[[int, int], None] | None = None,
                      random_state: int = 0) -> ShapResult:
    """SHAP values of the classifier's logits (all classes) over the tokens of ``text``.

    The Text masker masks the user's text only; every masked string is wrapped in the
    prompt and embedded by ``features_for``, as in training. store/model_id: read the
    result from, and keep it in, ``store.put_explanation(model_id, "shap", ...)``.
    cache: a feature cache for the full text only (masked strings stay in memory); the
    pages pass the store's, so the logits explained are the predictions' own.
    progress(done, total) is called after each batch of masked strings.
    """
    if not text.strip():
        raise InputError("There is no text to explain: type or pick a sentence first.")
    if (store is None) != (model_id is None):
        raise InputError("Pass both store and model_id to keep SHAP results, or neither.")
    if int(max_evals) < 3 or int(batch_size) < 1:
        raise InputError(f"max_evals must be at least 3 and batch_size at least 1; "
                         f"got {max_evals} and {batch_size}.")
    key = f"{text_hash(text)}|evals{int(max_evals)}|batch{int(batch_size)}|v{_SHAP_VERSION}"
    if store is not None:
        hit = store.get_explanation(model_id, "shap", key)
        if hit is not None:
            return _shap_from_state(*hit)
    result = _run_shap(backbone, clf, text, int(max_evals), int(batch_size), cache, progress,
                       random_state)
    if store is not None:
        store.put_explanation(model_id, "shap", key, *_shap_state(result))
    return result


def _run_shap(backbone, clf, text, max_evals, batch_size, cache, progress, random_state):
    import shap

    start = time.perf_counter()
    warm_up()
    embed_masked = _masked_embedder(backbone, clf, text)
    # the logits to explain: the user's predictions' features when cached, else the
    # text's features from the path that embeds the masked strings
    X = features_for(backbone, [text], clf.settings, cache=cache) if cache is not None else embed_masked([text])
    # the masker collapses whitespace even in the unmasked text: map it back to the
    # user's exact text so values + base == the logits the user sees
    whole, n_evals = re.sub(r"\s+", " ", text).strip(), [0]

    def f(strings) -> np.ndarray:
        strings = [str(x) for x in strings]
        out = clf.decision_features(embed_masked(strings))
        out[[x == whole for x in strings]] = clf.decision_features(X)[0]
        n_evals[0] += len(strings)
        if progress:
            progress(min(n_evals[0], max_evals), max_evals)
        return out

    masker = shap.maskers.Text(backbone.tokenizer)
    with _global_numpy_seed(random_state):
        exp = shap.Explainer(f, masker, algorithm="partition")([text], max_evals=max_evals,
                                                              batch_size=batch_size, silent=True)
    if progress:
        progress(max_evals, max_evals)
    tokens = [str(t) for t in exp.data[0]]
    return ShapResult(tokens, _masker_spans(backbone.tokenizer, text, len(tokens)),
                      np.asarray(exp.values[0], np.float64), np.asarray(exp.base_values[0], np.float64),
                      clf.decision_features(X)[0].astype(np.float64), max_evals, n_evals[0],
                      time.perf_counter() - start)


@contextmanager
def _global_numpy_seed(seed: int):
    """Seed numpy's global RNG for the block, then restore it.

    shap's Partition explainer breaks priority ties with ``np.random.randn()`` and takes
    no Generator, so this is the one place tenshot touches the global RNG. The lock
    keeps two explanations in two threads from reseeding each other mid-run; tenshot
    itself draws only from seeded Generators elsewhere.
    """
    with _seed_lock:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


_seed_lock = threading.Lock()


def _masked_embedder(backbone, clf, text: str) -> Callable[[list[str]], np.ndarray]:
    """Features of masked strings of ``text``: on a causal decoder through
    ``PrefixEmbedder`` (shared prefixes run once, layers above the head's deepest not
    at all), otherwise through ``features_for`` with repeats kept in memory. A fused
    model runs each part on its own path (``_group_embedder``)."""
    s = clf.settings
    # echo wraps each masked string twice and pools the second copy; the prefix path
    # packs one wrapped copy, so echo models take features_for (the training path itself)
    if is_fused(backbone) and clf.spec.parts and not s.echo:
        return _group_embedder(backbone, clf, text)
    if clf.spec.mode != "multi" and not s.echo and prefix.supports(backbone, s.max_length):
        return prefix.PrefixEmbedder(backbone, text, prompt=s.prompt, pooling=s.pooling,
                                     layers=clf.spec.layers, max_length=s.max_length)
    masked = MemoryCache(max_items=4 * SHAP_MAX_EVALS)  # repeated masked strings cost nothing
    return lambda strings: features_for(backbone, strings, s, cache=masked)


def _group_embedder(group, clf, text: str) -> Callable[[list[str]], np.ndarray]:
    """Masked strings' features on a fused model, stacked and padded as ``features_for``
    stacks a group's: a causal part (the default's SmolLM2) through ``PrefixEmbedder``
    on the layers its own spec reads, any other part (a sentence encoder: every token
    sees the whole text, so no prefix is shared) through ``embed`` with repeats kept in
    memory, run only up to the deepest layer its spec reads."""
    s = clf.settings
    layers = {part.name: spec.layers for part, spec in clf.spec.parts}
    paths = []
    for part, bb, part_prompt in parts_of(group, s.prompt):
        if prefix.supports(bb, s.max_length):
            paths.append((part, prefix.PrefixEmbedder(bb, text, prompt=part_prompt, pooling=s.pooling,
                                                      layers=layers[part.name], max_length=s.max_length)))
            continue
        masked = MemoryCache(max_items=4 * SHAP_MAX_EVALS)
        # only the part's own layers: the encoder stops after the deepest (NaN above it)
        paths.append((part, functools.partial(embed, bb, pooling=s.pooling, prompt=part_prompt,
                                              max_length=s.max_length, cache=masked,
                                              rows=layers[part.name])))

    def run(strings: list[str]) -> np.ndarray:
        X = np.zeros((len(strings), group.n_layers, group.hidden_size), np.float32)
        for part, path in paths:
            X[:, part.rows, :part.width] = path(strings)
        return X

    return run


def warm_up() -> None:
    """Import shap and compile its Partition explainer (numba) once per process, on a
    throwaway text. Thread-safe: later calls return at once, concurrent ones wait.

    The first explanation in a process took 10.6 s instead of 3.2 s on the default
    backbone; after this warm-up (7 s, no language model involved) it took 2.9 s. The
    Explain page starts it in the background when it opens, and ``shap_attributions``
    calls it first, so shap is never imported and compiled by two threads at once (an
    Explain page test hung when that happened).
    """
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        import shap

        shap.Explainer(lambda x: np.zeros((len(x), 2)), shap.maskers.Text(), algorithm="partition")(
            ["a short text to warm the explainer up"], max_evals=20, silent=True)
        _warmed = True


_warm_lock, _warmed = threading.Lock(), False


def _masker_spans(tokenizer, text: str, n_tokens: int) -> list[tuple[int, int]]:
    """(start, end) of each Text-masker piece: a token up to where the next one starts."""
    offsets = [(0, 0) if o is None else tuple(o)
               for o in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]
    spans = [(a, max(b, nxt[0])) for (a, b), nxt in zip(offsets, offsets[1:])] + offsets[-1:]
    if len(spans) != n_tokens:
        raise InputError(f"SHAP returned {n_tokens} tokens but the tokenizer gives "
                         f"{len(spans)}; this tokenizer is not supported for SHAP.")
    return spans


def _shap_state(r: ShapResult) -> tuple[dict, dict[str, np.ndarray]]:
    params = {"tokens": r.tokens, "spans": [list(sp) for sp in r.spans], "max_evals": r.max_evals,
              "n_evals": r.n_evals, "seconds": r.seconds}
    return params, {"values": r.values, "base_values": r.base_values, "logits": r.logits}


def _shap_from_state(params: dict, arrays: dict[str, np.ndarray]) -> ShapResult:
    return ShapResult(list(params["tokens"]), [tuple(sp) for sp in params["spans"]],
                      arrays["values"], arrays["base_values"], arrays["logits"],
                      int(params["max_evals"]), int(params["n_evals"]), float(params["seconds"]),
                      cached=True)
