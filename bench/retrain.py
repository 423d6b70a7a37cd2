"""Latency of the retrain step (head refit with C chosen by CV) and of feature selection.

    .venv/bin/python bench/retrain.py [--features X.npy --labels y.npy] [--repeats 30]

X.npy: float32 (n, n_layers + 1, hidden) pooled hidden states; y.npy: (n,) class
indices. Without them the features are synthetic, of SmolLM2-135M's shape (31 x 576):
a few shared factors (hidden states are strongly correlated), noise, and a class
signal that grows with depth. Each repeat draws a new class-balanced subset of labels.

Prints markdown: Head.fit at 25/50/100/200 labels on one layer (d = hidden) and on
the 4-layer fusion concatenation (d = 4 x hidden), then select_features per mode at
32 and 64 labels per class. Timings include C selection; features are precomputed.
The load average is printed because a busy machine inflates every number.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.learn.features import FeatureSpec, select_features  # noqa: E402
from core.learn.head import Head  # noqa: E402


def synthetic(n_per_class, n_classes, shape=(31, 576), seed=0):
    """X (n, n_layers + 1, hidden) float32 and balanced y, LLM-like (see module doc)."""
    rng = np.random.default_rng(seed)
    n_states, hidden = shape
    y = np.arange(n_per_class * n_classes) % n_classes
    factors = rng.normal(size=(len(y), 8))
    loadings = rng.normal(size=(n_states, 8, hidden)) / np.sqrt(8)
    centroids = rng.normal(size=(n_states, n_classes, hidden))
    depth = np.linspace(0.05, 0.3, n_states)[:, None, None]
    X = (np.einsum("nf,lfh->nlh", factors, loadings) + rng.normal(size=(len(y),) + shape)
         + (depth * centroids)[:, y].transpose(1, 0, 2))
    return X.astype(np.float32), y


def draw(X, y, n_per_class, rng):
    """A class-balanced subset of n_per_class labels per class (fewer if a class is small)."""
    idx = np.concatenate([rng.choice(np.flatnonzero(y == k), min(n_per_class, (y == k).sum()),
                                     replace=False) for k in np.unique(y)])
    return X[idx], y[idx]


def timed(fn, repeats):
    """(median ms, p95 ms) of fn(i) over repeats."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def bench_refit(X, y, spec, penalty, sizes, repeats):
    print(f"\n### Head.fit ({penalty}, C by CV) on {spec.describe()}, d = {spec.n_features}, "
          f"{len(np.unique(y))} classes\n")
    print("| labels | median ms | p95 ms |\n|---:|---:|---:|")
    K = len(np.unique(y))
    for n in sizes:
        rng = np.random.default_rng(n)
        subsets = [draw(X, y, n // K, rng) for _ in range(repeats)]
        Zs = [(spec.transform(Xs), ys) for Xs, ys in subsets]
        median, p95 = timed(lambda i: Head(penalty, random_state=i).fit(*Zs[i]), repeats)
        print(f"| {len(Zs[0][1])} | {median:.0f} | {p95:.0f} |", flush=True)


def bench_select(X, y, penalty, sizes, repeats):
    print(f"\n### select_features ({penalty}), per mode\n")
    print("| labels per class | mode | median s | p95 s | chosen (last repeat) |")
    print("|---:|---|---:|---:|---|")
    for n_per in sizes:
        rng = np.random.default_rng(n_per)
        subsets = [draw(X, y, n_per, rng) for _ in range(repeats)]
        for mode in ("layer", "fusion", "stc", "auto"):
            out = {}
            median, p95 = timed(lambda i: out.update(spec=select_features(
                *subsets[i], mode=mode, penalty=penalty, random_state=i)[0]), repeats)
            print(f"| {n_per} | {mode} | {median / 1000:.2f} | {p95 / 1000:.2f} | "
                  f"{out['spec'].describe()} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", help="X.npy, float32 (n, n_layers + 1, hidden)")
    p.add_argument("--labels", help="y.npy, (n,) class indices")
    p.add_argument("--classes", type=int, default=2, help="synthetic classes (default 2)")
    p.add_argument("--penalty", default="l1", choices=("l1", "elasticnet", "l2"))
    p.add_argument("--repeats", type=int, default=30, help="refit repeats per size")
    p.add_argument("--select-repeats", type=int, default=5)
    p.add_argument("--layer", type=int, help="layer for the one-layer table (default: middle)")
    args = p.parse_args(argv)
    if bool(args.features) != bool(args.labels):
        p.error("--features and --labels go together")
    if args.features:
        X, y = np.load(args.features), np.load(args.labels).astype(int)
        source = f"{args.features} {X.shape}"
    else:
        X, y = synthetic(120, args.classes)
        source = f"synthetic {X.shape}, {args.classes} classes"
    shape = tuple(X.shape[1:])
    n_layers = shape[0] - 1
    layer = args.layer if args.layer is not None else n_layers // 2
    fusion = tuple(sorted({max(1, round(n_layers * q)) for q in (0.25, 0.5, 0.75, 1.0)}))
    print(f"# Retrain benchmark\n\n- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"os.cpu_count() = {os.cpu_count()}, python {platform.python_version()}")
    print(f"- features: {source}")
    print(f"- load average at start: {os.getloadavg()[0]:.2f}")
    Head(args.penalty).fit(X[:40, layer], np.arange(40) % 2)  # load the compiled solver
    sizes = (25, 50, 100, 200)
    bench_refit(X, y, FeatureSpec("layer", (layer,), "single", shape), args.penalty, sizes,
                args.repeats)
    bench_refit(X, y, FeatureSpec("fusion", fusion, "concat", shape), args.penalty, sizes,
                args.repeats)
    bench_select(X, y, args.penalty, (32, 64), args.select_repeats)
    print(f"\n- load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
