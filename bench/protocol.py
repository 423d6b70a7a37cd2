"""Defaults chosen under a protocol (issue 12): tune on five sets, report on five others.

The ten shared sets are split once: defaults (backbone, fusion partner, layers,
pooling, mode rule, penalty, C grid) are chosen on TUNE only; REPORT is run once, at
the end, with the app's defaults, and its numbers are reported as they come. No
per-set prompts: a backbone gets what the app gives it (``default_prompt``: the
generic DEFAULT_PROMPT for an LLM, the bare text for a sentence encoder).

    # 1. fill the feature cache (one backbone at a time; an LLM's mean and last pooling together)
    .venv/bin/python bench/protocol.py embed --half tune --backbones smollm2-135m,minilm-l6,mpnet
    # 2. every candidate of CANDIDATES on the same draws of TUNE (8 and 32 per class, 3 seeds)
    .venv/bin/python bench/protocol.py tune [--candidates NAME,...]
    # 3. once, at the end: the app's defaults vs MiniLM + head vs TF-IDF + LR on REPORT
    .venv/bin/python bench/protocol.py embed --half report --shots 8,32 --seeds 5 --backbones minilm-l6,smollm2-135m,mpnet
    .venv/bin/python bench/protocol.py report --shots 8,32 --seeds 5 \
        --also "smol auto en (old default),minilm auto en (old baseline),smol mid3 mean l2"

Issue 12 (2026-11-28) ran the reporting half at 8 and 32 labels per class only (the two
shot counts its targets name): 16 and 64 would have tripled the texts to embed on a
loaded 2-core box. On an idle machine run it with the default --shots 8,16,32,64.

Test rows: a stratified sample of at most ``--max-test`` (500) rows per set, fixed
(seed 0), the same for every method (``core.evaluate.prepare``). Pooled features are
cached in a Store under ``--cache`` (default /tmp/tenshot-bench-cache/proto/cache.db,
keyed by the backbone's weights fingerprint, prompt and pooling), so candidates that
differ only in the head cost seconds. Results: ``--out`` (bench/results/protocol).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
from core.evaluate import prepare  # noqa: E402
from core.learn.classifier import default_prompt  # noqa: E402
from core.model.embed import embed_many  # noqa: E402
from core.model.group import group_parts, is_fused  # noqa: E402
from core.model.registry import is_encoder  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402

TUNE = ["sst2", "cr", "trec", "subj", "sms_spam"]
REPORT = ["mr", "mpqa", "ag_news", "sst5", "tweet_eval_emotion"]
HALVES = {"tune": (TUNE, [8, 32], 3), "report": (REPORT, [8, 16, 32, 64], 5)}
MAX_TEST = 200
CACHE = Path("/tmp/tenshot-bench-cache/proto/cache.db")
OUT = ROOT / "bench" / "results" / "protocol"


def log(msg: str) -> None:
    print(f"[{datetime.datetime.utcnow():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def half_data(half: str, max_test: int = MAX_TEST, shots: list[int] | None = None,
              seeds: int | None = None) -> dict:
    """{set: EvalData} of one half, with that half's draws (or the given shots and seeds)."""
    sets, default_shots, default_seeds = HALVES[half]
    shots, seeds = shots or default_shots, seeds or default_seeds
    return {name: prepare(DATA / name, shots=shots, seeds=seeds, max_test=max_test) for name in sets}


def texts_of(data) -> list[str]:
    """Every text one half needs embedded for a set: the drawn train rows, then the test rows."""
    return [data.train_texts[i] for i in data.needed()] + data.test_texts


def poolings_of(name: str) -> tuple[str, ...]:
    """Poolings cached per backbone: an LLM's last token is a candidate; encoders use mean."""
    return ("mean",) if default_prompt(name) is None else ("mean", "last")


def embed_half(args) -> None:
    """Fill the cache for every (backbone, set) of a half, one backbone at a time."""
    from core.store import Store

    datas = half_data(args.half, args.max_test, args.shots, args.seeds)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    with Store.open(args.cache) as store:
        for name in args.backbones.split(","):
            bb = load_backbone(name, progress=log)
            for set_name, data in datas.items():
                texts = texts_of(data)
                t = time.time()
                embed_many(bb, texts, prompt=default_prompt(name), poolings=poolings_of(name),
                           cache=store, progress=_every(500, f"{name} {set_name}"))
                log(f"{name} {set_name}: {len(texts)} texts in {time.time() - t:.0f} s")


