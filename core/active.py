"""Which sentence to label next, and the rows of the bulk-labelling table.

Before a model exists, sentences come in a seeded random order: an unbiased
start, reproducible from ``random_state``. Once a model has predicted the
unlabelled sentences, the next one is the most *uncertain* (smallest margin
between the two most probable classes), discounted when it is a *near-duplicate*
of a sentence labelled recently or already picked in the same batch, so that
near-duplicates of what was just labelled do not come up again and again. Only
similarity above ordinary overlap counts: penalising all of it favoured short,
odd sentences (issue 12; bench/active.py measures the strategy against random).
When some classes have far more labels than others, the score also rewards the
probability that a text belongs to a class with few labels (``balance_need``):
labellers skip suggestions for classes they consider full, which wasted 29 of
70 suggestions in one session.

When the page hands over the pool's head inputs (``PoolMatrix.held``; issue 12 item 5),
two more rules use the head's own space (``core.active_space``):
- typicality (a knob, off by default: it measured worse past the cold start): the
  uncertainty is multiplied by the rank of how typical a text is (mean similarity to
  its nearest texts) to the power ``typical``;
- cold start: while there are fewer than ``_COLD`` labels per class, the margin is
  still mostly noise, so the next text is the most typical one of the largest region
  (k-means with one region more than there are labels) that holds no label yet;
- past it, only the ``_BAND`` most uncertain texts compete, each weighed by how crowded
  it is by the band's others (``band_density``): a label settles the head's doubt about
  the texts around it, so a lone unsure text is worth less than one among many.
Measured against random and class-balanced random in bench/active.py (BENCHMARKS.md).

Shortcut: near-duplicates are found on hashed character trigrams of the text, not
on the backbone's features: it catches the copies that waste a labeller's time, and
works before any model exists. Without the pool's head inputs (a fresh process that
has not trained yet), suggestions fall back to uncertainty and balance alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from core.active_space import band_density, compact, typicality, uncovered_pick
from core.learn.solver import BLAS

__all__ = ["COVERING", "Suggestion", "TableRow", "cold_start_labels", "margin_uncertainty", "balance_need",
           "entropy_uncertainty", "text_vectors", "pick", "suggest", "next_for_project",
           "table_rows", "filter_rows"]

_DIM = 1024  # hashed trigram buckets: plenty for sentence-length texts
_POOL = 30  # only the most uncertain candidates compete on diversity
_RECENT = 20  # how many recently labelled texts the diversity term looks at
_BALANCE = 0.7  # weight of class balance when one class has all labels and another none
# Trigram cosine between two unrelated sentences is 0.2-0.45 (SST-2, CR, TREC pools); a
# penalty on all of it favoured short, odd texts with few common trigrams, so only the
# similarity above this counts: near-duplicates (0.8+) are still passed over.
_NEAR = 0.6
# below this many labels per class, the first pick covers a region of the pool with no label
# (bench/active.py on the five tuning sets, labels to reach random's 32/class accuracy:
# 4 -> SST-2 52%, CR 80%, TREC 49%, SUBJ never, SMS 16%; 8 -> 44%, 74%, 53%, 72%, 26%,
# mean 54% against 59%; 16 -> 85%, 61%, 69%, 62%, 52%. 3 seeds and 200 test texts move
# these by 10-20 points between reruns, so 8 is the best measured, not a sharp optimum).
# Remeasured with 500 test texts and 6 seeds (pool 400; bench/results/active/
# cold-8-test500-6seeds): 8 -> SST-2 never, CR 52%, TREC 53%, SUBJ 62%, SMS 33%.
_COLD = 8.0
# the reason a cold-start pick gives (the Label page words its caption from it)
COVERING = "a kind of text with no label yet"
# how strongly typicality weighs the uncertainty past the cold start: uncertainty *
# typicality_rank ** _TYPICAL; 1 lowered SST-2's curve from 8/class on, so it is off
_TYPICAL = 0.0
# the pool's geometry (a PCA and k-means over the candidates) is drawn from a seeded
# sample of at most this many candidates: 0.56 s a suggestion on 5,000 texts of the
# fused default (bench/active.py --time-suggestion 5000, load 3.5) would be ~10 s on a
# 100,000-text pool (issue 14: a label stays interactive)
_SPACE_MAX = 5000
# past the cold start, the uncertainty of the _BAND most uncertain candidates is multiplied by
# the rank of how crowded each is by the others (core.active_space.band_density); the rest
# wait. Labels to reach random's 32/class accuracy (pool 400, test 500, 6 seeds, the same
# random states; bench/results/active/band-density-test500-6seeds against
# cold-8-test500-6seeds-app-rerun): SST-2 88%, CR 59%, TREC 56%, SUBJ 50%, SMS 29% against
# 98%, 59%, 54%, 68%, 31% with the margin alone (mean 56% against 62%); the mean accuracy over
# random from 4 to 32 labels/class is the same (+1.5 points). The app's random state alone moves
# these by ~7 points. Weighing by distance from the labelled texts measured worse (3 seeds:
# TREC 71%, CR 73%). Band sizes, same runs (bench/results/active/band{20,100,200}-test500-6seeds):
# 20 -> mean 63%, 50 -> 56%, 100 -> 53% (SST-2 82%, CR 48%, TREC 57%, SUBJ 50%, SMS 28%),
# 200 -> 58%; 100 is the best measured (within the noise of 50), and SST-2 misses at every size
_BAND = 100
#: labels each class needs before a model can be trained (the head's cross-validation)


@dataclass(frozen=True)
class Suggestion:
    """A text to label next, with the latest model's guess (None while there is no model)."""

    text_id: int
    text: str
    uncertainty: float | None
    reason: str
    guess: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class TableRow:
    """One row of the bulk-labelling table; ``predicted``/``confidence`` are None without a model."""

    text_id: int
    text: str
    label: str | None
    predicted: str | None
    confidence: float | None


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2) for each row of probs (n, n_classes) -> (n,), in [0, 1].

    Example: [[0.5, 0.5], [0.9, 0.1]] -> [1.0, 0.2].
    """
    probs = np.asarray(probs, dtype=float)
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top = -np.sort(-probs, axis=1)
    return 1.0 - (top[:, 0] - top[:, 1])


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row of probs (n, n_classes), divided by log(n_classes) -> (n,), in [0, 1]."""
    probs = np.clip(np.asarray(probs, dtype=float), 1e-12, 1.0)
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    return -(probs * np.log(probs)).sum(1) / np.log(probs.shape[1])


