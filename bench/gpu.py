"""The embedding path and SHAP against the bare network, per dtype and batch size: one command.

    python3 bench/gpu.py [--device cuda|cpu] [--n 2048] [--batches 32,128,512,plan]
        [--dtypes float32,bfloat16] [--shap-n 10] [--backbone smollm2-135m] [--cold] [--profile]
        [--out FILE.md]

The one command on a GPU box (under 5 minutes; ../shared/GPU.md stages tenshot and the
packaged model on an air-gapped one):

    python3 bench/gpu.py --out bench/BENCHMARKS.md

and its quick check on a CPU: ``python3 bench/gpu.py --device cpu --n 32 --batches 32,plan
--shap-n 1 --repeats 1``. For each dtype
(default on CUDA: float32 and bfloat16; on CPU: float32), on SST-2 sentences
(../shared/data/sst2/train.csv) in a review prompt:
1. bare ``model(**batch, output_hidden_states=True)`` on length-sorted padded batches
   against ``core.model.embed.embed`` on the same texts, at each batch size ("plan" is
   the device's own, ``core.model.device.batch_plan``), best of 3, with the peak GPU
   memory of the ``embed`` run; and ``embed`` of the band's rows only (what a submit
   embeds: ``core.model.cache.band_rows``, the layers above the deepest not run);
2. SHAP seconds per sentence (``shap_attributions`` at its defaults, 144 strings) on
   ``--shap-n`` test sentences of 18-22 tokens, and the part of it spent outside the
   network (``Backbone.forward``, synchronised), with the efficiency error
   |sum(values) + base - logits| against the dtype's tolerance (``core.model.device``);
   fidelity against the full Owen tree is bench/explain.py's ``--sweep``;
3. one forward pass for a sentence's token states, and the warm load (``--cold`` adds a
   first load into an empty cache, GGUF conversion included).
Prints a markdown table (append it to bench/BENCHMARKS.md with the device and date).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.evaluate import draw_shots, load_split  # noqa: E402
from core.explain.shapley import shap_attributions, warm_up  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.model import forward  # noqa: E402
from core.model.backbone import Backbone  # noqa: E402
from core.model.cache import band_rows  # noqa: E402
from core.model.device import apply_threads, tolerance  # noqa: E402
from core.model.embed import embed, token_states  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.model.tokens import encode  # noqa: E402

PROMPT = "Review: {text}\nSentiment:"


def _sync(bb) -> None:
    import torch

    if bb.device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(fns, bb, repeats: int) -> list[float]:
    """Best wall time of each function over ``repeats`` interleaved rounds (after one
    warm-up call each), so drift in a shared machine's load hits them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            _sync(bb)
            t = time.perf_counter()
            fn()
            _sync(bb)
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def throughput(bb, texts: list[str], batch: str, repeats: int, profile: bool = False) -> dict:
    """Bare forward vs ``embed`` (sentences/s) at one batch size, same batches for both;
    with ``profile``, cProfile's top functions of one embed call go to stderr."""
    import torch

    plan = forward.backbone_plan(bb)
    size = plan.batch_size if batch == "plan" else int(batch)
    encoded = encode(bb.tokenizer, texts, prompt=PROMPT)
    pad_id = bb.tokenizer.pad_token_id or 0
    batches = [forward.pad([encoded[i].input_ids for i in idx], pad_id)
               for idx in forward.batches([len(e.input_ids) for e in encoded], size, plan.token_budget)]

    cuda = bb.device.startswith("cuda")

    def bare():
        if not cuda:
            apply_threads()  # the thread count embed's forward loop uses, so like meets like
        with torch.inference_mode():
            for ids, mask in batches:
                bb.model(input_ids=ids.to(bb.device), attention_mask=mask.to(bb.device),
                         output_hidden_states=True, use_cache=False)

    def embedded():
        embed(bb, texts, prompt=PROMPT, batch_size=size)

    def band():  # what a submit embeds: the band's rows, the layers above not run
        embed(bb, texts, prompt=PROMPT, batch_size=size, rows=band_rows(bb))

    peak = float("nan")
    if cuda:  # peak memory of the embed path (after a warm-up call)
        embedded()
        torch.cuda.reset_peak_memory_stats()
        embedded()
        peak = torch.cuda.max_memory_allocated() / 2**30
    if profile:  # where embed's time goes beyond the bare forward: its host work
        _profiled(embedded, f"embed at batch {size}")
    t_bare, t_embed, t_band = _best([bare, embedded, band], bb, repeats)
    return {"batch": f"{size} ({batch})" if batch == "plan" else str(size), "batches": len(batches),
            "bare": len(texts) / t_bare, "embed": len(texts) / t_embed, "ratio": t_bare / t_embed,
            "band": len(texts) / t_band, "peak_gib": peak}


