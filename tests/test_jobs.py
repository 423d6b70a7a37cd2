"""Background embedding jobs: progress in the store, features in the cache, failures recorded."""

import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

import numpy as np
import psutil
import pytest

import core.jobs as jobs
from core.learn.classifier import Settings, features_for
from core.model.cache import band_layers, cache_key
from core.errors import BackboneError
from core.store import Job, Store
from core.hashing import text_hash
from tests.helpers import WORDS

TEXTS = ["good movie", "bad film", "a wonderful plot", "the worst review", "it was fine"]
SETTINGS = Settings(backbone="tiny", prompt=None)


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "jobs.db")
    with Store.open(path) as store:
        project = store.create_project("p", ["neg", "pos"])
    return path, project.id


def test_embedding_job_completes_and_fills_the_cache(db, tiny_backbone):
    path, pid = db
    memory = OrderedDict()
    job_id = jobs.start_embedding(path, pid, TEXTS, SETTINGS, tiny_backbone, memory=memory)
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        job = store.job(job_id)
        assert (job.status, job.done, job.total, job.kind) == ("done", 5, 5, jobs.EMBED)
        assert "5 sentences read" in job.message
        key = cache_key(tiny_backbone, SETTINGS.max_length)
        cached = store.get_features(key, None, "mean", [text_hash(t) for t in TEXTS])
        assert len(cached) == 5
        shape = (tiny_backbone.n_layers, tiny_backbone.hidden_size)
        assert cached[text_hash("bad film")].shape == shape
    assert len(memory) == 5, "features should also land in the shared in-memory cache"
    progress = jobs.progress_of(job)
    assert (progress.state, progress.fraction, progress.active) == ("done", 1.0, False)



def test_a_job_says_how_many_sentences_lost_their_end(db, tiny_backbone):
    path, pid = db
    short = Settings(backbone="tiny", prompt=None, max_length=8)
    texts = ["good movie", "the film was good and the plot was very fine",  # 10 words + sink
             "a wonderful plot", "it was a very very dull and sad and ugly film"]
    job_id = jobs.start_embedding(path, pid, texts, short, tiny_backbone)
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        message = store.job(job_id).message
    assert message == ("4 sentences read and ready for the model. 2 of them were longer than 8 "
                       "tokens and lost their end; raise “Longest sentence” on the Model page to "
                       "keep them whole.")

def test_a_second_job_on_cached_texts_reaches_its_total(db, tiny_backbone):
    path, pid = db
    jobs.run_embedding(path, _job(path, pid, 3), TEXTS[:3], SETTINGS, tiny_backbone)
    job_id = _job(path, pid, 5)
    jobs.run_embedding(path, job_id, TEXTS, SETTINGS, tiny_backbone)
    with Store.open(path) as store:
        job = store.job(job_id)
    assert (job.status, job.done) == ("done", 5)


def test_backbone_is_loaded_on_the_job_thread(db, tiny_backbone):
    path, pid = db
    job_id = jobs.start_embedding(path, pid, TEXTS[:2], SETTINGS, lambda progress: tiny_backbone)
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        assert store.job(job_id).status == "done"


def test_the_loaders_status_lines_are_the_jobs_message(db, tiny_backbone):
    # issue 15: the job said "converting takes about a minute" whatever the loader did
    path, pid = db
    reported, release = threading.Event(), threading.Event()

    def load(progress):
        progress("Converting model.gguf to a cached model...")
        reported.set()
        release.wait(30)
        return tiny_backbone

    job_id = jobs.start_embedding(path, pid, TEXTS[:2], SETTINGS, load)
    try:
        assert reported.wait(30), "the loader was not handed a progress callback"
        with Store.open(path) as store:
            shown = jobs.progress_of(store.job(job_id))
        assert (shown.state, shown.done) == ("running", 0)
        assert shown.message == "Converting model.gguf to a cached model..."
    finally:
        release.set()
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        assert store.job(job_id).status == "done"


def test_failing_job_is_recorded_as_failed_with_a_plain_message(db):
    path, pid = db

    def broken(progress):
        raise BackboneError("No model file or folder at '/nowhere'.")

    job_id = jobs.start_embedding(path, pid, TEXTS, SETTINGS, broken)
    assert jobs.wait(job_id, timeout=30)
    with Store.open(path) as store:
        job = store.job(job_id)
    assert job.status == "failed"
    assert job.message == "No model file or folder at '/nowhere'."
    assert jobs.progress_of(job).state == "failed"