def _every(n: int, what: str):
    state = {"next": n}

    def progress(done, total):
        if done >= state["next"] or done == total:
            log(f"  {what}: {done}/{total}")
            state["next"] = done + n
    return progress


@dataclass
class Features:
    """Pooled features of every set of a half, read once per (backbone, pooling)."""

    store: object
    datas: dict
    memo: dict = field(default_factory=dict)
    backbones: dict = field(default_factory=dict)

    def get(self, backbone: str, pooling: str, set_name: str) -> np.ndarray:
        """X (n, n_states, width) of the set's needed train rows then test rows; a group's
        parts stacked and padded as ``core.model.group`` lays them out."""
        key = (backbone, pooling, set_name)
        if key not in self.memo:
            names = backbone.split("+") if is_fused(backbone) else [backbone]
            blocks = [self._part(n, pooling, set_name) for n in names]
            if len(blocks) == 1:
                self.memo[key] = blocks[0]
            else:
                parts = group_parts(backbone)
                X = np.zeros((len(blocks[0]), sum(p.n_states for p in parts), max(p.width for p in parts)),
                             np.float32)
                for part, block in zip(parts, blocks):
                    X[:, part.rows, :part.width] = block
                self.memo[key] = X
        return self.memo[key]

    def _part(self, name: str, pooling: str, set_name: str) -> np.ndarray:
        key = (name, pooling, set_name)
        if key not in self.memo:
            if name not in self.backbones:
                self.backbones[name] = load_backbone(name, progress=log)
            pooling = pooling if pooling in poolings_of(name) else "mean"
            self.memo[key] = embed_many(self.backbones[name], texts_of(self.datas[set_name]),
                                        prompt=default_prompt(name), poolings=(pooling,),
                                        cache=self.store)[pooling]
        return self.memo[key]


