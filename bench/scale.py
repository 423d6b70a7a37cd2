"""Submit latency, workspace size and peak RSS of a project with many unlabelled texts.

    nice -n 5 .venv/bin/python bench/scale.py --n 100000 [--labels 100] [--submits 12]
        [--keep] [--build-only] [--profile 3]

The app's own submit path: ``core.project.retrain`` with a ``MemoryCache`` over the
store and a ``PoolMatrix`` kept between submits (as pages/_shared.py keeps them).
Features are synthetic, of the default backbone's shape (for the fused default
``smollm2-135m+mpnet``: SmolLM2's 31 x 576 and mpnet's 13 x 768, each part cached on its
own), written into the feature cache the way the embedding job writes an upload
(``MemoryCache(store_dtype="float16")``: float16, only ``band_layers``), so no embedding
time is counted and no model is loaded (stand-in backbones give the cache keys and shapes). Each submit labels one more
pool text, as a user does. Prints one markdown row: first submit (feature selection by
CV + building the pool's Z), median and p95 of the following head-only submits (wall
time, and the process's CPU time beside it: on a loaded box the CPU time still says
what a submit costs), one forced re-selection (``reselect=True``), the file size and
the process's peak RSS, and the 1-minute load average before and after. --profile K:
afterwards, cProfile K more head-only submits and print the top functions.
Run one --n per process so peak RSS is that size's.

What restricting selection to the band costs in accuracy (real SmolLM2 features, no
timing; features cached under /tmp/tenshot-bench-cache/scale-band/):

    nice -n 5 .venv/bin/python bench/scale.py --band-cost sst2,cr [--shots 32] [--seeds 3]

trains the default classifier (auto mode, elastic-net) on each draw twice, on every
layer and within ``band_layers`` (``core.project.in_band``, what a submit does), and
prints the test accuracy of both and the layers each chose.
"""

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import resource
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.hashing import text_hash  # noqa: E402
from core.learn.pool import PoolMatrix  # noqa: E402
from core.limits import Limits  # noqa: E402
from core.model.cache import MemoryCache, band_layers, cache_key  # noqa: E402
from core.model.group import BackboneGroup, group_parts, is_fused, parts_of  # noqa: E402
from core.model.registry import DEFAULT_BACKBONE, REGISTRY  # noqa: E402
from core.project import in_band, retrain, settings_of  # noqa: E402
from core.store import Store  # noqa: E402

SHAPE = (31, 576)
CLASSES = ["neg", "pos"]
_CHUNK = 2000


class StandIn:
    """What retrain needs of one backbone when every feature is cached: a key and a shape."""

    def __init__(self, name: str, n_states: int, hidden: int):
        self.name, self.n_layers, self.hidden_size = name, n_states, hidden
        self.fingerprint = f"synthetic-{name}-shape"


def stand_in(spec: str = DEFAULT_BACKBONE):
    """A stand-in of the default backbone's shape: one backbone, or a group of stand-ins
    (each part cached on its own, as the embedding job caches a fused upload)."""
    if not is_fused(spec):
        return StandIn(spec, REGISTRY[spec].layers + 1, REGISTRY[spec].hidden)
    parts = group_parts(spec)
    return BackboneGroup(spec, tuple(StandIn(p.name, p.n_states, p.width) for p in parts), tuple(parts))


