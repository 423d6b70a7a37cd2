"""Few-shot evaluation on a labelled folder holding train.csv and test.csv.

For each (shots, seed) draw, ``shots`` labels per class are taken from train.csv, a
method is trained on them, and test.csv (optionally a stratified sample of it, the
same rows for every seed) is scored. ``prepare`` fixes the draws and test rows once
so that every method sees exactly the same data.

A method is a function ``setup(data) -> fit_predict`` where
``fit_predict(train_indices, seed) -> (predicted test labels, extra run fields)``;
setup does the per-set work once (embedding every needed text, or the zero-shot
pass over the test rows). Three are built in: the tenshot head on a backbone's
features, TF-IDF + LR, and the zero-shot baseline of the backbone LLM. Benchmarks
add their own the same way.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from core.learn.classifier import Settings, features_for, train
from core.errors import InputError
from core.io import read_path

__all__ = [
    "EvalData",
    "FitPredict",
    "Method",
    "draw_shots",
    "evaluate",
    "head_method",
    "load_split",
    "prepare",
    "run_method",
    "stratified_sample",
    "summarise",
    "tfidf_baseline",
    "tfidf_method",
    "zero_shot_method",
    "zero_shot_scorer",
]

# fit_predict(train row indices, seed) -> (predicted labels of the test rows, extra run fields)
FitPredict = Callable[[np.ndarray, int], tuple[list[str], dict]]
Method = Callable[["EvalData"], FitPredict]


@dataclass(frozen=True)
class EvalData:
    """The fixed rows of one evaluation.

    draws: {(shots, seed): sorted indices into train_texts}, shots rows per class.
    """

    name: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    classes: list[str]
    draws: dict[tuple[int, int], np.ndarray]

    def needed(self) -> list[int]:
        """Train rows used by at least one draw, sorted."""
        return sorted(set(np.concatenate(list(self.draws.values())).tolist()))


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


def prepare(data_dir: str | Path, *, shots: Sequence[int], seeds: int,
            max_test: int | None = None) -> EvalData:
    """Read the folder and fix the test sample (seed 0) and the draws (seed s for draw s)."""
    if seeds < 1 or not shots or min(shots) < 1:
        raise InputError(f"Need at least 1 seed and positive shot counts; got seeds={seeds}, shots={list(shots)}.")
    train_texts, train_labels = load_split(data_dir, "train")
    test_texts, test_labels = load_split(data_dir, "test")
    test_idx = stratified_sample(test_labels, max_test, np.random.default_rng(0))
    draws = {(k, s): draw_shots(train_labels, k, np.random.default_rng(s))
             for k in shots for s in range(seeds)}
    return EvalData(Path(data_dir).name, train_texts, train_labels,
                    [test_texts[i] for i in test_idx], [test_labels[i] for i in test_idx],
                    sorted(set(train_labels)), draws)


def _scores(y_true, y_pred) -> dict:
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}


def run_method(data: EvalData, method: Method, *,
               progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run one method on every draw; one dict per draw (shots, seed, scores, train_seconds, extras)."""
    fit_predict = method(data)
    runs = []
    for n, ((k, s), idx) in enumerate(data.draws.items()):
        t0 = time.perf_counter()
        pred, extra = fit_predict(idx, s)
        seconds = time.perf_counter() - t0
        runs.append({"shots": k, "seed": s, **_scores(data.test_labels, pred),
                     "train_seconds": seconds, **extra})
        if progress:
            progress(n + 1, len(data.draws))
    return runs


def summarise(runs: list[dict]) -> dict:
    """{shots: {accuracy, macro_f1, accuracy_std, macro_f1_std, n}} over seeds (population std)."""
    out = {}
    for k in sorted({r["shots"] for r in runs}):
        sel = [r for r in runs if r["shots"] == k]
        out[str(k)] = {m: float(np.mean([r[m] for r in sel])) for m in ("accuracy", "macro_f1")}
        out[str(k)].update({f"{m}_std": float(np.std([r[m] for r in sel])) for m in ("accuracy", "macro_f1")})
        out[str(k)]["n"] = len(sel)
    return out


def head_method(backbone, settings: Settings, *, cache=None,
                progress: Callable[[int, int], None] | None = None) -> Method:
    """The tenshot classifier: features of every needed text embedded once, then one head per draw."""
    settings.check()

    def setup(data: EvalData) -> FitPredict:
        needed = data.needed()
        X = features_for(backbone, [data.train_texts[i] for i in needed] + data.test_texts,
                         settings, cache=cache, progress=progress)
        row_of = {i: r for r, i in enumerate(needed)}
        X_test = X[len(needed):]

        def fit_predict(idx, seed):
            clf = train(X[[row_of[i] for i in idx]], [data.train_labels[i] for i in idx],
                        data.classes, settings, random_state=seed)
            pred = [clf.classes[j] for j in clf.predict_proba_features(X_test).argmax(1)]
            return pred, {"spec": clf.spec.to_json(), "C": clf.metrics["C"]}
        return fit_predict
    return setup


