"""Active learning, simulated: test accuracy against labels spent for the app's suggestion
strategy, random sampling and class-balanced random (issue 12 item 5).

    nice -n 19 /work/main/.venv/bin/python bench/active.py
        [--sets sst2,cr,trec,subj,sms_spam] [--seeds 3] [--settings '{"mode": "layer"}']
        [--pool 2000] [--test 500] [--step 8] [--out bench/results/active]
    nice -n 19 /work/main/.venv/bin/python bench/active.py --time-suggestion 5000 [--width 3072]

The second command only times the Label page's suggestion (``next_for_project`` with the
pool's head inputs in RAM) on a 5,000-text pool, and prints seconds per call.

The rerun after a change of the app's defaults is the bare command: ``--settings``
defaults to ``Settings()`` (the app's defaults: backbone, prompt, pooling, mode, penalty)
and takes a JSON object of fields to change. Only the tuning sets are allowed (SST-2, CR,
TREC, SUBJ, SMS spam): the other five are the reporting half of a protocol.

Per set, a pool of at most ``--pool`` train rows (distinct texts) and a test sample of at
most ``--test`` rows are drawn once, stratified, seed 0, and embedded once through the
feature cache ``/tmp/tenshot-bench-cache/active-features.db`` (a Store; keys are the
backbone's fingerprint, prompt and pooling, so another setting never collides). Each run
then starts from 2 labels per class (the same draw for every strategy of a seed) and adds
labels one at a time, answered by the pool's true label:
- app: ``core.active.next_for_project``, the Label page's suggestion (with the pool's
  head inputs from the same ``PoolMatrix`` the retrain fills, as on the page), then
  ``core.project.retrain``, the page's submit (a real Store in a temporary folder, the
  feature spec reused until the labels grow by 25%, predictions through ``PoolMatrix``);
- random: a uniformly random unlabelled text;
- balanced: a random unlabelled text of the class with fewest labels (an oracle: it
  knows the pool's labels, which no labeller does before reading the text).
Retraining dominates the cost, so "app" retrains after every label up to 64 labels and
then after every ``--step`` labels (between two retrains its suggestions come from the
last model, as on a page whose retrain is slow). Random and balanced choices do not
depend on the model, so they are trained only at 2, 3, 4, 6, 8, 12, 16, 24 and 32 labels
per class, each time with a freshly selected feature spec (at least as good as the
app's reused one: the baselines are not handicapped).

Target (issue 12): the app's strategy reaches random's 32/class accuracy (the mean over
seeds of random sampling's test accuracy at 32 x classes labels) with at most 60% of
those labels. Labels needed are read off the mean curve over seeds, interpolated
linearly at the first crossing. Writes ``--out/active.json``, ``--out/active.md`` and
``--out/active_curves.html`` (plotly, one panel per set).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.active import next_for_project  # noqa: E402
from core.evaluate import draw_shots, load_split, stratified_sample  # noqa: E402
from core.learn.classifier import Settings, features_for, with_settings  # noqa: E402
from core.learn.pool import PoolMatrix  # noqa: E402
from core.model.cache import MemoryCache  # noqa: E402
from core.model.group import parts_of  # noqa: E402
from core.project import load_classifier, retrain  # noqa: E402
from core.store import Store  # noqa: E402

TUNING_SETS = ("sst2", "cr", "trec", "subj", "sms_spam")
STRATEGIES = ("app", "random", "balanced")
CACHE = Path("/tmp/tenshot-bench-cache/active-features.db")
CHECKPOINTS = (2, 3, 4, 6, 8, 12, 16, 24, 32)  # labels per class where the baselines train
TARGET_PER_CLASS = 32
ONE_AT_A_TIME = 64  # the app retrains after every label up to this many labels


@dataclass(frozen=True)
class SetData:
    """One set's fixed rows: the unlabelled pool the strategies draw from, and the test sample."""

    name: str
    pool_texts: list[str]
    pool_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    classes: list[str]


