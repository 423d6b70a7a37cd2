"""Other exact splits of the default fused model's logit into words (issue 15, item 13).

    nice -n 19 .venv/bin/python bench/plausibility_splits.py [--sets sst2,cr,mr] [--n 60]

An exploration beside bench/plausibility.py, with the same classifier (``Settings()``,
32 training sentences per class, seed 0) and the first ``--n`` test sentences of its
default draw (``--n 150``).
Per backbone and sentence it keeps each token's running score s_t = h_t·V (every layer
the head reads, summed; (n_tokens, K)), cached under /tmp/tenshot-bench-cache/plausibility
(keyed by set, n and backbone), and then scores several splits of the pooled mean
(1/n) sum_t s_t into tokens, every one of them exact (what a split cannot give a token
goes into the constant or to the prompt):

- ``tokens``: (s_t - m·V)/n, the pages' per-token terms;
- ``increments``: causal increments (``core.explain.attributions.increment_contributions``);
- ``identity + increments``: s_t = a(token) + r_t with a(token) the token's mean score
  over the sentences of the run (tokens seen fewer than 3 times: the mean of all);
  a(token)/n to the token and the context part r by causal increments;
- ``identity + spread``: a(token)/n to the token, r_t/n spread evenly over the user
  tokens up to t (the tokens position t has read).

The splits are chosen per backbone (a causal decoder, a sentence encoder); words are
the pages' word pieces. Prints, per set and pair of splits, Spearman with VADER valence
and the stop-word share, for the whole model and per backbone.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from bench.plausibility import Tally, vader_lexicon  # noqa: E402
from core.evaluate import draw_shots, load_split  # noqa: E402
from core.explain.attributions import increment_contributions, linear_weights, reference_states  # noqa: E402
from core.explain.words import word_scores  # noqa: E402
from core.learn.classifier import Settings, default_prompt, features_for, train  # noqa: E402
from core.model.group import parts_of  # noqa: E402
from core.model.embed import token_states  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.model.registry import DEFAULT_BACKBONE  # noqa: E402

CACHE = Path("/tmp/tenshot-bench-cache/plausibility")


def running_scores(load: Callable[[], object], name: str, n: int) -> dict:
    """{"k", "texts", "parts": {backbone: {"refV" (K,), "rows": [{ids, spans, pooled, scores}]}}};
    load() gives the backbone when the cache has no entry."""
    path = CACHE / f"{name}-n{n}-{DEFAULT_BACKBONE}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    bb = load()
    rng = np.random.default_rng(0)  # the draw bench/plausibility.py makes with --seed 0
    texts, labels = load_split(DATA / name, "train")
    idx = draw_shots(labels, 32, rng)
    settings = Settings(backbone=DEFAULT_BACKBONE, prompt=default_prompt(DEFAULT_BACKBONE))
    classes = sorted(set(labels))
    clf = train(features_for(bb, [texts[i] for i in idx], settings), [labels[i] for i in idx], classes, settings)
    test, _ = load_split(DATA / name, "test")
    sentences = [test[i] for i in rng.choice(len(test), min(150, len(test)), replace=False)][:n]
    V, m = linear_weights(clf)[0], reference_states(clf)
    out = {"k": classes.index("positive"), "texts": sentences, "parts": {}}
    for part, pbb, prompt in parts_of(bb, settings.prompt):
        Vp, mp = V[part.rows, :part.width], m[part.rows, :part.width]
        rows = []
        for text in sentences:
            st = token_states(pbb, text, prompt=prompt, max_length=settings.max_length)
            rows.append({"ids": st.encoded.input_ids, "spans": st.encoded.user_spans,
                         "pooled": st.encoded.pool_mask(),
                         "scores": np.einsum("lth,lhk->tk", st.hidden.astype(np.float64), Vp)})
        out["parts"][part.name] = {"refV": np.einsum("lh,lhk->k", mp, Vp), "rows": rows}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def _increments(scores: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Causal increments of per-token scores (n_tokens, K); the start goes to the constant."""
    values, _ = increment_contributions(scores[None], pooled, np.eye(scores.shape[1])[None])
    return values


