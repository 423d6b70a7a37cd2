"""Throughput and latency of the embedding path and the retrain loop, as ratios in one run.

    .venv/bin/python bench/speed.py [--backbones installed|NAME,NAME] [--n 256] [--quick] [--out FILE.md]

For each backbone (default: every packaged one that is installed), on sentences from
../shared/data/sst2/train.csv wrapped in a task prompt:
1. embedding throughput of ``core.model.embed.embed`` (tokenise, length-sorted batches, all
   layers, pooling, copy to numpy) against the bare ``model(**batch)`` forward pass on
   the same batches, and against a naive loop over unsorted batches (interleaved repeats,
   best of each, so ratios compare like with like on a shared CPU);
2. retrain latency (head refit with C chosen by CV, features cached, spec reused) at
   25/50/100/200 labels, median and p95 over repeats;
3. the submit-to-new-model round trip of ``core.project.retrain`` (store, cached
   features, refit, save, predict 1000 unlabelled texts) at 200 labels (default backbone only);
4. first model load: cold (assemble + sha256 + GGUF conversion into an empty cache) against
   warm (cached), each in a fresh process.

Issue 12 (the mpnet sentence encoder, echo embeddings, their fusion) has its own run:

    .venv/bin/python bench/speed.py --encoders [--n 200] [--out FILE.md]

Each of ``mpnet``, ``smollm2-135m``, ``smollm2-135m:echo`` and ``smollm2-135m+mpnet``
runs in a fresh process (so peak RSS is its own): warm load from the cache, then
``features_for`` under the app's default settings for that backbone (no feature cache),
on the band's rows as a submit reads them (``core.model.cache.band_rows``: the layers
above its deepest row do not run), on ``--n`` SST-2 sentences; it reports sentences/s, the seconds for 1,000 sentences
(extrapolated from ``--n``) and peak RSS, then the installed size of each backbone's
packages and of its folder in the model cache.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.model.registry import DEFAULT_BACKBONE, REGISTRY, resolve_packaged  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.learn.classifier import Settings, default_prompt, features_for, train  # noqa: E402
from core.model.loading import cache_dir  # noqa: E402
from core.model.cache import band_rows  # noqa: E402
from core.model import forward  # noqa: E402
from core.model.embed import embed, pool  # noqa: E402
from core.model.tokens import encode  # noqa: E402
from core.errors import BackboneUnavailable  # noqa: E402
from core.evaluate import load_split  # noqa: E402

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
        ids, mask = forward.pad([e.input_ids for e in encoded[i:i + batch_size]], bb.tokenizer.pad_token_id or 0)
        pool(bb.hidden_states(ids, mask), mask, ("mean",))


def embedding_throughput(bb, texts, batch_size=32, repeats=3) -> dict:
    encoded = encode(bb.tokenizer, texts, prompt=PROMPT)
    pad_id = bb.tokenizer.pad_token_id or 0
    sorted_batches = [forward.pad([encoded[i].input_ids for i in idx], pad_id)
                      for idx in forward.batches([len(e.input_ids) for e in encoded], batch_size)]
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
    from core.model.cache import MemoryCache
    from core.project import retrain
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


def load_times(backbone: str, *, cold: bool = True) -> dict:
    """Seconds to load in a fresh process: cold into an empty cache, then warm from it.

    Without ``cold`` only the warm load is timed, from the user's real cache."""
    code = ("import time,sys; sys.path.insert(0, %r); from core.model.loading import load_backbone; "
            "t=time.perf_counter(); load_backbone(%r); print(time.perf_counter()-t)") % (str(ROOT), backbone)

    def once(env):
        return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                    text=True, check=True).stdout.strip().splitlines()[-1])
    if not cold:
        once(os.environ)  # make sure the cache is there, then time a warm load
        return {"warm_s": once(os.environ)}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TENSHOT_CACHE": cache}
        return {"cold_s": once(env), "warm_s": once(env)}


def installed() -> list[str]:
    """Registry names whose packages are installed."""
    names = []
    for name, entry in REGISTRY.items():
        try:
            resolve_packaged(entry)
            names.append(name)
        except BackboneUnavailable:
            pass
    return names


ENCODER_CONFIGS = ("mpnet", "smollm2-135m", "smollm2-135m:echo", "smollm2-135m+mpnet")


