"""The backbone a new project gets on this hardware, in every place a project is created.

The device description (``core.model.device.describe_hardware``) is what varies between
a laptop and a GPU box, so the tests replace it, not the store: the projects are real,
in a tmp_path workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.model.device as device
from core.cli import main
from core.model.device import Hardware, hardware_default, new_project_backbone
from core.model.registry import DEFAULT_BACKBONE
from tests.helpers import sql, write_csv

APP = str(Path(__file__).parents[1] / "app.py")
POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy", "superb movie"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad", "poor movie"]


@pytest.fixture
def gpu_box(monkeypatch, tiny_model_dir):
    """A machine with an 80 GB card whose strongest installed backbone is the tiny model
    (a folder in the ranking counts as installed when it exists); TENSHOT_BACKBONE unset."""
    monkeypatch.delenv("TENSHOT_BACKBONE", raising=False)
    monkeypatch.setattr(device, "describe_hardware", lambda: Hardware(cuda=True, free_bytes=80 << 30))
    monkeypatch.setattr(device, "GPU_RANKING", ((tiny_model_dir, 1 << 30), (DEFAULT_BACKBONE, 1 << 30)))
    return tiny_model_dir


def _cpu_box(monkeypatch):
    monkeypatch.setattr(device, "describe_hardware", lambda: Hardware(cuda=False))


def test_the_ranking_is_walked_by_what_is_installed_and_fits(gpu_box, monkeypatch, tmp_path):
    assert hardware_default() == gpu_box
    assert hardware_default(free_bytes=512 << 20) == DEFAULT_BACKBONE  # fits nothing: the small default
    monkeypatch.setattr(device, "GPU_RANKING", ((str(tmp_path / "absent"), 1), (gpu_box, 1)))
    assert hardware_default() == gpu_box  # a missing entry is skipped
    _cpu_box(monkeypatch)
    assert hardware_default() == DEFAULT_BACKBONE  # CPU keeps the small default whatever is ranked


def test_tenshot_backbone_overrides_the_hardware_choice(gpu_box, monkeypatch):
    assert new_project_backbone() == gpu_box
    monkeypatch.setenv("TENSHOT_BACKBONE", "minilm-l6")
    assert new_project_backbone() == "minilm-l6"


def test_cli_train_gives_a_new_project_the_backbone_for_the_hardware(gpu_box, tmp_path, monkeypatch, capsys):
    # regression: `tenshot train` gave every new project SmolLM2, even on a CUDA machine
    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--mode", "layer"]) == 0
    (settings,) = sql(db, "SELECT settings FROM projects WHERE name = 'p'")[0]
    assert json.loads(settings)["backbone"] == gpu_box
    # an existing project keeps its backbone when the hardware changes
    _cpu_box(monkeypatch)
    assert main(["--db", db, "train", "--project", "p", "--data", data]) == 0
    (settings,) = sql(db, "SELECT settings FROM projects WHERE name = 'p'")[0]
    assert json.loads(settings)["backbone"] == gpu_box


@pytest.mark.usefixtures("whole_app_reruns")
def test_the_app_gives_a_new_project_the_backbone_for_the_hardware(fresh_workspace, gpu_box, monkeypatch):
    for name, on_gpu in (("On the GPU box", True), ("On a laptop", False)):
        if not on_gpu:
            _cpu_box(monkeypatch)
        at = AppTest.from_file(APP, default_timeout=30).run()
        at.text_input(key="new_project_name").input(name)
        at.text_input(key="new_project_classes").input("negative, positive")
        at.button(key="create_project_btn").click().run()
        assert not at.exception
        (settings,) = sql(fresh_workspace, "SELECT settings FROM projects WHERE name = ?", name)[0]
        assert json.loads(settings)["backbone"] == (gpu_box if on_gpu else DEFAULT_BACKBONE)