def _tokens(row, refV, a):
    v = np.zeros_like(row["scores"])
    pooled = row["pooled"]
    v[pooled] = (row["scores"][pooled] - refV) / pooled.sum()
    return v


def _identity(row, refV, a):
    ident = np.array([a(i) for i in row["ids"]])
    return ident, _tokens({**row, "scores": ident}, refV, a)


def _identity_increments(row, refV, a):
    ident, v = _identity(row, refV, a)
    return v + _increments(row["scores"] - ident, row["pooled"])


def _identity_spread(row, refV, a):
    ident, v = _identity(row, refV, a)
    pooled, user = row["pooled"], np.array([sp is not None for sp in row["spans"]])
    rest = (row["scores"] - ident) / pooled.sum()
    for t in np.flatnonzero(pooled):
        read = np.flatnonzero(user[:t + 1])
        if len(read):
            v[read] += rest[t] / len(read)
        else:
            v[t] += rest[t]
    return v


SPLITS = {"tokens": _tokens, "increments": lambda row, refV, a: _increments(row["scores"] - refV, row["pooled"]),
          "identity + increments": _identity_increments, "identity + spread": _identity_spread}


def _token_means(rows) -> Callable[[int], np.ndarray]:
    """a(token id): the token's mean score over the pooled positions of ``rows``."""
    seen = defaultdict(list)
    for row in rows:
        for t in np.flatnonzero(row["pooled"]):
            seen[row["ids"][t]].append(row["scores"][t])
    overall = np.mean([s for v in seen.values() for s in v], axis=0)
    means = {i: np.mean(v, axis=0) for i, v in seen.items() if len(v) >= 3}
    return lambda i: means.get(i, overall)


def evaluate(data: dict, splits: dict[str, str], lexicon) -> dict:
    """{view: Tally summary} for one split per backbone; "" is the whole model."""
    k, tallies = data["k"], defaultdict(Tally)
    means = {name: _token_means(p["rows"]) for name, p in data["parts"].items()}
    for j, text in enumerate(data["texts"]):
        total = None
        for name, p in data["parts"].items():
            row = p["rows"][j]
            pieces = word_scores(text, row["spans"], SPLITS[splits[name]](row, p["refV"], means[name])[:, k])
            tallies[name].add(pieces, lexicon)
            total = pieces if total is None else [a._replace(score=a.score + b.score) for a, b in zip(total, pieces)]
        tallies[""].add(total, lexicon)
    return {view: t.summary() for view, t in tallies.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="sst2,cr,mr")
    parser.add_argument("--n", type=int, default=60)
    args = parser.parse_args(argv)
    lexicon, header = vader_lexicon(), machine()
    loaded = []

    def load():
        loaded[:] = loaded or [load_backbone(DEFAULT_BACKBONE)]
        return loaded[0]

    print(header)
    print("| set | split per backbone | Spearman | stopword share | per backbone: Spearman / stopword share |")
    print("|---|---|---|---|---|")
    for name in args.sets.split(","):
        data = running_scores(load, name, args.n)
        decoder, encoder = list(data["parts"])
        for split in SPLITS:
            for enc_split in ("tokens", "identity + spread"):
                r = evaluate(data, {decoder: split, encoder: enc_split}, lexicon)
                per = "; ".join(f"{b} {r[b]['spearman']:.3f} / {r[b]['stopword_share']:.1%}" for b in data["parts"])
                print(f"| {name} ({len(data['texts'])}) | {decoder}: {split}, {encoder}: {enc_split} | "
                      f"{r['']['spearman']:.3f} | {r['']['stopword_share']:.1%} | {per} |")


if __name__ == "__main__":
    main()
