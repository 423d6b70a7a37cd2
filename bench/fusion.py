"""Multi-backbone fusion: SmolLM2 alone, MiniLM alone, and both under one head.

    .venv/bin/python bench/fusion.py [--sets cr,trec] [--shots 32] [--seeds 3] [--penalty elasticnet]

Same draws and 150-row test samples as bench/accuracy.py; features come from its cache
(bench/results/cache.db), so a rerun costs only head fits. SmolLM2 gets the set's task
prompt (bench/accuracy.PROMPTS), MiniLM the bare sentence, as core.model.group does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import DATA, PROMPTS  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402
from core.learn.classifier import Settings, features_for, train  # noqa: E402
from core.evaluate import draw_shots, load_split, stratified_sample  # noqa: E402
from core.store import Store  # noqa: E402

GROUP = "smollm2-135m+minilm-l6"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(PROMPTS))
    ap.add_argument("--shots", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--penalty", default="elasticnet")
    ap.add_argument("--cache", default=str(ROOT / "bench" / "results" / "cache.db"))
    args = ap.parse_args()
    group = load_backbone(GROUP)
    methods = {"SmolLM2": "smollm2-135m", "MiniLM": "minilm-l6", "fused": GROUP}
    rows = {}
    with Store.open(args.cache) as store:
        for name in args.sets.split(","):
            train_texts, train_labels = load_split(DATA / name, "train")
            test_texts, test_labels = load_split(DATA / name, "test")
            keep = stratified_sample(test_labels, 150, np.random.default_rng(0))
            test_texts, test_labels = [test_texts[i] for i in keep], [test_labels[i] for i in keep]
            classes = sorted(set(train_labels))
            accs = {m: [] for m in methods}
            for seed in range(args.seeds):
                idx = draw_shots(train_labels, args.shots, np.random.default_rng(seed))
                texts = [train_texts[i] for i in idx] + test_texts
                for method, backbone in methods.items():
                    bb = {"smollm2-135m": group.backbones[0], "minilm-l6": group.backbones[1]}.get(backbone, group)
                    s = Settings(backbone=backbone, prompt=None if backbone == "minilm-l6" else PROMPTS[name],
                                 penalty=args.penalty)
                    X = features_for(bb, texts, s, cache=store)
                    clf = train(X[:len(idx)], [train_labels[i] for i in idx], classes, s, random_state=seed)
                    pred = np.array(clf.classes)[clf.predict_proba_features(X[len(idx):]).argmax(1)]
                    accs[method].append(float((pred == np.array(test_labels)).mean()))
            rows[name] = {m: float(np.mean(a)) for m, a in accs.items()}
            print(f"| {name} | " + " | ".join(f"{rows[name][m]:.3f}" for m in methods) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"{np.mean([r[m] for r in rows.values()]):.3f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
