"""Where and how the network runs: device, dtype, batch size and token budget, threads.

One owner for each hardware decision, so the rest of ``core.model`` asks instead of
guessing:
- ``precision``: the dtype and attention kernel for a device and model size, and
  ``TOLERANCES``, how far two computation orders of the same network may differ in
  each dtype (tests and benchmarks read them from here, nowhere else);
- ``batch_plan``: texts per batch and tokens per batch from the device's free memory
  (CPU keeps the figures measured on 2 cores: 32 texts, 8,192 tokens);
- ``thread_plan`` / ``apply_threads``: torch's threads for a CPU that other processes
  (and other threads of this one) use too;
- ``new_project_backbone`` / ``hardware_default``: the backbone new projects get on this
  machine (``GPU_RANKING`` is the one table it chooses from).

Shortcut admitted: the GPU figures are rules written from the H100 measurements in
../shared/GPU.md (bf16 there), not re-measured for every card; ``bench/gpu.py`` prints
what each dtype and batch size does on the card it runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from core.errors import InputError

__all__ = ["BatchPlan", "CPU_PLAN", "FP32_MAX_PARAMS", "GPU_RANKING", "Hardware", "Precision",
           "TOLERANCES", "Tolerance", "apply_threads", "batch_plan", "cuda_free_bytes", "describe_device",
           "describe_hardware", "hardware_default", "installed", "new_project_backbone", "other_runnable", "precision",
           "thread_plan", "tolerance", "usable_cores"]


# --- dtype ----------------------------------------------------------------------------

# Models up to this size run in fp32 on CUDA (TF32 left off, torch's default). A 135M
# model is bound by kernel launches and memory traffic at these sequence lengths, not
# by matmul throughput, so bf16 buys little there; fp32 keeps every invariant at
# float32 tolerances (bf16 broke two of them on the H100). Bigger models run bf16: at
# 1.5B parameters fp32 would halve throughput and double memory.
FP32_MAX_PARAMS = 600_000_000


@dataclass(frozen=True)
class Precision:
    """dtype: a torch dtype name ("float32", "bfloat16", "float16"); attention: the
    transformers attn_implementation."""

    dtype: str
    attention: str


def precision(device: str, n_params: int, *, dtype: str | None = None) -> Precision:
    """The dtype and attention kernel for a model of ``n_params`` on ``device``.

    CPU: fp32 with eager attention (bf16 was 2-5x slower there and sdpa up to 5x,
    DESIGN.md). CUDA: sdpa, fp32 up to ``FP32_MAX_PARAMS``, bf16 above. ``dtype``
    overrides the choice (benchmarks compare dtypes with it).
    """
    cuda = device.startswith("cuda")
    if dtype is None:
        dtype = "float32" if not cuda or n_params <= FP32_MAX_PARAMS else "bfloat16"
    if dtype not in TOLERANCES:
        raise InputError(f"Unknown dtype '{dtype}'; choose one of {', '.join(TOLERANCES)}.")
    return Precision(dtype, "sdpa" if cuda else "eager")


@dataclass(frozen=True)
class Tolerance:
    """How far two computation orders of the same network may differ in one dtype.

    rtol/atol: features (pooled hidden states), atol relative to the largest |feature|
    (``assert |a - b| <= atol * scale + rtol * |b|``). logprob: absolute, on class
    log-probabilities (zero-shot) and on logits compared across paths.
    """

    rtol: float
    atol: float
    logprob: float


# Why these figures (u = unit roundoff: fp32 2^-24, fp16 2^-11, bf16 2^-8):
# - float32: packed vs padded batches and different kernels reorder sums; over 30
#   layers that stays near 1e-6 relative (measured on CPU and on tiny models), so 1e-5
#   of the scale leaves a 10x margin; log-probabilities over a 49k vocabulary 1e-3
#   (the margin the zero-shot check has always had).
# - bfloat16: every layer's output is rounded to 8 bits of mantissa; two orders differ
#   by about one rounding per layer, a random walk of sqrt(30) * 2^-8 = 2.1e-2 of the
#   residual stream's scale, so 3e-2; logits of size ~20 round to 20 * 2^-8 = 0.08, so
#   log-probabilities 0.1 (the H100 run saw 0.05).
# - float16: the same reasoning with 11 bits: sqrt(30) * 2^-11 = 2.7e-3, so 5e-3;
#   log-probabilities 20 * 2^-11 = 0.01, so 2e-2.
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5, logprob=1e-3),
    "float16": Tolerance(rtol=5e-3, atol=5e-3, logprob=2e-2),
    "bfloat16": Tolerance(rtol=3e-2, atol=3e-2, logprob=1e-1),
}


def tolerance(dtype: Any) -> Tolerance:
    """The tolerance of a dtype: a name, a torch dtype, or a backbone (its info["dtype"])."""
    info = getattr(dtype, "info", None)
    if isinstance(info, dict):
        dtype = info.get("dtype", "float32")
    return TOLERANCES[str(dtype).replace("torch.", "")]


# --- batching ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    """batch_size: texts per forward batch; token_budget: padded tokens per batch."""

    batch_size: int
    token_budget: int


# 2 CPU cores: batch 32 under 8,192 tokens measured best (bench/speed.py)
CPU_PLAN = BatchPlan(batch_size=32, token_budget=8192)
# the H100's bare forward pass gained 5x from batch 32 to ~270; these caps keep one
# batch's all-layer states well inside any card the models fit on
_GPU_MAX_BATCH, _GPU_MAX_TOKENS, _GPU_MIN_TOKENS = 1024, 65536, 2048
# share of the free memory one batch may take (the pooled copy and the allocator's
# fragmentation need the rest)
_GPU_MEMORY_SHARE = 0.4


def batch_plan(device: str, *, n_layers: int, hidden: int, dtype: str = "float32",
               intermediate: int | None = None, free_bytes: int | None = None) -> BatchPlan:
    """Texts and tokens per batch for a model of this shape on ``device``.

    CPU: ``CPU_PLAN``. CUDA: a token budget from ``free_bytes`` (asked of the card when
    None) divided by what one token costs: its hidden states at every layer in the
    model's dtype, the float32 stack pooling makes of them, and one layer's
    activations (MLP width). Example: SmolLM2 (31 states x 576, MLP 1536) in fp32 costs
    about 230 kB a token, so 40 GB free gives the 65,536-token cap.
    """
    if not device.startswith("cuda"):
        return CPU_PLAN
    if free_bytes is None:
        free_bytes = cuda_free_bytes(device)
    size = 2 if dtype in ("bfloat16", "float16") else 4
    per_token = n_layers * hidden * (size + 2 * 4) + (intermediate or 4 * hidden) * 3 * size
    budget = int(_GPU_MEMORY_SHARE * free_bytes // per_token)
    budget = max(_GPU_MIN_TOKENS, min(_GPU_MAX_TOKENS, budget // 1024 * 1024))
    return BatchPlan(batch_size=min(_GPU_MAX_BATCH, budget // 16), token_budget=budget)


def cuda_free_bytes(device: str) -> int:
    """Free memory on a CUDA device, counting what torch's allocator holds but does not use."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    index = torch.device(device).index
    held = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    return int(free + max(0, held))


