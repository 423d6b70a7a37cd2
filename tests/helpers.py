"""Fixtures and helpers for the Predictions, Model and Export page tests: a workspace
with a trained project in it, the download payloads, and plotly chart specs. They build
on conftest's ``tiny_model_dir``, ``fresh_workspace`` and ``whole_app_reruns``. Import
the fixtures you use into a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy",
       "the best film", "superb movie", "a delight"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad",
       "the worst film", "poor movie", "dull and ugly"]
# unlabelled; the last ones are user text that must stay plain text in the UI
UNLABELLED = ["very good", "very bad", "it was fine", "=cmd|' /C calc'!A0",
              "**bold** <b>html</b> [link](http://x)"]
CLASSES = ["neg", "pos"]
APP = Path(__file__).resolve().parent.parent / "app.py"
N_LABELLED = 5  # per class: enough for a 5-fold learning curve


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
        project = store.create_project("reviews", CLASSES, settings={
            "backbone": str(tiny_model_dir), "prompt": None, "mode": "layer"})
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


def open_page(page: str):
    """Open the app on ``pages/<page>.py`` (the sidebar picks the first project); returns
    the AppTest after its first run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page(f"pages/{page}.py")
    at.run()
    return at


def plotly_specs(at) -> list[dict]:
    """The JSON figures of every st.plotly_chart on the page (AppTest has no typed accessor)."""
    import json

    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def plotly_array(value) -> "np.ndarray":
    """A plotly JSON array: a plain list, or plotly's typed form {dtype, bdata (base64), shape}."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def page_text(at) -> str:
    """Everything an AppTest page shows as markdown, captions and alerts, in one string."""
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def sql(path: str, query: str, *args) -> list[tuple]:
    """Rows of a query on the workspace file, through a plain sqlite3 connection."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()
