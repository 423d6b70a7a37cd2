"""Would frequency-weighted pooling make explanations point at content words? (issue 15, item 13)

    nice -n 19 .venv/bin/python bench/plausibility_pooling.py [--sets sst2,cr,mr]
        [--weights mean:0,sif:1e-3,sif:3e-4,rank:1e-5] [--shots 32] [--seeds 3] [--test 200] [--n 100]

An experiment beside bench/plausibility.py. Under mean pooling every pooled token weighs
1/n, so function words, half the words of a sentence, take 35-47% of the absolute
attribution (bench/BENCHMARKS.md). Weighting each token by how rare it is (SIF,
Arora et al. 2017: w = a / (a + p(token))) and pooling sum(w h) / sum(w) keeps
attributions exact (token t gets w_t / sum(w) of its centred projection) but changes
the features, so it is measured on both sides here: test accuracy and plausibility.

Weights (``KIND:a``; the tokens of every part of the default fused model, each with its
own tokenizer, every pooled position including the prompt's):
- ``mean``: 1 (the app's pooling);
- ``sif``: p(token) counted over a project-like corpus, 2,000 training texts of the set
  (seed 1), wrapped in the part's prompt as the model reads them;
- ``rank``: p(token) from the token's id by Zipf's law, p = 1 / ((id + 1) H_V): both
  packaged tokenizers number whole words roughly by frequency (SmolLM2's " the" is 260,
  mpnet's "the" 2000), so this needs no corpus;
- a ``-user`` suffix keeps weight 1 on the prompt's tokens and weighs the text's only.

Per set: the default classifier (``Settings()``, the fused default) trained on
``--shots`` per class for ``--seeds`` draws, test accuracy on ``--test`` test texts (the
same for every weighting), and, for the first draw, plausibility (Spearman with VADER
valence, stop-word share; bench/plausibility.py's ``Tally``) of the per-token centred
attributions toward "positive" on the first ``--n`` of them, with the largest
|sum + constant - logit|. Token states of the band's rows are cached under
/tmp/tenshot-bench-cache/pooling (about 3 minutes a set to fill on this box).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import pickle
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from bench.plausibility import Tally, vader_lexicon  # noqa: E402
from core.evaluate import draw_shots, load_split  # noqa: E402
from core.explain.attributions import Attribution, linear_weights, reference_states  # noqa: E402
from core.explain.words import word_attributions  # noqa: E402
from core.learn.classifier import Settings, train  # noqa: E402
from core.model.cache import band_rows  # noqa: E402
from core.model.embed import part_token_states  # noqa: E402
from core.model.group import parts_of  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.model.tokens import encode  # noqa: E402

CACHE = Path("/tmp/tenshot-bench-cache/pooling")


def keep_band(part, states, rows) -> SimpleNamespace:
    """One part's token states of one text, on the band rows the part owns (a plain
    namespace, so the cache pickles without this module)."""
    own = [r for r in rows if part.offset <= r < part.rows.stop]
    return SimpleNamespace(rows=own, hidden=states.hidden[[r - part.offset for r in own]].astype(np.float32),
                           ids=np.array(states.encoded.input_ids), pooled=states.encoded.pool_mask(),
                           user=np.array([span is not None for span in states.encoded.user_spans]),
                           tokens=list(states.tokens), spans=list(states.encoded.user_spans))


def token_states_of(bb, settings, name: str, tag: str, texts: list[str]) -> list[list[SimpleNamespace]]:
    path = CACHE / f"{name}-{tag}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    rows = band_rows(bb)
    out = [[keep_band(part, states, rows) for part, states in part_token_states(
        bb, text, prompt=settings.prompt, max_length=settings.max_length)] for text in texts]
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def token_frequencies(bb, settings, texts: list[str]) -> list[tuple[collections.Counter, int]]:
    """Per part: (count of each token id over the pooled positions of texts, total)."""
    out = []
    for _, one, prompt in parts_of(bb, settings.prompt):
        counts, total = collections.Counter(), 0
        for enc in encode(one.tokenizer, texts, prompt=prompt, max_length=settings.max_length, spans=False):
            ids = np.array(enc.input_ids)[enc.pool_mask()]
            counts.update(ids.tolist())
            total += len(ids)
        out.append((counts, total))
    return out


def weights(one: SimpleNamespace, kind: str, a: float, frequencies, vocab: int) -> np.ndarray:
    """(n_tokens,) pooling weights, zero outside the pooled positions."""
    base = kind.removesuffix("-user")
    if base == "mean":
        w = np.ones(len(one.ids))
    elif base == "sif":
        counts, total = frequencies
        w = a / (a + np.array([counts.get(int(i), 0) / total for i in one.ids]))
    elif base == "rank":
        w = a / (a + 1.0 / ((one.ids + 1) * (np.log(vocab) + 0.5772)))
    else:
        raise SystemExit(f"unknown weighting {kind}")
    if kind.endswith("-user"):
        w = np.where(one.user, w, 1.0)
    return np.where(one.pooled, w, 0.0)


def features(bb, texts_kept, kind, a, frequencies) -> np.ndarray:
    X = np.zeros((len(texts_kept), bb.n_layers, bb.hidden_size), np.float32)
    for n, text_parts in enumerate(texts_kept):
        for part, one, freq, sub in zip(bb.parts, text_parts, frequencies, bb.backbones):
            w = weights(one, kind, a, freq, len(sub.tokenizer))
            X[n, one.rows, :part.width] = np.einsum("t,lth->lh", w / w.sum(), one.hidden)
    return X


def attributions(bb, clf, text_parts, kind, a, frequencies):
    """([(part's token states, values (n_tokens, K))], constant (K,)): each token gets
    w_t / sum(w) of its centred projection; the parts' values plus the constant sum to the logits."""
    V, b = linear_weights(clf)
    reference = reference_states(clf)
    parts = []
    for part, one, freq, sub in zip(bb.parts, text_parts, frequencies, bb.backbones):
        w = weights(one, kind, a, freq, len(sub.tokenizer))
        ref, Vp = reference[one.rows][:, :part.width], V[one.rows, :part.width]
        values = np.einsum("t,lth,lhk->tk", w / w.sum(), one.hidden.astype(np.float64) - ref[:, None, :], Vp)
        b = b + np.einsum("lh,lhk->k", ref, Vp)
        parts.append((one, values))
    return parts, b


def run_set(bb, settings, name: str, args, lexicon) -> list[dict]:
    started = time.perf_counter()
    texts, labels = load_split(DATA / name, "train")
    test, test_labels = load_split(DATA / name, "test")
    chosen = np.random.default_rng(0).choice(len(test), min(args.test, len(test)), replace=False)
    draws = [draw_shots(labels, args.shots, np.random.default_rng(seed)) for seed in range(args.seeds)]
    train_ids = sorted(set(np.concatenate(draws).tolist()))
    tag = f"train{args.shots}x{args.seeds}"
    kept_train = dict(zip(train_ids, token_states_of(bb, settings, name, tag, [texts[i] for i in train_ids])))
    kept_test = token_states_of(bb, settings, name, f"test{args.test}", [test[i] for i in chosen])
    corpus = np.random.default_rng(1).choice(len(texts), min(2000, len(texts)), replace=False)
    frequencies = token_frequencies(bb, settings, [texts[i] for i in corpus])
    classes = sorted(set(labels))
    truth = np.array([test_labels[i] for i in chosen])
    print(f"{name}: token states in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for spec in args.weights.split(","):
        kind, a = spec.split(":")
        a = float(a)
        X_test = features(bb, kept_test, kind, a, frequencies)
        accuracies, tally, exact = [], Tally(), 0.0
        for seed, draw in enumerate(draws):
            clf = train(features(bb, [kept_train[i] for i in draw], kind, a, frequencies),
                        [labels[i] for i in draw], classes, settings)
            accuracies.append(float(np.mean(np.array(classes)[clf.predict_proba_features(X_test).argmax(1)] == truth)))
            if seed or "positive" not in classes:
                continue
            k = classes.index("positive")
            for j, text_parts in enumerate(kept_test[:args.n]):
                parts, constant = attributions(bb, clf, text_parts, kind, a, frequencies)
                logits = clf.decision_features(X_test[j:j + 1])[0].astype(np.float64)
                total = sum(values.sum(0) for _, values in parts) + constant
                exact = max(exact, float(np.abs(total - logits).max() / max(1.0, np.abs(logits).max())))
                for one, values in parts:
                    attribution = Attribution(one.tokens, one.spans, values, constant, logits, exact=True)
                    tally.add(word_attributions(attribution, test[chosen[j]], k), lexicon)
        row = {"set": name, "weights": spec, "accuracy": float(np.mean(accuracies)), "accuracies": accuracies}
        if tally.total:
            row.update(tally.summary(), exactness_error_max=exact)
        print(" ", row, flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| set | pooling weights | accuracy (mean of draws) | per draw | Spearman | stopword share | exactness |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        plaus = (f"{r['spearman']:.3f} | {r['stopword_share']:.1%} | {r['exactness_error_max']:.1e}"
                 if "spearman" in r else "– | – | –")
        lines.append(f"| {r['set']} | {r['weights']} | {r['accuracy']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in r['accuracies'])} | {plaus} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="sst2,cr,mr")
    parser.add_argument("--weights", default="mean:0,sif:1e-3,sif:3e-4,rank:1e-5")
    parser.add_argument("--shots", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args(argv)
    settings = Settings()
    bb = load_backbone(settings.backbone)
    lexicon = vader_lexicon()
    rows = [row for name in args.sets.split(",") for row in run_set(bb, settings, name, args, lexicon)]
    print(f"{machine()}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(table(rows))


if __name__ == "__main__":
    main()
