"""Throughput of `tenshot predict` on Ray Data (local mode) against the single-process path.

    nice -n 5 .venv/bin/python bench/ray_throughput.py --n 5000 [--data ../shared/data/sst2/train.csv]

Trains a small head on the packaged backbone (32 labels per class from the data's
train split), then scores the first n texts three ways with the real model and no
feature cache: ``core.project.predict_texts`` (one process), and
``core.scoring_ray.score_with_ray`` with 1 and with 2 CPU actors (the actors' startup,
model load included, is counted: it is what a user waits for; the steady rate after
the first batch arrived is printed beside it, so the engine's own cost per sentence
shows apart from its fixed startup). Checks that the classes agree and the
probabilities match, and prints one markdown table with the 1-minute load average
before and after. Run it on an idle machine: it is CPU-heavy, and on a loaded one the
ratios mostly measure who got the cores.
"""

import argparse
import csv
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.learn.bundle import bundle_bytes  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.project import predict_texts  # noqa: E402
from core.scoring_ray import score_with_ray  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.csv"


def _rows(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f) if r["text"].strip()]
    return [t for t, _ in rows], [label for _, label in rows]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--data", default=str(DATA), help="a CSV with text,label columns")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backbone", help="default: the app's (Settings().backbone); the engine's "
                   "own cost shows best on the fastest backbone, e.g. smollm2-135m")
    args = p.parse_args(argv)
    texts, labels = _rows(Path(args.data))
    classes = sorted(set(labels))
    picked = [i for k in classes for i in [j for j, lab in enumerate(labels) if lab == k][:32]]
    settings = Settings(mode="layer", **({"backbone": args.backbone} if args.backbone else {}))
    backbone = load_backbone(settings.backbone)
    X = features_for(backbone, [texts[i] for i in picked], settings)
    clf = train(X, [labels[i] for i in picked], classes, settings)
    pool = [t for i, t in enumerate(texts) if i not in set(picked)][:args.n]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    _, plain = predict_texts(backbone, clf, pool)
    results = [("single process (`predict`)", time.perf_counter() - start, plain)]
    steady = {}
    for actors in (1, 2):
        first: list[tuple[float, int]] = []

        def progress(done: int, total: int) -> None:
            if not first:
                first.append((time.perf_counter(), done))

        start = time.perf_counter()
        _, probs = score_with_ray(bundle_bytes(clf), range(len(pool)), pool,
                                  batch_size=args.batch_size, actors=actors, progress=progress)
        end = time.perf_counter()
        name = f"Ray local, {actors} CPU actor{'s' * (actors > 1)}"
        results.append((name, end - start, probs))
        if first and first[0][1] < len(pool):
            steady[name] = (len(pool) - first[0][1]) / (end - first[0][0])
    print(f"- {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
          f"`{' '.join([Path(sys.executable).name] + sys.argv)}`, {platform.platform()}, "
          f"cpu_count {os.cpu_count()}, load average at start {load:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}; backbone {settings.backbone}; n = {len(pool)}\n")
    print("| path | seconds | sentences/s | × single process | after the first batch, sentences/s "
          "| same classes | max abs prob diff |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, seconds, probs in results:
        same = bool((probs.argmax(1) == plain.argmax(1)).all())
        rate = f"{steady[name]:.1f}" if name in steady else "–"
        print(f"| {name} | {seconds:.1f} | {len(pool) / seconds:.1f} | "
              f"{results[0][1] / seconds:.2f} | {rate} | {same} | {np.abs(probs - plain).max():.1e} |")


if __name__ == "__main__":
    main()