def one_config(config: str, texts, n: int) -> dict:
    """Warm load and CPU throughput of one issue-12 configuration ("name" or "name:echo"),
    under the app's default settings for that backbone, in this process."""
    name, _, flag = config.partition(":")
    load1 = os.getloadavg()[0]
    t = time.perf_counter()
    bb = load_backbone(name)
    load_s = time.perf_counter() - t
    settings = Settings(backbone=name, prompt=default_prompt(name), echo=flag == "echo")
    import torch

    rows = band_rows(bb)  # what a submit and the pool's embedding job compute
    features_for(bb, texts[n:n + 8], settings, rows=rows)  # warm-up on other sentences
    cpu, t = _cpu_seconds(), time.perf_counter()
    features_for(bb, texts[:n], settings, rows=rows)
    seconds, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    return {"config": config, "n": n, "seconds": seconds, "per_s": n / seconds,
            "s_per_1000": 1000 * seconds / n, "cpu_s_per_1000": 1000 * cpu / n,
            "threads": torch.get_num_threads(), "load_s": load_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_avg": [load1, os.getloadavg()[0]]}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process: on a loaded box the CPU time of the work
    moves far less than its wall time, which waits for the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


def install_sizes(name: str) -> dict:
    """MB of a packaged backbone's installed package folders and of its model-cache folder."""
    entry = REGISTRY[name]
    # each part lies at <module folder>/<rel>
    folders = {p.parents[len(Path(rel).parts) - 1] for p, (_, rel) in zip(resolve_packaged(entry), entry.parts)}
    marks = (cache_dir() / "models").glob("*/tenshot.json")
    cached = [m.parent for m in marks
              if entry.sha256 and json.loads(m.read_text()).get("sha256", "").startswith(entry.sha256)]
    return {"packages_mb": sum(_folder_mb(f) for f in folders),
            "cache_mb": sum(_folder_mb(d) for d in cached)}


def encoder_report(args, texts) -> str:
    """Run every issue-12 configuration in its own process; a markdown table."""
    started, rows = os.getloadavg()[0], []
    for config in ENCODER_CONFIGS:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", config, "--n", str(args.n)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(f"{config}: {rows[-1]['per_s']:.1f} sentences/s", file=sys.stderr, flush=True)
    lines = ["### Speed of the packaged sentence encoder and echo embeddings (issue 12)",
             f"- date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
             f"- command: `.venv/bin/python bench/speed.py {' '.join(sys.argv[1:])}`; 1-minute load "
             f"average {started:.1f} at start, {os.getloadavg()[0]:.1f} at the end",
             f"- `features_for` under each backbone's default settings on the band's rows (a "
             f"submit's), {args.n} SST-2 training sentences, no feature cache, one fresh process per row", "",
             "| configuration | sentences/s | s per 1,000 sentences (extrapolated) | CPU s per 1,000 "
             "| torch threads | peak RSS MB | warm load s | load average (start, end) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['per_s']:.1f} | {r['s_per_1000']:.0f} | {r['cpu_s_per_1000']:.0f} "
                     f"| {r['threads']} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} "
                     f"| {r['load_avg'][0]:.1f}, {r['load_avg'][1]:.1f} |")
    lines += ["", "| backbone | installed packages MB | model cache folder MB |", "|---|---|---|"]
    for name in ("smollm2-135m", "minilm-l6", "mpnet"):
        sizes = install_sizes(name)
        lines.append(f"| {name} | {sizes['packages_mb']:.0f} | {sizes['cache_mb']:.0f} |")
    return "\n".join(lines + [""])


def bench_backbone(name: str, texts, labels, args, cache) -> dict:
    """All measurements for one backbone; each section is skipped when --quick makes it pointless."""
    loads = load_times(name, cold=not args.no_cold)
    bb = load_backbone(name)
    n = 64 if args.quick else args.n
    out = {"backbone": name, "info": {**bb.info, "device": bb.device, "layers": bb.n_layers - 1,
                                      "hidden": bb.hidden_size}, "loads": loads}
    out["throughput"] = embedding_throughput(bb, texts[:n], repeats=2 if args.quick else 3)
    # labels are drawn from these texts, up to 100 per class; features come from the cache when seen
    n_feat, sizes = (240, (25, 50, 100)) if args.quick else (400, (25, 50, 100, 200))
    X = embed(bb, texts[:n_feat], prompt=PROMPT, cache=cache)
    out["retrain"] = retrain_latency(X, labels[:n_feat], sorted(set(labels)), sizes=sizes,
                                     repeats=10 if args.quick else 30)
    if name == DEFAULT_BACKBONE and not args.quick:
        out["round_trip"] = round_trip(bb, texts[:1200], labels[:1200], repeats=10)
    del bb
    return out


def main() -> None:
    from core.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="installed", help="'installed' or comma-separated names")
    ap.add_argument("--n", type=int, default=256, help="sentences for the throughput test")
    ap.add_argument("--quick", action="store_true",
                    help="default backbone only, 64 texts, labels up to 100, fewer repeats")
    ap.add_argument("--no-cold", action="store_true",
                    help="time only the warm load (cold: a GGUF conversion into an empty cache)")
    ap.add_argument("--out", help="append the markdown report here")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--cache", default=str(ROOT / "bench" / "results" / "cache.db"))
    ap.add_argument("--encoders", action="store_true",
                    help="issue 12: mpnet, smollm2-135m with and without echo, and their fusion")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # one --encoders row, in a fresh process
    args = ap.parse_args()
    if args.one or args.encoders:
        texts, _ = load_split(DATA / "sst2", "train")
        if args.one:
            print(json.dumps(one_config(args.one, texts, args.n)))
            return
        report = encoder_report(args, texts)
        print(report)
        if args.out:
            with open(args.out, "a") as f:
                f.write(report + "\n")
        return
    names = [DEFAULT_BACKBONE] if args.quick and args.backbones == "installed" else (
        installed() if args.backbones == "installed" else args.backbones.split(","))
    texts, labels = load_split(DATA / "sst2", "train")
    where, results, started = machine(), [], time.time()
    with Store.open(args.cache) as cache:
        for name in names:
            t = time.time()
            results.append(bench_backbone(name, texts, labels, args, cache))
            print(f"{name} done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    report = _markdown(args, where, results, time.time() - started)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "date": str(datetime.date.today()),
                                               "results": results}, indent=1))