def load_set(name: str, *, pool: int, test: int) -> SetData:
    """Stratified, seed-0 samples: ≤ pool distinct stripped train texts, ≤ test test rows."""
    texts, labels = load_split(DATA / name, "train")
    seen: dict[str, str] = {}
    for text, label in zip(texts, labels):
        if text.strip():  # the store strips texts and keeps one of each
            seen.setdefault(text.strip(), label)
    texts, labels = list(seen), list(seen.values())
    idx = stratified_sample(labels, pool, np.random.default_rng(0))
    test_texts, test_labels = load_split(DATA / name, "test")
    tidx = stratified_sample(test_labels, test, np.random.default_rng(0))
    return SetData(name, [texts[i] for i in idx], [labels[i] for i in idx],
                   [test_texts[i] for i in tidx], [test_labels[i] for i in tidx], sorted(set(labels)))


def embed_set(data: SetData, backbone, settings: Settings, feature_store) -> tuple[MemoryCache, np.ndarray]:
    """(a RAM cache holding every pool and test text's features, X_test (n_test, n_layers, hidden)).

    Features are read from (or computed into) the persistent cache once per set.
    """
    items: OrderedDict = OrderedDict()
    # each backbone of a fused group caches its own entry per text: room for all of them,
    # or the RAM cache evicts and the test texts are embedded again
    size = (len(data.pool_texts) + len(data.test_texts) + 10) * len(parts_of(backbone, settings.prompt))
    loader = MemoryCache(feature_store, items=items, max_items=size)
    features_for(backbone, data.pool_texts + data.test_texts, settings, cache=loader,
                 progress=_progress(f"{data.name}: embedding"))
    ram = MemoryCache(None, items=items, max_items=size)
    return ram, features_for(backbone, data.test_texts, settings, cache=ram)


