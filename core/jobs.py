"""Background jobs: long work runs on a thread and writes its progress to the store.

A page starts a job and returns at once; it then polls the ``jobs`` table, so the
app stays usable and a reload still finds the progress. Each job thread opens its
own ``Store``, because SQLite connections are bound to the thread that opened them.
A job never raises: an error ends it with status ``failed`` and a plain message.

Each batch's features are stored as it finishes, so a job that is cut short keeps
what it had read and a new job over the same texts resumes from there. A job row
records its process (pid and start time): ``mark_interrupted`` (the app calls it
whenever it opens the workspace) marks jobs whose process is gone, or whose pid now
belongs to another process, as ``interrupted`` at once, and ``progress_of`` reports
them so even before that.

Shortcuts: only embedding runs as a job so far, and jobs of one process run one at
a time (a lock), since two forward passes on the same few CPU cores are no faster
than one after the other. The process check assumes the app that reads the workspace
runs on the machine that ran the job; jobs recorded without a process (older files)
are reported as interrupted once they have been silent for a while.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import psutil

from core.learn.classifier import Settings, features_for, n_truncated
from core.errors import StoreError, TenshotError
from core.model.cache import MemoryCache, band_rows
from core.store import Store

__all__ = ["EMBED", "INTERRUPTED_MESSAGE", "JobProgress", "start_embedding", "run_embedding",
           "progress_of", "wait", "is_alive", "process_gone", "mark_interrupted", "seconds_left"]

EMBED = "embed"
# a running job writes progress after every batch (seconds apart); this much silence
# from a job that no thread here is running means its process is gone
_STALE_S = 120.0
# a pid's start time read twice agrees to the clock tick; a reused pid started later
_SAME_START_S = 0.05
# texts embedded per step of a job, and kept in the shared RAM cache (as MemoryCache does)
_JOB_CHUNK = 2000
_MEMORY_ITEMS = 20_000
INTERRUPTED_MESSAGE = ("This job was interrupted (the app stopped before it finished). "
                       "What it had read is saved: continue to read the rest.")

# this process's running job threads, by job id; a thread removes itself when it ends
_threads: dict[int, threading.Thread] = {}
_compute_lock = threading.Lock()


@dataclass(frozen=True)
class JobProgress:
    """What a page shows about a job. ``state``: running, done, failed, cancelled or interrupted."""

    job_id: int
    state: str
    done: int
    total: int
    message: str
    eta_seconds: float | None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def active(self) -> bool:
        return self.state == "running"


def start_embedding(db_path: str, project_id: int, texts: Sequence[str], settings: Settings,
                    backbone, *, memory=None) -> int:
    """Record an embedding job for ``texts``, start its thread, and return the job id at once.

    backbone: a loaded backbone, or a callable ``load(progress)`` that loads one on the
    job's thread (so a slow first load does not block the caller); ``progress`` receives
    the loader's status lines ("Converting ...", as ``load_backbone`` reports them), which
    become the job's message.
    memory: an optional process-wide dict for a MemoryCache, so a later retrain reads
    these features from RAM.
    """
    texts = list(texts)
    with Store.open(db_path) as store:
        job_id = store.start_job(project_id, EMBED, len(texts), pid=os.getpid(),
                                 process_started=_started(os.getpid()))
    thread = threading.Thread(target=_run_then_forget, args=(job_id, db_path, texts, settings, backbone),
                              kwargs={"memory": memory}, name=f"tenshot-job-{job_id}", daemon=True)
    _threads[job_id] = thread
    thread.start()
    return job_id


def _run_then_forget(job_id: int, db_path: str, *args, **kwargs) -> None:
    try:
        run_embedding(db_path, job_id, *args, **kwargs)
    finally:
        _threads.pop(job_id, None)


def run_embedding(db_path: str, job_id: int, texts: Sequence[str], settings: Settings, backbone,
                  *, memory=None) -> None:
    """The body of an embedding job; callable directly to run it synchronously. Never raises."""
    total = len(texts)
    with Store.open(db_path) as store:
        try:
            store.update_job(job_id, done=0, message="Waiting for another job to finish...")
            with _compute_lock:
                store.update_job(job_id, done=0, message="Loading the language model...")
                model = _loaded(backbone, lambda line: store.update_job(job_id, done=0, message=line))
                # float16 in the store: a bulk upload is the pool, 36 kB a text instead of 71
                cache = MemoryCache(store, items=memory, store_dtype="float16",
                                    max_items=_MEMORY_ITEMS if memory is not None else 0)
                store.update_job(job_id, done=0, message=f"Reading {total} sentences...")
                _embed_in_chunks(store, job_id, model, list(texts), settings, cache)
                cut = n_truncated(model, list(texts), settings)
            store.update_job(job_id, done=total, status="done",
                             message=f"{total} sentence{'' if total == 1 else 's'} read and "
                             "ready for the model."
                             + _truncation_note(cut, settings.max_length))
        except Exception as err:  # the thread must record every failure, whatever its type
            _record_failure(store, job_id, err)


def _embed_in_chunks(store, job_id: int, model, texts: list[str], settings: Settings, cache) -> None:
    """Embed into the cache a chunk at a time: all of a 100,000-text pool's features at
    once would be 7 GB of RAM."""
    total = len(texts)
    for start in range(0, total, _JOB_CHUNK):
        chunk = texts[start:start + _JOB_CHUNK]

        def progress(done: int, todo: int, start=start, size=len(chunk)) -> None:
            # embed counts only texts missing from the cache; the rest are done already
            now_done = min(start + size, max(start, start + size - todo + done))
            store.update_job(job_id, done=now_done,
                             message=f"Reading {now_done} of {total} sentences...")

        # the pool keeps only the band, so the layers above its deepest row need not run
        features_for(model, chunk, settings, cache=cache, progress=progress,
                     rows=band_rows(model))


def _truncation_note(n: int, max_length: int) -> str:
    if not n:
        return ""
    return (f" {n} of them {'was' if n == 1 else 'were'} longer than {max_length} tokens and lost "
            "their end; raise “Longest sentence” on the Model page to keep them whole.")


def _record_failure(store: Store, job_id: int, err: Exception) -> None:
    try:
        store.update_job(job_id, done=store.job(job_id).done, status="failed", message=_plain(err))
    except StoreError:
        pass  # the project, and its jobs with it, was deleted while the job ran


def _loaded(backbone, progress: Callable[[str], None]):
    if callable(backbone) and not hasattr(backbone, "hidden_states"):
        return backbone(progress)
    return backbone


def _plain(err: Exception) -> str:
    if isinstance(err, TenshotError):
        return str(err)
    return (f"Reading the sentences failed ({type(err).__name__}: {err}). Your sentences are "
            "saved; they will be read again when you label or train.")


def is_alive(job_id: int) -> bool:
    """Whether a thread of this process is still working on the job."""
    thread = _threads.get(job_id)
    return thread is not None and thread.is_alive()


def wait(job_id: int, timeout: float | None = None) -> bool:
    """Block until this process's thread for the job ends; False on timeout."""
    thread = _threads.get(job_id)
    if thread is not None:
        thread.join(timeout)
        return not thread.is_alive()
    return True


