"""The pool's geometry for active learning: compact vectors, typicality and coverage.

The Label page's suggestions (``core.active``) weigh a text by how *typical* it is of
the pool (texts in dense regions stand for many others; a lone, odd text teaches the
head little), while labels are few pick texts from regions no label covers yet, and
past that prefer, among the most uncertain texts, one with many unsure neighbours.
Both need a notion of "close", measured here on the head's own inputs (the pool's
``Z``, ``core.learn.pool.PoolMatrix``), squeezed into a few principal directions.

Shortcuts: the principal directions come from a randomised SVD (a few power
iterations, seeded), typicality is measured against a random sample of at most
``_REFERENCE`` texts, and k-means runs a fixed small number of Lloyd steps. All three
are approximations that keep a 5,000-text pool well under a second; none needs to be
exact to rank texts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compact", "typicality", "kmeans", "uncovered_pick", "band_density"]

_DIM = 32  # principal directions kept: enough to separate topics, cheap to compare
_NEIGHBOURS = 10  # typicality: mean similarity to this many nearest texts
_REFERENCE = 2000  # typicality is measured against at most this many texts
_STEPS = 15  # Lloyd iterations of k-means
_BAND_NEIGHBOURS = 5  # band density: mean similarity to this many nearest unsure texts


def compact(Z: np.ndarray, dim: int = _DIM, *, random_state: int = 0) -> np.ndarray:
    """Unit-norm rows of Z's top principal components: float32 (n, min(dim, n, d)).

    Z: float (n, d) head inputs. Columns are standardised first, so no single
    high-variance neuron (an LLM's massive activations) dominates the directions.
    """
    Z = np.asarray(Z, dtype=np.float32)
    n, d = Z.shape
    k = max(1, min(dim, n, d))
    Zc = Z - Z.mean(0)
    Zc /= np.maximum(Zc.std(0), 1e-6)
    rng = np.random.default_rng(random_state)
    Q = Zc @ rng.standard_normal((d, min(k + 8, d))).astype(np.float32)
    for _ in range(2):  # power iterations sharpen the leading directions
        Q, _ = np.linalg.qr(Zc @ (Zc.T @ Q))
    U, S, _ = np.linalg.svd(Q.T @ Zc, full_matrices=False)
    V = Q @ (U[:, :k] * S[:k])  # Zc's scores on its top k principal directions
    return _unit(V.astype(np.float32))


def _unit(V: np.ndarray) -> np.ndarray:
    return V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)


def typicality(V: np.ndarray, *, k: int = _NEIGHBOURS, reference: int = _REFERENCE,
               random_state: int = 0) -> np.ndarray:
    """Mean cosine similarity of each row of V (n, d) to its k nearest other rows -> (n,).

    Measured against a seeded random sample of at most ``reference`` rows (a row is
    never its own neighbour). Example: two tight pairs far apart and one outlier ->
    the four paired rows score near 1, the outlier lowest.
    """
    n = len(V)
    if n < 2:
        return np.ones(n)
    rng = np.random.default_rng(random_state)
    ref = np.sort(rng.permutation(n)[:reference]) if n > reference else np.arange(n)
    k = max(1, min(k, len(ref) - 1))
    sims = V @ V[ref].T
    sims[ref, np.arange(len(ref))] = -np.inf  # not one's own neighbour
    top = np.partition(sims, -k, axis=1)[:, -k:]
    return top.mean(1)


def kmeans(V: np.ndarray, k: int, *, steps: int = _STEPS, random_state: int = 0) -> np.ndarray:
    """Cluster of each row of V (n, d) under k-means with k-means++ starts -> int (n,).

    Seeded, so the same pool and k give the same clusters. k is capped at n.
    """
    n = len(V)
    k = max(1, min(k, n))
    rng = np.random.default_rng(random_state)
    centres = [V[rng.integers(n)]]
    d2 = ((V - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(V[i])
        d2 = np.minimum(d2, ((V - V[i]) ** 2).sum(1))
    C = np.array(centres)
    for _ in range(steps):
        assign = _nearest(V, C)
        for j in range(k):
            members = V[assign == j]
            if len(members):
                C[j] = members.mean(0)
    return _nearest(V, C)


def _nearest(V: np.ndarray, C: np.ndarray) -> np.ndarray:
    return ((C ** 2).sum(1)[None, :] - 2 * V @ C.T).argmin(1)


def uncovered_pick(V: np.ndarray, labelled: np.ndarray, score: np.ndarray, *,
                   random_state: int = 0) -> int:
    """The best-scoring candidate of the largest region that no labelled text is in.

    V: (m, d) candidates' vectors; labelled: (L, d) labelled texts' vectors; score: (m,)
    what ranks candidates inside a region (e.g. typicality). The candidates and the
    labelled texts are clustered together into L + 1 regions, so at least one region
    holds no labelled text (TypiClust's cold start, one label at a time).
    """
    both = np.vstack([V, labelled]) if len(labelled) else V
    assign = kmeans(both, len(labelled) + 1, random_state=random_state)
    covered = set(assign[len(V):].tolist())
    sizes = np.bincount(assign[:len(V)], minlength=assign.max() + 1)
    free = [c for c in np.argsort(-sizes, kind="stable") if c not in covered and sizes[c] > 0]
    region = np.flatnonzero(assign[:len(V)] == free[0]) if free else np.arange(len(V))
    return int(region[np.argmax(score[region])])


def band_density(Z: np.ndarray, labelled: np.ndarray | None = None, *, k: int = _BAND_NEIGHBOURS,
                 random_state: int = 0) -> np.ndarray:
    """Rank of how crowded each text of an uncertain band is by the band's others -> (b,), in (0, 1].

    Z: float (b, d) head inputs of the band (the most uncertain candidates); labelled: (L, d)
    head inputs of labelled texts, which only help find the principal directions (``compact``
    over the band and them). A text's crowding is its mean similarity to its k nearest other
    band texts (``typicality``); the most crowded gets 1, the loneliest 1/b. A label settles
    the head's doubt about the texts around it, so a crowded unsure text settles more of it
    than a lone one. Example: five unsure texts of one kind and one odd one -> the odd one
    gets 1/6.
    """
    both = np.vstack([Z, labelled]) if labelled is not None and len(labelled) else Z
    band = compact(both, random_state=random_state)[:len(Z)]
    dense = typicality(band, k=k, random_state=random_state)
    order = np.argsort(np.argsort(dense, kind="stable"), kind="stable")
    return (order + 1) / len(dense)
