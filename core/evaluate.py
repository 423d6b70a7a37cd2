"""Few-shot evaluation on a labelled folder holding train.csv and test.csv.

For each seed, ``shots`` labels per class are drawn from train.csv, a classifier
is trained on them, and test.csv (optionally a stratified sample of it, the
same rows for every seed) is scored. Features of every text are embedded once
and shared by all draws. The TF-IDF + LR baseline runs on the same draws.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .classifier import Settings, features_for, train
from .errors import InputError
from .io import read_path

__all__ = ["load_split", "draw_shots", "stratified_sample", "evaluate", "tfidf_baseline"]


def load_split(data_dir: str | Path, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of ``data_dir/split.csv`` (columns text,label)."""
    path = Path(data_dir) / f"{split}.csv"
    if not path.is_file():
        raise InputError(f"'{data_dir}' has no {split}.csv; an evaluation folder needs "
                         "train.csv and test.csv with columns text,label.")
    rows = read_path(path, text_column="text", label_column="label")
    pairs = [(t, lab) for t, lab in zip(rows.texts, rows.labels or []) if lab]
    if not pairs:
        raise InputError(f"{path} has no labelled rows.")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def draw_shots(labels: Sequence[str], shots: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shots`` random rows per class (all of a class's rows if it has fewer)."""
    labels = np.asarray(labels)
    picks = []
    for c in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == c)
        picks.append(rng.choice(rows, size=min(shots, len(rows)), replace=False))
    return np.sort(np.concatenate(picks))


def stratified_sample(labels: Sequence[str], n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-stratified sample of about n rows (all rows when n is None)."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    picks = []
    for c in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == c)
        k = max(1, round(n * len(rows) / len(labels)))
        picks.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(picks))[: max(n, len(picks))]


def tfidf_baseline(train_texts, train_labels, test_texts, *, random_state: int = 0) -> list[str]:
    """TF-IDF (word 1-2 grams) + L2 logistic regression, C chosen by CV."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    import warnings

    n_min = min(np.unique(train_labels, return_counts=True)[1])
    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=min(5, int(n_min)), max_iter=2000,
                             class_weight="balanced", random_state=random_state, scoring="accuracy"))
    with warnings.catch_warnings():  # scikit-learn 1.9 announces future attribute changes
        warnings.simplefilter("ignore", FutureWarning)
        return list(clf.fit(list(train_texts), list(train_labels)).predict(list(test_texts)))


def _scores(y_true, y_pred) -> dict:
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}


def evaluate(data_dir: str | Path, backbone, settings: Settings, *, shots: Sequence[int],
             seeds: int, max_test: int | None = None, cache=None, baselines: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the few-shot evaluation; returns the JSON-able report the CLI writes.

    progress(stage, done, total) reports embedding and training progress.
    """
    settings.check()
    train_texts, train_labels = load_split(data_dir, "train")
    test_texts, test_labels = load_split(data_dir, "test")
    test_idx = stratified_sample(test_labels, max_test, np.random.default_rng(0))
    test_texts = [test_texts[i] for i in test_idx]
    test_labels = [test_labels[i] for i in test_idx]
    classes = sorted(set(train_labels))
    draws = {(k, s): draw_shots(train_labels, k, np.random.default_rng(s))
             for k in shots for s in range(seeds)}
    needed = sorted(set(np.concatenate(list(draws.values())).tolist()))
    texts = [train_texts[i] for i in needed] + test_texts
    X = features_for(backbone, texts, settings, cache=cache,
                     progress=(lambda d, t: progress("embed", d, t)) if progress else None)
    row_of = {i: r for r, i in enumerate(needed)}
    X_test = X[len(needed):]
    runs, base_runs = [], []
    for n, ((k, s), idx) in enumerate(draws.items()):
        t0 = time.perf_counter()
        clf = train(X[[row_of[i] for i in idx]], [train_labels[i] for i in idx], classes,
                    settings, random_state=s)
        seconds = time.perf_counter() - t0
        pred = [clf.classes[i] for i in clf.predict_proba_features(X_test).argmax(1)]
        runs.append({"shots": k, "seed": s, **_scores(test_labels, pred), "train_seconds": seconds,
                     "spec": clf.spec.to_json(), "C": clf.metrics["C"]})
        if baselines:
            base = tfidf_baseline([train_texts[i] for i in idx], [train_labels[i] for i in idx],
                                  test_texts, random_state=s)
            base_runs.append({"shots": k, "seed": s, **_scores(test_labels, base)})
        if progress:
            progress("train", n + 1, len(draws))
    report = {"dataset": Path(data_dir).name, "backbone": backbone.name, "mode": settings.mode,
              "prompt": settings.prompt, "pooling": settings.pooling, "n_test": len(test_texts),
              "runs": runs, "mean": _means(runs)}
    if baselines:
        report["baselines"] = {"tfidf_lr": {"runs": base_runs, "mean": _means(base_runs)}}
    return report


def _means(runs: list[dict]) -> dict:
    out = {}
    for k in sorted({r["shots"] for r in runs}):
        sel = [r for r in runs if r["shots"] == k]
        out[str(k)] = {m: float(np.mean([r[m] for r in sel])) for m in ("accuracy", "macro_f1")}
        out[str(k)].update({f"{m}_std": float(np.std([r[m] for r in sel])) for m in ("accuracy", "macro_f1")})
    return out