def _markdown(args, where, results, wall) -> str:
    lines = [
        "### Speed",
        f"- date {datetime.date.today()}; machine: {where}; wall time {wall:.0f} s",
        f"- command: `.venv/bin/python bench/speed.py {' '.join(sys.argv[1:])}`",
        "- embedding: SST-2 sentences in a review prompt, batch 32, best of interleaved repeats",
        "",
        "| backbone | layers × hidden | tokens/sentence | bare forward sent/s | `embed` sent/s | embed / bare "
        "| naive sent/s | sorted / naive | cold load s | warm load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, i, ld = r["throughput"], r["info"], r["loads"]
        lines.append(
            f"| {r['backbone']} | {i['layers']} × {i['hidden']} | {t['tokens_mean']:.1f} | {t['bare_per_s']:.1f} "
            f"| {t['embed_per_s']:.1f} | {t['embed_vs_bare']:.2f} | {t['naive_per_s']:.1f} "
            f"| {t['sorted_vs_naive']:.2f} | {ld.get('cold_s', float('nan')):.1f} | {ld.get('warm_s', float('nan')):.1f} |")
    lines += ["", "Retrain latency (mode layer, features cached, spec reused, C chosen by repeated stratified CV), "
              "median / p95 ms:", "",
              "| backbone | features | " + " | ".join(f"{r['labels']} labels" for r in results[0]["retrain"]) + " |",
              "|---|---|" + "---|" * len(results[0]["retrain"])]
    for r in results:
        lines.append(f"| {r['backbone']} | {r['retrain'][0]['d']} | " + " | ".join(
            f"{x['median_ms']:.0f} / {x['p95_ms']:.0f}" for x in r["retrain"]) + " |")
    for r in results:
        if "round_trip" in r:
            rt = r["round_trip"]
            lines += ["", f"Submit → new model round trip on {r['backbone']} (`core.project.retrain`: "
                      f"{rt['labels']} labels, {rt['unlabelled']} unlabelled predicted, mode auto): "
                      f"median {rt['median_ms']:.0f} ms, p95 {rt['p95_ms']:.0f} ms."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
