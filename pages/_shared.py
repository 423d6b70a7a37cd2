"""Streamlit glue shared by every page: the store, the cached backbone, the current
project, retraining, background jobs, plain-language errors and safe text.

Pages import from here; core never imports streamlit. Caching lives here too.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from typing import Sequence

import streamlit as st

import core.jobs as jobs
from core.model.loading import load_backbone
from core.errors import NotEnoughLabels, TenshotError
from core.model.cache import MemoryCache
from core.learn.pool import PoolMatrix
from core.project import TrainOutcome, new_project_settings, retrain, settings_of
from core.limits import Limits
from core.store import Store

__all__ = ["db_path", "store", "labeller", "backbone", "feature_cache", "current_project", "require_project",
           "page_header", "select_project", "show_error", "escape_markdown", "new_project_settings",
           "train", "start_embedding", "flash", "show_flashes", "percent", "export_link",
           "changes_header", "skip_text", "undo_own_label", "eta_text", "with_eta"]


def db_path() -> str:
    """The workspace file: $TENSHOT_DB, else tenshot.db in the working folder."""
    return os.environ.get("TENSHOT_DB", "tenshot.db")


def store() -> Store:
    """This rerun's Store. SQLite connections are bound to the thread that opened them,
    and Streamlit may run each rerun on a new thread, so reopen when the thread changes."""
    key = ("_store", db_path(), threading.get_ident())
    cached = st.session_state.get("_store")
    if cached is None or cached[0] != key:
        opened = Store.open(db_path(), limits=Limits.from_env())
        # a job whose process is gone (the app was killed or restarted) says so at once
        jobs.mark_interrupted(opened)
        st.session_state["_store"] = (key, opened)
    return st.session_state["_store"][1]


def labeller() -> str:
    """This browser session's labeller id: label events carry it, so undo reverts only
    the labels made in this tab, never another tab's or another person's."""
    return st.session_state.setdefault("_labeller", uuid.uuid4().hex)


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_backbone(name: str, _progress=None):
    """_progress: a callback for the loader's status lines (left out of the cache key)."""
    return load_backbone(name, progress=_progress)


def backbone(name: str):
    """The loaded backbone, cached for the process; a spinner says what is happening."""
    with st.spinner(f"Loading the language model '{name}' (the very first time it is "
                    "converted and cached: about 30 seconds on an idle machine, minutes on a "
                    "busy one)..."):
        return _load_backbone(name)


@st.cache_resource(show_spinner=False)
def _feature_items() -> OrderedDict:
    return OrderedDict()


def feature_cache(s: Store) -> MemoryCache:
    """Features from RAM first, then the store: a retrain reads no SQLite blobs it has seen."""
    return MemoryCache(s, items=_feature_items())


@st.cache_resource(show_spinner=False)
def _pool_states() -> dict:
    return {}


def pool_matrix(s: Store, project_id: int) -> PoolMatrix:
    """The project's texts as head inputs, kept in RAM between submits (a submit fills it;
    the Label page's suggestions read it)."""
    return PoolMatrix(_pool_states().setdefault((os.path.abspath(s.path), project_id), {}))


