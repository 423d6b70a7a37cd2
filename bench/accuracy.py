"""Few-shot accuracy on the public sets in ../shared/data, with baselines on the same draws.

    .venv/bin/python bench/accuracy.py [--sets cr,trec] [--shots 8,16,32,64] [--seeds 3]
                                       [--max-test 150] [--quick] [--out bench/results]

For every set and every (shots, seed) draw this runs what ``tenshot eval`` runs
(``core.evaluate.evaluate``): the default backbone with a task prompt and
``--mode auto``, TF-IDF + LR on the same draws, and MiniLM + the same head. Each
set's JSON goes to ``--out``; a markdown table is printed (and written to
``--out/accuracy.md``). Features are cached in ``--cache`` so a rerun is cheap.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.backbones import load_backbone  # noqa: E402
from core.classifier import Settings  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.store import Store  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
# One task prompt per set: a short frame naming the kind of text and what is asked.
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
SETS = list(PROMPTS)


def run_set(name: str, bbs: dict, args, store) -> dict:
    shots = [int(s) for s in args.shots.split(",")]
    ours = evaluate(DATA / name, bbs["llm"], Settings(backbone=bbs["llm"].name, prompt=PROMPTS[name],
                                                      mode=args.mode, penalty=args.penalty), shots=shots, seeds=args.seeds,
                    max_test=args.max_test, cache=store, baselines=True)
    minilm = evaluate(DATA / name, bbs["minilm"], Settings(backbone="minilm-l6", prompt=None, mode=args.mode,
                                       penalty=args.penalty),
                      shots=shots, seeds=args.seeds, max_test=args.max_test, cache=store)
    return {"ours": ours, "tfidf": ours.pop("baselines")["tfidf_lr"], "minilm": minilm}


def _cell(mean: dict, k: int) -> str:
    m = mean.get(str(k))
    return f"{m['accuracy']:.3f} ± {m['accuracy_std']:.3f}" if m else "–"


def table(results: dict, shots: list[int]) -> str:
    head = "| set | method | " + " | ".join(f"{k}/class" for k in shots) + " |"
    rows = [head, "|" + "---|" * (len(shots) + 2)]
    for name, r in results.items():
        for label, key in (("SmolLM2 + head", "ours"), ("MiniLM + head", "minilm"), ("TF-IDF + LR", "tfidf")):
            rows.append(f"| {name} | {label} | " + " | ".join(_cell(r[key]["mean"], k) for k in shots) + " |")
    avg = {key: [sum(r[key]["mean"][str(k)]["accuracy"] for r in results.values()) / len(results)
                 for k in shots] for key in ("ours", "minilm", "tfidf")}
    for label, key in (("SmolLM2 + head", "ours"), ("MiniLM + head", "minilm"), ("TF-IDF + LR", "tfidf")):
        rows.append(f"| **mean** | {label} | " + " | ".join(f"{v:.3f}" for v in avg[key]) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--shots", default="8,16,32,64")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-test", type=int, default=150)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--penalty", default="elasticnet", choices=["l1", "elasticnet", "l2"])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--quick", action="store_true", help="3 sets, 8 and 32 shots, 2 seeds (< 5 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--cache", default=str(ROOT / "bench" / "results" / "cache.db"),
                    help="feature cache shared between runs")
    args = ap.parse_args()
    if args.quick:
        args.sets, args.shots, args.seeds, args.max_test = "sst2,cr,trec", "8,32", 2, 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bbs = {"llm": load_backbone(args.backbone), "minilm": load_backbone("minilm-l6")}
    results = {}
    started = time.time()
    with Store.open(args.cache) as store:
        for name in args.sets.split(","):
            t = time.time()
            results[name] = run_set(name, bbs, args, store)
            (out / f"{name}.json").write_text(json.dumps(results[name], indent=1))
            print(f"{name} done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    shots = [int(s) for s in args.shots.split(",")]
    report = "\n".join([
        f"### Accuracy ({args.backbone}, mode {args.mode}, penalty {args.penalty}, {args.seeds} seeds, test sample ≤ {args.max_test} rows)",
        f"- date {datetime.date.today()}, machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"wall time {time.time() - started:.0f} s",
        f"- command: `.venv/bin/python bench/accuracy.py {' '.join(sys.argv[1:])}`",
        "- accuracy mean ± std over seeds; every method sees the same draws and the same test rows",
        "", table(results, shots), ""])
    (out / "accuracy.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
