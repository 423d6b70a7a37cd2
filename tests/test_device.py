"""The backbone a new project gets on this hardware, in every place a project is created.

The device description (``core.model.device.describe_hardware``) is what varies between
a laptop and a GPU box, so the tests replace it, not the store: the projects are real,
in a tmp_path workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import core.model.device as device
from core.cli import main
from core.model.device import Hardware, hardware_default, new_project_backbone, tolerance
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


def test_a_gpu_box_without_qwen_gets_the_fused_default_not_smollm2_alone(monkeypatch):
    # the real ranking: on the H200 check only SmolLM2 and mpnet were installed, and new
    # projects got SmolLM2 alone, 5 points weaker at 64/class than a laptop's fused default
    installed = {"smollm2-135m", "mpnet"}
    monkeypatch.setattr("core.model.registry.resolve_packaged", _resolver(installed))
    assert device.GPU_RANKING[0][0] == "qwen2.5-1.5b"
    assert hardware_default(cuda=True, free_bytes=80 << 30) == DEFAULT_BACKBONE == "smollm2-135m+mpnet"
    installed.discard("mpnet")  # a group is installed only when every part is
    assert hardware_default(cuda=True, free_bytes=80 << 30) == "smollm2-135m"
    installed.add("qwen2.5-1.5b")
    assert hardware_default(cuda=True, free_bytes=80 << 30) == "qwen2.5-1.5b"
    assert hardware_default(cuda=True, free_bytes=4 << 30) == "smollm2-135m"  # qwen does not fit


def _resolver(installed: set):
    from core.errors import BackboneUnavailable

    def resolve(entry):
        if entry.name not in installed:
            raise BackboneUnavailable(f"{entry.name} is not installed")
        return entry.name

    return resolve


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
    from streamlit.testing.v1 import AppTest  # here, so a GPU box without Streamlit runs the rest

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


# --- CUDA only: the invariants in each dtype, with the tolerances of device.TOLERANCES ---

needs_cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
TEXT = "the film was very good , not bad !"
PROMPT = "review : {text} sentiment :"


def _on_cuda(backbone, dtype: str):
    import copy

    import torch

    gpu = copy.deepcopy(backbone)
    gpu.model = gpu.model.to("cuda", getattr(torch, dtype))
    gpu.device, gpu.info = "cuda", {"dtype": dtype}
    return gpu


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_coefficient_attributions_are_exact_in_every_dtype(tiny_backbone, dtype):
    from core.explain.attributions import coefficient_attributions
    from core.learn.classifier import Settings, features_for, train

    settings = Settings(backbone="tiny", prompt=PROMPT, mode="fusion")
    clf = train(features_for(tiny_backbone, POS + NEG, settings), ["pos"] * 6 + ["neg"] * 6,
                ["neg", "pos"], settings)
    a = coefficient_attributions(_on_cuda(tiny_backbone, dtype), clf, TEXT)
    scale = max(1.0, float(np.abs(a.logits).max()))
    assert a.exact and np.abs(a.values.sum(0) + a.constant - a.logits).max() <= 1e-4 * scale
    assert np.abs(a.values).sum() > 0.01


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_zero_shot_matches_fp32_on_the_cpu_within_the_dtypes_tolerance(dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.learn.zeroshot import class_log_probs
    from core.model.backbone import Backbone
    from tests.helpers import make_tokenizer

    tok = make_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      tie_word_embeddings=True, attn_implementation="eager")).eval()
    cpu = Backbone("tiny-tied", lm.model, tok, "tiny-tied-fp")
    texts, classes = ["a good movie", "i hate it"], ["bad", "very good"]
    expected = class_log_probs(cpu, texts, classes, prompt="review : {text} sentiment :")
    got = class_log_probs(_on_cuda(cpu, dtype), texts, classes, prompt="review : {text} sentiment :")
    tol = tolerance(dtype).logprob
    assert np.abs(got - expected).max() <= tol


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_a_depth_limited_pass_equals_the_full_pass_and_embeds_the_same(tiny_backbone, dtype):
    # the submit path stops each pass after the band's deepest row (core.model.capture):
    # on a GPU as on the CPU, the rows it keeps are the full pass's
    import torch

    from core.model.embed import embed
    from core.model.forward import pad
    from core.model.tokens import encode

    gpu = _on_cuda(tiny_backbone, dtype)
    ids, mask = pad([e.input_ids for e in encode(gpu.tokenizer, POS + NEG, prompt=PROMPT)],
                    gpu.tokenizer.pad_token_id or 0)
    depth = gpu.n_layers - 2
    full, part = gpu.hidden_states(ids, mask), gpu.hidden_states(ids, mask, depth=depth)
    assert len(part) == depth + 1 < len(full)
    for a, b in zip(part, full):
        assert a.device.type == "cuda" and torch.equal(a, b)
    rows = [1, depth]
    X, Y = (embed(gpu, POS + NEG, prompt=PROMPT, rows=r) for r in (None, rows))
    tol = tolerance(dtype)
    scale = float(np.abs(X[:, rows]).max())
    assert np.abs(Y[:, rows] - X[:, rows]).max() <= tol.atol * scale
    assert np.isnan(Y[:, depth + 1:]).all()