def _features(rng, labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, *shape) float32: noise plus a class signal that grows with depth (label -1: none)."""
    X = rng.standard_normal((len(labels),) + shape, dtype=np.float32)
    depth = np.linspace(0.05, 0.4, shape[0], dtype=np.float32)[None, :, None]
    X[:, :, :64] += depth * np.where(labels[:, None, None] == 1, 1.0, -1.0).astype(np.float32) * (
        labels[:, None, None] >= 0)
    return X


def build(path: str, n: int, n_labels: int) -> tuple[Store, object]:
    """A workspace with n unlabelled texts and n_labels labelled ones, features cached."""
    store = Store.open(path, limits=Limits(project_texts=n + 10 * n_labels))
    project = store.create_project("scale", CLASSES, settings={"backbone": DEFAULT_BACKBONE})
    rng = np.random.default_rng(0)
    texts = [f"labelled sentence {i}" for i in range(n_labels)] + [f"pool sentence {i}" for i in range(n)]
    labels = [CLASSES[i % 2] for i in range(n_labels)] + [None] * n
    store.add_texts(project.id, texts, labels=labels)
    prompt = settings_of(project).prompt
    y = np.array([i % 2 for i in range(n_labels)] + [-1] * n)
    for _, bb, part_prompt in parts_of(stand_in(), prompt):
        key = cache_key(bb, 256)
        for start in range(0, len(texts), _CHUNK):
            X = _features(rng, y[start:start + _CHUNK], (bb.n_layers, bb.hidden_size))
            # what the embedding job writes for an upload (MemoryCache(store_dtype="float16"))
            store.put_features(key, part_prompt, "mean", {text_hash(t): x for t, x in
                                                          zip(texts[start:start + _CHUNK], X)},
                               dtype="float16", layers=band_layers)
    return store, project


BAND_CACHE = Path("/tmp/tenshot-bench-cache/scale-band/features.db")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def band_cost(names: list[str], shots: int, seeds: int, max_test: int) -> None:
    """Print a markdown table: test accuracy with selection over every layer vs the band."""
    from core.evaluate import prepare
    from core.learn.classifier import Settings, features_for, train
    from core.model.loading import load_backbone

    settings = Settings()
    backbone = load_backbone(settings.backbone)
    BAND_CACHE.parent.mkdir(parents=True, exist_ok=True)
    print(f"<!-- {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
          f"`{' '.join([Path(sys.executable).name] + sys.argv)}`, load average "
          f"{os.getloadavg()[0]:.1f}; band {band_layers(SHAPE[0])} -->")
    print(f"| set | draw ({shots}/class) | every layer: accuracy | layers | band: accuracy | layers |")
    print("|---|---|---:|---|---:|---|")
    with Store.open(BAND_CACHE) as cache:
        for name in names:
            data = prepare(DATA / name, shots=[shots], seeds=seeds, max_test=max_test)
            needed = data.needed()
            X_train = dict(zip(needed, features_for(backbone, [data.train_texts[i] for i in needed],
                                                    settings, cache=cache)))
            X_test = features_for(backbone, data.test_texts, settings, cache=cache)
            gaps = []
            for seed in range(seeds):
                idx = data.draws[(shots, seed)]
                X = np.stack([X_train[i] for i in idx])
                labels = [data.train_labels[i] for i in idx]
                cells = []
                for X_fit in (X, in_band(X, settings)):
                    clf = train(X_fit, labels, data.classes, settings, random_state=seed)
                    predicted = np.array(data.classes)[clf.predict_proba_features(X_test).argmax(1)]
                    accuracy = float((predicted == np.array(data.test_labels)).mean())
                    cells.append((accuracy, f"{clf.spec.mode} {list(clf.spec.layers)}"))
                gaps.append(cells[1][0] - cells[0][0])
                print(f"| {name} | seed {seed} | {cells[0][0]:.3f} | {cells[0][1]} | "
                      f"{cells[1][0]:.3f} | {cells[1][1]} |")
            print(f"| {name} | mean band − every layer | | | {np.mean(gaps):+.3f} | |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="unlabelled texts")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--submits", type=int, default=12, help="head-only submits timed after the first")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the workspace file goes")
    p.add_argument("--keep", action="store_true",
                   help="keep the workspace, and reuse one a --keep run left (for --build-only)")
    p.add_argument("--build-only", action="store_true", help="build the workspace and stop")
    p.add_argument("--profile", type=int, default=0, help="cProfile this many more head-only submits")
    p.add_argument("--band-cost", help="comma-separated data sets under ../shared/data: accuracy "
                   "of selection over every layer vs the band (real features; no timing)")
    p.add_argument("--shots", type=int, default=32, help="with --band-cost: labels per class")
    p.add_argument("--seeds", type=int, default=3, help="with --band-cost: draws per set")
    p.add_argument("--max-test", type=int, default=400, help="with --band-cost: test sentences")
    args = p.parse_args(argv)
    if args.band_cost:
        return band_cost(args.band_cost.split(","), args.shots, args.seeds, args.max_test)
    load_before = os.getloadavg()[0]
    path = os.path.join(args.dir, f"scale-{args.n}.db")
    start = time.perf_counter()
    if args.keep and os.path.exists(path):
        store = Store.open(path, limits=Limits(project_texts=args.n + 10 * args.labels))
        project = store.project("scale")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        store, project = build(path, args.n, args.labels)
    built = time.perf_counter() - start
    if args.build_only:
        return store.close()
    items, state, backbone = OrderedDict(), {}, stand_in()

    def submit(**kwargs) -> tuple[float, float]:
        """(wall, CPU) seconds of one submit after labelling one more pool text."""
        ids, _ = store.unlabelled_columns(project.id)
        store.set_label(project.id, ids[0], CLASSES[len(ids) % 2])
        t, cpu = time.perf_counter(), time.process_time()
        outcome = retrain(store, store.project(project.id), backbone,
                          cache=MemoryCache(store, items=items), pool=PoolMatrix(state), **kwargs)
        assert kwargs or not outcome.reselected or outcome.version == 1
        return time.perf_counter() - t, time.process_time() - cpu

    first, _ = submit()
    times, cpus = zip(*[submit() for _ in range(args.submits)])
    reselect, _ = submit(reselect=True)
    if args.profile:
        submit()  # the re-selection's spec: rebuild Z before profiling head-only submits
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.profile):
            submit()
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(r"core/", 20)
        stats.sort_stats("tottime").print_stats(12)
        print(f"<!-- cProfile of {args.profile} head-only submits, load average "
              f"{os.getloadavg()[0]:.1f}:\n{out.getvalue()}-->")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    store.close()
    print(f"<!-- {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
          f"`{' '.join([Path(sys.executable).name] + sys.argv)}`, {platform.platform()}, "
          f"cpu_count {os.cpu_count()}, load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after, built in {built:.0f} s -->")
    print("| unlabelled texts | workspace file | first submit | head-only submit, median (CPU) "
          "| p95 (CPU) | forced re-selection | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.n:,} | {size / 1e9:.2f} GB | {first:.2f} s | {np.median(times):.2f} s "
          f"({np.median(cpus):.2f} s) | {np.percentile(times, 95):.2f} s "
          f"({np.percentile(cpus, 95):.2f} s) | {reselect:.2f} s | {rss:.2f} GB |")
    if not args.keep:
        Path(path).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