def text_vectors(texts: Sequence[str], dim: int = _DIM) -> np.ndarray:
    """Unit-norm hashed character-trigram counts: float32 (n, dim).

    Case and surrounding whitespace are ignored, so "Great phone!" and
    "great phone" get a cosine similarity close to 1.
    """
    out = np.zeros((len(texts), dim), np.float32)
    for row, text in enumerate(texts):
        padded = f"  {' '.join(text.lower().split())}  "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i:i + 3].encode()) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def balance_need(probs: dict[int, dict[str, float]],
                 counts: dict[str, int]) -> tuple[dict[int, float], float]:
    """How much each text would help the scarcest classes, and how imbalanced the labels are.

    probs: {text_id: {class: probability}}; counts: {class: number of labels}.
    A class's need is 1 for the class with fewest labels, 0 for the one with most,
    linear in between; a text's need is its expected need under its probabilities.
    The imbalance is 1 - fewest / most labels (0 when the classes are even).
    Example: counts {"a": 20, "b": 20, "c": 2}, probs {7: {"a": 0.1, "b": 0.1, "c": 0.8}}
    -> ({7: 0.8}, 0.9).
    """
    if not counts or max(counts.values()) == 0:
        return {tid: 0.0 for tid in probs}, 0.0
    most, fewest = max(counts.values()), min(counts.values())
    spread = max(most - fewest, 1)
    need = {c: (most - n) / spread for c, n in counts.items()}
    per_text = {tid: sum(p * need.get(c, 0.0) for c, p in class_probs.items())
                for tid, class_probs in probs.items()}
    return per_text, 1.0 - fewest / most


