"""The ``tenshot`` command: train, predict, evaluate and export from a shell.

Every command works on a workspace file (``--db``, default ``tenshot.db`` or
``$TENSHOT_DB``). Inputs, the workspace path and output paths are checked before
anything is computed or written; output files are replaced atomically; long work
shows a progress bar on stderr. Exit status: 0 done; 2 refused, with one plain
``error:`` line and nothing written; 3 done, but some input rows (or their labels)
were skipped, each named by its line number on stderr; 1 an unexpected failure;
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

from core.cli_common import (EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_SKIPPED, input_status,
                             load_backbone_for_cli, load_classifier_for_cli, model_options_given,
                             progress_bar, read_input, say)
from core.cli_files import Workspace, check_out, quoted, write_atomically
from core.cli_predict import cmd_predict
from core.errors import InputError, TenshotError

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_REFUSED", "EXIT_SKIPPED"]

_LISTED_LABELS = 8


def _settings(args, base=None):
    from core.learn.classifier import Settings, default_prompt

    base = base or Settings()
    backbone = args.backbone or base.backbone
    prompt = args.prompt if args.prompt is not None else (
        base.prompt if args.backbone is None else default_prompt(backbone))
    return Settings(backbone=backbone, prompt=prompt or None, pooling=args.pooling or base.pooling,
                    mode=args.mode or base.mode, penalty=args.penalty or base.penalty,
                    max_length=args.max_length or base.max_length).check()


def cmd_projects(args, ws) -> int:
    with ws.open() as store:
        for p in store.projects():
            counts = store.label_counts(p.id)
            print(f"{p.name}\t{sum(counts.values())} labels\t" + ", ".join(f"{c}={n}" for c, n in counts.items()))
    return EXIT_OK


def cmd_train(args, ws) -> int:
    from core.cli_multilabel import is_multi_label_train, train_multi_label
    from core.project import retrain

    if is_multi_label_train(args, ws):
        return train_multi_label(args, ws, lambda project: _train_settings(args, project))
    rows = read_input(args, ws, "import")
    with ws.open() as store:
        project, classes = _target(store, args, rows)
        settings = _train_settings(args, project)
        new_classes = _check_labels(store, project, classes, rows, args)
        backbone = load_backbone_for_cli(settings.backbone)  # a bad --backbone is refused before any write
        project = _import(store, args, project, classes + new_classes, settings, rows, new_classes)
        outcome = retrain(store, project, backbone, progress=progress_bar("embedding"))
    m = outcome.metrics
    print(f"model v{outcome.version}: CV accuracy {m['cv_accuracy']:.3f}, macro-F1 {m['cv_macro_f1']:.3f} "
          f"on {m['n_labels']} labels ({', '.join(f'{c}={n}' for c, n in outcome.counts.items())}); "
          f"{outcome.n_predicted} unlabelled texts predicted in {outcome.seconds:.1f} s")
    return input_status(rows)


def _target(store, args, rows) -> tuple[object | None, list[str]]:
    """(the existing project or None for a new one, its classes); writes nothing."""
    from core.errors import UnknownProject
    from core.store.classes import clean_class_names

    try:
        project = store.project(args.project)
    except UnknownProject:
        seen = list(dict.fromkeys(lab for lab in rows.labels or [] if lab))
        return None, clean_class_names(args.classes.split(",") if args.classes else seen)
    return project, store.classes(project.id)


def _train_settings(args, project):
    from core.learn.classifier import Settings

    if project is None:  # a new project: the backbone for this machine, as in the app
        from core.project import new_project_settings

        return _settings(args, Settings.from_dict(new_project_settings()))
    base = Settings.from_dict(project.settings)
    return _settings(args, base) if model_options_given(args) else base


def _check_labels(store, project, classes: list[str], rows, args) -> list[str]:
    """The file's labels that are not classes yet, refused unless --add-classes; and, with them,
    every class must end up with enough labels to train. Returns the classes to add."""
    from core.hashing import text_hash
    from core.learn.head import labels_missing, not_enough_labels

    found = Counter(lab for lab in rows.labels or [] if lab is not None)
    unknown = {lab: n for lab, n in found.items() if lab not in classes}
    if unknown and not args.add_classes:
        raise _unknown_labels(unknown, classes, args, project)
    after = {text_hash(r.text): r.label for r in store.labelled(project.id)} if project else {}
    after.update((text_hash(t), lab) for t, lab in zip(rows.texts, rows.labels or []) if lab is not None)
    counts = Counter(after.values())
    missing = labels_missing({c: counts[c] for c in [*classes, *unknown]})
    if missing:  # refused now, so the project never holds classes it cannot train
        raise InputError(f"{not_enough_labels(missing)} Nothing was added.")
    return list(unknown)


def _unknown_labels(unknown: dict[str, int], classes: list[str], args, project) -> InputError:
    parts = []
    for label in list(unknown)[:_LISTED_LABELS]:
        close = _closest(label, classes)
        parts.append(quoted(label) + (f" (did you mean {quoted(close)}?)" if close else ""))
    more = f" and {len(unknown) - _LISTED_LABELS:,} more" if len(unknown) > _LISTED_LABELS else ""
    owner = f"project {quoted(project.name)}" if project else "--classes"
    return InputError(
        f"{Path(args.data).name} has labels that are not classes of {owner} "
        f"({', '.join(map(quoted, classes))}): {', '.join(parts)}{more}. Fix them in the file, "
        "or run again with --add-classes to add them as new classes (--label-column picks "
        "another column). Nothing was added.")


def _closest(label: str, classes: list[str]) -> str | None:
    """The class a label most likely meant: same letters in another case, else a near spelling.

    Case is never folded silently: 'SAD' is refused with a suggestion of 'sad'.
    """
    folded = {c.casefold(): c for c in classes}
    if label.casefold() in folded:
        return folded[label.casefold()]
    match = difflib.get_close_matches(label.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def _import(store, args, project, classes, settings, rows, new_classes):
    """Create the project if needed and add the file's texts and labels; returns the project."""
    created = project is None
    if created:
        project = store.create_project(args.project, classes, settings=settings.to_dict())
    try:
        added = store.add_texts(project.id, rows.texts, source=Path(args.data).name,
                                labels=rows.labels, new_classes=new_classes)
    except TenshotError:
        if created:  # a refused file leaves no half-made project behind
            store.delete_project(project.id)
        raise
    if not created and model_options_given(args):
        project = store.update_settings(project.id, settings.to_dict())
    say(f"{added.added} new texts, {added.duplicates} duplicates, {added.empty} empty")
    return project


