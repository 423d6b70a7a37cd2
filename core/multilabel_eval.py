"""Few-shot evaluation of multi-label data: k texts drawn per class, scored on a test sample.

A folder holds ``train.csv`` and ``test.csv`` with columns ``text,labels`` (``;``-separated
class names, as ``core.multilabel_io`` reads them). For each k and seed, k texts are drawn
for every class from the train split (a drawn text brings all its labels, so a class may
end with more than k), plus k texts with no class when the split has such texts; the
one-vs-rest head (``core.learn.multilabel``) is trained on their features and scored on
the test sample (the same rows for every draw). The TF-IDF baseline fits scikit-learn's
one-vs-rest logistic regression (balanced, threshold 0.5) on the same draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError
from core.io import read_path
from core.learn.classifier import Settings, features_for
from core.learn.multilabel import label_matrix, train_multilabel
from core.learn.multilabel_metrics import multilabel_scores
from core.multilabel_io import label_sets_of, looks_multi_label

__all__ = ["MultiLabelData", "draw_per_class", "evaluate_multilabel", "head_runs", "load_sets",
           "looks_multi_label_dir", "prepare_multilabel", "summarise", "tfidf_runs"]

_SCORES = ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")


@dataclass
class MultiLabelData:
    """The train split, the fixed test sample and the draws {(k, seed): train row indices}."""

    name: str
    train_texts: list[str]
    train_sets: list[tuple[str, ...]]
    test_texts: list[str]
    test_sets: list[tuple[str, ...]]
    classes: list[str]
    draws: dict[tuple[int, int], np.ndarray]


def load_sets(data_dir: str | Path, split: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """(texts, label sets) of ``data_dir/split.csv``; rows without labels are left out."""
    path = Path(data_dir) / f"{split}.csv"
    if not path.is_file():
        raise InputError(f"'{data_dir}' has no {split}.csv; a multi-label evaluation folder needs "
                         "train.csv and test.csv with columns text,labels.")
    parsed = label_sets_of(read_path(path, text_column="text", label_lists=True))
    pairs = [(t, s) for t, s in zip(parsed.texts, parsed.sets) if s is not None]
    if not pairs:
        raise InputError(f"{path} has no labelled rows.")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def looks_multi_label_dir(data_dir: str | Path) -> bool:
    """Whether ``data_dir/train.csv`` has a labels column holding sets."""
    path = Path(data_dir) / "train.csv"
    return path.is_file() and looks_multi_label(read_path(path, text_column="text",
                                                          label_lists=True).labels)


def draw_per_class(sets: Sequence[tuple[str, ...]], classes: Sequence[str], k: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: k rows per class (all when it has fewer), drawn rarest class first
    among rows not yet drawn, and k rows with no class when there are any."""
    Y = label_matrix(sets, classes)
    drawn = np.zeros(len(Y), dtype=bool)
    for c in np.argsort(Y.sum(0), kind="stable"):
        rows = np.flatnonzero(Y[:, c] & ~drawn)
        need = max(0, k - int((Y[:, c] & drawn).sum()))
        drawn[rng.choice(rows, size=min(need, len(rows)), replace=False)] = True
    empty = np.flatnonzero(~Y.any(1) & ~drawn)
    drawn[rng.choice(empty, size=min(k, len(empty)), replace=False)] = True
    return np.flatnonzero(drawn)


def prepare_multilabel(data_dir: str | Path, *, shots: Sequence[int], seeds: int,
                       max_test: int | None = None) -> MultiLabelData:
    """Read the folder; fix the test sample (seed 0, ``max_test`` rows) and the draws (seed s)."""
    if seeds < 1 or not shots or min(shots) < 1:
        raise InputError(f"Need at least 1 seed and positive shot counts; got seeds={seeds}, "
                         f"shots={list(shots)}.")
    train_texts, train_sets = load_sets(data_dir, "train")
    test_texts, test_sets = load_sets(data_dir, "test")
    classes = sorted({c for s in train_sets for c in s})
    keep = [i for i, s in enumerate(test_sets) if set(s) <= set(classes)]
    if max_test is not None and max_test < len(keep):
        keep = sorted(np.random.default_rng(0).choice(keep, size=max_test, replace=False).tolist())
    draws = {(k, s): draw_per_class(train_sets, classes, k, np.random.default_rng(s))
             for k in shots for s in range(seeds)}
    return MultiLabelData(Path(data_dir).name, train_texts, train_sets,
                          [test_texts[i] for i in keep], [test_sets[i] for i in keep], classes, draws)


