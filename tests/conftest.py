"""Shared fixtures: a tiny real transformer and tokenizer built in-process (no downloads),
and app workspaces built on it. Every test module gets them from here (and the browser
fixtures from the browser plugin below) without importing anything; shared data and
helpers are in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

from tests.helpers import (CLASSES, HOSTILE, N_LABELLED, NEG, POS, UNLABELLED, HOSTILE_WORDS, make_tiny_model,
                           make_tokenizer)

pytest_plugins = ["tests.browser"]  # the browser, server and page fixtures


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-report", metavar="PATH", default=None,
        help="write the reliability figures of a complete, green run to PATH (to refresh "
             "RELIABILITY.md on purpose); by default they go to the pytest temp folder only")


@pytest.fixture(scope="session")
def tiny_backbone():
    from core.model.backbone import Backbone

    tok = make_tokenizer()
    model = make_tiny_model(len(tok))
    return Backbone("tiny", model, tok, "tiny-test-fingerprint")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # converted-model and weight caches go to a per-session temp folder, never ~/.cache
    monkeypatch.setenv("TENSHOT_CACHE", os.environ.get("TENSHOT_TEST_CACHE")
                       or str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny real model saved as a local HF folder: a project's backbone in app tests."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = make_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def fresh_workspace(tmp_path, monkeypatch, tiny_model_dir) -> str:
    """A fresh SQLite workspace for the app; projects created in the app use the tiny model."""
    path = str(tmp_path / "workspace.db")
    monkeypatch.setenv("TENSHOT_DB", path)
    monkeypatch.setenv("TENSHOT_BACKBONE", tiny_model_dir)
    return path


@pytest.fixture
def whole_app_reruns(monkeypatch):
    """Make every AppTest run execute app.py, as the real server does after its first run.

    AppTest resets PagesManager.uses_pages_directory before each run; because our page
    scripts live in a folder named pages/, Streamlit then takes the legacy multipage
    path and runs only the page script, without app.py's sidebar (and a click would be
    lost to the rerun that pages._shared makes to recover from that).
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def workspace(fresh_workspace, tiny_model_dir, whole_app_reruns):
    """TENSHOT_DB pointing at a project with labels and two trained model versions.

    Returns (db path, project id, {text: text id}).
    """
    from core.model.loading import load_backbone
    from core.project import retrain
    from core.store import Store

    db = fresh_workspace
    with Store.open(db) as store:
        # the penalty the app tests were written for (the default was elastic-net before
        # issue 12): with L2 the tiny model's CV accuracy falls below the 50% some assume
        project = store.create_project("reviews", CLASSES, settings={
            "backbone": str(tiny_model_dir), "prompt": None, "mode": "layer", "penalty": "elasticnet"})
        texts = POS + NEG + UNLABELLED
        ids = dict(zip(texts, store.add_texts(project.id, texts).text_ids))
        bb = load_backbone(str(tiny_model_dir))
        for i in range(N_LABELLED - 1):
            store.set_label(project.id, ids[POS[i]], "pos")
            store.set_label(project.id, ids[NEG[i]], "neg")
        retrain(store, project, bb)
        store.set_label(project.id, ids[POS[N_LABELLED - 1]], "pos")
        store.set_label(project.id, ids[NEG[N_LABELLED - 1]], "neg")
        retrain(store, project, bb)
    return db, project.id, ids


@pytest.fixture
def downloads(monkeypatch):
    """{file name: bytes} of every st.download_button payload the app registers."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    seen: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes) and filename:
            seen[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return seen


@pytest.fixture
def hostile_workspace(fresh_workspace, tiny_model_dir, whole_app_reruns):
    """A trained project whose name, classes and sentences are injection strings."""
    from core.model.loading import load_backbone
    from core.project import retrain

    from core.store import Store

    with Store.open(fresh_workspace) as store:
        project = store.create_project(f"{HOSTILE[0]} {HOSTILE[2]}", HOSTILE, settings={
            "backbone": tiny_model_dir, "prompt": "review : {text} sentiment :", "mode": "layer"})
        labelled = {f"{h} {w}": h for h in HOSTILE for w in HOSTILE_WORDS}
        texts = list(labelled) + [" ".join(HOSTILE)] + HOSTILE
        ids = dict(zip(texts, store.add_texts(project.id, texts).text_ids))
        for text, label in labelled.items():
            store.set_label(project.id, ids[text], label)
        retrain(store, project, load_backbone(tiny_model_dir))
    return fresh_workspace, project.id


@pytest.fixture
def tiny_group(monkeypatch):
    """The default's shape (an LLM fused with a sentence encoder) in miniature: "tiny-a", a
    decoder that gets the prompt, and "tiny-enc", registered as an encoder (the bare text);
    different depths and widths. Returns the loaded ``BackboneGroup``."""
    import core.model.group as multi
    from core.model import registry
    from core.model.backbone import Backbone
    from core.model.registry import PackagedModel

    tok = make_tokenizer()
    a = Backbone("tiny-a", make_tiny_model(len(tok), seed=1, layers=2, hidden=32), tok, "fp-group-a")
    b = Backbone("tiny-enc", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-group-enc")
    for bb in (a, b):
        monkeypatch.setitem(registry.REGISTRY, bb.name, PackagedModel(
            bb.name, bb.name, "-", (), None, "hf", bb.n_layers - 1, bb.hidden_size, "-"))
    monkeypatch.setattr(registry, "ENCODERS", frozenset({"tiny-enc"}))
    return multi.BackboneGroup("tiny-a+tiny-enc", (a, b), tuple(multi.group_parts("tiny-a+tiny-enc")))


@pytest.fixture
def fused_workspace(fresh_workspace, whole_app_reruns, tiny_group, monkeypatch):
    """TENSHOT_DB pointing at a trained project on ``tiny_group`` (the app loads the group
    for its name). Returns (db path, project id, group)."""
    import streamlit as st

    from core.project import retrain
    from core.store import Store

    monkeypatch.setattr("pages._shared.load_backbone", lambda name, **_: tiny_group)
    st.cache_resource.clear()
    with Store.open(fresh_workspace) as store:
        project = store.create_project("Fused", CLASSES, settings={
            "backbone": tiny_group.name, "prompt": "review : {text}", "mode": "layer", "penalty": "l2"})
        ids = store.add_texts(project.id, POS + NEG + UNLABELLED[:3]).text_ids
        for text_id, label in zip(ids, ["pos"] * len(POS) + ["neg"] * len(NEG)):
            store.set_label(project.id, text_id, label)
        retrain(store, project, tiny_group)
    yield fresh_workspace, project.id, tiny_group
    st.cache_resource.clear()  # the group stays behind its name otherwise