def cmd_export(args, ws) -> int:
    from core.learn.bundle import bundle_bytes

    out = check_out(args.out, {"--db": args.db})
    with ws.open() as store:
        write_atomically(out, bundle_bytes(load_classifier_for_cli(args, store)))
    say(f"wrote model bundle {args.out}")
    return EXIT_OK


def cmd_eval(args, ws) -> int:
    from core.cli_multilabel import eval_multi_label, wants_multi_label_eval
    from core.evaluate import evaluate

    out = check_out(args.json, {"--db": args.db, "--data": args.data}, option="--json")
    settings = _settings(args)
    if wants_multi_label_eval(args):
        return eval_multi_label(args, ws, settings)
    shots = [int(s) for s in args.shots.split(",")]
    bars = {}

    def progress(stage, done, total):
        bars.setdefault(stage, progress_bar(stage))(done, total)

    with ws.open() as store:
        report = evaluate(args.data, load_backbone_for_cli(settings.backbone), settings, shots=shots,
                          seeds=args.seeds, max_test=args.max_test, cache=store,
                          baselines=args.baselines, zero_shot=args.zero_shot,
                          zero_shot_prompt=args.zero_shot_prompt, progress=progress)
    write_atomically(out, json.dumps(report, indent=1).encode())
    methods = [("tenshot", report["mean"])] + [(name, b["mean"]) for name, b in report.get("baselines", {}).items()]
    for name, mean in methods:
        for k, m in mean.items():
            print(f"{report['dataset']}\t{name}\t{k} shots\taccuracy {m['accuracy']:.3f} ± {m['accuracy_std']:.3f}"
                  f"\tmacro-F1 {m['macro_f1']:.3f} ± {m['macro_f1_std']:.3f}")
    return EXIT_OK