def pick(uncertainty: np.ndarray, vectors: np.ndarray, recent: np.ndarray | None = None, *,
         n: int = 1, diversity: float = 0.5, pool: int = _POOL, near: float = _NEAR) -> list[int]:
    """Greedy uncertainty-with-diversity selection; returns up to n row indices.

    uncertainty: (m,) scores, higher = more worth labelling.
    vectors: (m, d) unit-norm vectors of the candidates; recent: (r, d) of recent labels.
    Each pick maximises ``uncertainty - diversity * near`` among the ``pool`` most
    uncertain candidates, where ``near`` is the part of the largest cosine similarity
    to the recent texts and the picks so far above ``near`` (``_NEAR``), rescaled to
    [0, 1]: only near-duplicates are penalised.
    With diversity=0 this is plain uncertainty order (ties broken by index).
    """
    order = np.argsort(-uncertainty, kind="stable")[:max(pool, n)]
    anchors = [recent] if recent is not None and len(recent) else []
    chosen: list[int] = []
    for _ in range(min(n, len(order))):
        left = [i for i in order if i not in chosen]
        sims = np.zeros(len(left))
        if anchors:
            sims = np.maximum((vectors[left] @ np.vstack(anchors).T).max(1) - near, 0) / (1 - near)
        best = left[int(np.argmax(uncertainty[left] - diversity * sims))]
        chosen.append(int(best))
        anchors.append(vectors[best][None])
    return chosen


def suggest(candidates: Sequence[tuple[int, str]], probs: dict[int, dict[str, float]] | None,
            recent_texts: Sequence[str] = (), *, n: int = 1, diversity: float = 0.5,
            counts: dict[str, int] | None = None, balance: float = _BALANCE,
            space: tuple[np.ndarray, np.ndarray] | None = None, cold: float | None = None,
            typical: float | None = None, held: Callable | None = None,
            random_state: int = 0) -> list[Suggestion]:
    """The next n texts to label among ``candidates`` ((text_id, text) pairs).

    probs: {text_id: {class: probability}} from the latest model, or None when there
    is no model yet; then the order is a random permutation seeded by random_state.
    Candidates the model has not predicted (added after it) count as fully uncertain.
    counts: labels per class; when given and uneven, the score is
    ``(1 - w) * uncertainty + w * need`` with ``w = balance * imbalance``
    (see ``balance_need``), so texts likely in under-labelled classes come first.
    space: (candidates' vectors (m, d), labelled texts' vectors (L, d)), unit rows from
    ``core.active_space.compact``; with it the uncertainty is first multiplied by the
    candidate's typicality rank (in (0, 1]) to the power ``typical``, and while the
    labels per class are fewer than ``cold`` the first pick is the most typical (plus
    need) text of the largest region no label covers (``core.active_space.uncovered_pick``).
    held: a function from candidate positions (b,) to (their head inputs (b, d), labelled
    texts' (L, d)), or to None when the pool does not hold them all; with it, past the cold
    start only the ``_BAND`` most uncertain candidates compete, their score multiplied by
    ``core.active_space.band_density``'s rank.
    cold, typical: None takes the module's ``_COLD`` and ``_TYPICAL`` when called.
    """
    candidates = list(candidates)
    if not candidates:
        return []
    if probs is None:
        rng = np.random.default_rng(random_state)
        order = rng.permutation(len(candidates))[:n]
        return [Suggestion(*candidates[i], None, "random: no model yet") for i in order]
    scores = np.array([_uncertainty_of(probs.get(tid)) for tid, _ in candidates])
    first: list[int] = []
    usable = space is not None and len(space[0]) == len(candidates)
    labels = sum(counts.values()) if counts else (len(space[1]) if usable else 0)
    cold = _COLD if cold is None else cold
    typical = _TYPICAL if typical is None else typical
    cold_start = usable and labels / max(len(counts or {}), 1) < cold
    rank = np.ones(len(candidates))
    if usable and (cold_start or typical):
        with BLAS.limit(limits=1, user_api="blas"):  # threads fight on a busy CPU: 10x slower
            rank = _rank(typicality(space[0], random_state=random_state))
        scores = scores * rank ** typical
    need = np.zeros(len(candidates))
    if counts:
        per_text, imbalance = balance_need(probs, counts)
        weight = balance * imbalance
        unknown = float(np.mean(list(per_text.values()))) if per_text else 0.0  # not predicted yet
        need = weight * np.array([per_text.get(t, unknown) for t, _ in candidates])
        scores = (1 - weight) * scores + need
    if cold_start:
        with BLAS.limit(limits=1, user_api="blas"):
            first = [uncovered_pick(space[0], space[1], rank + need, random_state=random_state)]
    if held is not None and not cold_start:
        scores = _crowded(scores, held, n, random_state)
    # only the most uncertain compete on diversity, so only they need vectors
    pool = [i for i in np.argsort(-scores, kind="stable")[:max(_POOL, n)] if i not in first]
    vectors = text_vectors([candidates[i][1] for i in first + pool])
    recent = list(recent_texts)[-_RECENT:] + [candidates[i][1] for i in first]
    chosen = first + [pool[i] for i in pick(scores[pool], vectors[len(first):],
                                            text_vectors(recent) if recent else None,
                                            n=n - len(first), diversity=diversity)]
    reasons = {i: COVERING for i in first}
    return [Suggestion(*candidates[i], float(scores[i]), reasons.get(i, "the model is unsure"))
            for i in chosen]


