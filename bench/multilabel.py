"""Multi-label few-shot accuracy on GoEmotions, and the time of one multi-label submit.

    nice -n 5 /work/main/.venv/bin/python bench/multilabel.py \
        [--shots 8,16,32] [--seeds 3] [--max-test 1000] [--submits 10] [--mode layer] [--quick]

Accuracy: ``../shared/data/goemotions/`` (28 emotion labels, Reddit comments, ``text,labels``
with ``;``-separated names). For k in --shots and each seed, k texts are drawn per label
(a drawn text brings all its labels; ``core.multilabel_eval.draw_per_class``) and three
methods are scored on the same draws and the same test sample (micro/macro-F1, subset
accuracy): tenshot's default backbone and settings (``Settings()``: since issue 12
smollm2-135m+mpnet, the fixed fusion, L2; --mode/--penalty change both heads) with the one-vs-rest head; all-MiniLM-L6-v2 features with the same
heads; TF-IDF + scikit-learn one-vs-rest LR.

Submit time: a multi-label project of the 28 classes with 200 labelled texts (the smallest
k's first draw, topped up from the other draws) and about 1,000 unlabelled ones (drawn
texts and the test sample), features cached by the accuracy runs; one full retrain (spec, C and
thresholds chosen by CV), then --submits submits that each label one more text and
retrain as the app does (each class refitted at its chosen C). Reported: the median
submit in wall seconds and in CPU seconds (process time of all threads: on a loaded
machine the wall time overstates an idle one's, the CPU time does not), and the full
retrain, with the load average.

``--head-only``: the 28 heads of one submit alone (200 texts, synthetic features of one
SmolLM2 layer), wall and CPU seconds, in a minute and without the model.

Features are cached in /tmp/tenshot-bench-cache/mlcore-multilabel.db. Prints markdown
for bench/BENCHMARKS.md and writes bench/results/multilabel.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, ROOT, machine  # noqa: E402
from core.learn.classifier import Settings, default_prompt  # noqa: E402
from core.learn.pool import PoolMatrix  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.multilabel_eval import head_runs, prepare_multilabel, summarise, tfidf_runs  # noqa: E402
from core.project import retrain  # noqa: E402
from core.store import Store  # noqa: E402

CACHE = Path("/tmp/tenshot-bench-cache/mlcore-multilabel.db")
SET = DATA / "goemotions"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(stage: str, done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        _say(f"  {stage}: {done}/{total}")


def _settings(args, name: str) -> Settings:
    """The product's defaults for backbone ``name``, with --mode / --penalty when given."""
    changes = {k: v for k, v in (("mode", args.mode), ("penalty", args.penalty)) if v}
    return replace(Settings(), backbone=name, prompt=default_prompt(name), **changes).check()


def accuracy(args, store, backbones, save=lambda runs: None) -> list[dict]:
    """Runs of the three methods on the same draws; ``save(runs)`` after each method."""
    data = prepare_multilabel(SET, shots=args.shots, seeds=args.seeds, max_test=args.max_test)
    _say(f"{len(data.classes)} classes, {len(data.test_texts)} test texts, draws of "
         f"{sorted({len(r) for r in data.draws.values()})} texts")
    runs = []
    for method, name in ((f"tenshot ({Settings().backbone})", Settings().backbone), ("MiniLM + head", "minilm-l6")):
        settings = _settings(args, name)
        t = time.time()
        runs += head_runs(data, backbones(name), settings, method=method, cache=store,
                          progress=_progress)
        _say(f"{method}: {time.time() - t:.0f} s")
        save(runs)
    runs += tfidf_runs(data)
    return runs


def head_only(args) -> dict:
    """The heads of one submit alone, on synthetic SmolLM2-shaped features (no model): 28
    classes, 200 texts, one layer (d = 576); wall and CPU seconds of the full fit (C and
    thresholds by CV) and of the refit at the chosen C that a submit runs."""
    from core.learn.features import FeatureSpec
    from core.learn.multilabel import train_multilabel

    rng = np.random.default_rng(0)
    n, K = 200, 28
    Y = rng.random((n, K)) < 0.08
    Y[np.arange(n), rng.integers(0, K, n)] = True
    X = rng.normal(size=(n, 31, 576)).astype(np.float32)
    X[:, 15] += (Y @ rng.normal(size=(K, 576)) * 0.5).astype(np.float32)
    classes = [f"c{k}" for k in range(K)]
    sets = [tuple(c for c, y in zip(classes, row) if y) for row in Y]
    spec, settings = FeatureSpec("layer", (15,), "single", (31, 576)), Settings()
    t, c = time.perf_counter(), time.process_time()
    clf = train_multilabel(X, sets, classes, settings, spec=spec)
    full = (time.perf_counter() - t, time.process_time() - c)
    wall, cpu = [], []
    for _ in range(args.submits):
        t, c = time.perf_counter(), time.process_time()
        train_multilabel(X, sets, classes, settings, spec=spec, Cs=clf.head.C_, thresholds=clf.thresholds)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"full_wall_s": full[0], "full_cpu_s": full[1], "refit_wall_median_s": statistics.median(wall),
            "refit_cpu_median_s": statistics.median(cpu), "load": os.getloadavg()[0],
            "penalty": settings.penalty}


