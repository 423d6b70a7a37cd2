"""Cost of the explanations on the default backbone (CPU): SHAP and coefficient attributions.

    .venv/bin/python bench/explain.py [--n 10] [--shots 32] [--threads 1] [--plain] [--deepest]
        [--sweep 48,96,144] [--out FILE]

Trains a classifier (default settings) on ``--shots`` SST-2 training sentences per class
(../shared/data/sst2/train.csv), then on ``--n`` test sentences of 18-22 tokens measures
1. SHAP seconds per sentence (``shap_attributions`` at its default budget), with the
   efficiency error |sum(values) + base - logits| and the eval count; with ``--plain``
   also through the plain ``features_for`` path, interleaved on the same sentences;
2. coefficient attributions once the hidden states are known (``coefficient_attributions``
   with ``states=``), and the forward pass that yields those states;
3. with ``--sweep``, for the first ``--sweep-n`` sentences (default 4): how well each SHAP budget and batch size
   (``--sweep-batches``) ranks the words like the full Owen tree (``--reference`` evals,
   enough to finish it), which is how the defaults in core/explain.py were chosen.
Prints a markdown table and writes JSON (default bench/results/explain.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.model.registry import DEFAULT_BACKBONE
from core.model.loading import load_backbone  # noqa: E402
import core.model.prefix  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.learn.features import FeatureSpec  # noqa: E402
from core.explain.sentence import sentence_attribution  # noqa: E402
from core.model.embed import token_states  # noqa: E402
from core.model.group import is_fused  # noqa: E402
from core.evaluate import draw_shots, load_split  # noqa: E402
from core.explain.attributions import coefficient_attributions  # noqa: E402
from core.explain.shapley import SHAP_BATCH_SIZE, SHAP_MAX_EVALS, shap_attributions  # noqa: E402
from core.explain.words import view_agreement, word_attributions, rank_agreement


def _stats(xs) -> dict:
    xs = np.asarray(xs, float)
    return {"median": float(np.median(xs)), "p95": float(np.percentile(xs, 95)),
            "min": float(xs.min()), "max": float(xs.max())}


def _sentences(bb, n: int, rng) -> list[str]:
    texts, _ = load_split(DATA / "sst2", "test")
    fits = [t for t in texts if 18 <= len(bb.tokenizer(t)["input_ids"]) <= 22]
    return [fits[i] for i in rng.choice(len(fits), n, replace=False)]


def _classifier(bb, shots: int, rng, deepest: bool = False):
    texts, labels = load_split(DATA / "sst2", "train")
    idx = draw_shots(labels, shots, rng)
    settings = Settings(backbone=bb.name)  # this run's single backbone, not the fused default
    X = features_for(bb, [texts[i] for i in idx], settings)
    last = bb.n_layers - 1
    spec = FeatureSpec("layer", (last,), "single", (bb.n_layers, bb.hidden_size)) if deepest else None
    return train(X, [labels[i] for i in idx], sorted(set(labels)), settings, spec=spec)


def _plain_shap(bb, clf, text, max_evals, batch_size):
    """SHAP through features_for, as before core.model.prefix (same values to float rounding)."""
    supports = core.model.prefix.supports
    core.model.prefix.supports = lambda *a, **k: False
    try:
        return shap_attributions(bb, clf, text, max_evals=max_evals, batch_size=batch_size)
    finally:
        core.model.prefix.supports = supports


def measure(bb, clf, sentences, max_evals: int, batch_size: int, plain: bool = False) -> dict:
    shap_s, evals, eff, coef_s, fwd_s, exact, rho = [], [], [], [], [], [], []
    plain_s, plain_diff = [], []
    k = 1  # binary: class 1's scores are minus class 0's
    for text in sentences:
        r = shap_attributions(bb, clf, text, max_evals=max_evals, batch_size=batch_size)
        shap_s.append(r.seconds)
        if plain:  # interleaved, so both paths see the same load
            slow = _plain_shap(bb, clf, text, max_evals, batch_size)
            plain_s.append(slow.seconds)
            plain_diff.append(float(np.abs(slow.values - r.values).max()))
        evals.append(r.n_evals)
        eff.append(float(np.abs(r.values.sum(0) + r.base_values - r.logits).max()))
        t = time.perf_counter()
        if is_fused(bb):  # every part's forward pass and attribution, merged as the page shows it
            _, a = sentence_attribution(bb, clf, text)
            fwd_s.append(time.perf_counter() - t)
            coef_s.append(np.nan)
        else:
            states = token_states(bb, text, prompt=clf.settings.prompt, max_length=clf.settings.max_length)
            fwd_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            a = coefficient_attributions(bb, clf, text, states=states)
            coef_s.append(time.perf_counter() - t)
        exact.append(float(np.abs(a.values.sum(0) + a.constant - a.logits).max()))
        rho.append(view_agreement(a, r, text, k).rho)
    out = {"plain_shap_seconds": _stats(plain_s), "plain_values_diff_max": max(plain_diff)} if plain else {}
    return out | {"shap_seconds": _stats(shap_s), "shap_evals": _stats(evals),
            "shap_efficiency_error_max": max(eff), "coef_ms": _stats(np.array(coef_s) * 1000),
            "forward_ms": _stats(np.array(fwd_s) * 1000), "exactness_error_max": max(exact),
            "coef_vs_shap_spearman": _stats([x for x in rho if not np.isnan(x)] or [np.nan])}


def sweep(bb, clf, sentences, budgets, batches, reference: int) -> dict:
    """Spearman of each (budget, batch) word ranking against the full Owen tree's."""
    rows, ref_evals, ref_s = {}, [], []
    for text in sentences:
        ref = shap_attributions(bb, clf, text, max_evals=reference, batch_size=512)
        ref_evals.append(ref.n_evals)
        ref_s.append(ref.seconds)
        ref_words = [p.score for p in word_attributions(ref, text, 1)]
        for b in budgets:
            for size in batches:
                r = shap_attributions(bb, clf, text, max_evals=b, batch_size=size)
                words = [p.score for p in word_attributions(r, text, 1)]
                row = rows.setdefault((b, size), {"rho": [], "seconds": []})
                row["rho"].append(rank_agreement(words, ref_words))
                row["seconds"].append(r.seconds)
    return {"reference_budget": reference, "reference_evals": _stats(ref_evals),
            "reference_seconds": _stats(ref_s),
            "rows": [{"budget": b, "batch_size": size, "spearman_vs_reference": _stats(r["rho"]),
                      "seconds": _stats(r["seconds"])} for (b, size), r in rows.items()]}