def _crowded(scores: np.ndarray, held, n: int, random_state: int) -> np.ndarray:
    """scores (m,) with the band's multiplied by band_density's rank and the others' set to -1,
    or unchanged when ``held`` does not hold the band (bench/active.py: SUBJ and SST-2
    reach random's 32/class accuracy sooner than with the margin alone)."""
    band = np.argsort(-scores, kind="stable")[:max(_BAND, n)]
    rows = held(band)
    if rows is None or len(band) < 2:
        return scores
    with BLAS.limit(limits=1, user_api="blas"):
        crowd = band_density(*rows, random_state=random_state)
    out = np.full(len(scores), -1.0)
    out[band] = scores[band] * crowd
    return out


def _rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank, scaled to (0, 1]: the largest gets 1. Example: [3, 1, 2] -> [1, 1/3, 2/3]."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (order + 1) / len(values)


def _uncertainty_of(class_probs: dict[str, float] | None) -> float:
    if not class_probs:
        return 1.0
    return float(margin_uncertainty(np.array([list(class_probs.values())]))[0])


def cold_start_labels() -> int:
    """Labels per class, on average over the classes, below which suggestions cover
    regions no label covers yet."""
    return int(_COLD)


def next_for_project(store, project_id: int, *, recent_texts: Sequence[str] = (),
                     skip: Sequence[int] = (), prefer: int | None = None, n: int = 1,
                     pool=None, random_state: int = 0) -> list[Suggestion]:
    """The next texts to label in a project, from its unlabelled texts and latest predictions.

    skip: text ids the user skipped; they come back only when nothing else is left.
    prefer: a text id to put first while it is unlabelled (the one on screen, or one
    whose label was just undone), so the page does not jump between reruns.
    pool: the project's ``core.learn.pool.PoolMatrix`` (kept by the page between
    submits); when it holds every text's head inputs, suggestions also weigh how
    typical a text is and, while labels are few, cover regions with no label yet.
    """
    rows = [(r.id, r.text) for r in store.unlabelled(project_id)]
    counts = store.label_counts(project_id)
    model = store.latest_model(project_id)
    preds = {p.text_id: p for p in store.predictions(model.id)} if model is not None else {}
    probs = {tid: p.probs for tid, p in preds.items()} if model is not None else None
    first = [r for r in rows if r[0] == prefer]
    skipped = set(skip)
    fresh = [r for r in rows if r[0] not in skipped and r[0] != prefer]
    picked = [Suggestion(*first[0], None, "on screen")] if first else []
    if len(picked) < n:
        candidates = fresh or [r for r in rows if r[0] != prefer]
        # past the cold start, with typicality off, the pool's geometry is not used
        needed = probs and (_TYPICAL or sum(counts.values()) < _COLD * max(len(counts), 1))
        if needed and len(candidates) > _SPACE_MAX:
            keep = np.random.default_rng(random_state).choice(len(candidates), _SPACE_MAX, replace=False)
            candidates = [candidates[i] for i in sorted(keep)]
        # read once for both uses of the pool's geometry (the cold start's, the band's)
        labelled = [r.text for r in store.labelled(project_id)] if pool is not None else []
        space = _space(pool, labelled, candidates, random_state) if needed else None
        picked += suggest(candidates, probs, recent_texts, n=n - len(picked), counts=counts,
                          space=space, held=_held(pool, labelled, candidates, random_state),
                          random_state=random_state)
    return [_with_guess(s, preds.get(s.text_id)) for s in picked]