def submit_times(args, store, backbone) -> dict:
    """Seconds of one full multi-label retrain and the median of --submits fast ones."""
    # texts whose features the accuracy runs cached: the draws' and the test sample's
    data = prepare_multilabel(SET, shots=args.shots, seeds=args.seeds, max_test=args.max_test)
    first = list(data.draws[(min(args.shots), 0)])
    drawn = list(dict.fromkeys(first + np.concatenate(list(data.draws.values())).tolist()))
    rows, rest = drawn[:200], drawn[200:]
    pool = rest[:args.submits] + rest[args.submits:][:1000 - len(data.test_texts)]
    name = f"submit-{time.time():.0f}"
    project = store.create_project(name, data.classes, task_type="multi_label",
                                   settings=_settings(args, Settings().backbone).to_dict())
    store.add_labelled_sets(project.id, [data.train_texts[i] for i in rows],
                            [data.train_sets[i] for i in rows])
    store.add_texts(project.id, [data.train_texts[i] for i in pool] + data.test_texts)
    kept: dict = {}  # the app keeps the pool's head inputs between submits (core.learn.pool)
    try:
        t = time.perf_counter()
        full = retrain(store, project, backbone, pool=PoolMatrix(kept), random_state=0)
        full_s = time.perf_counter() - t
        times, cpu = [], []
        for i in pool[:args.submits]:
            store.set_label_set(project.id, store.text_id(project.id, data.train_texts[i]),
                                list(data.train_sets[i]))
            t, c = time.perf_counter(), time.process_time()
            out = retrain(store, project, backbone, pool=PoolMatrix(kept))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            assert not out.reselected
        return {"classes": len(data.classes), "labels": len(rows),
                "pool": len(pool) + len(data.test_texts),
                "full_s": full_s, "submit_median_s": statistics.median(times),
                "submit_s": times, "submit_cpu_median_s": statistics.median(cpu), "submit_cpu_s": cpu,
                "cv_macro_f1": full.metrics["cv_macro_f1"],
                "load": os.getloadavg()[0]}
    finally:
        store.delete_project(project.id)


def markdown(run: dict) -> str:
    lines = [f"### Multi-label: GoEmotions ({run['n_classes']} labels), k texts per label, "
             f"{run['seeds']} seeds, test sample {run['n_test']} texts",
             f"- date {run['date']}; machine: {run['machine']}; wall time {run['wall_s']:.0f} s",
             f"- command: `{run['command']}`",
             f"- settings of the heads: mode {run['settings']['mode']}, penalty "
             f"{run['settings']['penalty']} (MiniLM: no prompt)",
             "- mean ± std over seeds; every method sees the same draws and test rows; "
             "tenshot's per-class thresholds chosen by CV, the TF-IDF baseline at 0.5.", "",
             "| method | k | texts drawn | micro-F1 | macro-F1 | subset accuracy |",
             "|---|---|---|---|---|---|"]
    for method, by_k in run["mean"].items():
        for k, m in by_k.items():
            lines.append(f"| {method} | {k} | {m['n_train']:.0f} | {m['micro_f1']:.3f} ± "
                         f"{m['micro_f1_std']:.3f} | {m['macro_f1']:.3f} ± {m['macro_f1_std']:.3f} | "
                         f"{m['subset_accuracy']:.3f} |")
    s = run.get("submit")
    if s:
        lines += ["", f"Submit time at {s['classes']} classes, {s['labels']} labelled texts and "
                      f"{s['pool']} unlabelled (features cached; loaded machine, load "
                      f"{s['load']:.1f}): median {s['submit_median_s']:.2f} s wall, "
                      f"{s['submit_cpu_median_s']:.2f} s of CPU time (all threads; what an idle "
                      f"machine would need at most) over {len(s['submit_s'])} submits (each class "
                      "refitted at its chosen C); "
                      f"the full retrain that chooses spec, C and thresholds by CV: "
                      f"{s['full_s']:.1f} s."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shots", default="8,16,32")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--submits", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="k=4, 1 seed, 100 test texts, 3 submits")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--head-only", action="store_true",
                   help="only time the 28 heads of a submit on synthetic features (no model, ~1 min)")
    p.add_argument("--mode", choices=["auto", "layer", "fusion", "stc"],
                   help="feature mode of both heads and of the timed project (default: the product's)")
    p.add_argument("--penalty", choices=["l1", "elasticnet", "l2"])
    args = p.parse_args()
    if args.quick:
        args.shots, args.seeds, args.max_test, args.submits = "4", 1, 100, 3
    args.shots = [int(k) for k in args.shots.split(",")]
    if args.head_only:
        print(json.dumps(head_only(args), indent=1))
        return
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run = {"date": str(datetime.date.today()), "machine": machine(), "seeds": args.seeds,
           "settings": _settings(args, Settings().backbone).to_dict(),
           "command": f"nice -n 5 /work/main/.venv/bin/python bench/multilabel.py {' '.join(sys.argv[1:])}"}
    loaded: dict = {}

    def backbones(name):
        if name not in loaded:
            loaded[name] = load_backbone(name, progress=_say)
        return loaded[name]

    out = ROOT / "bench" / "results" / ("multilabel-quick.json" if args.quick else "multilabel.json")
    data = prepare_multilabel(SET, shots=args.shots[:1], seeds=1, max_test=args.max_test)
    run.update(n_classes=len(data.classes), n_test=len(data.test_texts))
    with Store.open(CACHE) as store:
        def save(runs):
            run.update(runs=runs, mean=summarise(runs), wall_s=time.time() - started)
            out.write_text(json.dumps(run, indent=1))

        runs = [] if args.no_accuracy else accuracy(args, store, backbones, save)
        run.update(runs=runs, mean=summarise(runs) if runs else {}, wall_s=time.time() - started)
        out.write_text(json.dumps(run, indent=1))  # kept even if the timing below fails
        print(markdown(run), flush=True)
        run["submit"] = submit_times(args, store, backbones(Settings().backbone))
    run["wall_s"] = time.time() - started
    out.write_text(json.dumps(run, indent=1))
    _say(f"wrote {out}")
    print(markdown(run))


if __name__ == "__main__":
    main()
