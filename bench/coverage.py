"""Does the estimated accuracy above a confidence threshold match the test accuracy above it?

    .venv/bin/python bench/coverage.py [--sets sst2,cr,trec,subj,sms_spam] [--shots 16,32]
        [--seeds 3] [--max-test 300] [--thresholds 0.5,0.6,0.7,0.8,0.9] [--target 0.9]
        [--time-limit 1800] [--threads 1]

Issue 15 item 12. For every set (the tuning half of ../shared/data, read there), draw and
seed, the app's defaults (``Settings()``: SmolLM2-135M, generic prompt, auto mode,
elastic-net) are trained on the draw; the model's calibration (``core.learn.coverage``,
from its out-of-fold predictions) estimates the accuracy above each threshold with a 95%
Wilson interval, and the calibrated model then predicts a stratified test sample. A case
is a (set, shots, seed, threshold) with an estimate (10+ labelled texts above it) and 10+
test rows above it; it is *within* when the test accuracy above the threshold lies inside
the stated interval. The test figure is itself a sample (of ``n`` test rows), so even a
perfect estimate lands inside its 95% interval somewhat less than 95% of the time.

Also: for ``--target`` accuracy, the threshold the app would pick (the interval's lower
end reaches the target) and the test accuracy above it.

The 16-per-class draw is the first half (per class) of the seed's 32-per-class draw.
Features are cached in ``--cache`` (one SQLite file), so a rerun costs only head fits.
Results: ``--out`` (JSON) and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.evaluate import draw_shots, load_split, stratified_sample  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.learn.coverage import estimate, threshold_for, wilson  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.store import Store  # noqa: E402

SETS = ("sst2", "cr", "trec", "subj", "sms_spam")
MIN_TEST = 10  # test rows above a threshold needed to compare


def half_draw(idx: np.ndarray, labels: list[str], shots: int) -> np.ndarray:
    """The first ``shots`` rows per class of a draw (sorted indices of random rows)."""
    seen: dict[str, int] = {}
    keep = []
    for i in idx:
        if seen.get(labels[i], 0) < shots:
            keep.append(i)
            seen[labels[i]] = seen.get(labels[i], 0) + 1
    return np.array(keep)


def one_case(clf, X_test, y_test, thresholds, target) -> dict:
    """Estimated vs test accuracy above each threshold, and the target's threshold."""
    cal = clf.calibration
    probs = clf.predict_proba_features(X_test)
    conf, right = probs.max(1), np.array(clf.classes)[probs.argmax(1)] == np.array(y_test)
    rows = []
    for t in thresholds:
        est, above = estimate(cal, t), conf >= t
        test_acc = float(right[above].mean()) if above.any() else None
        rows.append({"threshold": t, "n_labels_above": est.n, "estimate": est.accuracy,
                     "low": est.low, "high": est.high, "n_test_above": int(above.sum()),
                     "test_accuracy": test_acc, "test_coverage": float(above.mean())})
    picked = threshold_for(cal, target)
    chosen = None
    if picked is not None:
        above = conf >= picked.threshold
        chosen = {"threshold": picked.threshold, "low": picked.low, "n_test_above": int(above.sum()),
                  "test_accuracy": float(right[above].mean()) if above.any() else None,
                  "test_coverage": float(above.mean())}
    return {"temperature": cal.temperature, "test_accuracy": float(right.mean()),
            "thresholds": rows, "target": chosen}