def _ensure_app_shell() -> None:
    """Rerun through app.py when Streamlit ran a page script on its own.

    Our page scripts live in a folder named pages/, so until some run has called
    st.navigation, Streamlit takes its legacy multipage path and runs the requested
    page alone: the first request after a server start that opens /label directly
    would get no sidebar, no project picker and the folder's file names as menu.
    TODO: renaming pages/ (e.g. to views/) removes the cause; asked the lead.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without the legacy path
        return
    from streamlit import config

    # AppTest resets the flag before every run; a rerun there would swallow each click.
    # AppTest patches streamlit.config.get_option (not st.get_option), so ask config.
    if config.get_option("global.appTest"):
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_project():
    """The selected Project, or None. The selection lives in session_state['project_id']."""
    _ensure_app_shell()
    pid = st.session_state.get("project_id")
    if pid is None:
        return None
    try:
        return store().project(int(pid))
    except TenshotError:
        st.session_state.pop("project_id", None)
        return None


def select_project(project_id: int | None) -> None:
    """Make a project the current one (None: no project) and redraw the app around it."""
    if project_id is None:
        st.session_state.pop("project_id", None)
    else:
        st.session_state["project_id"] = int(project_id)
    st.rerun()


def require_project():
    """The selected project; otherwise an empty state pointing to the Projects page, and stop."""
    project = current_project()
    if project is None:
        st.info("Create or choose a project first: a project holds your classes, "
                "sentences, labels and models.", icon=":material/folder_open:")
        st.page_link("pages/projects.py", label="Go to Projects", icon=":material/folder:")
        st.stop()
    return project


def page_header(title: str):
    """The selected project (or the empty state, and stop), the page title and any flashes."""
    project = require_project()
    st.title(title)
    st.caption(escape_markdown(f"Project: {project.name}"))
    show_flashes()
    return project


def show_error(err: Exception) -> None:
    """A plain-language message for errors users can cause; never a traceback."""
    if isinstance(err, TenshotError):
        st.error(escape_markdown(str(err)), icon=":material/error:")
    else:
        st.error(escape_markdown(f"Something went wrong: {type(err).__name__}: {err}. Your data "
                                 "is safe; try again, and report the problem if it persists."),
                 icon=":material/error:")


_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def escape_markdown(text: object) -> str:
    """Text -> markdown that renders as exactly that text: no markup, links, HTML or math.

    CommonMark lets any ASCII punctuation be backslash-escaped, so all of it is; line
    breaks become hard breaks and leading spaces go, so nothing turns into a code block.
    Example: ``"**hi** <b>"`` -> ``"\\*\\*hi\\*\\* \\<b\\>"``.
    """
    lines = str(text).splitlines() or [""]
    return "  \n".join(_MD_SPECIAL.sub(r"\\\1", line.strip()) for line in lines)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def eta_text(seconds: float | None, *, almost: str = " Almost done.") -> str:
    """' About 12 s left.' (minutes from 90 s); ``almost`` under a second; '' when unknown."""
    if seconds is None:
        return ""
    if seconds < 1:  # the step under way runs longer than the ones before
        return almost
    return f" About {seconds:.0f} s left." if seconds < 90 else f" About {seconds / 60:.0f} min left."


def with_eta(bar, *, clock=time.monotonic):
    """update(fraction, text) for an ``st.progress`` bar: the text plus the time left at the
    pace so far (``core.jobs.seconds_left``), counted from this call. Example: a quarter done
    2 s after the start, update(0.25, 'Refit 5 of 20.') shows 'Refit 5 of 20. About 6 s left.'"""
    start = clock()

    def update(fraction: float, text: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        left = jobs.seconds_left(round(fraction * 1000), 1000, clock() - start, 0.0)
        bar.progress(fraction, text=text + eta_text(left))
    return update


def train(project, *, say_missing: bool = True) -> TrainOutcome | None:
    """Retrain the project's model now. Flashes what happened; None when it could not train.

    say_missing=False leaves out the "label N more" message, for a page that shows it anyway.
    """
    s = store()
    try:
        model = backbone(settings_of(project).backbone)
        with st.spinner("Training a new model on your labels..."):
            outcome = retrain(s, project, model, cache=feature_cache(s),
                              pool=pool_matrix(s, project.id))
    except NotEnoughLabels as err:
        if say_missing:
            flash(str(err), "info")
        return None
    except TenshotError as err:
        flash(str(err), "error")
        return None
    if outcome.superseded:
        flash(f"Model v{outcome.version}, trained on newer labels (from another tab or "
              "person), is already the latest; this training was not kept.", "info")
        return outcome
    change = outcome.change
    delta = "" if change is None else (
        f" ({change.points:+.0f} points since the last model)" if change.clear else
        f" (no clear change since the last model: {change.points:+.0f} points is within the "
        "noise of this many labels)")
    score = ("macro-F1", "cv_macro_f1") if project.multi_label else ("accuracy", "cv_accuracy")
    unit = "labelled sentences" if project.multi_label else "labels"  # a set is one sentence
    flash(f"Model v{outcome.version} trained on {outcome.metrics['n_labels']} {unit}: "
          f"cross-validated {score[0]} {percent(outcome.metrics[score[1]])}{delta}.", "success")
    return outcome


def start_embedding(project, texts: Sequence[str]) -> int | None:
    """Read (embed) texts on a background job; the Data page shows its progress."""
    if not texts:
        return None
    settings = settings_of(project)
    return jobs.start_embedding(db_path(), project.id, texts, settings,
                                lambda progress: _load_backbone(settings.backbone, _progress=progress),
                                memory=_feature_items())


_FLASH_KINDS = {"success": (st.success, ":material/check_circle:"),
                "info": (st.info, ":material/info:"),
                "warning": (st.warning, ":material/warning:"),
                "error": (st.error, ":material/error:")}


def flash(message: str, kind: str = "success") -> None:
    """Queue a message to show at the top of the next run (it survives st.rerun)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flashes() -> None:
    """Show and clear the queued messages. They may quote user text, so it is escaped."""
    for kind, message in st.session_state.pop("_flash", []):
        draw, icon = _FLASH_KINDS.get(kind, _FLASH_KINDS["info"])
        draw(escape_markdown(message), icon=icon)


def export_link() -> None:
    """Where the prediction tables send a download: the tables themselves have no download
    button (app.py), since their CSV would keep formula cells live."""
    st.page_link("pages/export.py", label="Download the predictions as CSV or JSONL on the "
                 "Export page", icon=":material/download:")


def changes_header(models, n_changes: int, what: str):
    """The "What changed" tab's first lines: a hint and None before there are two model
    versions, else a caption and (previous, latest). what: "class" or "set"."""
    if len(models) < 2:
        st.info("Changes appear once there are two model versions: label more sentences "
                "or correct a prediction.", icon=":material/compare_arrows:")
        return None
    before, after = models[-2], models[-1]
    st.caption(f"Model v{before.version} → v{after.version}: {n_changes:,} sentence"
               f"{'s' * (n_changes != 1)} changed predicted {what}.")
    return before, after


def skip_text(project_id: int, text_id: int) -> None:
    """The Label page's Skip: this tab does not suggest the text again."""
    st.session_state.setdefault(f"skipped_{project_id}", []).append(text_id)
    st.session_state.pop(f"current_{project_id}", None)


def undo_own_label(project_id: int):
    """Undo this tab's last label change and show its sentence again: (text_id, what it
    is back to) or None, with a message when there was nothing of this tab's to undo."""
    try:
        undone = store().undo_last_label(project_id, session=labeller())
    except TenshotError as err:
        flash(str(err), "error")
        return None
    if undone is None:
        flash("There is no label of yours to undo in this tab.", "info")
        return None
    text_id = undone[0]
    st.session_state[f"current_{project_id}"] = text_id
    skipped = st.session_state.get(f"skipped_{project_id}", [])
    if text_id in skipped:
        skipped.remove(text_id)
    return undone