@dataclass(frozen=True)
class Candidate:
    """One way to train, on one backbone (a "+" group is fused LLMEmbed-style).

    mode: the product's feature modes (auto, layer, fusion, stc) or "band": a fusion of
    the hidden states at the depth fractions ``band`` (of each part), combined by
    ``combine`` (mean or concat), with no CV over the choice. ratios: the C grid as
    multiples of C_min (None: the head's own grid). min_auto: in auto mode, below this
    many labels in the smallest class the fixed band is used instead of the CV choice.
    """

    backbone: str
    mode: str = "auto"
    penalty: str = "elasticnet"
    pooling: str = "mean"
    band: tuple = (0.25, 0.5, 0.75, 1.0)
    combine: str = "mean"
    ratios: tuple | None = None
    min_auto: int = 0
    encoder_band: tuple | None = None  # the band of a sentence-encoder part (None: ``band``)
    # the product's fusion inside modes fusion/auto: None keeps core.learn.features'
    # FUSION_DEPTHS / FUSION_COMBINE; the old defaults set the quarter depths and CV ("cv")
    fusion_depths: tuple | None = None
    fusion_combine: str | None = None

    def fit_predict(self, X, y, X_test, seed):
        """Predicted class indices of X_test, and what the head reads (see ``_fit_predict``)."""
        import core.learn.features as features

        saved = features.FUSION_DEPTHS, features.FUSION_COMBINE
        try:
            if self.fusion_depths is not None:
                features.FUSION_DEPTHS = self.fusion_depths
            if self.fusion_combine is not None:
                features.FUSION_COMBINE = None if self.fusion_combine == "cv" else self.fusion_combine
            return self._fit_predict(X, y, X_test, seed)
        finally:
            features.FUSION_DEPTHS, features.FUSION_COMBINE = saved

    def _fit_predict(self, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        """Predicted class indices of X_test, and what the head reads."""
        from core.learn.features import FeatureSpec, select_features
        from core.learn.head import Head, min_c

        parts = group_parts(self.backbone) if is_fused(self.backbone) else None
        views = [(p, X[:, p.rows, :p.width]) for p in parts] if parts else [(None, X)]
        chosen = []
        for part, Xp in views:
            mode = self.mode
            if mode == "auto" and np.bincount(y).min() < self.min_auto:
                mode = "band"
            if mode == "band":
                depth = Xp.shape[1] - 1
                band = self.encoder_band if part and self.encoder_band and is_encoder(part.name) else self.band
                layers = tuple(sorted({max(1, round(depth * q)) for q in band}))
                spec = FeatureSpec("fusion", layers, self.combine if len(layers) > 1 else "concat",
                                   tuple(Xp.shape[1:]))
            else:
                spec, _ = select_features(Xp, y, mode=mode, penalty=self.penalty, random_state=seed,
                                          auto_min_per_class=0)
            chosen.append((part, spec))
        if parts:
            layers = tuple(sorted({p.offset + i for p, s in chosen for i in s.layers}))
            spec = FeatureSpec("multi", layers, "concat", tuple(X.shape[1:]), parts=tuple(chosen))
        else:
            spec = chosen[0][1]
        Z = spec.transform(X)
        Cs = None
        if self.ratios is not None:
            low = min_c(Z, y) / {"l1": 1.0, "elasticnet": 0.5, "l2": 1.0}[self.penalty]
            Cs = [low * r for r in self.ratios]
        head = Head(self.penalty, Cs=Cs, random_state=seed).fit(Z, y)
        pred = head.predict(spec.transform(X_test))
        return pred, {"n_layers_read": len(spec.layers), "n_features": int(Z.shape[1]),
                      "n_selected": int(len(head.selected_features())),
                      "n_weights": int(head.coef_.size), "n_nonzero": int((head.coef_ != 0).sum()),
                      "spec": spec.describe(), "C": float(head.C_)}


SM, MINI, MP = "smollm2-135m", "minilm-l6", "mpnet"
L2_WIDE = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MID = (0.33, 0.5, 0.67)
QUARTERS = (0.25, 0.5, 0.75, 1.0)
CANDIDATES: dict[str, Candidate] = {
    # what the app did before issue 12, and MiniLM under the same head
    "smol auto en (old default)": Candidate(SM, fusion_depths=QUARTERS, fusion_combine="cv"),
    "minilm auto en (old baseline)": Candidate(MINI, fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol auto l2": Candidate(SM, penalty="l2", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol auto l1": Candidate(SM, penalty="l1", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol layer l2": Candidate(SM, "layer", "l2"),
    "smol fusion(cv) l2": Candidate(SM, "fusion", "l2", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol fusion(cv) en": Candidate(SM, "fusion", "elasticnet", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol stc l2": Candidate(SM, "stc", "l2", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol band4 mean l2": Candidate(SM, "band", "l2"),
    "smol band4 concat l2": Candidate(SM, "band", "l2", combine="concat"),
    "smol band4 mean l1": Candidate(SM, "band", "l1"),
    "smol band4 mean en": Candidate(SM, "band", "elasticnet"),
    "smol mid3 mean l2": Candidate(SM, "band", "l2", band=MID),
    "smol mid3 concat l2": Candidate(SM, "band", "l2", band=MID, combine="concat"),
    "smol band4 mean l2 wideC": Candidate(SM, "band", "l2", ratios=L2_WIDE),
    "smol band4 mean l2 last": Candidate(SM, "band", "l2", pooling="last"),
    "minilm layer l2": Candidate(MINI, "layer", "l2"),
    "minilm last l2": Candidate(MINI, "band", "l2", band=(1.0,)),
    "minilm band4 mean l2": Candidate(MINI, "band", "l2"),
    "smol+minilm band4 mean l2": Candidate(f"{SM}+{MINI}", "band", "l2"),
    "smol+minilm band4 concat l2": Candidate(f"{SM}+{MINI}", "band", "l2", combine="concat"),
    "smol+minilm auto en": Candidate(f"{SM}+{MINI}", fusion_depths=QUARTERS, fusion_combine="cv"),
    "mpnet auto en": Candidate(MP, fusion_depths=QUARTERS, fusion_combine="cv"),
    "mpnet last l2": Candidate(MP, "band", "l2", band=(1.0,)),
    "mpnet band4 mean l2": Candidate(MP, "band", "l2"),
    "mpnet band4 mean en": Candidate(MP, "band", "elasticnet"),
    "smol+mpnet band4 mean l2": Candidate(f"{SM}+{MP}", "band", "l2"),
    "smol+mpnet band4 concat l2": Candidate(f"{SM}+{MP}", "band", "l2", combine="concat"),
    "smol+mpnet band4 mean en": Candidate(f"{SM}+{MP}", "band", "elasticnet"),
    "smol+mpnet band4 mean l1": Candidate(f"{SM}+{MP}", "band", "l1"),
    "smol+mpnet auto en": Candidate(f"{SM}+{MP}", fusion_depths=QUARTERS, fusion_combine="cv"),
    "smol+mpnet auto l2": Candidate(f"{SM}+{MP}", penalty="l2", fusion_depths=QUARTERS, fusion_combine="cv"),
    "mpnet mid3 mean l2": Candidate(MP, "band", "l2", band=MID),
    "mpnet layer l2": Candidate(MP, "layer", "l2"),
    "smol+mpnet mid3 mean l2": Candidate(f"{SM}+{MP}", "band", "l2", band=MID),
    "smol mid3+mpnet last l2": Candidate(f"{SM}+{MP}", "band", "l2", band=MID, encoder_band=(1.0,)),
    "smol band4+mpnet last l2": Candidate(f"{SM}+{MP}", "band", "l2", encoder_band=(1.0,)),
    "smol mid3+minilm last l2": Candidate(f"{SM}+{MINI}", "band", "l2", band=MID, encoder_band=(1.0,)),
    "smol mid3+mpnet last en": Candidate(f"{SM}+{MP}", "band", "elasticnet", band=MID, encoder_band=(1.0,)),
    "smol mid3+mpnet last l1": Candidate(f"{SM}+{MP}", "band", "l1", band=MID, encoder_band=(1.0,)),
    "smol mid3 mean l2 last": Candidate(SM, "band", "l2", band=MID, pooling="last"),
    "minilm mid3 mean l2": Candidate(MINI, "band", "l2", band=MID),
    "smol mid5 mean l2": Candidate(SM, "band", "l2", band=(0.3, 0.4, 0.5, 0.6, 0.7)),
    "smol mid3 mean en": Candidate(SM, "band", "elasticnet", band=MID),
    "smol mid3 mean l1": Candidate(SM, "band", "l1", band=MID),
    "smol+minilm mid3 mean l2": Candidate(f"{SM}+{MINI}", "band", "l2", band=MID),
    "smol+mpnet mid3 mean en": Candidate(f"{SM}+{MP}", "band", "elasticnet", band=MID),
    "smol+mpnet mid3 mean l1": Candidate(f"{SM}+{MP}", "band", "l1", band=MID),
    "smol+mpnet mid3 mean l2 last": Candidate(f"{SM}+{MP}", "band", "l2", band=MID, pooling="last"),
    "smol+mpnet layer l2": Candidate(f"{SM}+{MP}", "layer", "l2"),
    "mpnet mid3 mean en": Candidate(MP, "band", "elasticnet", band=MID),
}


def run_candidate(cand: Candidate, feats: Features) -> list[dict]:
    """One run per (set, shots, seed) of the half in ``feats``: accuracy and what was read."""
    from sklearn.metrics import accuracy_score, f1_score

    runs = []
    for set_name, data in feats.datas.items():
        X = feats.get(cand.backbone, cand.pooling, set_name)
        needed = data.needed()
        row_of = {i: r for r, i in enumerate(needed)}
        X_test = X[len(needed):]
        index = {c: k for k, c in enumerate(data.classes)}
        for (k, s), idx in data.draws.items():
            y = np.array([index[data.train_labels[i]] for i in idx])
            t = time.perf_counter()
            pred, extra = cand.fit_predict(X[[row_of[i] for i in idx]], y, X_test, s)
            truth = [index[c] for c in data.test_labels]
            runs.append({"set": set_name, "shots": k, "seed": s,
                         "accuracy": float(accuracy_score(truth, pred)),
                         "macro_f1": float(f1_score(truth, pred, average="macro")),
                         "seconds": time.perf_counter() - t, **extra})
    return runs


def means(runs: list[dict], metric: str = "accuracy") -> dict:
    """{"shots": {set: mean over seeds, "mean": mean over sets}}."""
    out: dict = {}
    for k in sorted({r["shots"] for r in runs}):
        per = {}
        for s in dict.fromkeys(r["set"] for r in runs):
            vals = [r[metric] for r in runs if r["shots"] == k and r["set"] == s]
            per[s] = float(np.mean(vals))
        per["mean"] = float(np.mean(list(per.values())))
        out[str(k)] = per
    return out


def tune(args) -> None:
    """Every chosen candidate on the tuning half; results appended to --out/tune.json."""
    from core.store import Store

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tune.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    datas = half_data("tune", args.max_test)
    with Store.open(args.cache) as store:
        feats = Features(store, datas)
        for name in names:
            if name in done and not args.again:
                continue
            t = time.time()
            try:
                runs = run_candidate(CANDIDATES[name], feats)
            except Exception as err:  # a backbone not installed yet: skip, say so
                log(f"{name}: skipped ({type(err).__name__}: {err})")
                continue
            done[name] = {"candidate": CANDIDATES[name].__dict__, "runs": runs, "mean": means(runs),
                          "seconds": time.time() - t, "date": str(datetime.date.today()),
                          "load": os.getloadavg()[0]}
            path.write_text(json.dumps(done, indent=1, default=list))
            m = done[name]["mean"]
            log(f"{name}: " + "  ".join(f"{k}/class {v['mean']:.3f}" for k, v in m.items())
                + f"  ({time.time() - t:.0f} s)")
    (args.out / "tune.md").write_text(tune_table(done))
    print(tune_table(done))


def tune_table(done: dict) -> str:
    """Markdown: one row per candidate, mean over seeds per set at each shot count, and the
    mean over the tuning sets; sorted by the mean at the largest shot count."""
    if not done:
        return ""
    shots = sorted({int(k) for d in done.values() for k in d["mean"]})
    rows = ["| candidate | " + " | ".join(f"{s} @{k}" for k in shots for s in TUNE + ["**mean**"])
            + " | non-zero weights @32 | s/fit |",
            "|---|" + "---|" * (len(shots) * (len(TUNE) + 1) + 2)]
    order = sorted(done, key=lambda n: -done[n]["mean"][str(shots[-1])]["mean"]
                   if str(shots[-1]) in done[n]["mean"] else 0)
    for name in order:
        d = done[name]
        cells = []
        for k in shots:
            m = d["mean"].get(str(k), {})
            cells += [f"{m[s]:.3f}" if s in m else "–" for s in TUNE] + [
                f"**{m['mean']:.3f}**" if m else "–"]
        at = [r for r in d["runs"] if r["shots"] == shots[-1]]
        nz = f"{np.mean([r['n_nonzero'] for r in at]):.0f} of {np.mean([r['n_weights'] for r in at]):.0f}"
        secs = np.mean([r["seconds"] for r in d["runs"]])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {nz} | {secs:.2f} |")
    return "\n".join(rows)


def report(args) -> None:
    """The reporting half, run once with the chosen defaults: the app's defaults
    (``Settings()``), MiniLM under the same head, TF-IDF + LR, and the old defaults (the
    candidates named in ``--also``), every method on the same draws and test rows."""
    from bench.accuracy import PUBLISHED
    from core.evaluate import head_method, run_method, summarise, tfidf_method
    from core.learn.classifier import Settings
    from core.store import Store

    args.out.mkdir(parents=True, exist_ok=True)
    datas = half_data("report", args.max_test, args.shots, args.seeds)
    app = Settings()
    minilm = Settings(backbone=MINI, prompt=default_prompt(MINI))
    results: dict = {"date": str(datetime.date.today()), "machine": machine(),
                     "command": ".venv/bin/python bench/protocol.py " + " ".join(sys.argv[1:]),
                     "settings": app.to_dict(), "sets": {}}
    t0 = time.time()
    with Store.open(args.cache) as store:
        feats = Features(store, datas)
        loaded = {}

        def bb(name):
            if name not in loaded:
                loaded[name] = load_backbone(name, progress=log)
            return loaded[name]

        for name, data in datas.items():
            out = results["sets"][name] = {"n_test": len(data.test_texts), "methods": {}}
            for key, label, method in (
                    ("default", f"tenshot default ({app.backbone}, {app.mode}, {app.penalty})",
                     lambda: head_method(bb(app.backbone), app, cache=store)),
                    ("minilm", "MiniLM + head (same defaults)", lambda: head_method(bb(MINI), minilm, cache=store)),
                    ("tfidf", "TF-IDF + LR", tfidf_method)):
                t = time.time()
                runs = run_method(data, method())
                out["methods"][key] = {"label": label, "mean": summarise(runs), "seconds": time.time() - t,
                                       "runs": [{k: v for k, v in r.items() if k != "spec"} for r in runs]}
                log(f"{name} {key}: " + "  ".join(f"{k}/class {m['accuracy']:.3f}"
                                                   for k, m in out["methods"][key]["mean"].items()))
            for cand in args.also.split(",") if args.also else []:
                sub = Features(store, {name: data}, feats.memo, feats.backbones)
                runs = run_candidate(CANDIDATES[cand], sub)
                out["methods"][cand] = {"label": cand, "runs": runs, "mean": summarise(runs)}
                log(f"{name} {cand}: " + "  ".join(f"{k}/class {m['accuracy']:.3f}"
                                                   for k, m in out["methods"][cand]["mean"].items()))
            out["published"] = PUBLISHED.get(name, {})
            results["wall_s"] = time.time() - t0
            results["load_end"] = os.getloadavg()[0]
            (args.out / "report.json").write_text(json.dumps(results, indent=1, default=list))
    (args.out / "report.md").write_text(report_table(results))
    print(report_table(results))


def report_table(results: dict) -> str:
    """Markdown: accuracy mean ± std over seeds per (set, method), published rows, and the
    mean over the reporting sets per method."""
    sets = results["sets"]
    shots = sorted({int(k) for r in sets.values() for m in r["methods"].values() for k in m["mean"]})
    rows = ["| set | method | " + " | ".join(f"{k}/class" for k in shots) + " |",
            "|---|---|" + "---|" * len(shots)]
    for name, r in sets.items():
        for m in r["methods"].values():
            rows.append(f"| {name} | {m['label']} | " + " | ".join(
                f"{m['mean'][str(k)]['accuracy']:.3f} ± {m['mean'][str(k)].get('accuracy_std', 0):.3f}"
                if str(k) in m["mean"] else "–" for k in shots) + " |")
        for label, ref in r.get("published", {}).items():
            rows.append(f"| {name} | {label} (full test set) | " + " | ".join(
                f"{ref[k] / 100:.3f}" if k in ref else f"{ref[str(k)] / 100:.3f}" if str(k) in ref else "–"
                for k in shots) + " |")
    keys = list(dict.fromkeys(k for r in sets.values() for k in r["methods"]))
    for key in keys:
        have = [r["methods"][key] for r in sets.values() if key in r["methods"]]
        cells = []
        for k in shots:
            vals = [m["mean"][str(k)]["accuracy"] for m in have if str(k) in m["mean"]]
            cells.append(f"**{np.mean(vals):.3f}**" if len(vals) == len(sets) else "–")
        rows.append(f"| **mean of {len(sets)}** | {have[0]['label']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    emb = sub.add_parser("embed", help="fill the feature cache")
    emb.add_argument("--half", choices=list(HALVES), required=True)
    emb.add_argument("--backbones", default="smollm2-135m,minilm-l6")
    tune = sub.add_parser("tune", help="every candidate on the tuning half")
    tune.add_argument("--candidates", help="comma-separated names (default: all)")
    tune.add_argument("--again", action="store_true", help="rerun candidates already in tune.json")
    rep = sub.add_parser("report", help="the app's defaults on the reporting half, once")
    rep.add_argument("--also", help="comma-separated CANDIDATES to add as rows (e.g. the old defaults)")
    for p in (emb, tune, rep):
        p.add_argument("--max-test", type=int, default=MAX_TEST)
        p.add_argument("--cache", type=Path, default=CACHE)
        p.add_argument("--out", type=Path, default=OUT)
        p.add_argument("--shots", type=lambda v: [int(k) for k in v.split(",")],
                       help="shots per class, comma-separated (default: the half's)")
        p.add_argument("--seeds", type=int, help="default: the half's")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = _args(argv)
    log(f"{args.command}: {machine()}; load {os.getloadavg()[0]:.2f}")
    if args.command == "embed":
        embed_half(args)
    elif args.command == "tune":
        tune(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
