"""``tenshot predict``: a file's texts through a project's model or a bundle, written as CSV
or JSONL, with an optional needs_human column from --threshold or --target-accuracy.

``core.cli`` parses the command line and hands over here. Inputs and the output path are
checked before any text is embedded; a multi-label model hands over to
``core.cli_multilabel``; ``--engine ray`` scores on Ray Data (``core.scoring_ray``).
"""

from __future__ import annotations

from pathlib import Path

from core.cli_common import (input_status, load_backbone_for_cli, load_classifier_for_cli,
                             progress_bar, read_input, say)
from core.cli_files import check_out, write_atomically
from core.errors import InputError, TenshotError

__all__ = ["cmd_predict"]


def cmd_predict(args, ws) -> int:
    from core.export import ExportRow, to_csv, to_jsonl
    from core.project import predict_texts

    out = check_out(args.out, {"--data": args.data, "--bundle": args.bundle, "--db": args.db})
    _check_coverage_options(args)
    rows = _predict_input(args, ws)
    with ws.open() as store:
        clf = load_classifier_for_cli(args, store)
        if getattr(clf, "multi_label", False):
            return _predict_sets(args, ws, store, clf, rows, out)
        _check_target(args, clf)  # an accuracy no threshold reaches is refused before any work
        if args.engine == "ray":
            probs = _predict_on_ray(args, clf, rows)
            predicted = [clf.classes[i] for i in probs.argmax(1)]
        else:
            backbone = load_backbone_for_cli(clf.settings.backbone)
            predicted, probs = predict_texts(backbone, clf, rows.texts, cache=store,
                                             progress=progress_bar("predicting"))
    given = rows.labels or [None] * len(rows.texts)
    table = [ExportRow(line, text, label, pred, float(p.max()), dict(zip(clf.classes, map(float, p))))
             for line, text, label, pred, p in zip(rows.lines, rows.texts, given, predicted, probs)]
    threshold = _coverage(args, clf, [r.confidence for r in table])
    write = to_jsonl if out.suffix.lower() in (".jsonl", ".ndjson") else to_csv
    write_atomically(out, write(table, clf.classes, id_column="line", threshold=threshold))
    say(f"wrote {len(table)} predictions to {args.out}")
    return input_status(rows)


def _predict_sets(args, ws, store, clf, rows, out) -> int:
    from core.cli_multilabel import predict_multi_label

    if args.engine == "ray":
        probs = _predict_on_ray(args, clf, rows)
    else:
        probs = clf.predict_proba(load_backbone_for_cli(clf.settings.backbone), rows.texts,
                                  cache=store, progress=progress_bar("predicting"))
    predict_multi_label(args, clf, rows, probs, out)
    return input_status(rows)


def _check_coverage_options(args) -> None:
    from core.coverage_view import check_fraction

    if args.threshold is not None:
        check_fraction(args.threshold, "--threshold")
    if args.target_accuracy is not None:
        check_fraction(args.target_accuracy, "--target-accuracy")


def _check_target(args, clf) -> None:
    from core.coverage_view import unreachable
    from core.learn.coverage import threshold_for

    cal = clf.calibration
    if args.target_accuracy is not None and (cal is None or threshold_for(cal, args.target_accuracy) is None):
        raise InputError(f"{unreachable(cal, args.target_accuracy)} Label more sentences, lower "
                         "--target-accuracy, or give --threshold instead. Nothing was written.")


def _coverage(args, clf, confidence: list[float]) -> float | None:
    """The threshold for the needs_human column (None: no column); prints what it keeps."""
    from core.coverage_view import choose, describe

    if args.threshold is None and args.target_accuracy is None:
        return None
    choice = choose(clf.calibration, confidence, threshold=args.threshold, target=args.target_accuracy)
    print(describe(choice, clf.calibration))
    return choice.threshold


def _predict_input(args, ws):
    """The rows to predict. The single-process engine reads files up to the upload limit;
    Ray reads any size, and Parquet too (core.scoring_ray)."""
    from dataclasses import replace

    from core.io import ImportResult

    path = Path(args.data)
    if args.engine == "ray":
        from core.scoring_ray import check_input_size

        check_input_size(path)
    if args.engine == "ray" and path.suffix.lower() == ".parquet":
        from core.scoring_ray import read_parquet_texts

        texts = read_parquet_texts(path, text_column=args.text_column)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if not keep:
            raise InputError(f"{path.name} has no rows with a text; there is nothing to predict.")
        for i in sorted(set(range(len(texts))) - set(keep)):
            say(f"skipped row {i + 1}: empty text")
        return ImportResult([texts[i] for i in keep], None, lines=[i + 1 for i in keep],
                            skipped=[(i + 1, "empty text") for i, t in enumerate(texts) if not t.strip()])
    size = path.stat().st_size if path.is_file() else 0
    if args.engine == "ray":
        return read_input(args, ws, "predict", limits=replace(
            ws.limits, upload_bytes=max(size, ws.limits.upload_bytes)))
    if size > ws.limits.upload_bytes:
        raise InputError(f"{path.name} is {size / 2**20:,.0f} MB; the single-process engine reads "
                         f"files up to {ws.limits.upload_bytes / 2**20:,.0f} MB. Score it with "
                         "--engine ray (pip install \"tenshot[ray]\"), or split it into smaller files.")
    return read_input(args, ws, "predict")


def _predict_on_ray(args, clf, rows):
    """Probabilities (n, n_classes) from Ray Data, in the rows' order."""
    import numpy as np

    from core.learn.bundle import bundle_bytes
    from core.scoring_ray import score_with_ray

    lines, probs = score_with_ray(bundle_bytes(clf), range(len(rows.texts)), rows.texts,
                                  address=args.address, batch_size=args.batch_size,
                                  actors=args.actors, progress=progress_bar("predicting on Ray"))
    if not np.array_equal(lines, np.arange(len(rows.texts))):
        raise TenshotError("Ray returned a different set of texts than it was given; "
                           "nothing was written. Run again, or leave out --engine ray.")
    return probs