def summarise(cases: list[dict]) -> dict:
    """Share of comparable cases within the interval, mean signed error, mean width."""
    comparable = [r for c in cases for r in c["thresholds"]
                  if r["estimate"] is not None and r["n_test_above"] >= MIN_TEST]
    if not comparable:
        return {"cases": 0}
    within = [r["low"] <= r["test_accuracy"] <= r["high"] for r in comparable]
    # the looser check: the test figure's own 95% interval overlaps the stated one
    overlap = [wilson(r["test_accuracy"] * r["n_test_above"], r["n_test_above"])[1] >= r["low"]
               and wilson(r["test_accuracy"] * r["n_test_above"], r["n_test_above"])[0] <= r["high"]
               for r in comparable]
    targets = [c["target"] for c in cases if c["target"] and c["target"]["n_test_above"] >= MIN_TEST]
    return {"cases": len(comparable), "within": float(np.mean(within)), "overlap": float(np.mean(overlap)),
            "error": float(np.mean([r["estimate"] - r["test_accuracy"] for r in comparable])),
            "abs_error": float(np.mean([abs(r["estimate"] - r["test_accuracy"]) for r in comparable])),
            "width": float(np.mean([r["high"] - r["low"] for r in comparable])),
            "target_found": sum(c["target"] is not None for c in cases), "runs": len(cases),
            "target_test": [t["test_accuracy"] for t in targets],
            "target_coverage": [t["test_coverage"] for t in targets]}


def run_set(name, bb, store, args, thresholds) -> dict:
    train_texts, train_labels = load_split(DATA / name, "train")
    test_texts, test_labels = load_split(DATA / name, "test")
    keep = stratified_sample(test_labels, args.max_test, np.random.default_rng(0))
    test_texts, test_labels = [test_texts[i] for i in keep], [test_labels[i] for i in keep]
    classes = sorted(set(train_labels))
    settings = Settings()
    draws = [draw_shots(train_labels, max(args.shots), np.random.default_rng(seed))
             for seed in range(args.seeds)]
    union = sorted(set(np.concatenate(draws).tolist()))
    X = features_for(bb, [train_texts[i] for i in union] + test_texts, settings, cache=store)
    row_of = {i: r for r, i in enumerate(union)}
    X_test = X[len(union):]
    out: dict = {}
    for shots in args.shots:
        cases = []
        for seed, draw in enumerate(draws):
            idx = half_draw(draw, train_labels, shots)
            clf = train(X[[row_of[i] for i in idx]], [train_labels[i] for i in idx], classes,
                        settings, random_state=seed)
            cases.append(one_case(clf, X_test, test_labels, thresholds, args.target))
        out[str(shots)] = {"cases": cases, "summary": summarise(cases)}
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--shots", default="16,32")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-test", type=int, default=300)
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--cache", default=str(ROOT / "bench" / "results" / "coverage_cache.db"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "coverage.json"))
    ap.add_argument("--time-limit", type=float, default=1800, help="seconds; no new set starts after it")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads: on a busy shared CPU more threads oversubscribe it")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.shots = [int(s) for s in args.shots.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    start, header = time.perf_counter(), machine()
    bb = load_backbone(Settings().backbone)
    results = {}
    with Store.open(args.cache) as store:
        for name in args.sets.split(","):
            if time.perf_counter() - start > args.time_limit:
                print(f"time limit: {name} and later sets skipped", file=sys.stderr)
                break
            results[name] = run_set(name, bb, store, args, thresholds)
            print(f"{name} done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    every = {k: summarise([c for r in results.values() for c in r[k]["cases"]]) for k in map(str, args.shots)}
    report = {"machine": header, "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "seconds": time.perf_counter() - start,
              "thresholds": thresholds, "target": args.target, "sets": results, "all": every}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("| set | per class | cases | test acc. inside the interval | intervals overlap | mean error "
          "(est. − test) | mean abs. error | mean width | target found | test acc. above it |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, by_shots in [*results.items(), ("**all**", {k: {"summary": v} for k, v in every.items()})]:
        for shots, r in by_shots.items():
            s = r["summary"]
            if not s["cases"]:
                print(f"| {name} | {shots} | 0 | | | | | | | |")
                continue
            tt = s["target_test"]
            print(f"| {name} | {shots} | {s['cases']} | {_pct(s['within'])} | {_pct(s['overlap'])} | "
                  f"{100 * s['error']:+.1f} pts | {100 * s['abs_error']:.1f} pts | {100 * s['width']:.0f} pts | "
                  f"{s['target_found']}/{s['runs']} | "
                  + (f"{_pct(np.mean(tt))} (min {_pct(min(tt))}) |" if tt else "– |"))
    print(f"\n{header}; {report['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