# --- threads ----------------------------------------------------------------------------

def thread_plan(cores: int, *, workers: int = 1, others: float = 0.0) -> int:
    """torch intra-op threads for one of ``workers`` threads of this process
    that run the network at once, when ``others`` threads of other processes want a core.

    Each parallel region waits for its slowest thread; a thread the OS has parked
    because another process holds its core stalls every region, which is what turned 18
    sentences/s into 1.5 when another process took one of 2 cores. So use only the cores
    nobody else wants, shared by this process's workers, and never fewer than one.

    >>> thread_plan(2), thread_plan(2, others=1), thread_plan(8, workers=2), thread_plan(1, others=3)
    (2, 1, 4, 1)
    """
    free = int(cores - max(0.0, others) + 0.5)
    return max(1, min(cores, free) // max(1, workers))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def other_runnable(samples: int = 3) -> float:
    """Threads of other processes that want a core now (Linux; 0 elsewhere).

    /proc/stat's ``procs_running`` counts runnable threads at this instant; the caller
    is one of them, and this process's other threads are idle between forward passes.
    The median of a few samples 0.2 ms apart smooths out a passing blip.
    """
    import statistics
    import time

    counts = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next((x for x in f if x.startswith("procs_running")), None)
        except OSError:
            return 0.0
        if line is None:
            return 0.0
        counts.append(int(line.split()[1]) - 1)
        time.sleep(0.0002)
    return max(0.0, float(statistics.median(counts)))


_sampled = (float("-inf"), 0.0)  # (when, other runnable threads) of the last sample


def apply_threads(*, workers: int = 1, cores: int | None = None, others: float | None = None) -> int:
    """Set torch's intra-op threads for the calling thread to ``thread_plan``; return it.

    Called at the start of each forward loop, so a loop that starts while another
    process (or a retrain thread of this one) is running uses the cores left free.
    OpenMP keeps the thread count per calling thread, so this does not change a
    concurrent loop in another thread. The other pools need no setting: the head's fits
    limit BLAS to one thread (``core.learn.solver.BLAS``) and the numba kernels are
    serial, so a retrain takes one core.
    """
    import time

    import torch

    global _sampled
    if others is None:  # sampled at most twice a second: SHAP runs many short loops
        now = time.monotonic()
        if now - _sampled[0] > 0.5:
            _sampled = (now, other_runnable())
        others = _sampled[1]
    cores = cores or usable_cores()
    n = thread_plan(cores, workers=workers, others=others)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# --- the backbone for the hardware ---------------------------------------------------

# THE ranking new projects on a CUDA machine choose from: packaged backbones best first,
# each with the free GPU memory it needs (weights in its dtype plus room for a batch).
# Where the order comes from: "Bigger packaged backbones" in bench/BENCHMARKS.md, CPU
# fp32 with the head of that time (auto mode, elastic-net); issue 12's protocol has not
# been run on a GPU yet, so change the order here and nowhere else when it is. Mean of
# CR / AG News / SST-5 at 64 per class: qwen2.5-1.5b 0.697,
# smollm2-135m 0.664, gemma3-270m 0.657, qwen2.5-0.5b 0.622 (the two below SmolLM2 are
# left out: never worth choosing over it). The CPU default (SmolLM2 fused with mpnet,
# issue 12's protocol) ranks above SmolLM2 alone: +5.1 points at 64 per class on the
# reporting half (0.724 vs 0.673); before it was in the table, a GPU box without Qwen
# gave new projects SmolLM2 alone, weaker than a laptop's default. Qwen2.5-1.5B against
# the fused default is unmeasured under one head (AG News 0.849 old head vs 0.848, SST-5
# 0.398 vs 0.386): it stays first. A local model folder may stand in the table too
# (installed when it exists); a group is installed when each of its parts is.
GPU_RANKING: tuple[tuple[str, int], ...] = (("qwen2.5-1.5b", 8 << 30), ("smollm2-135m+mpnet", 3 << 30),
                                            ("smollm2-135m", 2 << 30))


@dataclass(frozen=True)
class Hardware:
    """What the backbone choice looks at: whether CUDA is usable and its free memory (bytes)."""

    cuda: bool
    free_bytes: int = 0


def describe_hardware() -> Hardware:
    """This machine's CUDA device 0 (free memory as ``cuda_free_bytes``), or no CUDA."""
    import torch

    if not torch.cuda.is_available():
        return Hardware(cuda=False)
    return Hardware(cuda=True, free_bytes=cuda_free_bytes("cuda"))


def hardware_default(*, cuda: bool | None = None, free_bytes: int | None = None) -> str:
    """The backbone for this hardware: on CUDA the first of ``GPU_RANKING`` that is
    installed and fits in the card's free memory; on CPU the small default.
    cuda / free_bytes override what ``describe_hardware`` reports."""
    from core.model.registry import DEFAULT_BACKBONE

    if cuda is None or (cuda and free_bytes is None):
        found = describe_hardware()
        cuda = found.cuda if cuda is None else cuda
        free_bytes = found.free_bytes if free_bytes is None else free_bytes
    if not cuda:
        return DEFAULT_BACKBONE
    for name, needs in GPU_RANKING:
        if needs <= free_bytes and installed(name):
            return name
    return DEFAULT_BACKBONE


def new_project_backbone() -> str:
    """The backbone a new project gets, in the app, the CLI and the Python API alike:
    $TENSHOT_BACKBONE when set (a registry name or a model folder), else
    ``hardware_default()``."""
    return os.environ.get("TENSHOT_BACKBONE") or hardware_default()


def installed(name: str) -> bool:
    """Whether a backbone can load here: a registry entry whose packages are installed, a
    group whose every part is, or a local model folder that exists."""
    from pathlib import Path

    from core.errors import BackboneUnavailable
    from core.model.group import group_parts, is_fused
    from core.model.registry import REGISTRY, resolve_packaged

    if is_fused(name):
        return all(installed(part.name) for part in group_parts(name))
    if name not in REGISTRY:
        return Path(name).exists()
    try:
        resolve_packaged(REGISTRY[name])
    except BackboneUnavailable:
        return False
    return True


def describe_device(backbone) -> str:
    """Where a loaded backbone runs, for the Model page: "cpu · float32" or, for a group,
    each part's ("smollm2-135m: cuda · float32; minilm-l6: ...")."""
    parts = getattr(backbone, "backbones", None)
    if parts:
        return "; ".join(f"{b.name}: {describe_device(b)}" for b in parts)
    info = getattr(backbone, "info", {}) or {}
    device = str(getattr(backbone, "device", "cpu"))
    if device.startswith("cuda"):
        import torch

        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} · {info.get('dtype', 'float32')}"
