"""The ``tenshot`` command: train, predict, evaluate and export from a shell.

Every command works on a workspace file (``--db``, default ``tenshot.db`` or
``$TENSHOT_DB``). Errors print one plain line and exit with status 2; long work
shows a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from pathlib import Path

from core.errors import TenshotError

__all__ = ["main"]


def _bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="text", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty() and not os.environ.get("TENSHOT_PROGRESS"))

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
    return update


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _settings(args, base=None):
    from core.learn.classifier import Settings, default_prompt

    base = base or Settings()
    backbone = args.backbone or base.backbone
    prompt = args.prompt if args.prompt is not None else (
        base.prompt if args.backbone is None else default_prompt(backbone))
    return Settings(backbone=backbone, prompt=prompt or None, pooling=args.pooling or base.pooling,
                    mode=args.mode or base.mode, penalty=args.penalty or base.penalty,
                    max_length=args.max_length or base.max_length).check()


def _backbone(name: str):
    from core.model.loading import load_backbone

    return load_backbone(name, progress=_say)


def cmd_projects(args, store) -> int:
    for p in store.projects():
        counts = store.label_counts(p.id)
        print(f"{p.name}\t{sum(counts.values())} labels\t" + ", ".join(f"{c}={n}" for c, n in counts.items()))
    return 0


def cmd_train(args, store) -> int:
    from core.errors import UnknownProject
    from core.io import read_path
    from core.project import retrain

    rows = read_path(args.data, text_column=args.text_column, label_column=args.label_column,
                     limits=store.limits)
    for line, why in rows.skipped:
        _say(f"skipped line {line}: {why}")
    seen = list(dict.fromkeys(lab for lab in rows.labels or [] if lab))
    new_classes = []  # an existing project gains the file's new label names as classes
    try:
        project = store.project(args.project)
        new_classes = seen
    except UnknownProject:
        classes = args.classes.split(",") if args.classes else seen
        project = store.create_project(args.project, classes, settings=_settings(args).to_dict())
    if any(getattr(args, k) for k in ("backbone", "prompt", "mode", "penalty", "pooling", "max_length")):
        from core.learn.classifier import Settings

        project = store.update_settings(project.id, _settings(args, Settings.from_dict(project.settings)).to_dict())
    # together with the texts, so a refused file adds neither
    added = store.add_texts(project.id, rows.texts, source=Path(args.data).name, labels=rows.labels,
                            new_classes=new_classes)
    _say(f"{added.added} new texts, {added.duplicates} duplicates, {added.empty} empty")
    outcome = retrain(store, project, _backbone(project.settings.get("backbone", "smollm2-135m")),
                      progress=_bar("embedding"))
    m = outcome.metrics
    print(f"model v{outcome.version}: CV accuracy {m['cv_accuracy']:.3f}, macro-F1 {m['cv_macro_f1']:.3f} "
          f"on {m['n_labels']} labels ({', '.join(f'{c}={n}' for c, n in outcome.counts.items())}); "
          f"{outcome.n_predicted} unlabelled texts predicted in {outcome.seconds:.1f} s")
    return 0


def _classifier(args, store):
    from core.learn.bundle import load_bundle
    from core.project import load_classifier

    if args.bundle:
        return load_bundle(args.bundle)
    if not args.project:
        raise TenshotError("Give --project NAME (a project in the workspace) or --bundle FILE.")
    project = store.project(args.project)
    model = store.latest_model(project.id)
    if model is None:
        raise TenshotError(f"Project '{project.name}' has no trained model yet; run `tenshot train` first.")
    return load_classifier(model)


def cmd_predict(args, store) -> int:
    from core.export import neutralise
    from core.io import read_path
    from core.project import predict_texts

    clf = _classifier(args, store)
    rows = read_path(args.data, text_column=args.text_column, limits=store.limits)
    labels, probs = predict_texts(_backbone(clf.settings.backbone), clf, rows.texts,
                                  cache=store, progress=_bar("predicting"))
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "prediction", "confidence"] + [f"p_{c}" for c in clf.classes])
        for text, lab, p in zip(rows.texts, labels, probs):
            w.writerow([neutralise(text), neutralise(lab), f"{p.max():.4f}"] + [f"{v:.4f}" for v in p])
    _say(f"wrote {len(labels)} predictions to {args.out}")
    return 0


def cmd_export(args, store) -> int:
    from core.learn.bundle import save_bundle

    save_bundle(_classifier(args, store), args.out)
    _say(f"wrote model bundle {args.out}")
    return 0


def cmd_eval(args, store) -> int:
    from core.evaluate import evaluate

    settings = _settings(args)
    shots = [int(s) for s in args.shots.split(",")]
    bars = {}

    def progress(stage, done, total):
        bars.setdefault(stage, _bar(stage))(done, total)

    report = evaluate(args.data, _backbone(settings.backbone), settings, shots=shots,
                      seeds=args.seeds, max_test=args.max_test, cache=store,
                      baselines=args.baselines, zero_shot=args.zero_shot,
                      zero_shot_prompt=args.zero_shot_prompt, progress=progress)
    Path(args.json).write_text(json.dumps(report, indent=1))
    methods = [("tenshot", report["mean"])] + [(name, b["mean"]) for name, b in report.get("baselines", {}).items()]
    for name, mean in methods:
        for k, m in mean.items():
            print(f"{report['dataset']}\t{name}\t{k} shots\taccuracy {m['accuracy']:.3f} ± {m['accuracy_std']:.3f}"
                  f"\tmacro-F1 {m['macro_f1']:.3f} ± {m['macro_f1_std']:.3f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tenshot", description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("TENSHOT_DB", "tenshot.db"), help="workspace file")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def model_opts(sp):
        sp.add_argument("--backbone", help="registry name, model folder, .gguf file or hub id")
        sp.add_argument("--prompt", help="task template containing {text}; '' for none")
        sp.add_argument("--mode", choices=["auto", "layer", "fusion", "stc"])
        sp.add_argument("--penalty", choices=["l1", "elasticnet", "l2"])
        sp.add_argument("--pooling", choices=["mean", "last", "max"])
        sp.add_argument("--max-length", type=int, metavar="TOKENS",
                        help="longest text in tokens, prompt included (default 256); longer ones lose their end")

    sub.add_parser("projects", help="list projects")
    t = sub.add_parser("train", help="add a CSV of text,label rows and train")
    t.add_argument("--project", required=True)
    t.add_argument("--data", required=True, help="CSV/TSV/JSONL/TXT; empty label = unlabelled")
    t.add_argument("--classes", help="comma-separated class names for a new project")
    t.add_argument("--text-column")
    t.add_argument("--label-column")
    model_opts(t)
    for name, helptext in (("predict", "predict a file's texts"), ("export", "write a model bundle")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--project")
        sp.add_argument("--bundle", help="a bundle written by `tenshot export`") if name == "predict" else None
        if name == "predict":
            sp.add_argument("--data", required=True)
            sp.add_argument("--text-column")
        sp.add_argument("--out", required=True)
    e = sub.add_parser("eval", help="few-shot evaluation on DIR/train.csv and DIR/test.csv")
    e.add_argument("--data", required=True)
    e.add_argument("--shots", default="8,32")
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--max-test", type=int)
    e.add_argument("--baselines", action="store_true", help="also run TF-IDF + LR on the same draws")
    e.add_argument("--zero-shot", action="store_true",
                   help="also ask the backbone LLM directly (no training) on the same test rows")
    e.add_argument("--zero-shot-prompt", help="zero-shot instruction holding {text} and {classes}")
    e.add_argument("--json", required=True)
    model_opts(e)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        args.bundle = None
    from core.limits import Limits
    from core.store import Store

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with Store.open(args.db, limits=Limits.from_env()) as store:
                return globals()[f"cmd_{args.command}"](args, store)
    except TenshotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # last resort: a plain line, not a traceback
        if args.debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
