"""Streamlit glue shared by every page: the store, the cached backbone, the current
project, and plain-language errors. Pages import from here; core never imports streamlit."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import streamlit as st

from core.backbones import load_backbone
from core.errors import TenshotError
from core.project import MemoryCache
from core.store import Store

__all__ = ["db_path", "store", "backbone", "feature_cache", "current_project", "require_project",
           "show_error"]


def db_path() -> str:
    """The workspace file: $TENSHOT_DB, else tenshot.db in the working folder."""
    return os.environ.get("TENSHOT_DB", "tenshot.db")


def store() -> Store:
    """This rerun's Store. SQLite connections are bound to the thread that opened them,
    and Streamlit may run each rerun on a new thread, so reopen when the thread changes."""
    key = ("_store", db_path(), threading.get_ident())
    cached = st.session_state.get("_store")
    if cached is None or cached[0] != key:
        st.session_state["_store"] = (key, Store.open(db_path()))
    return st.session_state["_store"][1]


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_backbone(name: str):
    return load_backbone(name)


def backbone(name: str):
    """The loaded backbone, cached for the process; a spinner says what is happening."""
    with st.spinner(f"Loading the language model '{name}' (the very first time it is "
                    "converted and cached, about 30 seconds)..."):
        return _load_backbone(name)


@st.cache_resource(show_spinner=False)
def _feature_items() -> OrderedDict:
    return OrderedDict()


def feature_cache(s: Store) -> MemoryCache:
    """Features from RAM first, then the store: a retrain reads no SQLite blobs it has seen."""
    return MemoryCache(s, items=_feature_items())


def current_project():
    """The selected Project, or None. The selection lives in session_state['project_id']."""
    pid = st.session_state.get("project_id")
    if pid is None:
        return None
    try:
        return store().project(int(pid))
    except TenshotError:
        st.session_state.pop("project_id", None)
        return None


def require_project():
    """The selected project; otherwise an empty state pointing to the Projects page, and stop."""
    project = current_project()
    if project is None:
        st.info("Create or choose a project first.")
        st.page_link("pages/projects.py", label="Go to Projects", icon=":material/folder:")
        st.stop()
    return project


def show_error(err: Exception) -> None:
    """A plain-language message for errors users can cause; never a traceback."""
    if isinstance(err, TenshotError):
        st.error(str(err), icon=":material/error:")
    else:
        st.error(f"Something went wrong: {type(err).__name__}: {err}. Your data is safe; "
                 "try again, and report the problem if it persists.", icon=":material/error:")