def _scores(data: MultiLabelData, predicted: np.ndarray) -> dict:
    got = multilabel_scores(label_matrix(data.test_sets, data.classes), predicted, data.classes)
    return {k: got[k] for k in _SCORES}


def head_runs(data: MultiLabelData, backbone, settings: Settings, *, method: str = "tenshot",
              cache=None, progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """One run per draw of the one-vs-rest head on ``backbone``'s features."""
    needed = sorted(set(np.concatenate(list(data.draws.values())).tolist()))
    stage = _stages(progress)
    X_train = dict(zip(needed, features_for(backbone, [data.train_texts[i] for i in needed], settings,
                                            cache=cache, progress=stage("train features"))))
    X_test = features_for(backbone, data.test_texts, settings, cache=cache,
                          progress=stage("test features"))
    runs = []
    for (k, seed), rows in data.draws.items():
        start = time.perf_counter()
        clf = train_multilabel(np.stack([X_train[i] for i in rows]),
                               [data.train_sets[i] for i in rows], data.classes, settings,
                               random_state=seed)
        predicted = clf.predict_proba_features(X_test) >= clf.thresholds
        runs.append({"method": method, "shots": k, "seed": seed, "n_train": int(len(rows)),
                     "seconds": time.perf_counter() - start, **_scores(data, predicted)})
    return runs


def _stages(progress):
    """name -> a progress(done, total) callback for that stage (None without progress)."""
    def stage(name: str):
        return None if progress is None else (lambda done, total: progress(name, done, total))
    return stage


def tfidf_runs(data: MultiLabelData) -> list[dict]:
    """TF-IDF + one-vs-rest logistic regression (balanced, C=1, threshold 0.5) per draw."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    runs = []
    for (k, seed), rows in data.draws.items():
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        Z = vec.fit_transform([data.train_texts[i] for i in rows])
        Y = label_matrix([data.train_sets[i] for i in rows], data.classes)
        model = OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=1000))
        model.fit(Z, Y.astype(int))
        predicted = model.predict_proba(vec.transform(data.test_texts)) >= 0.5
        runs.append({"method": "tfidf", "shots": k, "seed": seed, "n_train": int(len(rows)),
                     **_scores(data, predicted)})
    return runs


def summarise(runs: list[dict]) -> dict:
    """{method: {k: {score: mean, score_std: std, n_train: mean}}} over seeds."""
    out: dict = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        for k in sorted({r["shots"] for r in runs if r["method"] == method}):
            group = [r for r in runs if r["method"] == method and r["shots"] == k]
            entry = {"n_train": float(np.mean([r["n_train"] for r in group]))}
            for score in _SCORES:
                values = [r[score] for r in group]
                entry.update({score: float(np.mean(values)), f"{score}_std": float(np.std(values))})
            out.setdefault(method, {})[str(k)] = entry
    return out


def evaluate_multilabel(data_dir: str | Path, backbone, settings: Settings, *, shots: Sequence[int],
                        seeds: int = 3, max_test: int | None = None, cache=None, baselines: bool = False,
                        progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The ``tenshot eval --multi-label`` report: runs, means per method and k, the setup."""
    data = prepare_multilabel(data_dir, shots=shots, seeds=seeds, max_test=max_test)
    runs = head_runs(data, backbone, settings, cache=cache, progress=progress)
    if baselines:
        runs += tfidf_runs(data)
    return {"dataset": data.name, "task": "multi_label", "classes": data.classes,
            "n_test": len(data.test_texts), "settings": settings.to_dict(), "runs": runs,
            "mean": summarise(runs)}