def _progress(what: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 500 < 32:
            print(f"{what} {done}/{total}", file=sys.stderr, flush=True)
    return report


class Simulation:
    """One (set, strategy, seed) run: a fresh workspace, 2 labels per class, then labels
    added by the strategy and answered by the pool's true labels."""

    def __init__(self, data: SetData, strategy: str, seed: int, settings: Settings, backbone,
                 cache: MemoryCache, X_test: np.ndarray, store):
        self.data, self.strategy, self.seed = data, strategy, seed
        self.backbone, self.cache, self.X_test, self.store = backbone, cache, X_test, store
        self.project = store.create_project(f"{data.name}-{strategy}-{seed}", data.classes,
                                            settings=settings.to_dict())
        ids = store.add_texts(self.project.id, data.pool_texts).text_ids
        if len(ids) != len(data.pool_texts):
            raise RuntimeError(f"{data.name}: the store kept {len(ids)} of {len(data.pool_texts)} pool texts")
        self.label_of = dict(zip(ids, data.pool_labels))
        self.text_of = dict(zip(ids, data.pool_texts))
        self.unlabelled = set(ids)
        self.counts = {c: 0 for c in data.classes}
        self.rng = np.random.default_rng(seed)
        self.recent: list[str] = []
        self.pool_state: dict = {}
        start = draw_shots(data.pool_labels, 2, np.random.default_rng(1000 + seed))
        for i in start:
            self._label(ids[i])

    def _label(self, text_id: int) -> None:
        self.store.set_label(self.project.id, text_id, self.label_of[text_id])
        self.unlabelled.discard(text_id)
        self.counts[self.label_of[text_id]] += 1
        self.recent.append(self.text_of[text_id])

    @property
    def n_labels(self) -> int:
        return sum(self.counts.values())

    def next_text(self) -> int:
        """The text id the strategy labels next."""
        if self.strategy == "app":
            # the page's call, minus its session's skip/prefer lists (nothing is skipped here)
            return next_for_project(self.store, self.project.id, recent_texts=self.recent,
                                    pool=PoolMatrix(self.pool_state), random_state=self.project.id)[0].text_id
        left = sorted(self.unlabelled)
        if self.strategy == "balanced":
            have = {c for c in self.data.classes if any(self.label_of[t] == c for t in left)}
            fewest = min(self.counts[c] for c in have)
            short = [c for c in have if self.counts[c] == fewest]
            wanted = short[self.rng.integers(len(short))]
            left = [t for t in left if self.label_of[t] == wanted]
        return left[self.rng.integers(len(left))]

    def retrain_and_score(self) -> tuple[float, float]:
        """Retrain as a submit does; (test accuracy, seconds the retrain took)."""
        t = time.perf_counter()
        retrain(self.store, self.store.project(self.project.id), self.backbone, cache=self.cache,
                pool=PoolMatrix(self.pool_state))
        seconds = time.perf_counter() - t
        clf = load_classifier(self.store.latest_model(self.project.id))
        pred = np.asarray(clf.classes)[clf.predict_proba_features(self.X_test).argmax(1)]
        return float(np.mean(pred == np.asarray(self.data.test_labels))), seconds

    def run(self, step: int) -> dict:
        """{"labels": [...], "accuracy": [...], "retrain_seconds": [...]} up to 32 labels per class."""
        K = len(self.data.classes)
        stop = TARGET_PER_CLASS * K
        if self.strategy == "app":
            marks = sorted({n for n in range(2 * K, stop + 1)
                            if n <= ONE_AT_A_TIME or (n - ONE_AT_A_TIME) % step == 0} | {stop})
        else:
            marks = [k * K for k in CHECKPOINTS]
        out: dict = {"labels": [], "accuracy": [], "retrain_seconds": []}
        for mark in marks:
            while self.n_labels < mark and self.unlabelled:
                self._label(self.next_text())
            accuracy, seconds = self.retrain_and_score()
            out["labels"].append(self.n_labels)
            out["accuracy"].append(accuracy)
            out["retrain_seconds"].append(seconds)
        return out


def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> float | None:
    """Labels at the first crossing of target on the curve, linearly interpolated; None if never.

    Example: labels [4, 8, 12], accuracy [0.5, 0.7, 0.9], target 0.8 -> 10.0.
    """
    for i, (n, a) in enumerate(zip(labels, accuracy)):
        if a >= target:
            if i == 0:
                return float(n)
            n0, a0 = labels[i - 1], accuracy[i - 1]
            return float(n0 + (target - a0) / (a - a0) * (n - n0))
    return None


def mean_curve(runs: list[dict]) -> tuple[list[int], list[float]]:
    """The mean accuracy over seeds at the label counts every run has."""
    common = sorted(set.intersection(*(set(r["labels"]) for r in runs)))
    at = [dict(zip(r["labels"], r["accuracy"])) for r in runs]
    return common, [float(np.mean([a[n] for a in at])) for n in common]


def summarise(name: str, K: int, runs: dict[str, list[dict]]) -> dict:
    """Per strategy: the mean curve, labels needed to reach random's 32/class accuracy, the ratio."""
    stop = TARGET_PER_CLASS * K
    curves = {s: mean_curve(r) for s, r in runs.items()}
    rand = dict(zip(*curves["random"]))
    target = rand[stop]
    out = {"set": name, "classes": K, "random_labels": stop, "target": target, "strategies": {}}
    for s, (labels, acc) in curves.items():
        needed = labels_to_reach(labels, acc, target)
        out["strategies"][s] = {
            "labels": labels, "accuracy": acc, "needed": needed,
            "ratio": None if needed is None else needed / stop,
            "retrain_s_median": float(np.median([x for r in runs[s] for x in r["retrain_seconds"]])),
            "at_target_labels": dict(zip(labels, acc)).get(stop)}
    return out


def run_set(data: SetData, args, settings: Settings, backbone, feature_store,
            reused: dict[str, list[dict]]) -> dict:
    """Every strategy's runs on one set (``reused``: runs of strategies not rerun) and their summary."""
    cache, X_test = embed_set(data, backbone, settings, feature_store)
    runs: dict[str, list[dict]] = {s: list(reused.get(s, [])) for s in args.strategies}
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "simulation.db") as store:
        for seed in range(args.seeds):
            for strategy in args.strategies:
                if strategy in reused:
                    continue
                t = time.time()
                runs[strategy].append(Simulation(data, strategy, seed, settings, backbone, cache,
                                                 X_test, store).run(args.step))
                last = runs[strategy][-1]
                print(f"{data.name} {strategy} seed {seed}: {last['accuracy'][-1]:.3f} at "
                      f"{last['labels'][-1]} labels, {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return {"summary": summarise(data.name, len(data.classes), runs), "runs": runs,
            "pool": len(data.pool_texts), "test": len(data.test_texts)}


def _cell(s: dict) -> str:
    if s["needed"] is None:
        return "not reached"
    return f"{s['needed']:.0f} ({s['ratio']:.0%})"