def table(result: dict) -> str:
    m = result["measure"]
    lines = [f"{result['machine']}; torch threads {result['torch_threads']}",
             f"classifier: {result['spec']}, CV accuracy {result['cv_accuracy']:.3f}", "",
             "| measure | median | p95 | target |", "|---|---|---|---|",
             f"| SHAP s/sentence (max_evals {result['max_evals']}, batch {result['batch_size']}) "
             f"| {m['shap_seconds']['median']:.2f} | {m['shap_seconds']['p95']:.2f} | <= 3 s |",
             f"| SHAP masked strings embedded | {m['shap_evals']['median']:.0f} | {m['shap_evals']['p95']:.0f} | |",
             *([f"| SHAP s/sentence, plain path (no shared prefixes, all layers) "
                f"| {m['plain_shap_seconds']['median']:.2f} | {m['plain_shap_seconds']['p95']:.2f} | |"]
               if "plain_shap_seconds" in m else []),
             f"| coefficient attribution ms (states known; fused: in the next row) | {m['coef_ms']['median']:.1f} "
             f"| {m['coef_ms']['p95']:.1f} | <= 100 ms |",
             f"| forward pass for the states (fused: every part's, with the attribution), ms | {m['forward_ms']['median']:.0f} | {m['forward_ms']['p95']:.0f} | |",
             f"| Spearman coef vs SHAP on words (median, min) | {m['coef_vs_shap_spearman']['median']:.2f} "
             f"| {m['coef_vs_shap_spearman']['min']:.2f} | |"]
    lines.append(f"\nmax efficiency error {m['shap_efficiency_error_max']:.1e}; "
                 f"max exactness error {m['exactness_error_max']:.1e}"
                 + (f"; max |SHAP value| difference, shared-prefix vs plain path "
                    f"{m['plain_values_diff_max']:.1e}" if "plain_values_diff_max" in m else ""))
    if "sweep" in result:
        sw = result["sweep"]
        lines.append(f"\nfull Owen tree: {sw['reference_evals']['min']:.0f}-{sw['reference_evals']['max']:.0f} "
                     f"masked strings, median {sw['reference_seconds']['median']:.1f} s")
        lines += ["", "| budget | batch | Spearman vs full (median) | min | s (median) |",
                  "|---|---|---|---|---|"]
        for row in sw["rows"]:
            rho, sec = row["spearman_vs_reference"], row["seconds"]
            lines.append(f"| {row['budget']} | {row['batch_size']} | {rho['median']:.2f} "
                         f"| {rho['min']:.2f} | {sec['median']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="sentences to explain")
    ap.add_argument("--shots", type=int, default=32, help="labelled sentences per class")
    ap.add_argument("--max-evals", type=int, default=SHAP_MAX_EVALS)
    ap.add_argument("--batch-size", type=int, default=SHAP_BATCH_SIZE)
    ap.add_argument("--sweep", default="", help="comma-separated SHAP budgets to compare")
    ap.add_argument("--sweep-batches", default="16,512", help="comma-separated SHAP batch sizes")
    ap.add_argument("--reference", type=int, default=2000, help="the sweep's full budget")
    ap.add_argument("--sweep-n", type=int, default=4, help="sentences the sweep uses")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); on a CPU shared with other "
                         "jobs, 1 thread avoids OpenMP threads waiting on each other")
    ap.add_argument("--plain", action="store_true",
                    help="also time SHAP through the plain features_for path on each sentence")
    ap.add_argument("--deepest", action="store_true",
                    help="a head reading the last layer only (no layer can be skipped): the "
                         "shared-prefix path's slowest case")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "explain.json"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "torch_threads": torch.get_num_threads(),
              "backbone": DEFAULT_BACKBONE, "max_evals": args.max_evals, "batch_size": args.batch_size}
    t = time.perf_counter()
    bb = load_backbone(DEFAULT_BACKBONE, device="cpu")
    clf = _classifier(bb, args.shots, rng, deepest=args.deepest)
    result.update(setup_seconds=time.perf_counter() - t, spec=clf.spec.describe(),
                  cv_accuracy=clf.metrics["cv_accuracy"])
    sentences = _sentences(bb, args.n + 1, rng)
    shap_attributions(bb, clf, sentences.pop(), max_evals=8)  # warm-up: shap's import and numba
    result["load_before"] = os.getloadavg()[0]
    result["measure"] = measure(bb, clf, sentences, args.max_evals, args.batch_size, args.plain)
    result["load_after"] = os.getloadavg()[0]
    if args.sweep:
        budgets = [int(b) for b in args.sweep.split(",")]
        batches = [int(b) for b in args.sweep_batches.split(",")]
        result["sweep"] = sweep(bb, clf, sentences[:args.sweep_n], budgets, batches, args.reference)
    print(table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
