"""Wall time of 100 bootstrap refits (``core.explain.stability.bootstrap``) at 100 labels on CPU.

    .venv/bin/python bench/stability.py [--n-per-class 50] [--other 100] [--B 100] [--repeats 3]

Embeds n-per-class SST-2 training sentences per class (from ../shared/data/sst2, seed 0)
plus --other further ones as "unlabelled" texts with the default backbone (smollm2-135m)
and a review prompt, trains a classifier with default settings (mode chosen by CV), then
times ``bootstrap(clf, X, y, X_other=..., B=100)`` with n_jobs=1 and with 2 threads
(median of --repeats). Also times ``token_rank_stability`` for one sentence. Target:
100 refits at 100 labels in <= 5 s. Prints markdown and writes bench/results/stability.json.
The load average is printed because other jobs share the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.model.loading import load_backbone  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.model.embed import token_states  # noqa: E402
from core.evaluate import draw_shots, load_split  # noqa: E402
from core.explain.stability import bootstrap  # noqa: E402
from core.explain.token_stability import token_rank_stability  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sst2"
PROMPT = "Review: {text}\nSentiment:"
TARGET_S = 5.0


def timed(fn, repeats):
    """(median seconds, all seconds, last result) of fn() over repeats."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-per-class", type=int, default=50)
    p.add_argument("--other", type=int, default=100, help="unlabelled sentences to predict")
    p.add_argument("--B", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="threads of the parallel setting")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "stability.json"))
    args = p.parse_args(argv)

    texts, labels = load_split(DATA, "train")
    rng = np.random.default_rng(0)
    idx = draw_shots(labels, args.n_per_class, rng)
    rest = np.setdiff1d(np.arange(len(texts)), idx)
    other = rng.choice(rest, size=min(args.other, len(rest)), replace=False)
    settings = Settings(backbone="smollm2-135m", prompt=PROMPT)
    backbone = load_backbone(settings.backbone)
    start = time.perf_counter()
    X_all = features_for(backbone, [texts[i] for i in np.concatenate([idx, other])], settings)
    embed_s = time.perf_counter() - start
    X, X_other = X_all[:len(idx)], X_all[len(idx):]
    classes = sorted(set(labels))
    clf = train(X, [labels[i] for i in idx], classes, settings)
    y = np.array([classes.index(labels[i]) for i in idx])
    bootstrap(clf, X, y, B=4)  # load the compiled solver before timing

    load_start = os.getloadavg()[0]
    rows = []
    for jobs in (1, args.jobs):
        median, times, stab = timed(lambda: bootstrap(clf, X, y, X_other=X_other, B=args.B,
                                                      n_jobs=jobs), args.repeats)
        rows.append({"n_jobs": jobs, "median_s": median, "times_s": times})
    states = token_states(backbone, texts[idx[0]], prompt=settings.prompt,
                          max_length=settings.max_length)
    pooled = np.arange(len(states.tokens)) > 0
    user = np.array([s is not None for s in states.encoded.user_spans])
    tok_s, _, ranks = timed(lambda: token_rank_stability(stab, states.hidden, pooled, 1, user=user),
                            args.repeats)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
        "labels": len(idx), "other": len(other), "B": args.B, "embed_s": embed_s,
        "spec": clf.spec.describe(), "d": clf.spec.n_features, "penalty": clf.head.penalty,
        "C": clf.head.C_, "cv_accuracy": clf.metrics["cv_accuracy"], "bootstrap": rows,
        "target_s": TARGET_S, "oob_accuracy_median": float(np.nanmedian(stab.oob_accuracy)),
        "labelled_agreement_mean": float(np.nanmean(stab.agreement)),
        "other_agreement_mean": float(stab.other_agreement.mean()),
        "selected_features_full": int((stab.coef != 0).any(1).sum()),
        "token_rank_s": tok_s, "token_rank_badge": ranks["badge"],
        "token_rank_median_spearman": ranks["median_spearman"],
    }
    print_markdown(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def print_markdown(r):
    print(f"### Bootstrap stability ({r['B']} refits, {r['labels']} labels, {r['other']} unlabelled)")
    print(f"- date {r['date']}, machine: {r['machine']}, load average {r['load_average_start']:.2f}"
          f" -> {r['load_average_end']:.2f}")
    print(f"- command: `{r['command']}`")
    print(f"- classifier: {r['spec']} (d = {r['d']}), {r['penalty']}, C = {r['C']:.4g}, "
          f"CV accuracy {r['cv_accuracy']:.3f}; embedding took {r['embed_s']:.1f} s\n")
    print("| n_jobs | median s | runs s | target |\n|---:|---:|---|---|")
    for row in r["bootstrap"]:
        runs = ", ".join(f"{t:.2f}" for t in row["times_s"])
        status = "met" if row["median_s"] <= r["target_s"] else "missed"
        print(f"| {row['n_jobs']} | {row['median_s']:.2f} | {runs} | <= {r['target_s']:.0f} s {status} |")
    print(f"\nOOB accuracy median {r['oob_accuracy_median']:.3f}; mean prediction agreement "
          f"{r['labelled_agreement_mean']:.3f} (labelled, out of bag), "
          f"{r['other_agreement_mean']:.3f} (unlabelled); token_rank_stability for one sentence "
          f"{r['token_rank_s'] * 1000:.0f} ms ({r['token_rank_badge']}, median Spearman "
          f"{r['token_rank_median_spearman']:.2f}).")


if __name__ == "__main__":
    main()