def test_unexpected_errors_are_recorded_too(db):
    path, pid = db

    class Exploding:
        fingerprint = "x"
        n_layers = 3

        def hidden_states(self, *args):
            raise RuntimeError("out of memory")

        @property
        def tokenizer(self):
            raise RuntimeError("out of memory")

    job_id = _job(path, pid, 5)
    jobs.run_embedding(path, job_id, TEXTS, SETTINGS, Exploding())
    with Store.open(path) as store:
        job = store.job(job_id)
    assert job.status == "failed"
    assert "RuntimeError: out of memory" in job.message
    assert "sentences are saved" in job.message


def test_progress_eta_and_interrupted_jobs():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    started = (now - timedelta(seconds=10)).isoformat()
    running = Job(999_001, 1, "embed", "running", 2, 10, "Reading", started, now.isoformat())
    p = jobs.progress_of(running, now=now)
    assert p.state == "running" and p.fraction == pytest.approx(0.2)
    assert p.eta_seconds == pytest.approx(40.0)
    # a job no thread here runs, silent for 5 minutes: its process is gone
    silent = (now - timedelta(minutes=5)).isoformat()
    gone = Job(999_002, 1, "embed", "running", 2, 10, "Reading", silent, silent)
    p = jobs.progress_of(gone, now=now)
    assert p.state == "interrupted" and p.eta_seconds is None and "interrupted" in p.message


def _polled_etas(batches: list[float], *, total: int = 300, batch: int = 32, load: float = 10.0):
    """The ETA a page polling once a second sees while a job reads ``total`` items in
    batches taking the given seconds each, after ``load`` seconds loading the model."""
    start = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    etas, done, last, t = [], 0, load, 0.0
    for seconds in batches:
        finished = last + seconds
        while t < finished:
            job = Job(999_003, 1, "embed", "running", done, total, "Reading", start.isoformat(),
                      (start + timedelta(seconds=last)).isoformat())
            etas.append(jobs.progress_of(job, now=start + timedelta(seconds=t)).eta_seconds)
            t += 1.0
        done, last = min(total, done + batch), finished
    return [e for e in etas if e is not None]


def test_the_eta_counts_down_between_batches():
    # issue 15 bug 3: the ETA counted up while a batch ran ("72 s left" -> "84 s left")
    etas = _polled_etas([4.0] * 9)
    assert len(etas) > 20
    assert all(later <= earlier + 1e-9 for earlier, later in zip(etas, etas[1:])), etas
    assert jobs.seconds_left(2, 10, 10.0, 3.0) == pytest.approx(37.0)
    assert jobs.seconds_left(0, 10, 10.0, 3.0) is None and jobs.seconds_left(10, 10, 9.0, 0) is None


def test_the_eta_rises_only_when_a_batch_really_was_slower():
    steady = _polled_etas([4.0] * 6)
    slowed = _polled_etas([4.0] * 4 + [40.0, 4.0])
    # the slow batch counts down to zero meanwhile, then its pace shows in the estimate
    assert min(slowed) == 0.0 and min(slowed[-4:]) > max(steady[-4:])


def _job(path: str, pid: int, total: int) -> int:
    with Store.open(path) as store:
        return store.start_job(pid, jobs.EMBED, total)


def test_a_job_whose_project_is_deleted_ends_quietly(db, tiny_backbone):
    path, pid = db
    job_id = _job(path, pid, 5)
    with Store.open(path) as store:
        store.delete_project(pid)
    jobs.run_embedding(path, job_id, TEXTS, SETTINGS, tiny_backbone)  # must not raise
    with Store.open(path) as store:
        assert store.projects() == []


def test_a_finished_job_leaves_no_thread_behind(db, tiny_backbone):
    # regression: the registry of job threads only ever grew
    path, pid = db
    job_ids = [jobs.start_embedding(path, pid, TEXTS[:2], SETTINGS, tiny_backbone) for _ in range(3)]
    for job_id in job_ids:
        assert jobs.wait(job_id, timeout=60)
    deadline = time.monotonic() + 5
    while any(j in jobs._threads for j in job_ids) and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread forgets itself just after the job's last write
    assert not any(j in jobs._threads for j in job_ids)
    assert not any(jobs.is_alive(j) for j in job_ids)
    with Store.open(path) as store:
        assert all(store.job(j).status == "done" for j in job_ids)


def test_a_job_whose_process_is_gone_is_interrupted_at_once():
    # regression: a dead job looked alive ("About 25 s left") for two minutes after a restart
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    started, last = (now - timedelta(seconds=30)).isoformat(), (now - timedelta(seconds=1)).isoformat()
    dead = Job(999_003, 1, "embed", "running", 32, 70, "Reading", started, last,
               pid=2 ** 22 + 11, process_started=1.0)  # above Linux's largest pid: no such process
    p = jobs.progress_of(dead, now=now)
    assert (p.state, p.eta_seconds, p.message) == ("interrupted", None, jobs.INTERRUPTED_MESSAGE)
    me = psutil.Process()
    alive = Job(999_004, 1, "embed", "running", 32, 70, "Reading", started, last,
                pid=me.pid, process_started=me.create_time())
    assert jobs.progress_of(alive, now=now).state == "running"


