"""``tenshot train`` / ``predict`` / ``eval`` for multi-label data (issue 16).

``core.cli`` (and ``core.cli_predict``) hand over here when the data is multi-label:
``--multi-label`` given, the project is multi-label, or the file's labels column holds
sets (a ``;`` in a CSV cell, a "none of these" marker, a JSONL list). The same rules as
the single-label commands hold: every input is checked before anything is written (a
refused file leaves no half-made project), and the exit status is 3 when some rows or
labels were left out. Helpers shared with those commands live in ``core.cli_common``.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.cli_common import (EXIT_OK, EXIT_SKIPPED, load_backbone_for_cli, model_options_given,
                             read_input, say)
from core.cli_files import check_out, write_atomically
from core.errors import InputError, TenshotError

__all__ = ["is_multi_label_train", "predict_multi_label", "train_multi_label", "eval_multi_label",
           "wants_multi_label_eval"]


def is_multi_label_train(args, ws) -> bool:
    """Whether ``tenshot train`` should take the multi-label path (module docstring)."""
    from core.errors import UnknownProject
    from core.io import read_path
    from core.multilabel_io import looks_multi_label

    if not ws.new:
        with ws.open() as store:
            try:
                project = store.project(args.project)
            except UnknownProject:
                project = None
        if project is not None:
            if args.multi_label and not project.multi_label:
                raise InputError(f"Project '{project.name}' is single-label (one class per "
                                 "sentence); leave out --multi-label, or train a new project.")
            return project.multi_label
    if args.multi_label:
        return True
    # a quiet look: the command that follows reads the file again and says what it skips
    rows = read_path(args.data, text_column=args.text_column, label_column=args.label_column,
                     limits=ws.limits, label_lists=True)
    return looks_multi_label(rows.labels)


def train_multi_label(args, ws, settings_for) -> int:
    """Import a multi-label file into a (new or existing) multi-label project and train.

    settings_for(project) -> Settings: the single-label command's choice of settings.
    """
    from core.errors import UnknownProject
    from core.learn.multilabel import label_matrix, missing_per_class, not_enough_multilabel
    from core.multilabel_io import check_classes, label_sets_of
    from core.project import retrain
    from core.store.classes import clean_class_names

    rows = read_input(args, ws, "import", label_lists=True)
    name = Path(args.data).name
    with ws.open() as store:
        try:
            project = store.project(args.project)
            classes = store.classes(project.id)
        except UnknownProject:
            project, classes = None, args.classes.split(",") if args.classes else []
        parsed = label_sets_of(rows, classes)
        new = check_classes(parsed, classes, add_classes=args.add_classes or not classes, name=name)
        classes = clean_class_names([*classes, *new]) if project is None else classes
        sets = {t: s for t, s in zip(parsed.texts, parsed.sets) if s is not None}
        if project is not None:
            sets = {**{r.text: r.labels for r in store.label_sets(project.id)}, **sets}
        every = classes + (new if project is not None else [])
        missing = missing_per_class(label_matrix(list(sets.values()), every), every)
        if missing:  # refused now, so the project never holds classes it cannot train
            raise InputError(f"{not_enough_multilabel(missing)} Nothing was added.")
        settings = settings_for(project)
        backbone = load_backbone_for_cli(settings.backbone)  # a bad --backbone is refused before any write
        project = _import(store, args, project, classes, settings, parsed, new)
        for note in parsed.notes:
            say(f"note: {note}")
        outcome = retrain(store, project, backbone)
    m = outcome.metrics
    counts = ", ".join(f"{c}={n}" for c, n in outcome.counts.items())
    print(f"model v{outcome.version}: CV macro-F1 {m['cv_macro_f1']:.3f}, micro-F1 {m['cv_micro_f1']:.3f}, "
          f"subset accuracy {m['cv_subset_accuracy']:.3f} on {m['n_labels']} labelled texts "
          f"({counts}, none of these={m['n_none']}); {outcome.n_predicted} unlabelled texts "
          f"predicted in {outcome.seconds:.1f} s")
    return EXIT_SKIPPED if rows.skipped or parsed.dropped else EXIT_OK


def _import(store, args, project, classes, settings, parsed, new):
    from core.multilabel_io import import_label_sets

    created = project is None
    if created:
        project = store.create_project(args.project, classes, settings=settings.to_dict(),
                                       task_type="multi_label")
    try:
        added = import_label_sets(store, project.id, parsed, source=Path(args.data).name,
                                  add_classes=True)
    except TenshotError:
        if created:
            store.delete_project(project.id)
        raise
    if not created and model_options_given(args):
        project = store.update_settings(project.id, settings.to_dict())
    say(f"{added.added} new texts, {added.duplicates} duplicates, {added.empty} empty; "
        f"{parsed.summary()}")
    return project


def predict_multi_label(args, clf, rows, probs, out) -> int:
    """Write the predicted sets of ``rows`` (read by the single-label command) to ``out``."""
    from core.learn.multilabel import sets_from_proba
    from core.multilabel_io import SetRow, split_cell, sets_to_csv, sets_to_jsonl

    if args.threshold is not None or args.target_accuracy is not None:
        raise InputError("--threshold and --target-accuracy apply to single-label models; a "
                         "multi-label model predicts each class at its own threshold. Nothing "
                         "was written.")
    predicted = sets_from_proba(probs, clf.classes, clf.thresholds)
    given = [None if lab is None else tuple(split_cell(lab, clf.classes)[0])
             for lab in rows.labels or [None] * len(rows.texts)]
    table = [SetRow(line, text, label, pred, dict(zip(clf.classes, map(float, p))))
             for line, text, label, pred, p in zip(rows.lines, rows.texts, given, predicted, probs)]
    write = sets_to_jsonl if out.suffix.lower() in (".jsonl", ".ndjson") else sets_to_csv
    write_atomically(out, write(table, clf.classes, id_column="line"))
    say(f"wrote {len(table)} predicted label sets to {args.out}")
    return EXIT_OK


def wants_multi_label_eval(args) -> bool:
    """``--multi-label``, or a train.csv whose labels column holds sets."""
    from core.multilabel_eval import looks_multi_label_dir

    return bool(args.multi_label) or looks_multi_label_dir(args.data)


def eval_multi_label(args, ws, settings) -> int:
    """Few-shot multi-label evaluation (k texts per class) written to ``--json``."""
    from core.multilabel_eval import evaluate_multilabel

    out = check_out(args.json, {"--db": args.db, "--data": args.data}, option="--json")
    shots = [int(s) for s in args.shots.split(",")]
    with ws.open() as store:
        backbone = load_backbone_for_cli(settings.backbone)
        report = evaluate_multilabel(args.data, backbone, settings, shots=shots, seeds=args.seeds,
                                     max_test=args.max_test, cache=store, baselines=args.baselines)
    write_atomically(out, json.dumps(report, indent=1).encode())
    for method, by_k in report["mean"].items():
        for k, m in by_k.items():
            print(f"{report['dataset']}\t{method}\t{k} per class\tmicro-F1 {m['micro_f1']:.3f}"
                  f"\tmacro-F1 {m['macro_f1']:.3f}\tsubset accuracy {m['subset_accuracy']:.3f}")
    return EXIT_OK