def _workspace(args) -> Workspace:
    from core.limits import Limits

    reads = args.command in ("projects", "export") or (args.command == "predict" and not args.bundle)
    return Workspace(args.db, Limits.from_env(), must_exist=reads, project=getattr(args, "project", None))


def _show_warning(message, category, *_args, **_kwargs) -> None:
    """Our own warnings (texts cut to --max-length) as a plain note; others are not shown."""
    from core.model.embed import TruncationWarning

    if issubclass(category, TruncationWarning):
        say(f"note: {message} Only the beginning of each was read; --max-length sets how "
            "many tokens are read.")


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
    t.add_argument("--add-classes", action="store_true",
                   help="let labels that are not classes of the project become new classes")
    t.add_argument("--multi-label", action="store_true",
                   help="zero, one or many classes per text: ';'-separated in a CSV cell ('none of "
                        "these' for none), a list in JSONL; detected from the file when left out")
    model_opts(t)
    for name, helptext in (("predict", "predict a file's texts"), ("export", "write a model bundle")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--project")
        sp.add_argument("--bundle", help="a bundle written by `tenshot export`") if name == "predict" else None
        if name == "predict":
            sp.add_argument("--data", required=True)
            sp.add_argument("--text-column")
            sp.add_argument("--label-column", help="labels to copy into the output's label column")
            keep = sp.add_mutually_exclusive_group()
            keep.add_argument("--threshold", type=float, metavar="SHARE",
                              help="confidence (0-1) below which a prediction is marked needs_human; "
                                   "prints the estimated accuracy above it")
            keep.add_argument("--target-accuracy", type=float, metavar="SHARE",
                              help="accuracy (0-1) to keep: the lowest threshold whose estimate's "
                                   "95%% lower bound reaches it")


            sp.add_argument("--engine", choices=["local", "ray"], default="local",
                            help="ray: score on Ray Data (pip install \"tenshot[ray]\"); reads Parquet too")
            sp.add_argument("--address", help="with --engine ray: join this Ray cluster (default: local)")
            sp.add_argument("--batch-size", type=int, default=64, help="with --engine ray: texts per batch")
            sp.add_argument("--actors", type=int, help="with --engine ray: CPU actors (default one per "
                            "core, as many as the memory holds; one per GPU when the cluster has GPUs)")
        sp.add_argument("--out", required=True,
                        help="a .csv (or .jsonl) file; replaced atomically, never an input file")
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
    e.add_argument("--multi-label", action="store_true",
                   help="DIR's files have a labels column of ';'-separated names (k texts drawn per "
                        "class); detected from train.csv when left out")
    model_opts(e)
    return p


_COMMANDS = {"projects": cmd_projects, "train": cmd_train, "predict": cmd_predict,
             "export": cmd_export, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        args.bundle = None
    ws = None
    try:
        with warnings.catch_warnings():
            if not args.debug:  # library warnings are not for a shell user; ours become notes
                warnings.simplefilter("ignore")
                warnings.filterwarnings("default", category=UserWarning, module="core")
                warnings.showwarning = _show_warning
            ws = _workspace(args)
            code = _COMMANDS[args.command](args, ws)
    except TenshotError as err:
        if ws is not None:
            ws.discard()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # last resort: a plain line, not a traceback
        if args.debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED
    if ws.new:
        say(f"created a new workspace at {args.db}")
    return code


if __name__ == "__main__":
    sys.exit(main())