def tfidf_baseline(train_texts, train_labels, test_texts, *, random_state: int = 0) -> list[str]:
    """TF-IDF (word 1-2 grams) + L2 logistic regression, C chosen by CV."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    n_min = min(np.unique(train_labels, return_counts=True)[1])
    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=min(5, int(n_min)), max_iter=2000,
                             class_weight="balanced", random_state=random_state, scoring="accuracy"))
    with warnings.catch_warnings():  # scikit-learn 1.9 announces future attribute changes
        warnings.simplefilter("ignore", FutureWarning)
        return list(clf.fit(list(train_texts), list(train_labels)).predict(list(test_texts)))


def tfidf_method() -> Method:
    """TF-IDF + LR refitted on each draw's texts."""
    def setup(data: EvalData) -> FitPredict:
        def fit_predict(idx, seed):
            return tfidf_baseline([data.train_texts[i] for i in idx], [data.train_labels[i] for i in idx],
                                  data.test_texts, random_state=seed), {}
        return fit_predict
    return setup


def zero_shot_method(backbone, *, prompt: str | None = None, reduce: str = "sum",
                     calibrate: bool = False, scores: Callable[[EvalData], np.ndarray] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Method:
    """The backbone LLM asked directly (``core.learn.zeroshot``); it uses no labels, so every
    draw gets the same predictions and the per-draw train_seconds is ~0.

    scores: optional ``data -> (n_test, n_classes)`` class scores already computed (so
    that a benchmark can share one pass between variants); otherwise they are computed.
    """
    from core.learn.zeroshot import DEFAULT_ZERO_SHOT_PROMPT, class_log_probs

    def setup(data: EvalData) -> FitPredict:
        t0 = time.perf_counter()
        s = scores(data) if scores else class_log_probs(
            backbone, data.test_texts, data.classes, prompt=prompt or DEFAULT_ZERO_SHOT_PROMPT,
            reduce=reduce, calibrate=calibrate, progress=progress)
        pred = [data.classes[j] for j in np.asarray(s).argmax(1)]
        seconds = time.perf_counter() - t0
        return lambda idx, seed: (pred, {"predict_seconds": seconds})
    return setup


def zero_shot_scorer(backbone, *, prompt: str | None = None, reduce: str = "sum",
                     progress: Callable[[int, int], None] | None = None
                     ) -> Callable[[EvalData, bool], np.ndarray]:
    """``scores(data, calibrated)``: zero-shot class scores of data's test rows, raw or
    calibrated, from ONE pass per data (the content-free text rides along with the rows)."""
    from core.learn.zeroshot import CONTENT_FREE, DEFAULT_ZERO_SHOT_PROMPT, class_log_probs

    memo: dict[int, np.ndarray] = {}

    def scores(data: EvalData, calibrated: bool) -> np.ndarray:
        if id(data) not in memo:
            memo[id(data)] = class_log_probs(backbone, data.test_texts + [CONTENT_FREE], data.classes,
                                             prompt=prompt or DEFAULT_ZERO_SHOT_PROMPT, reduce=reduce,
                                             progress=progress)
        raw = memo[id(data)]
        return raw[:-1] - raw[-1] if calibrated else raw[:-1]
    return scores


def evaluate(data_dir: str | Path, backbone, settings: Settings, *, shots: Sequence[int],
             seeds: int, max_test: int | None = None, cache=None, baselines: bool = False,
             zero_shot: bool = False, zero_shot_prompt: str | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the few-shot evaluation; returns the JSON-able report the CLI writes.

    Report: dataset, backbone, mode, prompt, pooling, settings (every setting the head
    was trained with: with ``Settings()`` the app's defaults), n_test, classes, runs (one per
    draw: shots, seed, accuracy, macro_f1, train_seconds, spec, C), mean ({shots:
    accuracy, macro_f1, accuracy_std, macro_f1_std, n}) and, when asked for,
    baselines ({"tfidf_lr": {runs, mean}, "zero_shot" and "zero_shot_calibrated":
    {prompt, reduce, calibrated, runs, mean}}).
    progress(stage, done, total) reports embedding, training and zero-shot progress.
    """
    settings.check()
    data = prepare(data_dir, shots=shots, seeds=seeds, max_test=max_test)

    def stage(name):
        return (lambda d, t: progress(name, d, t)) if progress else None

    extra = {}
    if zero_shot:  # first, so that a backbone that cannot do it fails before the long part
        from core.learn.zeroshot import DEFAULT_ZERO_SHOT_PROMPT

        scorer = zero_shot_scorer(backbone, prompt=zero_shot_prompt, progress=stage("zero-shot"))
        for key, calibrated in (("zero_shot", False), ("zero_shot_calibrated", True)):
            zs = run_method(data, zero_shot_method(backbone, scores=lambda d, c=calibrated: scorer(d, c)))
            extra[key] = {"prompt": zero_shot_prompt or DEFAULT_ZERO_SHOT_PROMPT, "reduce": "sum",
                          "calibrated": calibrated, "runs": zs, "mean": summarise(zs)}
    runs = run_method(data, head_method(backbone, settings, cache=cache, progress=stage("embed")),
                      progress=stage("train"))
    report = {"dataset": data.name, "backbone": backbone.name, "mode": settings.mode,
              "prompt": settings.prompt, "pooling": settings.pooling, "settings": settings.to_dict(),
              "n_test": len(data.test_texts),
              "classes": data.classes, "runs": runs, "mean": summarise(runs)}
    if baselines:
        base = run_method(data, tfidf_method())
        extra = {"tfidf_lr": {"runs": base, "mean": summarise(base)}, **extra}
    if extra:
        report["baselines"] = extra
    return report