def markdown(report: dict) -> str:
    """The report's tables: labels needed per set and strategy, and accuracy at checkpoints."""
    strategies = report["strategies"]
    lines = [f"- date {report['date']}; machine: {report['machine']}; wall time {report['wall_s']:.0f} s",
             f"- command: `{report['command']}`",
             f"- settings: `{json.dumps(report['settings'])}`",
             f"- pool ≤ {report['pool']} train rows, test sample ≤ {report['test']} rows (stratified, "
             f"seed 0); {report['seeds']} seeds; start 2 labels/class; app retrains every label to "
             f"{ONE_AT_A_TIME} labels, then every {report['step']}; baselines at "
             f"{', '.join(map(str, CHECKPOINTS))} labels/class",
             "", "Labels needed to reach random's 32/class accuracy (ratio to random's labels; target ≤ 60% "
             "for app):", "",
             "| set | classes | random's 32/class acc | labels | " + " | ".join(strategies) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(strategies)]
    for r in report["sets"].values():
        s = r["summary"]
        lines.append(f"| {s['set']} | {s['classes']} | {s['target']:.3f} | {s['random_labels']} | "
                     + " | ".join(_cell(s["strategies"][k]) for k in strategies) + " |")
    lines += ["", "Mean test accuracy at labels per class (app: its curve at the same label counts):", "",
              "| set | strategy | " + " | ".join(f"{k}/class" for k in CHECKPOINTS) + " | median retrain s |",
              "|---|---|" + "---:|" * (len(CHECKPOINTS) + 1)]
    for r in report["sets"].values():
        s = r["summary"]
        for k, v in s["strategies"].items():
            at = dict(zip(v["labels"], v["accuracy"]))
            lines.append(f"| {s['set']} | {k} | " + " | ".join(
                f"{at[c * s['classes']]:.3f}" if c * s["classes"] in at else "–" for c in CHECKPOINTS)
                + f" | {v['retrain_s_median']:.2f} |")
    return "\n".join(lines) + "\n"


def figure(report: dict):
    """Plotly: one panel per set, mean test accuracy vs labels per strategy, random's target dotted."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from bench.figures import COLOURS

    names = list(report["sets"])
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.04)
    for col, name in enumerate(names, start=1):
        s = report["sets"][name]["summary"]
        for i, (k, v) in enumerate(s["strategies"].items()):
            fig.add_trace(go.Scatter(x=v["labels"], y=v["accuracy"], name=k, legendgroup=k,
                                     showlegend=col == 1, mode="lines" if k == "app" else "lines+markers",
                                     line={"color": COLOURS[i % len(COLOURS)]}), row=1, col=col)
        fig.add_hline(y=s["target"], line={"dash": "dot", "color": "grey"}, row=1, col=col)
    fig.update_xaxes(title_text="labels")
    fig.update_yaxes(title_text="test accuracy", col=1)
    fig.update_layout(title="Active learning: mean test accuracy over seeds vs labels spent "
                      "(dotted: random's 32/class accuracy)", template="plotly_white",
                      width=330 * len(names) + 100, height=420)
    return fig


class _HeldPool:
    """A stand-in for the page's PoolMatrix: head inputs of every text, by text."""

    def __init__(self, texts: list[str], Z: np.ndarray):
        self.rows = dict(zip(texts, Z))

    def held(self, texts):
        return np.array([self.rows[t] for t in texts])