def test_a_job_that_fails_mid_way_keeps_the_batches_it_finished(db, tiny_backbone):
    # regression: features were written only when the whole job ended
    path, pid = db

    class FailsOnSecondBatch(type(tiny_backbone)):
        calls = 0

        def hidden_states(self, input_ids, attention_mask, depth=None):
            type(self).calls += 1
            if type(self).calls == 2:
                raise RuntimeError("killed")
            return super().hidden_states(input_ids, attention_mask, depth=depth)

    flaky = FailsOnSecondBatch(tiny_backbone.name, tiny_backbone.model, tiny_backbone.tokenizer,
                               tiny_backbone.fingerprint)
    texts = [f"{a} {b}" for a in WORDS[:8] for b in WORDS[10:15]]  # 40: two batches of <= 32
    job_id = _job(path, pid, len(texts))
    jobs.run_embedding(path, job_id, texts, SETTINGS, flaky)
    with Store.open(path) as store:
        assert store.job(job_id).status == "failed"
        (n,) = store.db.execute("SELECT COUNT(*) FROM features").fetchone()
    assert n == 32  # the first batch's features were kept


def test_an_embedding_job_stores_compact_features(db, tiny_backbone):
    # issue 14: a bulk upload's pool cached 71 kB a text (float32, every layer)
    path, pid = db
    job_id = jobs.start_embedding(path, pid, TEXTS, SETTINGS, tiny_backbone)
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        dtypes = {r[0] for r in store.db.execute("SELECT dtype FROM features").fetchall()}
        assert dtypes == {"<f2"}
        key = cache_key(tiny_backbone, SETTINGS.max_length)
        cached = store.get_features(key, None, "mean", [text_hash(t) for t in TEXTS])
    exact = features_for(tiny_backbone, TEXTS, SETTINGS)
    got = np.stack([cached[text_hash(t)] for t in TEXTS])
    # and only the band of layers (issue 14: a pool text keeps band_layers, NaN elsewhere)
    rows = list(band_layers(tiny_backbone.n_layers))
    np.testing.assert_allclose(got[:, rows], exact[:, rows], rtol=2e-3, atol=2e-3)
    assert np.isnan(np.delete(got, rows, axis=1)).all()


def test_an_embedding_job_on_a_fused_backbone_counts_sentences_not_parts(db, tiny_backbone):
    # the default backbone is a pair (issue 12): each part reports its own batches, and
    # the job's count must stay a count of sentences, 0..total, ending at total (it once
    # went negative and the database refused it, failing the app's first embedding)
    from core.model.backbone import Backbone
    from core.model.group import BackboneGroup, Part
    from tests.helpers import make_tiny_model, make_tokenizer

    tok = make_tokenizer()
    other = Backbone("tiny-b", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    group = BackboneGroup("tiny+tiny-b", (tiny_backbone, other), (
        Part("tiny", 0, tiny_backbone.n_layers, tiny_backbone.hidden_size),
        Part("tiny-b", tiny_backbone.n_layers, other.n_layers, other.hidden_size)))
    path, pid = db
    job_id = jobs.start_embedding(path, pid, TEXTS * 20, Settings(backbone="tiny+tiny-b", prompt=None),
                                  group, memory=OrderedDict())
    assert jobs.wait(job_id, timeout=60)
    with Store.open(path) as store:
        job = store.job(job_id)
        assert (job.status, job.done, job.total) == ("done", 100, 100), job.message


def test_group_progress_is_in_sentences_and_never_goes_back(tiny_backbone):
    from core.model.backbone import Backbone
    from core.model.embed import embed_group
    from core.model.group import BackboneGroup, Part
    from tests.helpers import make_tiny_model, make_tokenizer

    tok = make_tokenizer()
    other = Backbone("tiny-b", make_tiny_model(len(tok), seed=2, layers=3, hidden=16), tok, "fp-b")
    group = BackboneGroup("tiny+tiny-b", (tiny_backbone, other), (
        Part("tiny", 0, tiny_backbone.n_layers, tiny_backbone.hidden_size),
        Part("tiny-b", tiny_backbone.n_layers, other.n_layers, other.hidden_size)))
    calls = []
    texts = [f"{a} {b}" for a in WORDS[:8] for b in WORDS[10:15]]  # 40: two batches a part
    embed_group(group, texts, pooling="mean", prompt=None, max_length=32,
                progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 4 and all(0 <= d <= t == len(texts) for d, t in calls), calls
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == len(texts)
