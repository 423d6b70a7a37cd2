"""Scoring texts with a classifier on Ray Data: ``tenshot predict --engine ray``.

The texts become a Ray dataset; ``map_batches`` runs them through a pool of scorer
actors, each of which loads the bundle's backbone once (one actor per GPU when the
cluster has GPUs, CPU actors otherwise) and returns probabilities per batch. The
driver gathers the batches as they finish (progress with an ETA) and orders them by
input line, so the output equals the single-process ``predict``: same classes,
probabilities within float tolerance (batches pad differently).

Local mode (``ray.init()`` on this machine) is the default; ``address`` joins an
existing cluster, whose nodes need tenshot and the backbone's package installed.
Ray is an optional extra (``pip install "tenshot[ray]"``); without it this module
says how to install it. Shortcut admitted: CSV/JSONL/TXT files are read by tenshot's
own reader on the driver (same rows, same skipped lines as the plain path), Parquet
by pyarrow there; the texts are spread over the actors from the driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError

__all__ = ["INSTALL_HINT", "check_input_size", "score_with_ray", "read_parquet_texts"]

INSTALL_HINT = ('--engine ray needs Ray Data, which is not installed here. Install it with '
                'pip install "tenshot[ray]" (or pip install "ray[data]"), or leave out --engine ray.')
DEFAULT_BATCH_SIZE = 64
# memory a CPU actor takes with its model loaded (SmolLM2-135M: 1.5 GB resident, `top`,
# during bench/ray_throughput.py); the default pool has no more actors than fit
_ACTOR_BYTES = 2 << 30
# the driver holds the file's texts as Python strings, a row dict each for Ray, and the
# results: an estimate (not measured) of how many times the file's bytes that takes
_DRIVER_BYTES_PER_FILE_BYTE = 4


def _ray():
    # nothing leaves the machine: Ray's usage statistics (reported to usage-stats.ray.io
    # unless disabled) are off; a user can still opt in by setting the variable to 1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is "ray[data]": check that part too)
    except ImportError as err:
        raise InputError(INSTALL_HINT) from err
    return ray


class _Scorer:
    """A Ray actor: the classifier and its backbone, loaded once; called with batches."""

    def __init__(self, bundle: bytes, threads: int | None):
        from core.learn.bundle import load_bundle
        from core.model.loading import load_backbone

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.clf = load_bundle(bundle)
        self.backbone = load_backbone(self.clf.settings.backbone)

    def __call__(self, batch: dict) -> dict:
        """batch: {"line": (n,), "text": (n,)} -> {"line": (n,), "probs": (n, n_classes)}."""
        probs = self.clf.predict_proba(self.backbone, [str(t) for t in batch["text"]])
        return {"line": np.asarray(batch["line"]), "probs": probs}


def _start(ray, address: str | None) -> bool:
    """Connect to Ray; True when this call started a local instance (to shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    # workers must import this tenshot even when it is run from a source checkout
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True


def _pool(ray, actors: int | None) -> tuple[int, dict]:
    """(pool size, per-actor resources): one actor per GPU; else CPU actors sharing the
    cores, by default one per core as far as the cluster's memory holds a model each.

    One single-threaded actor per core beat one actor on both cores: on 5,000 SST-2
    sentences on this 2-core box, 2 actors ran at 1.49x the single process and 1 actor
    at 0.84x (bench/ray_throughput.py, BENCHMARKS.md).
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (actors or gpus), {"num_gpus": 1}
    cpus = max(1, int(resources.get("CPU", 1)))
    fits = int(resources.get("memory", 0) // _ACTOR_BYTES) or cpus
    size = max(1, min(actors or fits, cpus))
    return size, {"num_cpus": cpus // size}


def score_with_ray(bundle: bytes, lines: Sequence[int], texts: Sequence[str], *, address: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   actors: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lines (n,), probabilities (n, n_classes)) of the texts, ordered by line.

    lines: an id per text (its line in the input file). actors: CPU actors (default: one
    per core, as many as the memory holds; ignored when GPUs exist).
    progress(done, total) is called as batches finish.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be 1 or more; got {batch_size}.")
    ray = _ray()
    started = _start(ray, address)
    try:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        dataset = ray.data.from_items(_longest_first(lines, texts))
        total = len(texts)
        size, per_actor = _pool(ray, actors)
        threads = per_actor.get("num_cpus")
        scored = dataset.map_batches(
            _Scorer, fn_constructor_kwargs={"bundle": bundle, "threads": threads},
            compute=ray.data.ActorPoolStrategy(size=size), batch_size=batch_size,
            batch_format="numpy", **per_actor)
        got_lines, got_probs, done = [], [], 0
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            got_lines.append(batch["line"])
            got_probs.append(np.asarray(batch["probs"], dtype=np.float64))
            done += len(batch["line"])
            if progress is not None:
                progress(done, total)
    finally:
        if started:
            ray.shutdown()
    line = np.concatenate(got_lines) if got_lines else np.zeros(0, np.int64)
    order = np.argsort(line, kind="stable")
    return line[order], np.concatenate(got_probs)[order]


def _longest_first(lines: Sequence[int], texts: Sequence[str]) -> list[dict]:
    """Ray's rows, longest text first: each ``map_batches`` batch then holds texts of
    about one length and pads little, as the single-process path's length-sorted batches
    do (in file order a batch of 64 padded every text to its longest; Ray was 0.6x the
    single process on 5,000 SST-2 sentences, bench/ray_throughput.py). The driver
    orders the results by line again.

    >>> [r["line"] for r in _longest_first([0, 1, 2], ["ab", "abcd", "a"])]
    [1, 0, 2]
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [{"line": int(lines[i]), "text": texts[i]} for i in order]


def check_input_size(path: str | Path, *, available: int | None = None) -> None:
    """Refuse, in plain words, a file the driver could not hold: the input is read on
    this machine before it is spread over the actors.

    available: free memory in bytes (default: this machine's, from /proc/meminfo or sysconf).
    """
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    free = _available_memory() if available is None else available
    if free is None or size * _DRIVER_BYTES_PER_FILE_BYTE <= free:
        return
    most = free // _DRIVER_BYTES_PER_FILE_BYTE
    raise InputError(
        f"{path.name} is {size / 2**30:,.1f} GB; --engine ray reads it on this machine first and "
        f"needs about {_DRIVER_BYTES_PER_FILE_BYTE}x that in memory, but {free / 2**30:,.1f} GB "
        f"is free. Split it into files of at most {most / 2**30:,.1f} GB and score each one "
        "(the predictions of the parts are the same as of the whole).")


def _available_memory() -> int | None:
    """Free memory of this machine in bytes (MemAvailable), or None where it is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def read_parquet_texts(path: str | Path, *, text_column: str | None = None) -> list[str]:
    """The texts of a Parquet file's text column (default "text"), in row order."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise InputError(INSTALL_HINT) from err
    column = text_column or "text"
    try:
        table = pq.read_table(str(path), columns=[column])
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"Could not read column {column!r} of the Parquet file {Path(path).name} "
                         f"({err}). Name the text column with --text-column.") from err
    return ["" if t is None else str(t) for t in table.column(column).to_pylist()]
