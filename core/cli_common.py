"""What the ``tenshot`` command's modules share: exit codes, stderr messages, progress bars,
the backbone and classifier they load, and the --data file they read.

``core.cli`` (the parser and the train / export / eval commands), ``core.cli_predict`` and
``core.cli_multilabel`` all use these, so each lives here once. Messages for the shell user
go to stderr, so that stdout holds only results.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.errors import InputError, TenshotError

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_REFUSED", "EXIT_SKIPPED", "MODEL_OPTIONS", "say",
           "progress_bar", "load_backbone_for_cli", "load_classifier_for_cli", "model_options_given",
           "read_input", "input_status"]

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_SKIPPED = 0, 1, 2, 3
MODEL_OPTIONS = ("backbone", "prompt", "mode", "penalty", "pooling", "max_length")


def say(msg: str) -> None:
    """One line for the shell user, on stderr."""
    print(msg, file=sys.stderr)


def progress_bar(desc: str):
    """update(done, total) drawing a tqdm bar on stderr: on a terminal, or with $TENSHOT_PROGRESS."""
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


def load_backbone_for_cli(name: str):
    """The backbone ``name``, its loading progress said on stderr."""
    from core.model.loading import load_backbone

    return load_backbone(name, progress=say)


def load_classifier_for_cli(args, store):
    """The model of --bundle FILE, else the latest model of --project NAME in ``store``."""
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


def model_options_given(args) -> bool:
    """Whether any model option (MODEL_OPTIONS) was given on the command line."""
    # `is not None`: --prompt '' (no prompt) is an option given, not one left out
    return any(getattr(args, k) is not None for k in MODEL_OPTIONS)


def read_input(args, ws, verb: str, *, limits=None, label_lists: bool = False):
    """The --data file's rows; its skipped lines and warnings are said on stderr, and a file
    without a single text is refused. limits: instead of the workspace's; label_lists: keep
    label cells raw (multi-label sets), as ``core.io.read_path`` does."""
    from core.io import read_path

    rows = read_path(args.data, text_column=args.text_column, label_column=args.label_column,
                     limits=limits or ws.limits, label_lists=label_lists)
    for line, why in rows.skipped:
        say(f"skipped line {line}: {why}")
    for note in rows.warnings:
        say(f"note: {note}")
    if not rows.texts:
        why = "every row was skipped (see above)" if rows.skipped else "it holds only a header"
        raise InputError(f"{Path(args.data).name} has no rows with a text: {why}. There is "
                         f"nothing to {verb}; nothing was changed.")
    return rows


def input_status(rows) -> int:
    """EXIT_SKIPPED when some rows (or labels) of the input were left out, else EXIT_OK."""
    if rows.skipped:
        total = len(rows.texts) + len(rows.skipped)
        say(f"{len(rows.skipped):,} of {total:,} rows were skipped (their lines are listed "
            f"above); the other {len(rows.texts):,} were used.")
    return EXIT_SKIPPED if rows.skipped or rows.dropped_labels else EXIT_OK