def time_suggestion(n_texts: int, width: int, *, repeats: int = 5, classes: int = 4) -> dict:
    """Seconds the Label page's ``next_for_project`` takes on a pool of n_texts texts whose
    head inputs are ``width`` wide (random numbers: the cost does not depend on them), with
    a model's predictions stored, 3 labels per class (the cold start) and 40 (past it)."""
    rng = np.random.default_rng(0)
    names = [f"class {k}" for k in range(classes)]
    texts = [f"sentence {i} " + " ".join(rng.choice(["good", "bad", "plot", "film", "phone", "slow"], 8))
             for i in range(n_texts)]
    out: dict = {"texts": n_texts, "width": width}
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "time.db") as store:
        for per_class in (3, 40):
            p = store.create_project(f"time-{per_class}", names)
            ids = store.add_texts(p.id, texts).text_ids
            for k, tid in enumerate(ids[:per_class * classes]):
                store.set_label(p.id, tid, names[k % classes])
            store.save_model(p.id, params={"classes": names}, metrics={}, state={"w": np.zeros(1)},
                             n_labels=per_class * classes)
            left = ids[per_class * classes:]
            store.save_probabilities(store.latest_model(p.id).id, np.array(left), names,
                                     rng.dirichlet(np.ones(classes), len(left)))
            held = _HeldPool(texts, rng.normal(size=(n_texts, width)).astype(np.float32))
            for name, pool in (("with the pool's head inputs", held), ("without (uncertainty alone)", None)):
                seconds, cpu = [], []
                for _ in range(repeats):
                    t, c = time.perf_counter(), time.process_time()
                    next_for_project(store, p.id, recent_texts=texts[:20], pool=pool, random_state=p.id)
                    seconds.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                # CPU seconds say what the call costs on a shared box; wall seconds what a user waits
                out[f"{per_class}/class, {name}"] = {
                    "median_s": float(np.median(seconds)), "max_s": float(max(seconds)),
                    "median_cpu_s": float(np.median(cpu))}
    return out


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(TUNING_SETS))
    ap.add_argument("--cold", type=float, help="labels per class below which the app's rule covers "
                    "unlabelled regions first (default: core.active._COLD)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--settings", default="{}", help="JSON: Settings fields to change from the app's defaults")
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--step", type=int, default=8, help="labels between the app's retrains after 64 labels")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "active"))
    ap.add_argument("--reuse", help="an earlier active.json: take the random and balanced runs from "
                    "it (same settings, pool, test and seeds required) and rerun only the app's")
    ap.add_argument("--time-suggestion", type=int, metavar="N",
                    help="only time the Label page's suggestion on a pool of N texts, and exit")
    ap.add_argument("--width", type=int, default=3072, help="head inputs per text for --time-suggestion")
    args = ap.parse_args(argv)
    args.sets, args.strategies = args.sets.split(","), args.strategies.split(",")
    other = [s for s in args.sets if s not in TUNING_SETS]
    if other:
        ap.error(f"{', '.join(other)}: not a tuning set; the strategy is tuned on {', '.join(TUNING_SETS)} only")
    if "random" not in args.strategies or set(args.strategies) - set(STRATEGIES):
        ap.error(f"strategies come from {', '.join(STRATEGIES)} and must include random (the target)")
    if args.cold is not None:  # read by next_for_project and suggest when they are called
        import core.active

        core.active._COLD = args.cold
    return args


def _reusable(args, report: dict) -> dict[str, dict[str, list[dict]]]:
    """{set: {strategy: runs}} from ``--reuse``; refused when it was run on other rows or settings."""
    if not args.reuse:
        return {}
    old = json.loads(Path(args.reuse).read_text())
    for key in ("settings", "pool", "test", "seeds"):
        if old[key] != report[key]:
            sys.exit(f"--reuse {args.reuse}: its {key} {old[key]!r} differs from this run's {report[key]!r}")
    return {name: r["runs"] for name, r in old["sets"].items()}


def main(argv=None) -> None:
    from core.model.loading import load_backbone

    args = _args(argv)
    if args.time_suggestion:
        print(json.dumps(time_suggestion(args.time_suggestion, args.width), indent=1))
        return
    # from_dict fills missing fields with the defaults of old saved models, not Settings()
    settings = with_settings(Settings(), **json.loads(args.settings))
    started = time.time()
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "machine": machine(), "command": "nice -n 19 /work/main/.venv/bin/python bench/active.py "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": settings.to_dict(), "pool": args.pool, "test": args.test, "seeds": args.seeds,
              "step": args.step, "strategies": args.strategies, "sets": {}}
    backbone = load_backbone(settings.backbone, progress=lambda m: print(m, file=sys.stderr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    earlier = _reusable(args, report)
    with Store.open(CACHE) as feature_store:
        for name in args.sets:
            data = load_set(name, pool=args.pool, test=args.test)
            reused = {s: r for s, r in earlier.get(name, {}).items() if s != "app"}
            report["sets"][name] = run_set(data, args, settings, backbone, feature_store, reused)
            report["wall_s"] = time.time() - started
            (out / "active.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "active.md").write_text(text)
    figure(report).write_html(out / "active_curves.html", include_plotlyjs="cdn")
    print(text)


if __name__ == "__main__":
    main()
