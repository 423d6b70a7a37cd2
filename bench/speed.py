"""Throughput and latency of the embedding path and the retrain loop, as ratios in one run.

    .venv/bin/python bench/speed.py [--backbone smollm2-135m] [--n 256] [--quick] [--out FILE.md]

Measures, on sentences from ../shared/data/sst2/train.csv wrapped in a task prompt:
1. embedding throughput of ``core.embed.embed`` (tokenise, length-sorted batches, all
   layers, pooling, copy to numpy) against the bare ``model(**batch)`` forward pass on
   the same batches, and against a naive loop over unsorted batches;
2. retrain latency (head refit with C chosen by CV, features cached, spec reused) at
   25/50/100/200 labels, median and p95 over repeats;
3. the submit-to-new-model round trip of ``core.project.retrain`` (store, cached
   features, refit, save, predict 1000 unlabelled texts) at 200 labels;
4. first model load: cold (GGUF conversion into an empty cache) against warm.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.backbones import load_backbone  # noqa: E402
from core.classifier import Settings, train  # noqa: E402
from core.embed import _batches, _pad, embed, encode, pool  # noqa: E402
from core.evaluate import load_split  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PROMPT = "Review: {text}\nSentiment:"


def _forward_bare(bb, batches):
    import torch

    with torch.inference_mode():
        for ids, mask in batches:
            bb.model(input_ids=ids, attention_mask=mask)


def _embed_naive(bb, texts, batch_size):
    """Unsorted batches in input order, same pooling work as embed()."""
    encoded = encode(bb.tokenizer, texts, prompt=PROMPT)
    for i in range(0, len(encoded), batch_size):
        ids, mask = _pad(encoded[i:i + batch_size], bb.tokenizer.pad_token_id or 0)
        pool(bb.hidden_states(ids, mask), mask, ("mean",))


def embedding_throughput(bb, texts, batch_size=32, repeats=3) -> dict:
    encoded = encode(bb.tokenizer, texts, prompt=PROMPT)
    pad_id = bb.tokenizer.pad_token_id or 0
    sorted_batches = [_pad([encoded[i] for i in idx], pad_id)
                      for idx in _batches([len(e.input_ids) for e in encoded], batch_size)]
    embed(bb, texts[:16], prompt=PROMPT)  # warm-up
    times = {"bare": [], "embed": [], "naive": []}
    for _ in range(repeats):  # interleaved so drift in machine load hits all three alike
        t = time.perf_counter(); _forward_bare(bb, sorted_batches); times["bare"].append(time.perf_counter() - t)
        t = time.perf_counter(); embed(bb, texts, prompt=PROMPT, batch_size=batch_size); times["embed"].append(time.perf_counter() - t)
        t = time.perf_counter(); _embed_naive(bb, texts, batch_size); times["naive"].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    return {"n": len(texts), "tokens_mean": float(np.mean([len(e.input_ids) for e in encoded])),
            **{f"{k}_per_s": len(texts) / v for k, v in best.items()},
            "embed_vs_bare": best["bare"] / best["embed"], "sorted_vs_naive": best["naive"] / best["embed"]}


def retrain_latency(X, labels, classes, sizes=(25, 50, 100, 200), repeats=30) -> list[dict]:
    settings = Settings(mode="layer")
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        idx = np.concatenate([rng.choice(np.flatnonzero(np.array(labels) == c), n // 2, replace=False)
                              for c in classes])
        Xn, yn = X[idx], [labels[i] for i in idx]
        spec = train(Xn, yn, classes, settings).spec  # selection happens once, then refits reuse it
        ts = []
        for r in range(repeats):
            t = time.perf_counter()
            train(Xn, yn, classes, settings, spec=spec, random_state=r)
            ts.append(time.perf_counter() - t)
        rows.append({"labels": len(idx), "median_ms": 1000 * float(np.median(ts)),
                     "p95_ms": 1000 * float(np.percentile(ts, 95)), "d": spec.transform(Xn[:1]).shape[1]})
    return rows


def round_trip(bb, texts, labels, n_labels=200, n_unlabelled=1000, repeats=10) -> dict:
    from core.project import MemoryCache, retrain
    from core.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "b.db") as store:
        p = store.create_project("bench", sorted(set(labels)),
                                 settings=Settings(prompt=PROMPT, mode="auto").to_dict())
        ids = store.add_texts(p.id, texts[: n_labels + n_unlabelled]).text_ids
        for i, lab in zip(ids[:n_labels - 1], labels[: n_labels - 1]):
            store.set_label(p.id, i, lab)
        cache = MemoryCache(store)
        retrain(store, p, bb, cache=cache)  # first model: embeds everything, selects features
        ts = []
        for r in range(repeats):
            k = n_labels - 1 + r  # one new label per submit
            store.set_label(p.id, ids[k], labels[k])
            t = time.perf_counter()
            retrain(store, p, bb, cache=cache)
            ts.append(time.perf_counter() - t)
    return {"labels": n_labels, "unlabelled": n_unlabelled, "median_ms": 1000 * float(np.median(ts)),
            "p95_ms": 1000 * float(np.percentile(ts, 95))}


def load_times(backbone: str) -> dict:
    code = ("import time,sys; sys.path.insert(0, %r); from core.backbones import load_backbone; "
            "t=time.perf_counter(); load_backbone(%r); print(time.perf_counter()-t)") % (str(ROOT), backbone)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TENSHOT_CACHE": cache}
        out = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                    text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
    return {"cold_s": out[0], "warm_s": out[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="fewer texts and repeats (< 5 min)")
    ap.add_argument("--out", help="append the markdown report here")
    args = ap.parse_args()
    n = 96 if args.quick else args.n
    texts, labels = load_split(DATA / "sst2", "train")
    bb = load_backbone(args.backbone)
    thr = embedding_throughput(bb, texts[:n], repeats=2 if args.quick else 3)
    X = embed(bb, texts[:1200], prompt=PROMPT)
    lat = retrain_latency(X, labels[:1200], sorted(set(labels)), repeats=10 if args.quick else 30)
    rt = round_trip(bb, texts[:1200], labels[:1200], repeats=5 if args.quick else 10)
    loads = load_times(args.backbone)
    report = _markdown(args, bb, thr, lat, rt, loads)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")


def _markdown(args, bb, thr, lat, rt, loads) -> str:
    lines = [
        f"### Speed: {bb.name} ({bb.info.get('dtype')}, {bb.info.get('attention')} attention, {bb.device})",
        f"- date {datetime.date.today()}, machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        f"- command: `.venv/bin/python bench/speed.py {' '.join(sys.argv[1:])}`",
        "",
        f"Embedding {thr['n']} SST-2 sentences (mean {thr['tokens_mean']:.1f} tokens with the prompt), batch 32:",
        "",
        "| path | sentences/s | ratio |",
        "|---|---|---|",
        f"| bare `model(**batch)` on the sorted batches | {thr['bare_per_s']:.1f} | 1.00 |",
        f"| `core.embed.embed` (tokenise, sort, all layers, pool) | {thr['embed_per_s']:.1f} | {thr['embed_vs_bare']:.2f} × bare |",
        f"| naive loop, unsorted batches | {thr['naive_per_s']:.1f} | sorted is {thr['sorted_vs_naive']:.2f} × faster |",
        "",
        "Retrain latency (features cached, spec reused, C chosen by repeated stratified CV):",
        "",
        "| labels | features | median ms | p95 ms |",
        "|---|---|---|---|",
        *[f"| {r['labels']} | {r['d']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} |" for r in lat],
        "",
        f"Submit → new model round trip (`core.project.retrain`: {rt['labels']} labels, "
        f"{rt['unlabelled']} unlabelled predicted, mode auto): median {rt['median_ms']:.0f} ms, "
        f"p95 {rt['p95_ms']:.0f} ms.",
        "",
        f"First load of {args.backbone}: cold (GGUF conversion) {loads['cold_s']:.1f} s, "
        f"warm (cached) {loads['warm_s']:.1f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