def _started(pid: int) -> float | None:
    """The start time of process ``pid`` (epoch seconds); None when there is none."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def process_gone(job) -> bool | None:
    """Whether the process that ran a job has exited (its pid free, or reused by another).

    None when the job recorded no process (written by an older tenshot), or when the
    process cannot be inspected: then nobody can tell.
    """
    if job.pid is None or job.process_started is None:
        return None
    try:
        started = _started(job.pid)
    except psutil.Error:
        return None
    return started is None or abs(started - job.process_started) > _SAME_START_S


def mark_interrupted(store: Store) -> list[int]:
    """Mark every running job of the workspace whose process is gone as interrupted.

    Returns the ids of the jobs it marked. Cheap when no job is running: one query.
    """
    marked = []
    for job in store.running_jobs():
        if process_gone(job) and store.interrupt_job(job.id, INTERRUPTED_MESSAGE):
            marked.append(job.id)
    return marked


def progress_of(job, *, now: datetime | None = None) -> JobProgress:
    """A store ``Job`` -> what to show: state, progress and the estimated seconds left.

    The ETA is ``seconds_left``: the pace of the items finished so far, counted down
    while the next batch runs; None until something is done.
    """
    now = now or datetime.now(timezone.utc)
    elapsed = (now - datetime.fromisoformat(job.created_at)).total_seconds()
    silent = (now - datetime.fromisoformat(job.updated_at)).total_seconds()
    state, message = job.status, job.message or ""
    if state == "running" and not is_alive(job.id):
        gone = process_gone(job)
        # our own process is alive, but no thread of it runs the job: trust the silence
        unsure = gone is None or job.pid == os.getpid()
        if gone or (unsure and silent > _STALE_S):
            state, message = "interrupted", INTERRUPTED_MESSAGE
    eta = None
    if state == "running":
        eta = seconds_left(job.done, job.total, elapsed - silent, silent)
    return JobProgress(job.id, state, job.done, job.total, message, eta)


def seconds_left(done: int, total: int, working: float, since: float) -> float | None:
    """Seconds left at the pace of the work finished so far; None until some is done.

    working: seconds from the job's start to its last progress report; since: seconds
    since that report. The time per item comes from finished items only, so waiting for
    a batch counts the estimate down instead of stretching the pace; it rises only when
    a batch really took longer than the ones before.
    Example: 2 of 10 done 10 s after the start, 3 s ago -> 5 s each, 8 left: 40 - 3 = 37.
    """
    if not 0 < done < total or working <= 0:
        return None
    return max(0.0, working / done * (total - done) - max(0.0, since))

