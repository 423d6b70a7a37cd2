"""Few-shot accuracy on the public sets in ../shared/data, every method on the same draws.

    .venv/bin/python bench/accuracy.py [--sets cr,trec] [--shots 8,16,32,64] [--seeds 5]
        [--max-test 150] [--backbone smollm2-135m] [--methods head,minilm,tfidf,zero_shot,zero_shot_cal]
        [--mode auto] [--penalty elasticnet] [--time-limit 7200] [--quick] [--out DIR]

For every set, ``core.evaluate.prepare`` fixes the (shots, seed) draws and the test
sample once; each method in ``METHODS`` then runs on exactly those rows:
- head: the product (``core.learn.classifier`` defaults) on the backbone, with a per-set task prompt;
- minilm: all-MiniLM-L6-v2 features through the same head;
- tfidf: TF-IDF + LR;
- zero_shot: the backbone LLM asked directly with an instruction listing the class names;
- zero_shot_cal: the same scores, calibrated by a content-free input ("N/A"; no labels).
Published SetFit figures (../shared/data/README.md) are added as reference rows; they
are on the full test sets, ours on a stratified sample of ``--max-test`` rows.

Each set's JSON goes to ``--out/<set>.json``, the markdown tables to ``--out/accuracy.md``
and the learning-curve figures (``bench/figures.py``) next to them. Features are cached
in ``--cache`` so a rerun is cheap. ``--time-limit`` stops before a new set once passed.
To add a method, add an entry to METHODS: a label and a function of the run context
returning a ``core.evaluate.Method``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.learn.classifier import Settings  # noqa: E402
from core.evaluate import (  # noqa: E402
    Method, head_method, prepare, run_method, summarise, tfidf_method, zero_shot_method, zero_shot_scorer,
)

# One task prompt per set for the feature extractor: the kind of text and what is asked.
PROMPTS = {
    "sst2": "Movie review: {text}\nSentiment:",
    "mr": "Movie review: {text}\nSentiment:",
    "sst5": "Movie review: {text}\nSentiment:",
    "cr": "Customer review: {text}\nSentiment:",
    "mpqa": "Phrase: {text}\nSentiment:",
    "subj": "Sentence: {text}\nObjective or subjective:",
    "trec": "Question: {text}\nThe answer is a type of:",
    "ag_news": "News article: {text}\nTopic:",
    "sms_spam": "SMS message: {text}\nSpam or not:",
    "tweet_eval_emotion": "Tweet: {text}\nEmotion:",
}
# Zero-shot instructions: {classes} becomes the sorted class names ("negative or positive").
ZERO_SHOT_PROMPTS = {
    "sst2": "Movie review: {text}\nIs the sentiment of this review {classes}?\nAnswer:",
    "mr": "Movie review: {text}\nIs the sentiment of this review {classes}?\nAnswer:",
    "sst5": "Movie review: {text}\nIs the sentiment of this review {classes}?\nAnswer:",
    "cr": "Customer review: {text}\nIs the sentiment of this review {classes}?\nAnswer:",
    "mpqa": "Phrase: {text}\nIs the opinion in this phrase {classes}?\nAnswer:",
    "subj": "Sentence: {text}\nIs this sentence {classes}?\nAnswer:",
    "trec": "Question: {text}\nDoes this question ask for {classes}?\nAnswer:",
    "ag_news": "News article: {text}\nIs the topic of this article {classes}?\nAnswer:",
    "sms_spam": "SMS message: {text}\nIs this message {classes}?\nAnswer:",
    "tweet_eval_emotion": "Tweet: {text}\nWhich emotion does this tweet express: {classes}?\nAnswer:",
}
SETS = list(PROMPTS)
# ../shared/data/README.md: test accuracy (%), mean over 10 seeds, paraphrase-mpnet-base-v2,
# from the SetFit repository's published result files; full test sets.
PUBLISHED = {
    "cr": {"SetFit (published)": {8: 88.5, 64: 90.4}, "frozen ST + LR (published)": {8: 84.2, 64: 88.2}},
    "ag_news": {"SetFit (published)": {8: 82.9, 64: 88.0}, "frozen ST + LR (published)": {8: 74.3, 64: 84.4}},
    "sst5": {"SetFit (published)": {8: 43.6, 64: 51.9}, "frozen ST + LR (published)": {8: 36.7, 64: 42.2}},
}


@dataclass
class Context:
    """What a method builder may use: the set, the options, the feature cache, backbones."""

    name: str
    args: argparse.Namespace
    store: object
    backbones: dict = field(default_factory=dict)  # loaded once, shared by all sets
    memo: dict = field(default_factory=dict)  # per set: work that methods share

    def backbone(self, spec: str):
        if spec not in self.backbones:
            self.backbones[spec] = load_backbone(spec, progress=lambda m: print(m, file=sys.stderr))
        return self.backbones[spec]

    def settings(self, backbone: str, prompt: str | None) -> Settings:
        """The product's defaults, with this benchmark's prompt and any --mode/--penalty."""
        changes = {k: v for k, v in (("mode", self.args.mode), ("penalty", self.args.penalty)) if v}
        return replace(Settings(), backbone=backbone, prompt=prompt, **changes).check()


@dataclass(frozen=True)
class BenchMethod:
    label: str  # "{llm}" is replaced by the --backbone name
    build: Callable[[Context], Method]


def _head(ctx: Context) -> Method:
    bb = ctx.backbone(ctx.args.backbone)
    return head_method(bb, ctx.settings(bb.name, PROMPTS[ctx.name]), cache=ctx.store)


def _minilm(ctx: Context) -> Method:
    return head_method(ctx.backbone("minilm-l6"), ctx.settings("minilm-l6", None), cache=ctx.store)


def _zero_shot(calibrated: bool) -> Callable[[Context], Method]:
    def build(ctx: Context) -> Method:
        if "zero_shot" not in ctx.memo:  # one pass per set serves both variants
            ctx.memo["zero_shot"] = zero_shot_scorer(ctx.backbone(ctx.args.backbone),
                                                     prompt=ZERO_SHOT_PROMPTS[ctx.name])
        scorer = ctx.memo["zero_shot"]
        return zero_shot_method(None, scores=lambda data: scorer(data, calibrated))
    return build


METHODS: dict[str, BenchMethod] = {
    "head": BenchMethod("{llm} + head", _head),
    "minilm": BenchMethod("MiniLM + head", _minilm),
    "tfidf": BenchMethod("TF-IDF + LR", lambda ctx: tfidf_method()),
    "zero_shot": BenchMethod("{llm} zero-shot", _zero_shot(False)),
    "zero_shot_cal": BenchMethod("{llm} zero-shot, calibrated", _zero_shot(True)),
}


def run_set(ctx: Context, shots: list[int]) -> dict:
    args = ctx.args
    data = prepare(DATA / ctx.name, shots=shots, seeds=args.seeds, max_test=args.max_test)
    out = {"dataset": ctx.name, "n_test": len(data.test_texts), "classes": data.classes,
           "backbone": args.backbone, "prompt": PROMPTS[ctx.name],
           "zero_shot_prompt": ZERO_SHOT_PROMPTS[ctx.name], "methods": {}}
    for key in args.methods.split(","):
        t = time.time()
        runs = run_method(data, METHODS[key].build(ctx))
        out["methods"][key] = {"label": METHODS[key].label.format(llm=args.backbone), "runs": runs,
                               "mean": summarise(runs), "seconds": time.time() - t}
        print(f"  {ctx.name} {key}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return out


def _cell(mean: dict, k: int, metric: str) -> str:
    m = mean.get(str(k))
    return f"{m[metric]:.3f} ± {m[metric + '_std']:.3f}" if m else "–"


def table(results: dict, shots: list[int], metric: str = "accuracy") -> str:
    """Markdown: one row per (set, method), mean ± std over seeds; means over sets at the end."""
    rows = ["| set | method | " + " | ".join(f"{k}/class" for k in shots) + " |",
            "|" + "---|" * (len(shots) + 2)]
    for name, r in results.items():
        for m in r["methods"].values():
            rows.append(f"| {name} | {m['label']} | " + " | ".join(_cell(m["mean"], k, metric) for k in shots) + " |")
        if metric == "accuracy":
            for label, ref in PUBLISHED.get(name, {}).items():
                rows.append(f"| {name} | {label} | " + " | ".join(
                    f"{ref[k] / 100:.3f}" if k in ref else "–" for k in shots) + " |")
    keys = list(dict.fromkeys(k for r in results.values() for k in r["methods"]))
    for key in keys:
        have = [r["methods"][key] for r in results.values() if key in r["methods"]]
        cells = []
        for k in shots:
            vals = [m["mean"][str(k)][metric] for m in have if str(k) in m["mean"]]
            cells.append(f"{sum(vals) / len(vals):.3f}" if len(vals) == len(results) else "–")
        rows.append(f"| **mean of {len(results)}** | {have[0]['label']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def compare(folders: list[Path], sets: list[str], shots: list[int], seeds: int) -> str:
    """Markdown: backbones side by side (runs with seed < seeds, so that every folder is
    compared on the same draws), with the published reference rows."""
    from bench.figures import load_results

    rows = ["| method | " + " | ".join(f"{s} {k}/class" for s in sets for k in shots) + " |",
            "|---|" + "---|" * (len(sets) * len(shots))]
    for folder in folders:
        found = load_results(folder)
        keys = list(dict.fromkeys(k for r in found.values() for k in r["methods"] if k != "tfidf"))
        for key in keys:
            cells, label = [], None
            for s in sets:
                m = found.get(s, {}).get("methods", {}).get(key)
                label = label or (m and m["label"])
                mean = summarise([r for r in m["runs"] if r["seed"] < seeds]) if m else {}
                cells += [_cell(mean, k, "accuracy") for k in shots]
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    for label in ("SetFit (published)", "frozen ST + LR (published)"):
        rows.append(f"| {label} | " + " | ".join(
            f"{PUBLISHED[s][label][k] / 100:.3f}" if k in PUBLISHED.get(s, {}).get(label, {}) else "–"
            for s in sets for k in shots) + " |")
    return "\n".join(rows)


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--shots", default="8,16,32,64")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-test", type=int, default=150)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--mode", help="feature mode (default: the product's, Settings().mode)")
    ap.add_argument("--penalty", choices=["l1", "elasticnet", "l2"], help="default: the product's")
    ap.add_argument("--time-limit", type=float, default=7200, help="seconds; no new set starts after it")
    ap.add_argument("--quick", action="store_true", help="3 sets, 8 and 32 shots, 2 seeds, 100 test rows")
    ap.add_argument("--out", help="results folder (default bench/results/<backbone>)")
    ap.add_argument("--cache", default=str(ROOT / "bench" / "results" / "cache.db"),
                    help="feature cache shared between runs")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild accuracy.md and the figures from the JSON already in --out")
    ap.add_argument("--compare", help="comma-separated results folders: print a side-by-side table "
                    "of --sets at --shots over the first --seeds seeds, and stop")
    args = ap.parse_args(argv)
    if args.quick:
        args.sets, args.shots, args.seeds, args.max_test = "sst2,cr,trec", "8,32", 2, 100
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    args.out = Path(args.out or ROOT / "bench" / "results" / args.backbone)
    return args


def main(argv=None) -> None:
    args = _args(argv)
    shots = [int(s) for s in args.shots.split(",")]
    if args.compare:
        print(compare([Path(f) for f in args.compare.split(",")], args.sets.split(","), shots, args.seeds))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        from bench.figures import load_results

        run = json.loads((args.out / "run.json").read_text())
        found = load_results(args.out)
        results = {n: found[n] for n in args.sets.split(",") if n in found}
        shots = sorted({int(k) for r in results.values() for m in r["methods"].values() for k in m["mean"]})
    else:
        results, run = run_all(args, shots)
    report = _markdown(run, shots, results)
    (args.out / "accuracy.md").write_text(report)
    if not args.no_figures and results:
        from bench.figures import write_figures

        for path in write_figures(args.out):
            print(f"wrote {path}", file=sys.stderr)
    print(report)


def run_all(args, shots) -> tuple[dict, dict]:
    """Run every set (until --time-limit); per-set JSON and run.json are written as it goes."""
    from core.store import Store

    settings = Settings()
    run = {"date": str(datetime.date.today()), "machine": machine(), "backbone": args.backbone,
           "mode": args.mode or settings.mode, "penalty": args.penalty or settings.penalty,
           "seeds": args.seeds, "max_test": args.max_test, "time_limit": args.time_limit,
           "command": f".venv/bin/python bench/accuracy.py {' '.join(sys.argv[1:])}", "skipped": []}
    started, results = time.time(), {}
    with Store.open(args.cache) as store:
        backbones: dict = {}
        for name in args.sets.split(","):
            if time.time() - started > args.time_limit:
                run["skipped"].append(name)
                continue
            t = time.time()
            results[name] = run_set(Context(name, args, store, backbones), shots)
            (args.out / f"{name}.json").write_text(json.dumps(results[name], indent=1))
            run["wall_s"] = time.time() - started
            (args.out / "run.json").write_text(json.dumps(run, indent=1))
            print(f"{name} done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return results, run


def _markdown(run, shots, results) -> str:
    return "\n".join([
        f"### Accuracy ({run['backbone']}, mode {run['mode']}, penalty {run['penalty']}, "
        f"{run['seeds']} seeds, test sample ≤ {run['max_test']} rows)",
        f"- date {run['date']}; machine: {run['machine']}; wall time {run.get('wall_s', 0):.0f} s",
        f"- command: `{run['command']}`",
        "- mean ± std over seeds; every method sees the same draws and the same test rows; "
        "zero-shot uses no labels, so its std is 0; published rows are on the full test sets",
        *([f"- skipped (time limit {run['time_limit']:.0f} s): {', '.join(run['skipped'])}"]
          if run["skipped"] else []),
        "", "Accuracy:", "", table(results, shots, "accuracy"),
        "", "Macro-F1:", "", table(results, shots, "macro_f1"), ""])


if __name__ == "__main__":
    main()