def _profiled(fn, title: str) -> None:
    """Run fn once under cProfile; its top 20 functions by own time go to stderr."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
    print(f"--- cProfile: {title}\n{out.getvalue()}", file=sys.stderr)


def shap_speed(bb, n: int, rng, profile: bool = False) -> dict:
    """Median SHAP seconds per sentence and the worst efficiency error (in logit scale);
    with ``profile``, cProfile's top functions by own time go to stderr."""
    import cProfile
    import io
    import pstats

    texts, labels = load_split(DATA / "sst2", "train")
    idx = draw_shots(labels, 16, rng)
    settings = Settings(backbone=bb.name)  # this run's single backbone, not the fused default
    X = features_for(bb, [texts[i] for i in idx], settings)
    clf = train(X, [labels[i] for i in idx], sorted(set(labels)), settings)
    test, _ = load_split(DATA / "sst2", "test")
    fits = [t for t in test if 18 <= len(bb.tokenizer(t)["input_ids"]) <= 22]
    sentences = [fits[i] for i in rng.choice(len(fits), n + 1, replace=False)]
    warm_up()
    shap_attributions(bb, clf, sentences[0])  # first call pays one-off costs
    seconds, inside, errors, prof = [], [], [], cProfile.Profile()
    network = [0.0]

    def timed_forward(**inputs):  # the network's share: synced, so its GPU work counts here
        t = time.perf_counter()
        try:  # the prefix path ends a pass early by raising from a layer hook
            return Backbone.forward(bb, **inputs)
        finally:
            _sync(bb)
            network[0] += time.perf_counter() - t

    bb.forward = timed_forward  # an instance attribute, dropped again below
    if profile:
        prof.enable()
    for text in sentences[1:]:
        _sync(bb)
        network[0] = 0.0
        t = time.perf_counter()
        r = shap_attributions(bb, clf, text)
        seconds.append(time.perf_counter() - t)
        inside.append(network[0])
        scale = max(1.0, float(np.abs(r.logits).max()))
        errors.append(float(np.abs(r.values.sum(0) + r.base_values - r.logits).max()) / scale)
    del bb.forward
    if profile:
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)
    return {"median_s": float(np.median(seconds)), "max_s": float(np.max(seconds)),
            "outside_s": float(np.median(np.subtract(seconds, inside))),
            "efficiency": max(errors), "n": n}


def token_states_ms(bb, repeats: int = 10) -> float:
    text = "The acting was superb, but the plot dragged on far too long."
    return 1000 * _best([lambda: token_states(bb, text, prompt=PROMPT)], bb, repeats)[0]


def load_seconds(args, dtype: str, *, cold: bool) -> float:
    """Seconds for a fresh process to load the backbone (cold: into an empty cache)."""
    code = ("import sys,time; sys.path.insert(0,%r); from core.model.loading import load_backbone; "
            "t=time.perf_counter(); load_backbone(%r, device=%r, dtype=%r); print(time.perf_counter()-t)"
            ) % (str(ROOT), args.backbone, args.device, dtype)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as empty:
        if cold:
            env["TENSHOT_CACHE"] = empty
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(args) -> list[dict]:
    import torch

    texts, _ = load_split(DATA / "sst2", "train")
    texts = texts[: args.n]
    rows = []
    for dtype in args.dtypes.split(","):
        bb = load_backbone(args.backbone, device=args.device, dtype=dtype)
        row = {"dtype": dtype, "load_s": load_seconds(args, dtype, cold=False),
               "cold_s": load_seconds(args, dtype, cold=True) if args.cold else float("nan"),
               "speed": [throughput(bb, texts, b, args.repeats, args.profile) for b in args.batches.split(",")],
               "states_ms": token_states_ms(bb)}
        row["shap"] = (shap_speed(bb, args.shap_n, np.random.default_rng(0), args.profile)
                       if args.shap_n else None)
        row["tolerance"] = tolerance(bb)
        rows.append(row)
        print(f"{dtype} done", file=sys.stderr, flush=True)
        del bb
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def markdown(args, rows, wall: float) -> str:
    import torch

    device = (f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
              if args.device.startswith("cuda") else machine())
    lines = ["### GPU path (`bench/gpu.py`)",
             f"- date {datetime.date.today()}; device: {device}; backbone {args.backbone}; "
             f"{args.n} SST-2 sentences in a review prompt; wall time {wall:.0f} s",
             f"- command: `python3 bench/gpu.py {' '.join(sys.argv[1:])}`", "",
             "| dtype | batch | batches | bare sent/s | `embed` sent/s | embed / bare | band rows sent/s "
             "| peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for s in r["speed"]:
            lines.append(f"| {r['dtype']} | {s['batch']} | {s['batches']} | {s['bare']:,.1f} | {s['embed']:,.1f} "
                         f"| {s['ratio']:.2f} | {s['band']:,.1f} | {s['peak_gib']:.2f} |")
    lines += ["", "| dtype | best embed / best bare | SHAP s/sentence (median, max) | of which outside the "
              "network | efficiency error / logit scale (tolerance) | token states ms | warm load s | cold load s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = max(s["embed"] for s in r["speed"]) / max(s["bare"] for s in r["speed"])
        sh = r["shap"]
        shap_cell = f"{sh['median_s']:.2f}, {sh['max_s']:.2f} (n={sh['n']})" if sh else "–"
        eff = f"{sh['efficiency']:.1e} ({r['tolerance'].logprob:.0e})" if sh else "–"
        outside = f"{sh['outside_s']:.2f}" if sh else "–"
        lines.append(f"| {r['dtype']} | {best:.2f} | {shap_cell} | {outside} | {eff} | {r['states_ms']:.1f} "
                     f"| {r['load_s']:.1f} | {r['cold_s']:.1f} |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> str:
    import torch

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=2048 if cuda else 64, help="sentences for throughput")
    ap.add_argument("--batches", default="32,128,512,plan" if cuda else "32,plan")
    ap.add_argument("--dtypes", default=None, help="default: float32,bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--shap-n", type=int, default=10 if cuda else 2, help="SHAP sentences (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also time a first load into an empty cache")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile one embed call per batch size and SHAP; top functions to stderr")
    ap.add_argument("--out", help="append the markdown here")
    args = ap.parse_args(argv)
    args.dtypes = args.dtypes or ("float32,bfloat16" if args.device.startswith("cuda") else "float32")
    start = time.time()
    report = markdown(args, run(args), time.time() - start)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return report


if __name__ == "__main__":
    main()