def _space(pool, labelled: list[str], candidates: list[tuple[int, str]],
           random_state: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(candidates' vectors, labelled texts' vectors) from the pool's head inputs, or None
    when the pool does not hold them all (no submit yet in this process)."""
    if pool is None:
        return None
    Z = pool.held([t for _, t in candidates] + labelled)
    if Z is None or len(Z) < 2:
        return None
    with BLAS.limit(limits=1, user_api="blas"):
        V = compact(Z, random_state=random_state)
    return V[:len(candidates)], V[len(candidates):]


def _held(pool, labelled: list[str], candidates: list[tuple[int, str]], random_state: int):
    """A function from candidate positions to (their rows of the pool's head inputs, the
    labelled texts' rows), or to None when the pool does not hold them all; None without a
    pool. At most _SPACE_MAX labelled texts, a seeded sample: they only steady the PCA."""
    if pool is None:
        return None
    if len(labelled) > _SPACE_MAX:
        keep = np.random.default_rng(random_state).choice(len(labelled), _SPACE_MAX, replace=False)
        labelled = [labelled[i] for i in sorted(keep)]

    def rows(positions) -> tuple[np.ndarray, np.ndarray] | None:
        Z = pool.held([candidates[i][1] for i in positions] + labelled)
        return None if Z is None else (Z[:len(positions)], Z[len(positions):])
    return rows


def _with_guess(s: Suggestion, pred) -> Suggestion:
    if pred is None:
        return s
    return replace(s, guess=pred.label, confidence=pred.confidence,
                   uncertainty=_uncertainty_of(pred.probs))


def table_rows(store, project_id: int) -> list[TableRow]:
    """Every text of the project with its label and the latest model's prediction, by id."""
    labels = {r.text_id: r.label for r in store.labelled(project_id)}
    model = store.latest_model(project_id)
    preds = {p.text_id: p for p in store.predictions(model.id)} if model is not None else {}
    return [TableRow(r.id, r.text, labels.get(r.id),
                     preds[r.id].label if r.id in preds else None,
                     preds[r.id].confidence if r.id in preds else None)
            for r in store.texts(project_id)]


def filter_rows(rows: Sequence[TableRow], *, search: str = "", show: str = "unlabelled",
                predicted: Sequence[str] = (), confidence: tuple[float, float] = (0.0, 1.0)
                ) -> list[TableRow]:
    """Rows matching every filter, least confident prediction first (unpredicted rows last).

    search: case-insensitive substring of the text; show: "unlabelled", "labelled" or "all";
    predicted: keep these predicted classes (empty: any); confidence: inclusive range,
    applied only to rows that have a prediction when it is narrower than (0, 1).
    """
    needle = search.strip().lower()
    lo, hi = confidence
    narrowed = lo > 0.0 or hi < 1.0
    out = []
    for r in rows:
        if needle and needle not in r.text.lower():
            continue
        if (show == "unlabelled" and r.label is not None) or (show == "labelled" and r.label is None):
            continue
        if predicted and r.predicted not in predicted:
            continue
        if narrowed and (r.confidence is None or not lo <= r.confidence <= hi):
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.confidence is None, r.confidence or 0.0))
